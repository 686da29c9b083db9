"""Saliency of a linear model equals its weights (abs, max over channels); filter grids."""
import numpy as np
import pytest

from deepmammo.caffe.formats.blobproto import array_to_blob
from deepmammo.caffe.formats.caffemodel import write_caffemodel
from deepmammo.caffe.proto import caffe_pb2 as pb
from deepmammo.engine import caffe_module
from deepmammo.report.figures import filter_grid
from deepmammo.report.saliency import class_score_layer, compute_saliency

LINEAR = """name: "Linear"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 3 dim: 3 dim: 5 dim: 5 } } }
layer { name: "score" type: "InnerProduct" bottom: "data" top: "score"
        inner_product_param { num_output: 2 } }
%s"""
SOFTMAX = 'layer { name: "prob" type: "Softmax" bottom: "score" top: "prob" }\n'


def _linear_model(tmp_path, rng, softmax):
    model = tmp_path / ("linear%s.prototxt" % ("_softmax" if softmax else ""))
    model.write_text(LINEAR % (SOFTMAX if softmax else ""))
    w = rng.randn(2, 75).astype(np.float32)
    net = pb.NetParameter(name="Linear")
    layer = net.layer.add(name="score", type="InnerProduct")
    layer.blobs.extend([array_to_blob(w), array_to_blob(rng.randn(2).astype(np.float32))])
    weights = str(tmp_path / "linear.caffemodel")
    write_caffemodel(net, weights)
    return str(model), weights, w


@pytest.mark.parametrize("engine", ["torch", pytest.param("caffe", marks=pytest.mark.caffe)])
@pytest.mark.parametrize("softmax", [True, False])
def test_linear_saliency_is_the_weights(tmp_path, rng, engine, softmax):
    caffe = caffe_module(engine)
    model, weights, w = _linear_model(tmp_path, rng, softmax)
    images = rng.randint(0, 256, (3, 3, 7, 7)).astype(np.uint8)  # cropped to 5x5
    classes = np.array([0, 1, 1])
    maps, batch = compute_saliency(caffe, model, weights, images, classes,
                                   mean=np.full((3, 7, 7), 100, np.float32))
    assert batch.shape == (3, 3, 5, 5)
    expect = np.abs(w.reshape(2, 3, 5, 5)).max(axis=1)[classes]
    np.testing.assert_allclose(maps, expect, rtol=1e-6)


def test_class_score_is_below_the_softmax(tmp_path, rng):
    model, _, _ = _linear_model(tmp_path, rng, True)
    assert class_score_layer(model) == ("score", "score")
    model, _, _ = _linear_model(tmp_path, rng, False)
    assert class_score_layer(model) == ("score", "score")


def test_filter_grid_tiles_filters_and_turns_bgr_to_rgb():
    w = np.zeros((5, 3, 2, 2), np.float32)
    w[0, 0] = 1.0  # filter 0: blue only (BGR channel 0)
    grid = filter_grid(w, pad=1)
    assert grid.shape == (2 * 3 + 1, 3 * 3 + 1, 3)  # 5 filters: 3 columns, 2 rows
    np.testing.assert_array_equal(grid[1:3, 1:3, 2], 1.0)  # shown in the RGB blue channel
    np.testing.assert_array_equal(grid[1:3, 1:3, 0], 0.0)
    grey = filter_grid(np.arange(8, dtype=np.float32).reshape(2, 1, 2, 2))
    assert grey.ndim == 2 and grey.max() == 1.0
    with pytest.raises(ValueError, match="N, C, kh, kw"):
        filter_grid(np.zeros((3, 3)))
