"""Caffe's tools as `deepmammo` subcommands, run as a user runs them (the CLI in a subprocess)
on tiny data, against real Caffe's own tools where the build here has them (the upgrade tools,
extract_features, caffe::shuffle) and against hand-computed values where it cannot run them
(convert_imageset and compute_image_mean need OpenCV, which the build leaves out)."""
import os
import subprocess

import numpy as np
import pytest
from google.protobuf import text_format
from helpers import dm, error_line

from deepmammo.caffe.formats.binaryproto import read_blob, read_mean
from deepmammo.caffe.formats.lmdb_io import LMDBReader, LMDBWriter
from deepmammo.caffe.proto import caffe_pb2 as pb

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "upgrade")


def records(db):
    with LMDBReader(db) as reader:
        return list(reader.datums())


# ---------------------------------------------------------------------------------- upgrade

@pytest.mark.subprocess
@pytest.mark.parametrize("name", ["v0_net.prototxt", "v1_net.prototxt", "v1_deploy.prototxt",
                                  "v0_dropped_fields.prototxt"])
def test_upgrade_net_writes_what_caffes_tool_writes(real_caffe, tmp_path, name):
    from deepmammo.caffe.real import caffe_tool
    source = os.path.join(FIXTURES, name)
    # Caffe's tool exits 1 where it dropped fields (and writes the net all the same).
    subprocess.run([caffe_tool("upgrade_net_proto_text"), source, str(tmp_path / "caffe.pt")],
                   capture_output=True, timeout=120)
    proc = dm("upgrade-net", source, "ours.prototxt", cwd=tmp_path)
    if "dropped" in name:
        assert f"{source}: V0 layer 'fc': field group does not apply" in proc.stderr
    theirs = text_format.Parse((tmp_path / "caffe.pt").read_text(), pb.NetParameter())
    ours = text_format.Parse((tmp_path / "ours.prototxt").read_text(), pb.NetParameter())
    assert ours == theirs


@pytest.mark.subprocess
def test_upgrade_net_binary_and_solver(real_caffe, tmp_path, rng):
    from deepmammo.caffe.real import caffe_tool
    old = text_format.Parse(open(os.path.join(FIXTURES, "v1_deploy.prototxt")).read(),
                            pb.NetParameter())
    blob = old.layers[0].blobs.add(num=1, channels=1, height=2, width=192)
    blob.data.extend(rng.randn(384).astype(np.float32))
    (tmp_path / "old.caffemodel").write_bytes(old.SerializeToString())
    subprocess.run([caffe_tool("upgrade_net_proto_binary"), "old.caffemodel", "caffe.caffemodel"],
                   cwd=tmp_path, check=True, capture_output=True, timeout=120)
    theirs = pb.NetParameter.FromString((tmp_path / "caffe.caffemodel").read_bytes())
    dm("upgrade-net", "--binary", "old.caffemodel", "a.caffemodel", cwd=tmp_path)
    dm("upgrade-net-binary", "old.caffemodel", "b.caffemodel", cwd=tmp_path)
    for out in ("a.caffemodel", "b.caffemodel"):
        assert pb.NetParameter.FromString((tmp_path / out).read_bytes()) == theirs

    source = os.path.join(FIXTURES, "solver_v1.prototxt")
    subprocess.run([caffe_tool("upgrade_solver_proto_text"), source, "caffe_solver.pt"],
                   cwd=tmp_path, check=True, capture_output=True, timeout=120)
    dm("upgrade-solver", source, "solver.prototxt", cwd=tmp_path)
    theirs = text_format.Parse((tmp_path / "caffe_solver.pt").read_text(), pb.SolverParameter())
    ours = text_format.Parse((tmp_path / "solver.prototxt").read_text(), pb.SolverParameter())
    assert ours == theirs and ours.type == "Nesterov"


@pytest.mark.subprocess
def test_upgrade_errors_are_one_line_and_write_nothing(tmp_path):
    source = os.path.join(FIXTURES, "v0_bad_padding.prototxt")
    proc = dm("upgrade-net", source, "out.prototxt", cwd=tmp_path, check=False)
    error_line("upgrade-net", proc.returncode, proc.stderr, source, "'pad'", "'relu'")
    assert os.listdir(tmp_path) == []
    (tmp_path / "broken.prototxt").write_text('layers { name: "x" type: NOT_A_TYPE }\n')
    proc = dm("upgrade-net", "broken.prototxt", "out.prototxt", cwd=tmp_path, check=False)
    error_line("upgrade-net", proc.returncode, proc.stderr, "broken.prototxt:1:")
    proc = dm("upgrade-solver", "missing.prototxt", "out.prototxt", cwd=tmp_path, check=False)
    error_line("upgrade-solver", proc.returncode, proc.stderr, "missing.prototxt")
    current = os.path.join(FIXTURES, "current.prototxt")
    proc = dm("upgrade-net", current, "same.prototxt", cwd=tmp_path)
    assert "already in latest proto format" in proc.stderr


# ------------------------------------------------------------------------- convert-imageset

def _images(folder):
    """Tiny images: a colour PNG, a grey PNG and a 1 x 2 ramp, with their BGR arrays."""
    from PIL import Image
    rng = np.random.RandomState(3)
    rgb = rng.randint(0, 256, (3, 4, 3)).astype(np.uint8)
    grey = rng.randint(0, 256, (3, 4)).astype(np.uint8)
    ramp = np.array([[[0, 0, 0], [255, 255, 255]]], dtype=np.uint8)
    os.makedirs(folder / "a", exist_ok=True)
    Image.fromarray(rgb).save(folder / "a" / "colour.png")
    Image.fromarray(grey).save(folder / "grey.png")
    Image.fromarray(ramp).save(folder / "ramp.png")
    return {"a/colour.png": rgb[..., ::-1], "grey.png": np.repeat(grey[..., None], 3, 2),
            "ramp.png": ramp}


@pytest.mark.subprocess
def test_convert_imageset_keys_and_layout(tmp_path):
    expected = _images(tmp_path / "imgs")
    (tmp_path / "list.txt").write_text("a/colour.png 1\ngone.png 5\ngrey.png 0\n")
    proc = dm("convert-imageset", "imgs/", "list.txt", "db", cwd=tmp_path)
    assert "Could not open or find file imgs/gone.png" in proc.stderr
    got = records(tmp_path / "db")
    # the unreadable line keeps its number: keys 0 and 2, as Caffe's tool writes them
    assert [key for key, _ in got] == ["00000000_a/colour.png", "00000002_grey.png"]
    for (key, datum), label in zip(got, (1, 0)):
        name = key.split("_", 1)[1]
        chw = np.transpose(expected[name], (2, 0, 1))
        assert (datum.channels, datum.height, datum.width) == chw.shape
        assert datum.data == chw.tobytes() and datum.label == label and not datum.encoded


@pytest.mark.subprocess
def test_convert_imageset_gray_resize_and_our_data_layer_reads_it(tmp_path):
    import deepmammo.caffe as caffe
    expected = _images(tmp_path / "imgs")
    (tmp_path / "list.txt").write_text("ramp.png 3\nramp.png 4\n")
    # gflags' spellings, as Caffe's scripts write them, flags before the arguments
    dm("convert-imageset", "-gray", "--resize_height=1", "-resize_width=4", "--check_size=true",
       "--noshuffle", "--encoded=false", "imgs/", "list.txt", "db", cwd=tmp_path)
    got = records(tmp_path / "db")
    # cv::resize INTER_LINEAR of [0, 255] to 4 columns, worked by hand in OpenCV's fixed
    # point: weights (2048, 0), (1536, 512), (512, 1536), (0, 2048) give 0, 63.75 -> 64,
    # 191.25 -> 191, 255.
    assert [np.frombuffer(d.data, np.uint8).tolist() for _, d in got] == [[0, 64, 191, 255]] * 2
    assert (got[0][1].channels, got[0][1].height, got[0][1].width) == (1, 1, 4)
    net_path = tmp_path / "net.prototxt"
    net_path.write_text('layer { name: "d" type: "Data" top: "data" top: "label" '
                        f'data_param {{ source: "{tmp_path / "db"}" batch_size: 2 '
                        'backend: LMDB } }\n')
    net = caffe.Net(str(net_path), caffe.TEST)
    try:
        net.forward()
        assert net.blobs["data"].data.tolist() == [[[[0, 64, 191, 255]]]] * 2
        assert net.blobs["label"].data.tolist() == [3, 4]
    finally:
        net.close()
    assert expected["ramp.png"].shape == (1, 2, 3)


@pytest.mark.subprocess
def test_convert_imageset_shuffle_is_caffes(real_caffe, tmp_path):
    """caffe::shuffle on Caffe's stream seeded as Caffe::set_random_seed(seed) would seed it,
    against real Caffe's own template compiled against the build's headers."""
    from deepmammo.caffe.imageset import caffe_shuffle
    from deepmammo.caffe.real import find_build
    from deepmammo.caffe.rng import CaffeRNG
    build = find_build()
    probe = tmp_path / "probe.cpp"
    probe.write_text(
        '#include <cstdio>\n#include <cstdlib>\n#include <vector>\n'
        '#include "caffe/common.hpp"\n#include "caffe/util/rng.hpp"\n'
        "int main(int argc, char** argv) {\n"
        "  caffe::Caffe::set_random_seed(std::strtoul(argv[1], NULL, 10));\n"
        "  std::vector<int> v(std::atoi(argv[2]));\n"
        "  for (size_t i = 0; i < v.size(); ++i) v[i] = i;\n"
        "  caffe::shuffle(v.begin(), v.end());\n"
        '  for (size_t i = 0; i < v.size(); ++i) std::printf("%d\\n", v[i]);\n'
        "  return 0;\n}\n")
    lib = os.path.join(build, "build", "lib")
    subprocess.run(["g++", "-DCPU_ONLY", "-I" + os.path.join(build, "build", "include"),
                    "-I" + os.path.join(build, "src", "include"), str(probe), "-o",
                    str(tmp_path / "probe"), "-L" + lib, "-lcaffe", "-Wl,-rpath," + lib,
                    "-lglog", "-lboost_system"], check=True, capture_output=True, timeout=300)
    for seed, n in ((1701, 1000), (0, 7), (4294967295, 2)):
        out = subprocess.run([str(tmp_path / "probe"), str(seed), str(n)], check=True,
                             capture_output=True, text=True).stdout.split()
        assert [int(x) for x in out] == caffe_shuffle(list(range(n)), CaffeRNG(seed))

    _images(tmp_path / "imgs")
    names = ["a/colour.png", "grey.png", "ramp.png"] * 3
    (tmp_path / "list.txt").write_text("".join(f"{n} {i}\n" for i, n in enumerate(names)))
    dm("convert-imageset", "--shuffle", "imgs/", "list.txt", "db", "--seed", 1701,
       cwd=tmp_path)
    order = caffe_shuffle(list(range(len(names))), CaffeRNG(1701))
    got = records(tmp_path / "db")
    assert [d.label for _, d in got] == order
    assert [k for k, _ in got] == [f"{i:08d}_{names[j]}" for i, j in enumerate(order)]


@pytest.mark.subprocess
def test_convert_imageset_encoded_and_compute_mean(tmp_path):
    _images(tmp_path / "imgs")
    (tmp_path / "list.txt").write_text("grey.png 0\na/colour.png 1\n")
    dm("convert-imageset", "imgs/", "list.txt", "raw", cwd=tmp_path)
    dm("convert-imageset", "imgs/", "list.txt", "enc", "--encoded", cwd=tmp_path)
    encoded = records(tmp_path / "enc")
    assert all(d.encoded and not d.channels for _, d in encoded)
    # a colour image of the named type is stored as its file's bytes (ReadFileToDatum)
    assert encoded[1][1].data == (tmp_path / "imgs" / "a" / "colour.png").read_bytes()
    proc = dm("compute-mean", "raw", "raw_mean.binaryproto", cwd=tmp_path)
    raw = [np.frombuffer(d.data, np.uint8).astype(np.float32) for _, d in records(
        tmp_path / "raw")]
    # the grey PNG decodes to one channel (IMREAD_UNCHANGED), the colour one to three: the
    # encoded database's records differ in size, which compute_image_mean refuses
    proc = dm("compute-mean", "enc", cwd=tmp_path, check=False)
    error_line("compute-mean", proc.returncode, proc.stderr, "enc: record 00000001_a/colour.png")
    mean = read_mean(tmp_path / "raw_mean.binaryproto")
    assert np.array_equal(mean.ravel(), (raw[0] + raw[1]) / np.float32(2))
    blob = read_blob(tmp_path / "raw_mean.binaryproto")
    assert (blob.num, blob.channels, blob.height, blob.width) == (1, 3, 3, 4)

    (tmp_path / "list2.txt").write_text("a/colour.png 1\na/colour.png 2\n")
    dm("convert-imageset", "imgs/", "list2.txt", "enc2", "--encode_type", "png", cwd=tmp_path)
    dm("convert-imageset", "imgs/", "list2.txt", "raw2", cwd=tmp_path)
    dm("compute-mean", "enc2", "enc2.binaryproto", cwd=tmp_path)
    dm("compute-mean", "raw2", "raw2.binaryproto", cwd=tmp_path)
    assert np.array_equal(read_mean(tmp_path / "enc2.binaryproto"),
                          read_mean(tmp_path / "raw2.binaryproto"))


@pytest.mark.subprocess
def test_compute_mean_sums_in_float32_in_key_order(tmp_path):
    """float_data records whose float32 running sum rounds: the mean is Caffe's, not the
    exact one."""
    values = [np.float32(v) for v in (1.0, 1e8, -1e8, 3.0, 0.1)]
    with LMDBWriter(tmp_path / "db") as db:
        for i, v in enumerate(values):
            datum = pb.Datum(channels=2, height=1, width=1)
            datum.float_data.extend([v, v * 2])
            db.put_datum("%05d" % i, datum)
    proc = dm("compute-mean", "db", "mean.binaryproto", cwd=tmp_path)
    total = np.zeros(2, np.float32)
    for v in values:
        total = total + np.array([v, v * 2], np.float32)
    expected = total / np.float32(len(values))
    assert np.array_equal(read_mean(tmp_path / "mean.binaryproto").ravel(), expected)
    assert expected[0] != np.float32(np.mean(np.array(values, np.float64)))
    assert f"mean_value channel [0]: {float(expected[0]):.9g}" in proc.stdout


@pytest.mark.subprocess
def test_convert_imageset_refusals_are_one_line(tmp_path):
    _images(tmp_path / "imgs")
    (tmp_path / "list.txt").write_text("a/colour.png 1\nramp.png 0\n")
    proc = dm("convert-imageset", "imgs/", "list.txt", "db", "--check_size", cwd=tmp_path,
              check=False)
    error_line("convert-imageset", proc.returncode, proc.stderr, "imgs/ramp.png",
               "--check_size")
    assert not (tmp_path / "db").exists()
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".db.")]
    (tmp_path / "db").mkdir()
    proc = dm("convert-imageset", "imgs/", "list.txt", "db", cwd=tmp_path, check=False)
    error_line("convert-imageset", proc.returncode, proc.stderr, "db", "exists")
    proc = dm("compute-mean", "nowhere", cwd=tmp_path, check=False)
    error_line("compute-mean", proc.returncode, proc.stderr, "nowhere")
    proc = dm("convert-imageset", "imgs", "list.txt", "db2", cwd=tmp_path, check=False)
    error_line("convert-imageset", proc.returncode, proc.stderr, "list.txt", "none of its 2",
               "ends with a slash")
    assert not (tmp_path / "db2").exists()


# ------------------------------------------------------------------------- extract-features

FEATURE_NET = """name: "features"
layer { name: "data" type: "Data" top: "data" top: "label"
  transform_param { scale: 0.00390625 }
  data_param { source: "db" batch_size: 2 backend: LMDB } }
layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.1 }
                        bias_filler { type: "constant" value: 0.2 } } }
layer { name: "relu" type: "ReLU" bottom: "fc" top: "relu" }
"""


@pytest.mark.subprocess
def test_extract_features_matches_caffes_tool(real_caffe, tmp_path):
    from deepmammo.caffe.real import caffe_tool
    _images(tmp_path / "imgs")
    (tmp_path / "list.txt").write_text("a/colour.png 1\na/colour.png 2\ngrey.png 0\n")
    dm("convert-imageset", "imgs/", "list.txt", "db", cwd=tmp_path)
    (tmp_path / "net.prototxt").write_text(FEATURE_NET)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        real_caffe.set_random_seed(5)
        net = real_caffe.Net("net.prototxt", real_caffe.TEST)
        net.save("w.caffemodel")
        del net
    finally:
        os.chdir(cwd)
    env = dict(os.environ, GLOG_minloglevel="2")
    subprocess.run([caffe_tool("extract_features"), "w.caffemodel", "net.prototxt",
                    "fc,data", "caffe_fc,caffe_data", "2", "lmdb", "CPU"], cwd=tmp_path,
                   env=env, check=True, capture_output=True, timeout=300)
    proc = dm("extract-features", "w.caffemodel", "net.prototxt", "fc,data", "fc_db,data_db",
              2, "lmdb", "CPU", cwd=tmp_path)
    assert "fc_db: 4 items" in proc.stdout
    for ours_db, caffe_db in (("fc_db", "caffe_fc"), ("data_db", "caffe_data")):
        ours, theirs = records(tmp_path / ours_db), records(tmp_path / caffe_db)
        assert [k for k, _ in ours] == [k for k, _ in theirs] == [f"{i:010d}" for i in range(4)]
        for (_, a), (_, b) in zip(ours, theirs):
            assert (a.channels, a.height, a.width) == (b.channels, b.height, b.width)
            assert not a.HasField("label") and not len(a.data)
            np.testing.assert_allclose(a.float_data, b.float_data, rtol=1e-5, atol=1e-6)
    assert (ours[0][1].channels, ours[0][1].height, ours[0][1].width) == (3, 3, 4)

    proc = dm("extract-features", "w.caffemodel", "net.prototxt", "nope", "x_db", 1,
              cwd=tmp_path, check=False)
    error_line("extract-features", proc.returncode, proc.stderr, "net.prototxt", "'nope'")
    proc = dm("extract-features", "net.prototxt", "w.caffemodel", "fc", "y_db", 1,
              cwd=tmp_path, check=False)
    error_line("extract-features", proc.returncode, proc.stderr, "WEIGHTS MODEL")
    assert not (tmp_path / "x_db").exists() and not (tmp_path / "y_db").exists()


@pytest.mark.subprocess
def test_device_query(tmp_path):
    import torch
    proc = dm("device-query", cwd=tmp_path)
    if torch.cuda.is_available():
        assert "Device id:" in proc.stdout and "Name:" in proc.stdout
    else:
        assert "No cuda device present." in proc.stdout
        proc = dm("device-query", "--gpu", "0", cwd=tmp_path, check=False)
        error_line("device-query", proc.returncode, proc.stderr, "--gpu 0")


def test_images_read_as_opencv_reads_them(tmp_path):
    """cv::imread's conversions, on pixels worked by hand (the same conversions were checked
    pixel for pixel against OpenCV 4.5 when this was written)."""
    from PIL import Image

    from deepmammo.caffe.formats.image import decode_image, read_image
    Image.fromarray(np.array([[[10, 200, 30], [255, 0, 0]]], np.uint8)).save(tmp_path / "c.png")
    # libpng's rgb_to_gray, 15-bit weights truncated: (10*9797 + 200*19234 + 30*3737) >> 15
    assert read_image(tmp_path / "c.png", is_color=False).tolist() == [[123, 76]]
    Image.fromarray(np.array([[[10, 200, 30], [255, 0, 0]]], np.uint8)).save(tmp_path / "c.bmp")
    # other formats: cv::cvtColor's 14-bit weights, rounded
    assert read_image(tmp_path / "c.bmp", is_color=False).tolist() == [[124, 76]]
    assert read_image(tmp_path / "c.png").tolist() == [[[30, 200, 10], [0, 0, 255]]]
    Image.fromarray(np.array([[0x1234, 0xFFFF]], np.uint16)).save(tmp_path / "w.png")
    assert read_image(tmp_path / "w.png", is_color=False).tolist() == [[0x12, 0xFF]]
    rgba = np.array([[[1, 2, 3, 4]]], np.uint8)
    Image.fromarray(rgba).save(tmp_path / "a.png")
    assert read_image(tmp_path / "a.png").tolist() == [[[3, 2, 1]]]
    assert decode_image((tmp_path / "a.png").read_bytes()).tolist() == [[[3, 2, 1, 4]]]


def test_resize_rounds_as_opencvs_vector_code():
    """A column [117, 192] to 5 rows. Row 1 sits at 0.1: weights 1843 and 205 (of 2048), an
    exact value of 124.507. OpenCV's vector code shifts each 22-bit row sum down by 4, keeps
    the high 16 bits of each product ((14976 * 1843) >> 16 = 421, (24576 * 205) >> 16 = 76)
    and rounds off 2 more bits: (421 + 76 + 2) >> 2 = 124, where exact rounding gives 125."""
    from deepmammo.caffe.formats.image import resize_linear
    column = np.array([[117], [192]], np.uint8)
    assert resize_linear(column, 5, 1).ravel().tolist() == [117, 124, 155, 184, 192]
    assert resize_linear(column, 2, 1).tolist() == column.tolist()
