"""Data layers. DummyData, HDF5Data, HDF5Output and MemoryData against real pycaffe (same
seeds: Caffe's stream for fillers, the C library's rand() for HDF5Data's shuffles): values bit
for bit, random draws in step (a filler after the layer agrees). ImageData and WindowData
need OpenCV, which the real Caffe build here lacks: they are checked against hand-computed
batches on tiny images, with the resize compared to values OpenCV 4.10 gives and the
shuffles to Boost's and libstdc++'s."""
import ctypes
import os
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest
from PIL import Image

import deepmammo.caffe as ours
from deepmammo.caffe import rng, shuffles
from deepmammo.caffe.fillers import fill
from deepmammo.caffe.formats.binaryproto import write_mean
from deepmammo.caffe.image_io import imread, resize_linear
from deepmammo.caffe.netstate import NetError
from deepmammo.caffe.proto import caffe_pb2 as pb


def _write(path, text):
    path.write_text(text)
    return str(path)


def _arrays(net, names):
    return {n: np.array(net.blobs[n].data, copy=True) for n in names}


# ---------------------------------------------------------------- DummyData
DUMMY = {
    "per_top": """shape { dim: 2 dim: 3 } shape { dim: 4 } shape { dim: 2 dim: 2 dim: 3 dim: 3 }
        data_filler { type: "gaussian" std: 2 mean: 1 } data_filler { type: "constant" value: 3 }
        data_filler { type: "xavier" }""",
    "one_filler": """shape { dim: 3 dim: 5 } data_filler { type: "uniform" min: -2 max: 5 }""",
    "no_filler": """shape { dim: 3 dim: 2 } shape { dim: 1 } shape { dim: 2 dim: 2 }""",
    "one_constant": """shape { dim: 2 dim: 2 } data_filler { type: "constant" value: -1.5 }""",
    "legacy": """num: 2 channels: 3 channels: 1 channels: 2 height: 2 width: 4 width: 1 width: 2
        data_filler { type: "gaussian" std: 0.5 sparse: 1 }""",
}


@pytest.mark.parametrize("case", sorted(DUMMY))
def test_dummy_data_bit_equal(real_caffe, tmp_path, case):
    tops = 'top: "a" top: "b" top: "c"'
    net = _write(tmp_path / "net.prototxt", f"""name: "dummy"
layer {{ name: "d" type: "DummyData" {tops} dummy_data_param {{ {DUMMY[case]} }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "a" top: "ip"
  inner_product_param {{ num_output: 3 weight_filler {{ type: "gaussian" std: 1 }} }} }}
""")
    for seed in (1, 2 ** 31 + 5):
        real_caffe.set_random_seed(seed)
        theirs = real_caffe.Net(net, real_caffe.TRAIN)
        ours.set_random_seed(seed)
        mine = ours.Net(net, ours.TRAIN)
        # Nothing drawn at construction: the filler after agrees.
        np.testing.assert_array_equal(mine.params["ip"][0].data, theirs.params["ip"][0].data)
        for step in range(3):
            theirs.forward()
            mine.forward()
            for name in "abc":
                np.testing.assert_array_equal(mine.blobs[name].data, theirs.blobs[name].data,
                                              err_msg=f"{case} seed {seed} step {step} {name}")


def test_dummy_data_checks(tmp_path):
    def build(param, tops='top: "a" top: "b"'):
        net = _write(tmp_path / "net.prototxt", f'layer {{ name: "d" type: "DummyData" {tops} '
                     f'dummy_data_param {{ {param} }} }}')
        return ours.Net(net, ours.TEST)
    with pytest.raises(NetError, match="data fillers must be 0, 1 or equal"):
        build('shape { dim: 1 } data_filler { type: "constant" } ' * 1 +
              'data_filler { type: "constant" } data_filler { type: "constant" }')
    with pytest.raises(NetError, match="both shape and legacy"):
        build("shape { dim: 1 } num: 1 channels: 1 height: 1 width: 1")
    with pytest.raises(NetError, match="'shape' once, or once per top"):
        build("shape { dim: 1 } shape { dim: 1 } shape { dim: 1 }")
    with pytest.raises(NetError, match="'channels' once, or once per top"):
        build("num: 1 channels: 1 channels: 2 channels: 3 height: 1 width: 1")
    with pytest.raises(NetError, match="unknown filler type 'nope'"):
        build('shape { dim: 1 } data_filler { type: "nope" }')


# ---------------------------------------------------------------- the shuffles
def test_glibc_rand_is_the_c_librarys():
    libc = ctypes.CDLL(None)
    libc.rand.restype = ctypes.c_int
    for seed in (0, 1, 42, 2 ** 31 + 7, 2 ** 32 - 1):
        libc.srand(ctypes.c_uint(seed))
        expected = [libc.rand() for _ in range(500)]
        assert shuffles.GlibcRand(seed).raw(500).tolist() == expected, seed


def test_caffe_shuffle_is_boosts():
    # caffe::shuffle on boost::mt19937(seed) with Boost 1.74's uniform_int, compiled and run
    # once (shuffled `reps` times): the items' order and the stream's next output.
    cases = {(5, 10, 1): ([4, 8, 9, 3, 7, 1, 5, 6, 0, 2], 385778404),
             (5, 10, 2): ([7, 6, 2, 8, 5, 9, 0, 3, 1, 4], 806256527),
             (12345, 7, 1): ([4, 2, 3, 0, 1, 5, 6], 878579710),
             (2147483653, 12, 3): ([11, 5, 3, 10, 4, 6, 9, 1, 0, 2, 8, 7], 3674446938),
             (4, 3, 1): ([0, 1, 2], 2350344631)}
    for (seed, n, reps), (order, after) in cases.items():
        stream = rng.CaffeRNG(seed)
        items = list(range(n))
        for _ in range(reps):
            shuffles.caffe_shuffle(items, stream)
        assert items == order and stream.rand() == after, (seed, n, reps)


# ---------------------------------------------------------------- HDF5Data
def _h5_files(tmp_path, rows=(5, 3, 7)):
    rs = np.random.RandomState(0)
    names = []
    for i, n in enumerate(rows):
        path = tmp_path / f"part{i}.h5"
        with h5py.File(path, "w") as f:
            f["data"] = rs.randn(n, 2, 3) + 100 * i                  # double, converted
            f["label"] = (np.arange(n) + 10 * i).astype(np.int32)    # integer, converted
            f["extra"] = rs.rand(n).astype(np.float32)
        names.append(str(path))
    return names


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("phase", ["TRAIN", "TEST"])
@pytest.mark.parametrize("rows", [(5, 3, 7), (6,)])
def test_hdf5_data_bit_equal(real_caffe, tmp_path, shuffle, phase, rows):
    files = _h5_files(tmp_path, rows)
    source = _write(tmp_path / "list.txt", "\n".join(files) + "\n")
    net = _write(tmp_path / "net.prototxt", f"""name: "h5"
layer {{ name: "h" type: "HDF5Data" top: "data" top: "label" top: "extra"
  hdf5_data_param {{ source: "{source}" batch_size: 4 shuffle: {str(shuffle).lower()} }} }}
""")
    libc = ctypes.CDLL(None)
    for seed in (42, 7):
        # Caffe's std::random_shuffle draws from the C library's rand(): seed it and ours.
        libc.srand(ctypes.c_uint(seed))
        theirs = real_caffe.Net(net, getattr(real_caffe, phase))
        shuffles.srand(seed)
        mine = ours.Net(net, getattr(ours, phase))
        for step in range(12):        # wraps the files several times
            theirs.forward()
            mine.forward()
            for name in ("data", "label", "extra"):
                np.testing.assert_array_equal(mine.blobs[name].data, theirs.blobs[name].data,
                                              err_msg=f"seed {seed} step {step} {name}")
        assert mine.blobs["data"].shape == (4, 2, 3)


def test_hdf5_data_checks(tmp_path):
    files = _h5_files(tmp_path, (4, 2))
    with h5py.File(files[1], "a") as f:
        del f["label"]
        f["label"] = np.arange(3, dtype=np.float32)
    def build(source_text, extra="", tops='top: "data" top: "label"'):
        source = _write(tmp_path / "list.txt", source_text)
        net = _write(tmp_path / "net.prototxt", f'layer {{ name: "h" type: "HDF5Data" {tops} '
                     f'hdf5_data_param {{ source: "{source}" batch_size: 3 }} {extra} }}')
        return ours.Net(net, ours.TRAIN)
    with pytest.raises(NetError, match="does not transform data"):
        build(files[0], "transform_param { scale: 2 }")
    with pytest.raises(NetError, match="at least 1 HDF5 filename"):
        build("  \n")
    with pytest.raises(NetError, match="failed to find HDF5 dataset nope"):
        build(files[0], tops='top: "nope"')
    with pytest.raises(NetError, match="has 3 rows, data has 2"):
        build(files[1])
    with pytest.raises(NetError, match="failed opening HDF5 file"):
        build(str(tmp_path / "missing.h5"))


# ---------------------------------------------------------------- HDF5Output
@pytest.mark.parametrize("shapes", [((3, 4), (3,)), ((2, 3, 2, 2), (2, 1, 2)), ((2,), (2, 5))])
def test_hdf5_output_matches_caffe(real_caffe, tmp_path, shapes):
    rs = np.random.RandomState(3)
    values = [rs.randn(*s).astype(np.float32) for s in shapes]
    written = {}
    for engine, tag in ((real_caffe, "real"), (ours, "ours")):
        out = tmp_path / f"{tag}.h5"
        dims = [" ".join(f"dim: {d}" for d in s) for s in shapes]
        net = _write(tmp_path / f"{tag}.prototxt", f"""name: "out"
layer {{ name: "x" type: "Input" top: "x" input_param {{ shape {{ {dims[0]} }} }} }}
layer {{ name: "y" type: "Input" top: "y" input_param {{ shape {{ {dims[1]} }} }} }}
layer {{ name: "out" type: "HDF5Output" bottom: "x" bottom: "y" hdf5_output_param {{ file_name: "{out}" }} }}
""")
        n = engine.Net(net, engine.TEST)
        n.blobs["x"].data[...] = values[0]
        n.blobs["y"].data[...] = values[1]
        n.forward()
        if engine is ours:
            with pytest.raises(NetError, match="failed to make float dataset data"):
                n.forward()            # Caffe aborts here (checked in a child process below)
            n.close()
        del n
        with h5py.File(out, "r") as f:
            written[tag] = {k: (f[k].shape, f[k].dtype, f[k][()]) for k in f}
    assert sorted(written["ours"]) == ["data", "label"] == sorted(written["real"])
    for k in ("data", "label"):
        shape, dtype, value = written["real"][k]
        assert written["ours"][k][:2] == (shape, dtype) and len(shape) == 4
        np.testing.assert_array_equal(written["ours"][k][2], value)


@pytest.mark.subprocess
def test_real_caffe_refuses_a_second_hdf5_output(real_caffe, tmp_path):
    net = _write(tmp_path / "net.prototxt", f"""name: "out"
layer {{ name: "x" type: "Input" top: "x" input_param {{ shape {{ dim: 2 dim: 2 }} }} }}
layer {{ name: "out" type: "HDF5Output" bottom: "x" bottom: "x" hdf5_output_param {{ file_name: "{tmp_path / 'o.h5'}" }} }}
""")
    python_dir = os.path.dirname(os.path.dirname(real_caffe.__file__))
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {python_dir!r})
        import caffe
        net = caffe.Net({net!r}, caffe.TEST)
        net.forward()
        print("first", flush=True)
        net.forward()
        print("second")
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=dict(os.environ, GLOG_minloglevel="2"), timeout=120)
    assert run.stdout.split() == ["first"] and run.returncode != 0
    assert "Failed to make float dataset data" in run.stderr


# ---------------------------------------------------------------- MemoryData
MEMORY = """name: "mem"
layer { name: "m" type: "MemoryData" top: "data" top: "label"
  memory_data_param { batch_size: 2 channels: 3 height: 2 width: 2 } TRANSFORM }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 1 } } }
"""


@pytest.mark.parametrize("transform", ["", "transform_param { mirror: true }",
                                       "transform_param { crop_size: 1 }"])
@pytest.mark.parametrize("phase", ["TRAIN", "TEST"])
def test_memory_data_bit_equal(real_caffe, tmp_path, transform, phase):
    net = _write(tmp_path / "net.prototxt", MEMORY.replace("TRANSFORM", transform))
    real_caffe.set_random_seed(5)
    theirs = real_caffe.Net(net, getattr(real_caffe, phase))
    ours.set_random_seed(5)
    mine = ours.Net(net, getattr(ours, phase))
    # The transformer's seed (mirror, or crop at TRAIN) was drawn as Caffe draws it.
    np.testing.assert_array_equal(mine.params["ip"][0].data, theirs.params["ip"][0].data)
    assert mine.blobs["label"].shape == theirs.blobs["label"].data.shape == (2,)
    data = np.arange(6 * 12, dtype=np.float32).reshape(6, 3, 2, 2)
    labels = np.arange(6, dtype=np.float32) * 10
    theirs.set_input_arrays(data, labels)
    mine.set_input_arrays(data, labels)
    for _step in range(4):                   # wraps after three batches
        theirs.forward()
        mine.forward()
        for name in ("data", "label"):
            assert mine.blobs[name].shape == theirs.blobs[name].data.shape
            np.testing.assert_array_equal(mine.blobs[name].data, theirs.blobs[name].data)
    data[...] = -7                          # the arrays are kept, not copied
    theirs.forward()
    mine.forward()
    np.testing.assert_array_equal(mine.blobs["data"].data, theirs.blobs["data"].data)
    assert (mine.blobs["data"].data == -7).all()


def test_memory_data_array_checks_are_pycaffes(real_caffe, tmp_path):
    net = _write(tmp_path / "net.prototxt", MEMORY.replace("TRANSFORM", ""))
    theirs = real_caffe.Net(net, real_caffe.TEST)
    mine = ours.Net(net, ours.TEST)
    layer = mine.layer_dict["m"]
    good = np.zeros((4, 3, 2, 2), np.float32)
    cases = [(good.astype(np.float64), np.zeros(4, np.float32)),
             (good[:, :2], np.zeros(4, np.float32)),
             (np.zeros((4, 3, 1, 2), np.float32), np.zeros(4, np.float32)),
             (np.zeros((4, 3, 2, 3), np.float32), np.zeros(4, np.float32)),
             (good[..., ::-1], np.zeros(4, np.float32)),
             (good.reshape(4, 12), np.zeros(4, np.float32)),
             (good, np.zeros(3, np.float32)),
             (good, np.zeros(4, np.float64)),
             (good[:3], np.zeros(3, np.float32))]
    for data, labels in cases:
        with pytest.raises(RuntimeError) as real_error:
            theirs.set_input_arrays(data, labels)
        with pytest.raises(RuntimeError) as our_error:
            mine.set_input_arrays(data, labels)
        assert str(our_error.value) == str(real_error.value)
    with pytest.raises(NetError, match="n must be a multiple of batch size"):
        layer.reset(good, np.zeros(4, np.float32), 3)


def test_memory_data_needs_reset_and_sizes(tmp_path):
    net = _write(tmp_path / "net.prototxt", MEMORY.replace("TRANSFORM", ""))
    mine = ours.Net(net, ours.TEST)
    with pytest.raises(NetError, match="initialized by calling reset"):
        mine.forward()
    bad = _write(tmp_path / "bad.prototxt", MEMORY.replace("height: 2", "height: 0")
                 .replace("TRANSFORM", ""))
    with pytest.raises(NetError, match="must be specified and positive"):
        ours.Net(bad, ours.TEST)


# ---------------------------------------------------------------- images
def test_resize_linear_hand_computed():
    # 2x upscale: weights 1/4, 3/4 about half-pixel centres, edges clamped; with multiples of
    # 16 OpenCV's fixed point is exact, so this is plain bilinear.
    src = np.array([[0, 160], [64, 32]], np.uint8)[:, :, None]
    row = lambda a, b: [a, a * 0.75 + b * 0.25, a * 0.25 + b * 0.75, b]   # noqa: E731
    top, bottom = np.array(row(0, 160)), np.array(row(64, 32))
    expected = np.array([top, top * 0.75 + bottom * 0.25, top * 0.25 + bottom * 0.75, bottom])
    np.testing.assert_array_equal(resize_linear(src, 4, 4)[:, :, 0], expected)
    # An exact halving is OpenCV's 2x2 average, halves rounded up: (1 + 2 + 3 + 4 + 2) >> 2.
    src = np.array([[1, 2, 9, 9], [3, 4, 9, 8], [0, 0, 255, 255], [0, 1, 255, 254]], np.uint8)
    np.testing.assert_array_equal(resize_linear(src[:, :, None], 2, 2)[:, :, 0],
                                  [[3, 9], [0, 255]])
    assert resize_linear(src[:, :, None], 4, 4).tolist() == src[:, :, None].tolist()


def test_resize_linear_is_opencvs():
    # Values cv2.resize(..., INTER_LINEAR) gives (opencv-python 4.10), odd sizes both ways.
    img = np.array([[0, 37, 255, 18, 90], [201, 3, 77, 140, 66], [9, 250, 128, 31, 200]],
                   np.uint8)[:, :, None]
    assert resize_linear(img, 4, 3)[:, :, 0].tolist() == [
        [12, 255, 66], [89, 144, 81], [118, 96, 110], [89, 128, 143]]
    assert resize_linear(img, 2, 7)[:, :, 0].tolist() == [
        [50, 38, 80, 211, 95, 64, 84], [57, 132, 167, 115, 75, 105, 167]]
    img3 = np.array([[[10, 200, 30], [250, 0, 77], [5, 5, 5]],
                     [[128, 64, 32], [1, 2, 3], [99, 180, 255]]], np.uint8)
    assert resize_linear(img3, 5, 4).tolist() == [
        [[10, 200, 30], [160, 75, 59], [158, 2, 50], [5, 5, 5]],
        [[22, 186, 30], [149, 70, 55], [146, 8, 55], [14, 22, 30]],
        [[69, 132, 31], [104, 50, 36], [98, 35, 74], [52, 93, 130]],
        [[116, 78, 32], [60, 30, 18], [50, 62, 93], [90, 162, 230]],
        [[128, 64, 32], [49, 25, 14], [38, 69, 97], [99, 180, 255]]]


def test_imread_channels_as_opencv(tmp_path):
    rgb = np.random.RandomState(1).randint(0, 256, size=(3, 4, 3)).astype(np.uint8)
    grey = np.random.RandomState(2).randint(0, 256, size=(3, 4)).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    Image.fromarray(rgb).save(tmp_path / "c.bmp")
    Image.fromarray(grey).save(tmp_path / "g.png")
    Image.fromarray((grey.astype(np.uint16) * 257 + 3)).save(tmp_path / "g16.png")
    np.testing.assert_array_equal(imread(tmp_path / "c.png"), rgb[:, :, ::-1])     # BGR
    r, g, b = (rgb[:, :, k].astype(np.int64) for k in range(3))
    # Grey from colour as OpenCV's codecs compute it: libpng's (truncated), OpenCV's own.
    np.testing.assert_array_equal(imread(tmp_path / "c.png", False)[:, :, 0],
                                  (9797 * r + 19234 * g + 3737 * b) >> 15)
    np.testing.assert_array_equal(imread(tmp_path / "c.bmp", False)[:, :, 0],
                                  (4899 * r + 9617 * g + 1868 * b + 8192) >> 14)
    np.testing.assert_array_equal(imread(tmp_path / "g.png"), np.repeat(grey[:, :, None], 3, 2))
    np.testing.assert_array_equal(imread(tmp_path / "g16.png", False)[:, :, 0], grey)
    assert imread(tmp_path / "missing.png") is None
    (tmp_path / "bad.png").write_bytes(b"not an image")
    assert imread(tmp_path / "bad.png") is None


def _images(tmp_path, n=5, size=(4, 6), color=True):
    rs = np.random.RandomState(7)
    folder = tmp_path / "img"
    folder.mkdir(exist_ok=True)
    pixels, lines = [], []
    for i in range(n):
        shape = size + ((3,) if color else ())
        arr = rs.randint(0, 256, size=shape).astype(np.uint8)
        Image.fromarray(arr).save(folder / f"im {i}.png")      # a space in the name
        pixels.append(arr)
        lines.append(f"im {i}.png {10 + i}")
    source = _write(tmp_path / "list.txt", "\n".join(lines) + "\n")
    return source, str(folder) + "/", pixels


def _image_net(tmp_path, source, root, image_param="", transform="", batch=2, extra=""):
    return _write(tmp_path / "net.prototxt", f"""name: "img"
layer {{ name: "d" type: "ImageData" top: "data" top: "label"
  transform_param {{ {transform} }}
  image_data_param {{ source: "{source}" root_folder: "{root}" batch_size: {batch} {image_param} }} }}
{extra}""")


def test_image_data_values_in_order(tmp_path):
    source, root, pixels = _images(tmp_path)
    net = _image_net(tmp_path, source, root,
                     transform="crop_size: 3 mean_value: 10 mean_value: 20 mean_value: 30 "
                               "scale: 0.5")
    mine = ours.Net(net, ours.TEST)
    try:
        order = [0, 1, 2, 3, 4, 0, 1, 2, 3, 4]
        for step in range(5):                          # 10 images of 5: wraps
            mine.forward()
            for k in range(2):
                i = order[2 * step + k]
                bgr = pixels[i][:, :, ::-1].transpose(2, 0, 1).astype(np.float32)
                crop = bgr[:, 0:3, 1:4]                # centred: ((4-3)//2, (6-3)//2)
                expected = (crop - np.array([10, 20, 30], np.float32)[:, None, None]) * 0.5
                np.testing.assert_array_equal(mine.blobs["data"].data[k], expected)
                assert mine.blobs["label"].data[k] == 10 + i
    finally:
        mine.close()


def test_image_data_resize_and_grey(tmp_path):
    folder = tmp_path / "img"
    folder.mkdir()
    Image.fromarray(np.array([[0, 160], [64, 32]], np.uint8)).save(folder / "g.png")
    source = _write(tmp_path / "list.txt", "g.png 3")
    for is_color, channels in (("false", 1), ("true", 3)):
        net = _image_net(tmp_path, source, str(folder) + "/",
                         f"new_height: 4 new_width: 4 is_color: {is_color}", batch=1)
        mine = ours.Net(net, ours.TEST)
        try:
            mine.forward()
            assert mine.blobs["data"].shape == (1, channels, 4, 4)
            first = mine.blobs["data"].data[0, 0]
            np.testing.assert_array_equal(first[0], [0, 40, 120, 160])
            np.testing.assert_array_equal(first[:, 0], [0, 16, 48, 64])
            assert (mine.blobs["data"].data == first).all()
            assert mine.blobs["label"].data.tolist() == [3]
        finally:
            mine.close()


def test_image_data_random_draws(tmp_path):
    # shuffle, rand_skip, mirror and crop at TRAIN: the draws Caffe's layer takes from the
    # thread's stream (transformer seed, shuffle seed, skip, transformer seed kept, thread
    # seed), then the InnerProduct's filler; each epoch reshuffled by caffe::shuffle.
    source, root, pixels = _images(tmp_path, n=5)
    extra = ('layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" '
             'inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 1 } } }')
    net = _image_net(tmp_path, source, root, "shuffle: true rand_skip: 4",
                     "mirror: true crop_size: 3", batch=3, extra=extra)
    seed = 11
    stream = rng.CaffeRNG(seed)
    stream.rand()
    shuffle_rng = rng.CaffeRNG(stream.rand())
    skip = stream.rand() % 4
    transform_rng = rng.CaffeRNG(stream.rand())
    ours.set_random_seed(seed)
    rng.stream().raw(5)                    # the filler starts after the layer's five draws
    weights = fill(pb.FillerParameter(type="gaussian", std=1), (2, 27)).numpy()
    order = shuffles.caffe_shuffle(list(range(5)), shuffle_rng)
    sequence = order[skip:]
    while len(sequence) < 12:
        sequence += shuffles.caffe_shuffle(order, shuffle_rng)[:]
    ours.set_random_seed(seed)
    mine = ours.Net(net, ours.TRAIN)
    try:
        np.testing.assert_array_equal(mine.params["ip"][0].data, weights)
        for step in range(4):
            mine.forward()
            for k in range(3):
                i = sequence[3 * step + k]
                bgr = pixels[i][:, :, ::-1].transpose(2, 0, 1).astype(np.float32)
                mirror = transform_rng.randint(2)
                h, w = transform_rng.randint(2), transform_rng.randint(4)
                expected = bgr[:, h:h + 3, w:w + 3]
                if mirror:
                    expected = expected[:, :, ::-1]
                np.testing.assert_array_equal(mine.blobs["data"].data[k], expected,
                                              err_msg=f"step {step} item {k}")
                assert mine.blobs["label"].data[k] == 10 + i
    finally:
        mine.close()


def test_image_data_checks(tmp_path):
    source, root, _ = _images(tmp_path, n=2)
    def build(image_param="", transform="", src=source, phase=ours.TEST):
        return ours.Net(_image_net(tmp_path, src, root, image_param, transform), phase)
    with pytest.raises(NetError, match="new_height and new_width must be set at the same"):
        build("new_height: 3")
    with pytest.raises(NetError, match="file is empty"):
        build(src=_write(tmp_path / "empty.txt", ""))
    with pytest.raises(NetError, match="could not load nope.png"):
        build(src=_write(tmp_path / "bad.txt", "nope.png 1\n"))
    with pytest.raises(NetError, match="smaller than the crop"):
        build(transform="crop_size: 5")
    with pytest.raises(NetError, match="not supported"):
        build("mirror: true")      # read from transform_param only, as by Caffe's layer
    Image.fromarray(np.zeros((5, 6, 3), np.uint8)).save(tmp_path / "img" / "big.png")
    mixed = _write(tmp_path / "mixed.txt", "im 0.png 0\nbig.png 1\n")
    net = build(src=mixed)
    try:
        with pytest.raises(NetError, match="big.png is 5x6"):
            net.forward()
    finally:
        net.close()


# ---------------------------------------------------------------- WindowData
def _window_setup(tmp_path, windows, size=(10, 12)):
    rs = np.random.RandomState(4)
    folder = tmp_path / "img"
    folder.mkdir(exist_ok=True)
    rgb = rs.randint(0, 256, size=size + (3,)).astype(np.uint8)
    Image.fromarray(rgb).save(folder / "a.png")
    lines = [f"# 0\na.png 3 {size[0]} {size[1]}\n{len(windows)}"]
    lines += [" ".join(str(v) for v in w) for w in windows]
    source = _write(tmp_path / "windows.txt", "\n".join(lines) + "\n")
    return source, str(folder) + "/", rgb[:, :, ::-1].transpose(2, 0, 1)   # BGR, CHW


def _window_net(tmp_path, source, root, param="", transform="crop_size: 4", batch=4):
    return _write(tmp_path / "net.prototxt", f"""name: "win"
layer {{ name: "d" type: "WindowData" top: "data" top: "label" transform_param {{ {transform} }}
  window_data_param {{ source: "{source}" root_folder: "{root}" batch_size: {batch} {param} }} }}
""")


def _window_stream(seed, mirror, train=True):
    """The layer's own stream, seeded as Caffe's layer seeds it from the thread's."""
    stream = rng.CaffeRNG(seed)
    if mirror or train:
        stream.rand()
    return rng.CaffeRNG(stream.rand())


def test_window_data_warp_sampling(tmp_path):
    # Windows of exactly crop_size pixels: the warp is the identity, so the batch is the
    # sampled windows' pixels, (pixel - mean) * scale.
    # Foreground: overlap >= 0.5; background (label set to 0): < 0.3; 0.45 is dropped.
    windows = [(1, 0.9, 0, 0, 3, 3), (2, 0.5, 5, 2, 8, 5), (3, 0.2, 4, 4, 7, 7),
               (5, 0.45, 1, 6, 4, 9), (4, 0.1, 8, 6, 11, 9)]
    source, root, bgr = _window_setup(tmp_path, windows)
    net = _window_net(tmp_path, source, root,
                      "fg_threshold: 0.5 bg_threshold: 0.3 fg_fraction: 0.5 scale: 0.25",
                      "crop_size: 4 mirror: true mean_value: 100", batch=6)
    fg = [windows[0], windows[1]]
    bg = [windows[2], windows[4]]
    ours.set_random_seed(3)
    mine = ours.Net(net, ours.TRAIN)
    stream = _window_stream(3, True)
    try:
        for _step in range(2):
            mine.forward()
            for k in range(6):
                pool = bg if k < 3 else fg
                w = pool[stream.rand() % len(pool)]
                mirror = stream.rand() % 2
                x1, y1, x2, y2 = w[2:]
                patch = bgr[:, y1:y2 + 1, x1:x2 + 1].astype(np.float32)
                if mirror:
                    patch = patch[:, :, ::-1]
                np.testing.assert_array_equal(mine.blobs["data"].data[k], (patch - 100) * 0.25)
                assert mine.blobs["label"].data[k] == (w[0] if k >= 3 else 0)
    finally:
        mine.close()


@pytest.mark.parametrize("mode,mirrored", [("warp", False), ("warp", True),
                                           ("square", False)])
def test_window_data_context_pad_and_square(tmp_path, mode, mirrored):
    # crop 8, context_pad 2: the region is scaled by 8 / (8 - 4) = 2 about its centre.
    windows = [(1, 1.0, 0, 0, 1, 1), (0, 0.0, 4, 4, 5, 7)]
    source, root, bgr = _window_setup(tmp_path, windows, size=(10, 10))
    img = bgr.transpose(1, 2, 0).copy()        # (H, W, C) BGR, as resize_linear takes
    seed = 1
    if mirrored:               # a seed whose first window is mirrored
        while True:
            stream = _window_stream(seed, mirror=True, train=False)
            stream.rand()
            if stream.rand() % 2:
                break
            seed += 1
    fg_fraction = 0.0 if mode == "square" else 1.0
    net = _window_net(tmp_path, source, root,
                      f'context_pad: 2 crop_mode: "{mode}" fg_fraction: {fg_fraction}',
                      f"crop_size: 8 mirror: {str(mirrored).lower()}", batch=1)
    ours.set_random_seed(seed)
    mine = ours.Net(net, ours.TEST)
    try:
        mine.forward()
        out = mine.blobs["data"].data[0]
    finally:
        mine.close()
    expected = np.zeros((3, 8, 8), np.float32)
    if mode == "warp":
        # Foreground (0,0)-(1,1): centre 1, half 1 -> -1..3, clipped to 0..3 (pad 1 on the
        # left and top). Scale 8/5: the clipped 4 pixels warp to round(6.4) = 6, the
        # padding to round(1.6) = 2; mirrored, the padding moves to the (empty) right side.
        patch = resize_linear(img[0:4, 0:4], 6, 6).transpose(2, 0, 1)
        if mirrored:
            expected[:, 2:8, 0:6] = patch[:, :, ::-1]
        else:
            expected[:, 2:8, 2:8] = patch
    else:
        # Background (4,4)-(5,7): 2 wide, 4 high; its square has half 2 about (5, 6),
        # doubled: 1..9 across, 2..10 down, the last row clipped (pad 1 at the bottom).
        # Scale 8/9: 9 columns warp to 8, the 8 rows to round(7.11) = 7.
        patch = resize_linear(img[2:10, 1:10], 7, 8)
        expected[:, 0:7, 0:8] = patch.transpose(2, 0, 1)
    np.testing.assert_array_equal(out, expected)


def test_window_data_mean_file_and_cache(tmp_path):
    windows = [(2, 0.8, 1, 1, 3, 3), (0, 0.0, 6, 5, 8, 7)]
    source, root, bgr = _window_setup(tmp_path, windows)
    mean = np.random.RandomState(0).uniform(0, 50, size=(3, 5, 7)).astype(np.float32)
    mean_file = str(tmp_path / "mean.binaryproto")
    write_mean(mean, mean_file)
    net = _window_net(tmp_path, source, root, "cache_images: true fg_fraction: 0.5",
                      f'crop_size: 3 mean_file: "{mean_file}"', batch=2)
    mine = ours.Net(net, ours.TEST)
    try:
        mine.forward()
        off = (7 - 3) // 2                      # Caffe centres by the mean's width, both axes
        centre = mean[:, off:off + 3, off:off + 3]
        np.testing.assert_array_equal(mine.blobs["data"].data[0],
                                      bgr[:, 5:8, 6:9].astype(np.float32) - centre)
        np.testing.assert_array_equal(mine.blobs["data"].data[1],
                                      bgr[:, 1:4, 1:4].astype(np.float32) - centre)
        assert mine.blobs["label"].data.tolist() == [0, 2]
    finally:
        mine.close()


def test_window_data_checks(tmp_path):
    source, root, _ = _window_setup(tmp_path, [(1, 0.9, 0, 0, 3, 3), (0, 0.1, 2, 2, 5, 5)])
    def build(param="", transform="crop_size: 4", src=source):
        return ours.Net(_window_net(tmp_path, src, root, param, transform), ours.TEST)
    with pytest.raises(NetError, match="window_data_param.crop_size is not read"):
        build("crop_size: 4")
    with pytest.raises(NetError, match="transform_param.scale is not read"):
        build(transform="crop_size: 4 scale: 2")
    with pytest.raises(NetError, match="crop_size must be set"):
        build(transform="")
    with pytest.raises(NetError, match="needs foreground and background"):
        build("fg_threshold: 0.95")
    bad = _write(tmp_path / "bad.txt", "# 0\na.png 3 10 12\n1\n0 0.9 0 0 3 3\n")
    with pytest.raises(NetError, match="class 0 \\(must be > 0\\)"):
        build(src=bad)
    with pytest.raises(NetError, match='crop_mode must be "warp" or "square"'):
        build('crop_mode: "round"')
