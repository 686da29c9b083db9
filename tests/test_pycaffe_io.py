"""caffe.io against real pycaffe's caffe.io on the same arrays and files: image loading (8 and
16 bit, grey, colour, alpha, palette, 1-bit), resizing, oversampling, the Transformer, and the
BlobProto / Datum conversions, to the bit."""
import numpy as np
import pytest
from PIL import Image

import deepmammo.caffe as caffe


@pytest.fixture
def real_io(real_caffe, monkeypatch):
    """Real pycaffe's caffe.io. Its load_image passes `as_grey`, which scikit-image renamed
    `as_gray` (pycaffe predates it): the keyword is translated, nothing else is changed."""
    import skimage.io
    imread = skimage.io.imread

    def renamed(fname, as_grey=False, **kwargs):
        return imread(fname, as_gray=as_grey, **kwargs)

    monkeypatch.setattr(skimage.io, "imread", renamed)
    return real_caffe.io


def _image_files(tmp_path):
    rs = np.random.RandomState(0)
    grey8 = rs.randint(0, 256, (6, 8)).astype(np.uint8)
    rgb = rs.randint(0, 256, (6, 8, 3)).astype(np.uint8)
    images = {
        "grey8": Image.fromarray(grey8),
        "grey16": Image.fromarray(rs.randint(0, 65536, (6, 8)).astype(np.uint16)),
        "rgb": Image.fromarray(rgb),
        "rgba": Image.fromarray(rs.randint(0, 256, (6, 8, 4)).astype(np.uint8)),
        "palette": Image.fromarray(rgb).convert("P"),
        "bilevel": Image.fromarray(grey8).convert("1"),
    }
    paths = {}
    for name, im in images.items():
        paths[name] = str(tmp_path / f"{name}.png")
        im.save(paths[name])
    return paths


@pytest.mark.parametrize("color", [True, False])
def test_load_image_matches_pycaffe(real_io, tmp_path, color):
    for name, path in _image_files(tmp_path).items():
        ours, theirs = caffe.io.load_image(path, color), real_io.load_image(path, color)
        assert ours.dtype == theirs.dtype == np.float32, name
        assert ours.shape == theirs.shape == (6, 8, 3 if color else 1), name
        np.testing.assert_array_equal(ours, theirs, err_msg=name)


def test_load_image_scales_by_the_bit_depth(tmp_path):
    values = np.array([[0, 1000, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    im = caffe.io.load_image(str(tmp_path / "deep.png"), color=False)
    np.testing.assert_array_equal(im[..., 0], (values / 65535.0).astype(np.float32))
    Image.fromarray(np.array([[0, 51, 255]], np.uint8)).save(tmp_path / "byte.png")
    im = caffe.io.load_image(str(tmp_path / "byte.png"))
    assert im.shape == (1, 3, 3)
    np.testing.assert_array_equal(im[0, :, 1], np.float32([0, 0.2, 1]))


def test_resize_image_matches_pycaffe(real_io):
    rs = np.random.RandomState(1)
    images = [rs.rand(8, 10, 3).astype(np.float32) * 200 - 50,     # shifted range: the border
              rs.rand(8, 10, 1).astype(np.float32),
              rs.rand(8, 10, 3),                                   # float64 stays float64 inside
              rs.rand(8, 10, 4).astype(np.float32),                # other channel counts: zoom
              rs.rand(8, 10, 2),
              np.full((8, 10, 3), 7, np.float32)]                  # constant
    for im in images:
        for dims in [(16, 13), (4, 5), (8, 10), (3, 17)]:
            for order in (0, 1, 3):
                ours = caffe.io.resize_image(im, dims, order)
                theirs = real_io.resize_image(im, dims, order)
                assert ours.dtype == theirs.dtype == np.float32
                np.testing.assert_array_equal(ours, theirs,
                                              err_msg=f"{im.shape} {im.dtype} {dims} {order}")


def test_oversample_matches_pycaffe(real_io):
    rs = np.random.RandomState(2)
    for images, crop in [(rs.rand(2, 9, 11, 3), (5, 6)), (rs.rand(1, 8, 8, 2), (3, 3)),
                         (rs.rand(1, 7, 9, 1).astype(np.float32), (4, 4))]:
        ours, theirs = caffe.io.oversample(images, crop), real_io.oversample(images, crop)
        assert ours.shape == (10 * len(images),) + crop + images.shape[-1:]
        np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("mean", [np.array([104.0, 117.0, 123.0]), "image", "other size"])
def test_transformer_matches_pycaffe(real_io, mean):
    rs = np.random.RandomState(3)
    if isinstance(mean, str):
        mean = rs.rand(3, 6, 7) * 100 if mean == "image" else rs.rand(3, 9, 5) * 100
    img = rs.rand(8, 10, 3).astype(np.float32)
    results = []
    for io in (caffe.io, real_io):
        t = io.Transformer({"data": (1, 3, 6, 7)})
        t.set_transpose("data", (2, 0, 1))
        t.set_channel_swap("data", (2, 1, 0))
        t.set_raw_scale("data", 255)
        t.set_mean("data", mean.copy())
        t.set_input_scale("data", 0.017)
        x = t.preprocess("data", img.copy())
        results.append((x, t.deprocess("data", x), t.mean["data"]))
    for ours, theirs in zip(*results):
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
        np.testing.assert_array_equal(ours, theirs)


def test_transformer_refusals_match_pycaffe(real_io):
    img = np.zeros((6, 7, 3), np.float32)
    calls = [lambda t: t.set_mean("data", np.zeros(4)),
             lambda t: t.set_mean("data", np.zeros((1, 2, 3, 4))),
             lambda t: t.set_transpose("data", (1, 0)),
             lambda t: t.set_channel_swap("data", (1, 0)),
             lambda t: t.preprocess("image", img)]
    for call in calls:
        errors = []
        for io in (caffe.io, real_io):
            with pytest.raises(Exception) as info:
                call(io.Transformer({"data": (1, 3, 6, 7)}))
            errors.append((type(info.value), str(info.value)))
        assert errors[0] == errors[1]


def test_transformer_means_pycaffe_cannot_resize():
    """A constant mean image or an (H, W) mean of another size (pycaffe gives NaNs or
    fails): resized as one would expect."""
    t = caffe.io.Transformer({"data": (1, 3, 6, 7)})
    t.set_mean("data", np.full((3, 4, 4), 5.0))
    np.testing.assert_array_equal(t.mean["data"], np.full((3, 6, 7), 5.0))
    t.set_mean("data", np.arange(16.0).reshape(4, 4))
    assert t.mean["data"].shape == (1, 6, 7)
    assert t.mean["data"].min() >= 0 and t.mean["data"].max() <= 15


def test_blobproto_conversions_match_pycaffe(real_io):
    pb = caffe.proto.caffe_pb2
    # pycaffe's own test_io cases
    blob = pb.BlobProto()
    blob.data.extend([0.0] * 100)
    blob.num, blob.channels, blob.height, blob.width = (1, 1, 10, 10)
    assert caffe.io.blobproto_to_array(blob).shape == (1, 1, 10, 10)
    blob = pb.BlobProto()
    blob.data.extend([0.0] * 100)
    blob.shape.dim.extend([10, 10])
    assert caffe.io.blobproto_to_array(blob).shape == (10, 10)
    blob = pb.BlobProto()
    blob.data.extend([0.0] * 100)
    with pytest.raises(ValueError):
        caffe.io.blobproto_to_array(blob)
    blob = pb.BlobProto()
    blob.data.append(123)
    assert caffe.io.blobproto_to_array(blob) == 123
    # against real pycaffe (its messages are of package `caffe`: compared as bytes)
    rs = np.random.RandomState(4)
    for arr in [rs.randn(2, 3).astype(np.float32), rs.randn(4), np.arange(6).reshape(1, 2, 3)]:
        ours = caffe.io.array_to_blobproto(arr, diff=arr * 2)
        theirs = real_io.array_to_blobproto(arr, diff=arr * 2)
        assert ours.SerializeToString() == theirs.SerializeToString()
        for diff in (False, True):
            a = caffe.io.blobproto_to_array(ours, return_diff=diff)
            b = real_io.blobproto_to_array(theirs, return_diff=diff)
            assert a.dtype == b.dtype and a.shape == b.shape
            np.testing.assert_array_equal(a, b)
    arrays = [rs.randn(2, 2), rs.randn(3).astype(np.float32)]
    data = caffe.io.arraylist_to_blobprotovector_str(arrays)
    assert data == real_io.arraylist_to_blobprotovector_str(arrays)
    for a, b in zip(caffe.io.blobprotovector_str_to_arraylist(data),
                    real_io.blobprotovector_str_to_arraylist(data)):
        np.testing.assert_array_equal(a, b)


def test_datum_conversions_match_pycaffe(real_io):
    rs = np.random.RandomState(5)
    cases = [(rs.randint(0, 255, (3, 4, 5)).astype(np.uint8), 3), (rs.randn(1, 2, 3), None),
             (np.ones((10, 10, 3)), 1), (np.ones((10, 10, 3)), None)]
    for arr, label in cases:
        ours, theirs = caffe.io.array_to_datum(arr, label), real_io.array_to_datum(arr, label)
        assert ours.SerializeToString() == theirs.SerializeToString()
        assert ours.HasField("label") == (label is not None)
        a, b = caffe.io.datum_to_array(ours), real_io.datum_to_array(theirs)
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    with_label = caffe.io.array_to_datum(np.ones((10, 10, 3)), label=1)
    without = caffe.io.array_to_datum(np.ones((10, 10, 3)))
    assert len(with_label.SerializeToString()) > len(without.SerializeToString())
    with pytest.raises(ValueError, match="Incorrect array shape"):
        caffe.io.array_to_datum(np.ones((2, 2)))
