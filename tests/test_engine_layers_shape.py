"""Shape, routing and reduction layers (ArgMax, BatchReindex, Crop, Deconvolution, Filter,
Im2col, Reshape, Slice, Tile, Reduction, SPP, Parameter), stochastic pooling, in-place LRN,
and Concat/Eltwise/Flatten/Split/Silence in full, through our Net and real pycaffe with the
same weights and inputs: forward tops, backward bottom and parameter diffs agree to float
rounding (TOL relative), indices and selections exactly.

Real CPU Caffe aborts the whole process on a failed CHECK or a NOT_IMPLEMENTED, so nets it
would abort on (stochastic pooling, force_backward into an index input, the refusals) run on
the engine only, or in a child process where the abort itself is what is tested.
"""
import os
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import pytest
from layer_nets import check, input_layer, layer_net

import deepmammo.caffe as ours
from deepmammo.caffe.layers.spp import level_geometry
from deepmammo.caffe.netstate import NetError
from deepmammo.caffe.rng import CaffeRNG


def _net(body, shape=(2, 3, 4, 5), force_backward=True, extra_inputs=""):
    return layer_net(body, shape, force_backward, extra_inputs)


def _ours(text, phase=1):
    """Our Net alone, for what real Caffe would abort on."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "net.prototxt")
        with open(path, "w") as f:
            f.write(text)
        return ours.Net(path, phase)


def _refused(text, *words, phase=1):
    with pytest.raises(NetError) as info:
        _ours(text, phase)
    for word in words:
        assert word in str(info.value)
    return str(info.value)


_CONV = 'layer { name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param { num_output: 2 kernel_size: 1 } }\n'


def _sumsq_loss(bottom, name="loss"):
    """A loss whose diff on `bottom` is `bottom` itself: random where the data is."""
    return (f'layer {{ name: "{name}" type: "Reduction" bottom: "{bottom}" top: "{name}" '
            f'reduction_param {{ operation: SUMSQ }} loss_weight: 0.5 }}\n')


# ---------------------------------------------------------------- Reshape
RESHAPE = {
    "copy_infer": ("shape { dim: 0 dim: -1 }", (2, 60)),
    "copy_two_infer_last": ("shape { dim: 0 dim: 0 dim: -1 dim: 10 }", (2, 3, 2, 10)),
    "axis1_num_axes2": ("axis: 1 num_axes: 2 shape { dim: -1 }", (2, 12, 5)),
    "insert_at_end": ("axis: -1 num_axes: 0 shape { dim: 1 dim: 1 }", (2, 3, 4, 5, 1, 1)),
    "split_axis": ("axis: 1 num_axes: 1 shape { dim: 3 dim: 1 }", (2, 3, 1, 4, 5)),
    "axis_neg2": ("axis: -2 shape { dim: 5 dim: 1 }", (2, 3, 4, 5, 1)),
    "all_explicit": ("shape { dim: 6 dim: 20 }", (6, 20)),
}


@pytest.mark.parametrize("variant", sorted(RESHAPE))
def test_reshape(real_caffe, variant):
    spec, expected = RESHAPE[variant]
    body = f'layer {{ name: "r" type: "Reshape" bottom: "data" top: "r" reshape_param {{ {spec} }} }}'
    report = check(real_caffe, _net(body))
    assert report.ours.blobs["r"].shape == expected


def test_reshape_refusals():
    body = 'layer {{ name: "r" type: "Reshape" bottom: "data" top: "{}" reshape_param {{ {} }} }}'
    _refused(_net(body.format("data", "shape { dim: -1 }")), "in-place")
    _refused(_net(body.format("r", "shape { dim: -1 dim: -1 }")), "multiple -1")
    _refused(_net(body.format("r", "shape { dim: 7 dim: -1 }")), "divisible")
    _refused(_net(body.format("r", "axis: 3 num_axes: 2 shape { dim: -1 }")), "out of range")
    _refused(_net(body.format("r", "axis: 3 shape { dim: 0 dim: 0 }")), "no corresponding")


# ---------------------------------------------------------------- Slice
SLICE = {
    "points_axis1": ("slice_point: 1 slice_point: 3", 3, (2, 4, 3, 2)),
    "points_axis2": ("axis: 2 slice_point: 2", 2, (2, 4, 3, 2)),
    "equal_axis1": ("", 2, (2, 4, 3, 2)),
    "equal_axis0": ("axis: 0", 2, (2, 4, 3, 2)),
    "slice_dim": ("slice_dim: 3 slice_point: 1", 2, (2, 4, 3, 2)),
    "neg_axis": ("axis: -2 slice_point: 1 slice_point: 2", 3, (2, 4, 3, 2)),
    "one_top": ("axis: 2", 1, (2, 4, 3, 2)),
}


@pytest.mark.parametrize("variant", sorted(SLICE))
def test_slice(real_caffe, variant):
    spec, tops, shape = SLICE[variant]
    names = " ".join(f'top: "s{i}"' for i in range(tops))
    body = f'layer {{ name: "s" type: "Slice" bottom: "data" {names} slice_param {{ {spec} }} }}'
    check(real_caffe, _net(body, shape))


def test_slice_one_top_in_place(real_caffe):
    body = ('layer { name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param { num_output: 2 kernel_size: 1 } }\n'
            'layer { name: "s" type: "Slice" bottom: "c" top: "c" slice_param { axis: 2 } }')
    check(real_caffe, _net(body))


def test_slice_refusals():
    body = 'layer {{ name: "s" type: "Slice" bottom: "data" {} slice_param {{ {} }} }}'
    _refused(_net(body.format('top: "data" top: "b"', "")), "same blob")
    _refused(_net(body.format('top: "a" top: "b"', "axis: 1 slice_dim: 1")), "not both")
    _refused(_net(body.format('top: "a" top: "b"', "slice_point: 2 slice_point: 3")),
             "slice_point values")
    _refused(_net(body.format('top: "a" top: "b"', "axis: 3")), "evenly divide")
    _refused(_net(body.format('top: "a" top: "b"', "slice_point: 7")), "beyond")


# ---------------------------------------------------------------- Tile
@pytest.mark.parametrize("spec,shape", [("tiles: 3", (2, 3, 2, 2)), ("axis: 0 tiles: 2", (2, 3, 2)),
                                        ("axis: -1 tiles: 2", (2, 3, 2)), ("axis: 2 tiles: 4", (2, 1, 3, 2)),
                                        ("axis: 1 tiles: 1", (3, 2))])
def test_tile(real_caffe, spec, shape):
    body = f'layer {{ name: "t" type: "Tile" bottom: "data" top: "t" tile_param {{ {spec} }} }}'
    check(real_caffe, _net(body, shape))


def test_tile_refusals():
    body = 'layer {{ name: "t" type: "Tile" bottom: "data" top: "{}" tile_param {{ {} }} }}'
    _refused(_net(body.format("t", "axis: 1")), "tiles must be specified")
    _refused(_net(body.format("t", "tiles: 0")), "positive")
    _refused(_net(body.format("data", "tiles: 2")), "same blob")


# ---------------------------------------------------------------- Crop
CROP = {
    "default_axis2_no_offset": ("", (2, 3, 4, 5)),
    "one_offset_broadcast": ("offset: 2", (2, 3, 4, 5)),
    "offsets_per_axis": ("offset: 1 offset: 3", (2, 3, 4, 5)),
    "axis1_three_offsets": ("axis: 1 offset: 1 offset: 0 offset: 2", (2, 2, 4, 5)),
    "axis0_one_offset": ("axis: 0 offset: 1", (1, 2, 4, 5)),
    "axis_neg1": ("axis: -1 offset: 3", (2, 3, 7, 5)),
}


@pytest.mark.parametrize("variant", sorted(CROP))
def test_crop(real_caffe, variant):
    spec, ref_shape = CROP[variant]
    body = f'layer {{ name: "crop" type: "Crop" bottom: "data" bottom: "ref" top: "crop" crop_param {{ {spec} }} }}'
    report = check(real_caffe, _net(body, (2, 3, 7, 8), extra_inputs=input_layer("ref", ref_shape)))
    assert report.ours.blobs["crop"].shape[-2:] == tuple(ref_shape[-2:])
    assert not report.ours.blobs["ref"].diff.any()


def test_crop_refusals():
    body = 'layer {{ name: "crop" type: "Crop" bottom: "data" bottom: "ref" top: "crop" crop_param {{ {} }} }}'
    ref = input_layer("ref", (2, 3, 4, 5))
    _refused(_net(body.format("offset: 1 offset: 2 offset: 3"), (2, 3, 7, 8), extra_inputs=ref),
             "number of offset values")
    _refused(_net(body.format("offset: 4"), (2, 3, 7, 8), extra_inputs=ref), "out-of-bounds")


# ---------------------------------------------------------------- BatchReindex
def test_batch_reindex(real_caffe):
    # Index input read as floats truncated to int; repeated items sum their diffs.
    # No force_backward (Caffe aborts when asked for the index's diff): a learnable layer
    # below makes the data need backward.
    extra = input_layer("idx", (6,))
    body = (_CONV + 'layer { name: "r" type: "BatchReindex" bottom: "c" bottom: "idx" top: "r" }\n'
            + _sumsq_loss("r"))
    idx = np.array([2, 0, 2, 1, 0.7, 2.9], np.float32)
    report = check(real_caffe, _net(body, (3, 2, 2, 3), force_backward=False, extra_inputs=extra),
                    phase=0, inputs={"idx": idx})
    assert report.ours.blobs["r"].shape == (6, 2, 2, 3)
    assert report.ours.blobs["c"].diff.any()


def test_batch_reindex_refuses_index_backward_and_bad_indices():
    extra = input_layer("idx", (2,))
    body = 'layer { name: "r" type: "BatchReindex" bottom: "data" bottom: "idx" top: "r" }'
    net = _ours(_net(body, (3, 2), extra_inputs=extra))
    net.blobs["idx"].data[...] = [0, 3]
    with pytest.raises(NetError, match="outside the batch"):
        net.forward()
    net.blobs["idx"].data[...] = [0, 2]
    net.forward()
    with pytest.raises(NetError, match="cannot backpropagate to the index"):
        net.backward()
    _refused(_net(body, (3, 2), extra_inputs=input_layer("idx", (2, 1))), "1-D")


# ---------------------------------------------------------------- Filter
def test_filter(real_caffe):
    extra = input_layer("sel", (5, 1))
    body = (_CONV + 'layer { name: "d2" type: "Parameter" top: "d2" parameter_param { shape { dim: 5 dim: 4 } } }\n'
            'layer { name: "f" type: "Filter" bottom: "c" bottom: "d2" bottom: "sel" top: "f1" top: "f2" }\n'
            + _sumsq_loss("f1", "l1") + _sumsq_loss("f2", "l2"))
    sel = np.array([[0], [1.5], [0], [-2], [1]], np.float32)
    report = check(real_caffe, _net(body, (5, 3, 2, 2), force_backward=False, extra_inputs=extra),
                    phase=0, inputs={"sel": sel})
    net = report.ours
    assert net.blobs["f1"].shape == (3, 2, 2, 2) and net.blobs["f2"].shape == (3, 4)
    # Backward reaches only the selected items.
    for name in ("c", "d2"):
        diff = net.blobs[name].diff
        assert not diff[[0, 2]].any() and diff[[1, 3, 4]].all()


def test_filter_one_bottom_1d_selector(real_caffe):
    extra = input_layer("sel", (4,))
    body = ('layer { name: "c" type: "InnerProduct" bottom: "data" top: "c" inner_product_param { num_output: 2 } }\n'
            'layer { name: "f" type: "Filter" bottom: "c" bottom: "sel" top: "f" }\n' + _sumsq_loss("f"))
    check(real_caffe, _net(body, (4, 3), force_backward=False, extra_inputs=extra), phase=0,
           inputs={"sel": np.array([1, 1, 0, 1], np.float32)})


def test_filter_refusals():
    extra = input_layer("sel", (2, 1))
    body = 'layer {{ name: "f" type: "Filter" bottom: "data" bottom: "sel" {} }}'
    _refused(_net(body.format('top: "a" top: "b"'), (2, 3), extra_inputs=extra), "one top per")
    _refused(_net(body.format('top: "f"'), (3, 3), extra_inputs=extra), "0th dimension")
    _refused(_net(body.format('top: "f"'), (2, 3), extra_inputs=input_layer("sel", (2, 2))), "singletons")
    net = _ours(_net(body.format('top: "f"'), (2, 3), extra_inputs=extra))
    net.blobs["sel"].data[...] = [[1], [0]]
    net.forward()
    with pytest.raises(NetError, match="cannot backpropagate to the selector"):
        net.backward()


# ---------------------------------------------------------------- Parameter
def test_parameter(real_caffe):
    body = ('layer { name: "p" type: "Parameter" top: "p" parameter_param { shape { dim: 2 dim: 3 dim: 4 dim: 5 } } }\n'
            'layer { name: "prod" type: "Eltwise" bottom: "data" bottom: "p" top: "prod" eltwise_param { operation: PROD } }')
    report = check(real_caffe, _net(body))
    # The top shares the blob's data and diff: a second backward assigns the diff, as in Caffe.
    report.ours.backward()
    report.real.backward()
    np.testing.assert_allclose(report.ours.params["p"][0].diff, report.real.params["p"][0].diff,
                               rtol=1e-6)
    np.testing.assert_array_equal(report.ours.params["p"][0].diff, report.ours.blobs["p"].diff)


def test_parameter_starts_at_zero(real_caffe, tmp_path):
    text = _net('layer { name: "p" type: "Parameter" top: "p" parameter_param { shape { dim: 3 } } }')
    path = tmp_path / "p.prototxt"
    path.write_text(text)
    real = real_caffe.Net(str(path), 1)
    mine = ours.Net(str(path), 1)
    assert mine.params["p"][0].shape == (3,) and not mine.params["p"][0].data.any()
    np.testing.assert_array_equal(mine.params["p"][0].data, real.params["p"][0].data)


# ---------------------------------------------------------------- Reduction
REDUCTION = {
    "sum_all": ("", (2, 3, 4)),
    "sum_axis1_coeff": ("axis: 1 coeff: -1.5", (2, 3, 4)),
    "asum_axis1": ("operation: ASUM axis: 1 coeff: 2", (2, 3, 4)),
    "asum_all": ("operation: ASUM", (2, 3)),
    "sumsq_last": ("operation: SUMSQ axis: -1 coeff: 0.3", (2, 3, 4)),
    "mean_axis1": ("operation: MEAN axis: 1", (2, 3, 5)),
    "mean_axis2_coeff": ("operation: MEAN axis: 2 coeff: 3", (2, 3, 7)),
    "mean_all": ("operation: MEAN", (3, 7)),
}


@pytest.mark.parametrize("variant", sorted(REDUCTION))
def test_reduction(real_caffe, variant):
    spec, shape = REDUCTION[variant]
    x = np.random.RandomState(8).randn(*shape).astype(np.float32)
    x.reshape(-1)[::5] = 0          # ASUM's sign(0) = 0
    body = f'layer {{ name: "r" type: "Reduction" bottom: "data" top: "r" reduction_param {{ {spec} }} }}'
    check(real_caffe, _net(body, shape), inputs={"data": x})


def test_reduction_as_loss(real_caffe):
    body = ('layer { name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param { num_output: 2 kernel_size: 1 } }\n'
            'layer { name: "r" type: "Reduction" bottom: "c" top: "r" reduction_param { operation: MEAN coeff: 2 } loss_weight: 0.7 }')
    check(real_caffe, _net(body, force_backward=False), phase=0)


# ---------------------------------------------------------------- ArgMax
ARGMAX = {
    "default": "",
    "top3": "top_k: 3",
    "top3_max_val": "top_k: 3 out_max_val: true",
    "axis1": "axis: 1 top_k: 2",
    "axis1_max_val": "axis: 1 top_k: 2 out_max_val: true",
    "axis_neg1": "axis: -1",
    "axis0_max_val": "axis: 0 out_max_val: true",
    "all_of_axis2": "axis: 2 top_k: 4",
}


@pytest.mark.parametrize("variant", sorted(ARGMAX))
def test_argmax_with_ties(real_caffe, variant):
    # Many ties: Caffe's partial_sort with std::greater on (value, index) puts the higher
    # index of equal values first; the engine must give the same indices, exactly.
    x = np.random.RandomState(3).randint(0, 3, size=(2, 3, 4, 2)).astype(np.float32)
    body = f'layer {{ name: "am" type: "ArgMax" bottom: "data" top: "am" argmax_param {{ {ARGMAX[variant]} }} }}'
    report = check(real_caffe, _net(body, (2, 3, 4, 2), force_backward=False), inputs={"data": x},
                    backward=False)
    assert report.errors["data:am"] == 0.0


def test_argmax_tie_order_is_highest_index_first(real_caffe):
    x = np.array([[1, 3, 3, 0, 3, 1]], np.float32)
    body = 'layer { name: "am" type: "ArgMax" bottom: "data" top: "am" argmax_param { top_k: 5 out_max_val: true } }'
    report = check(real_caffe, _net(body, (1, 6), force_backward=False), inputs={"data": x},
                    backward=False)
    np.testing.assert_array_equal(report.ours.blobs["am"].data,
                                  [[[4, 2, 1, 5, 0], [3, 3, 3, 1, 1]]])


def test_argmax_has_no_backward():
    # force_backward does not reach through ArgMax (Caffe would abort); a loss that needs a
    # gradient through it is refused.
    body = 'layer { name: "am" type: "ArgMax" bottom: "data" top: "am" argmax_param { axis: 1 } }'
    net = _ours(_net(body, (2, 3)))
    net.forward()
    net.backward()
    assert not net.blobs["data"].diff.any()
    body = ('layer { name: "c" type: "InnerProduct" bottom: "data" top: "c" inner_product_param { num_output: 3 } }\n'
            'layer { name: "am" type: "ArgMax" bottom: "c" top: "am" argmax_param { axis: 1 } }\n'
            + _sumsq_loss("am"))
    net = _ours(_net(body, (2, 3), force_backward=False))
    net.forward()
    with pytest.raises(NetError, match="no backward"):
        net.backward()
    _refused(_net('layer { name: "am" type: "ArgMax" bottom: "data" top: "am" argmax_param { top_k: 4 axis: 1 } }',
                  (2, 3)), "top_k")
    _refused(_net('layer { name: "am" type: "ArgMax" bottom: "data" top: "am" argmax_param { top_k: 7 } }',
                  (2, 3)), "top_k")


# ---------------------------------------------------------------- Im2col
IM2COL = {
    "k3_pad1_stride2": ("kernel_size: 3 pad: 1 stride: 2", (2, 3, 7, 6)),
    "rect": ("kernel_h: 2 kernel_w: 3 stride_h: 1 stride_w: 2 pad_h: 1 pad_w: 0", (2, 2, 5, 7)),
    "dilation": ("kernel_size: 2 dilation: 2 pad: 1", (1, 2, 6, 5)),
    "two_values": ("kernel_size: 3 kernel_size: 1 stride: 1 stride: 2 pad: 0 pad: 1", (2, 2, 5, 5)),
    "force_nd": ("kernel_size: 3 pad: 1 stride: 2 force_nd_im2col: true", (2, 3, 7, 6)),
    "conv_fields_ignored": ("num_output: 7 kernel_size: 2 group: 2 bias_term: false", (1, 2, 4, 4)),
    "axis2_5d": ("axis: 2 kernel_size: 2 stride: 1", (2, 2, 3, 4, 5)),
    "three_spatial": ("kernel_size: 2 stride: 2 pad: 1 dilation: 1 dilation: 2 dilation: 1", (1, 2, 4, 5, 4)),
    "one_spatial": ("kernel_size: 3 stride: 2 pad: 1", (2, 3, 9)),
}


@pytest.mark.parametrize("variant", sorted(IM2COL))
def test_im2col(real_caffe, variant):
    spec, shape = IM2COL[variant]
    body = f'layer {{ name: "col" type: "Im2col" bottom: "data" top: "col" convolution_param {{ {spec} }} }}'
    report = check(real_caffe, _net(body, shape))
    assert report.errors["data:col"] == 0.0


def test_im2col_column_layout():
    # Channel c * kh * kw + i * kw + j holds input (c, y * stride - pad + i, x * stride - pad + j).
    body = 'layer { name: "col" type: "Im2col" bottom: "data" top: "col" convolution_param { kernel_size: 2 pad: 1 stride: 2 } }'
    net = _ours(_net(body, (1, 2, 3, 3)))
    x = np.arange(18, dtype=np.float32).reshape(1, 2, 3, 3) + 1
    net.forward(data=x)
    col = net.blobs["col"].data
    assert col.shape == (1, 8, 2, 2)
    padded = np.pad(x[0], ((0, 0), (1, 1), (1, 1)))
    for c in range(2):
        for i in range(2):
            for j in range(2):
                np.testing.assert_array_equal(col[0, c * 4 + i * 2 + j], padded[c, i::2, j::2][:2, :2])


# ---------------------------------------------------------------- Deconvolution
DECONV = {
    "basic": ("num_output: 3 kernel_size: 3 stride: 2 pad: 1", (2, 2, 4, 5)),
    "rect": ("num_output: 2 kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 0", (2, 3, 3, 4)),
    "group": ("num_output: 6 kernel_size: 3 stride: 2 group: 2", (1, 4, 3, 3)),
    "dilation": ("num_output: 2 kernel_size: 3 dilation: 2 pad: 1", (2, 2, 4, 4)),
    "no_bias": ("num_output: 2 kernel_size: 2 stride: 2 bias_term: false", (2, 3, 3, 3)),
    "one_by_one": ("num_output: 4 kernel_size: 1", (2, 3, 3, 2)),
}


@pytest.mark.parametrize("variant", sorted(DECONV))
def test_deconvolution(real_caffe, variant):
    spec, shape = DECONV[variant]
    body = f'layer {{ name: "d" type: "Deconvolution" bottom: "data" top: "d" convolution_param {{ {spec} }} }}'
    report = check(real_caffe, _net(body, shape))
    p = report.ours.layer_dict["d"].layer_param.convolution_param
    n, c, h, w = shape
    k = report.ours.params["d"][0].shape
    assert k[:2] == (c, p.num_output // p.group)
    assert report.ours.blobs["d"].shape[0:2] == (n, p.num_output)


def test_deconvolution_two_bottoms_share_weights(real_caffe):
    body = (input_layer("d2", (2, 2, 3, 3)) +
            'layer { name: "d" type: "Deconvolution" bottom: "data" bottom: "d2" top: "o1" top: "o2" '
            'convolution_param { num_output: 2 kernel_size: 3 stride: 2 } }')
    check(real_caffe, _net(body, (2, 2, 3, 3)))


@pytest.mark.parametrize("filler", ['type: "xavier"', 'type: "gaussian" std: 0.1', 'type: "msra" variance_norm: FAN_OUT'])
def test_deconvolution_fillers_bit_equal(real_caffe, tmp_path, filler):
    text = _net(f'layer {{ name: "d" type: "Deconvolution" bottom: "data" top: "d" convolution_param {{ '
                f'num_output: 6 group: 2 kernel_size: 3 weight_filler {{ {filler} }} '
                f'bias_filler {{ type: "uniform" min: -1 max: 1 }} }} }}', (1, 4, 3, 3))
    path = tmp_path / "d.prototxt"
    path.write_text(text)
    real_caffe.set_random_seed(17)
    theirs = real_caffe.Net(str(path), 0)
    ours.set_random_seed(17)
    mine = ours.Net(str(path), 0)
    for k in range(2):
        np.testing.assert_array_equal(mine.params["d"][k].data, theirs.params["d"][k].data)


# ---------------------------------------------------------------- SPP
SPP = {
    "max_3_levels": ("pyramid_height: 3", (2, 3, 8, 8)),
    "ave_padded": ("pyramid_height: 2 pool: AVE", (2, 2, 7, 5)),
    "max_padded_3": ("pyramid_height: 3", (1, 2, 9, 10)),
    "ave_3_levels": ("pyramid_height: 3 pool: AVE", (1, 2, 9, 10)),
    "one_level": ("pyramid_height: 1", (2, 3, 5, 4)),
    "one_level_ave": ("pyramid_height: 1 pool: AVE", (2, 3, 5, 4)),
}


@pytest.mark.parametrize("variant", sorted(SPP))
@pytest.mark.parametrize("phase", [0, 1])
def test_spp(real_caffe, variant, phase):
    spec, shape = SPP[variant]
    body = f'layer {{ name: "spp" type: "SPP" bottom: "data" top: "spp" spp_param {{ {spec} }} }}'
    check(real_caffe, _net(body, shape), phase=phase)


def test_spp_level_geometry():
    # Caffe's GetPoolingParam: kernel ceil(H / bins), pad (kernel * bins - H + 1) / 2.
    assert level_geometry(0, 7, 5) == (7, 5, 0, 0)
    assert level_geometry(1, 7, 5) == (4, 3, 1, 1)
    assert level_geometry(2, 9, 10) == (3, 3, 2, 1)


def test_spp_refusals():
    body = 'layer {{ name: "spp" type: "SPP" bottom: "data" top: "spp" spp_param {{ {} }} }}'
    _refused(_net(body.format("pyramid_height: 3"), (1, 2, 5, 8)), "pyramid level 2", "pad 2")
    _refused(_net(body.format("pool: MAX"), (1, 2, 5, 8)), "pyramid_height")
    _refused(_net(body.format("pyramid_height: 2"), (2, 3, 4)), "4 axes")


# ---------------------------------------------------------------- Pooling STOCHASTIC
def _stochastic_reference(x, kernel, stride, draws=None):
    """Caffe's GPU kernels, one window at a time in float32: TEST when `draws` is None."""
    n, c, h, w = x.shape
    oh = -(-(h - kernel) // stride) + 1
    ow = -(-(w - kernel) // stride) + 1
    y = np.zeros((n, c, oh, ow), np.float32)
    picks = {}
    for i in np.ndindex(n, c, oh, ow):
        hs, ws = i[2] * stride, i[3] * stride
        cells = [(a, b) for a in range(hs, min(hs + kernel, h)) for b in range(ws, min(ws + kernel, w))]
        if not cells:
            continue
        values = [x[i[0], i[1], a, b] for a, b in cells]
        total, squares = np.float32(0), np.float32(0)
        for v in values:
            total = np.float32(total + v)
            squares = np.float32(squares + np.float32(v * v))
        if draws is None:
            y[i] = squares / total if total > 0 else 0
            continue
        threshold = np.float32(draws[np.ravel_multi_index(i, y.shape)] * total)
        running = np.float32(0)
        for cell, v in zip(cells, values):
            running = np.float32(running + v)
            if running >= threshold:
                y[i], picks[i] = v, cell
                break
    return y, picks


def _stochastic_net(kernel, stride, shape, extra=""):
    return _net(f'layer {{ name: "p" type: "Pooling" bottom: "data" top: "p" pooling_param {{ '
                f'pool: STOCHASTIC kernel_size: {kernel} stride: {stride} {extra} }} }}', shape)


# kernel, stride, shape: partial last windows (ceil), overlaps, and windows wholly outside
# the image (stride > kernel).
STOCHASTIC = [(3, 2, (2, 3, 7, 8)), (2, 2, (1, 2, 6, 6)), (3, 1, (1, 2, 5, 4)), (2, 3, (1, 2, 7, 7))]


@pytest.mark.parametrize("kernel,stride,shape", STOCHASTIC)
def test_stochastic_pooling_test_phase(kernel, stride, shape):
    x = np.maximum(np.random.RandomState(5).randn(*shape), 0).astype(np.float32)
    x[0, 0] = 0                     # windows whose sum is 0 give 0
    net = _ours(_stochastic_net(kernel, stride, shape), phase=1)
    net.forward(data=x)
    expected, _ = _stochastic_reference(x, kernel, stride)
    assert net.blobs["p"].shape == expected.shape
    np.testing.assert_allclose(net.blobs["p"].data, expected, rtol=2e-6, atol=0)
    with pytest.raises(NetError, match="no backward at TEST"):
        net.backward()


@pytest.mark.parametrize("kernel,stride,shape", STOCHASTIC)
def test_stochastic_pooling_train_phase(kernel, stride, shape):
    x = np.maximum(np.random.RandomState(6).randn(*shape), 0).astype(np.float32)
    x[0, 1, :3, :3] = 0             # all-zero windows take their first element
    net = _ours(_stochastic_net(kernel, stride, shape), phase=0)
    ours.set_random_seed(29)
    net.forward(data=x)
    top = net.blobs["p"].data
    draws = CaffeRNG(29).uniform(top.size, 0.0, 1.0)
    expected, picks = _stochastic_reference(x, kernel, stride, draws)
    np.testing.assert_array_equal(top, expected)
    dy = np.random.RandomState(7).randn(*top.shape).astype(np.float32)
    net.blobs["p"].diff[...] = dy
    net.backward()
    dx = np.zeros_like(x)
    for i, (a, b) in picks.items():
        dx[i[0], i[1], a, b] += dy[i]
    np.testing.assert_allclose(net.blobs["data"].diff, dx, rtol=1e-6, atol=1e-7)
    # The stream moved on: a second forward draws new numbers.
    net.forward(data=x)
    expected2, _ = _stochastic_reference(x, kernel, stride, CaffeRNG(29).uniform(2 * top.size, 0.0, 1.0)[top.size:])
    np.testing.assert_array_equal(net.blobs["p"].data, expected2)


def test_stochastic_pooling_refuses_padding():
    _refused(_stochastic_net(3, 2, (1, 1, 5, 5), "pad: 1"), "padding")


def test_stochastic_spp_draws_each_level_at_any_phase():
    # SPP's inner Pooling layers have Caffe's default phase, TRAIN: they draw at TEST too.
    x = np.abs(np.random.RandomState(2).randn(2, 2, 4, 4)).astype(np.float32)
    body = 'layer { name: "spp" type: "SPP" bottom: "data" top: "spp" spp_param { pyramid_height: 2 pool: STOCHASTIC } }'
    net = _ours(_net(body, (2, 2, 4, 4)), phase=1)
    ours.set_random_seed(3)
    net.forward(data=x)
    stream = CaffeRNG(3)
    level0, _ = _stochastic_reference(x, 4, 4, stream.uniform(4, 0.0, 1.0))
    level1, _ = _stochastic_reference(x, 2, 2, stream.uniform(16, 0.0, 1.0))
    expected = np.concatenate([level0.reshape(2, -1), level1.reshape(2, -1)], axis=1)
    np.testing.assert_array_equal(net.blobs["spp"].data, expected)


@pytest.mark.subprocess
def test_real_cpu_caffe_has_no_stochastic_pooling(real_caffe, tmp_path):
    # BVLC's PoolingLayer::Forward_cpu: NOT_IMPLEMENTED for STOCHASTIC; the process aborts.
    path = tmp_path / "s.prototxt"
    path.write_text(_stochastic_net(2, 2, (1, 1, 4, 4)))
    script = textwrap.dedent(f"""
        from deepmammo.caffe.real import import_caffe
        caffe = import_caffe()
        net = caffe.Net({str(path)!r}, caffe.TRAIN)
        net.forward()
        print("FORWARD RAN")
    """)
    env = dict(os.environ, GLOG_minloglevel="0")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode != 0 and "FORWARD RAN" not in done.stdout
    assert "Not Implemented" in done.stderr


# ---------------------------------------------------------------- LRN in place
@pytest.mark.parametrize("spec", ["local_size: 3 alpha: 0.7 beta: 0.8", "local_size: 5 alpha: 2 beta: 0.6",
                                  "local_size: 1 alpha: 0.5 beta: -1"])
def test_lrn_within_channel_in_place(real_caffe, spec):
    # Forward is the LRN; backward reads the overwritten blob (y where x belongs), as Caffe.
    body = ('layer { name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param { num_output: 3 kernel_size: 1 } }\n'
            f'layer {{ name: "n" type: "LRN" bottom: "c" top: "c" lrn_param {{ norm_region: WITHIN_CHANNEL {spec} }} }}')
    x = np.random.RandomState(3).randn(2, 2, 5, 4).astype(np.float32) * 2
    check(real_caffe, _net(body, (2, 2, 5, 4)), inputs={"data": x})


def test_lrn_within_channel_in_place_backward_is_not_the_gradient(real_caffe):
    # The same net out of place gives another bottom diff: the in-place one is Caffe's own.
    text = _net('layer { name: "n" type: "LRN" bottom: "data" top: "{}" lrn_param { norm_region: WITHIN_CHANNEL alpha: 3 } }',
                (1, 2, 4, 4))
    diffs = []
    for top in ("data", "out"):
        report = check(real_caffe, text.replace("{}", top))
        diffs.append(report.ours.blobs["data"].diff.copy())
    assert np.abs(diffs[0] - diffs[1]).max() > 1e-3


def test_lrn_across_channels_in_place_is_refused(real_caffe, tmp_path):
    text = _net('layer { name: "n" type: "LRN" bottom: "data" top: "{}" lrn_param { local_size: 3 alpha: 1 beta: 0.75 } }',
                (1, 5, 2, 2))
    _refused(text.replace("{}", "data"), "ACROSS_CHANNELS", "scale^(-2 beta)")
    # What CPU Caffe gives in place: scale^(-2 beta), not x * scale^(-beta).
    x = np.random.RandomState(0).randn(1, 5, 2, 2).astype(np.float32)
    outs = {}
    for top in ("data", "out"):
        path = tmp_path / f"{top}.prototxt"
        path.write_text(text.replace("{}", top))
        net = real_caffe.Net(str(path), 1)
        net.blobs["data"].data[...] = x
        net.forward()
        outs[top] = net.blobs[top].data.copy()
    np.testing.assert_allclose(outs["data"], (outs["out"] / x) ** 2, rtol=1e-5)


# ---------------------------------------------------------------- Eltwise
ELTWISE = {
    "sum_coeff_2": ("operation: SUM coeff: 1 coeff: -1", 2),
    "sum_coeff_3": ("operation: SUM coeff: 0.25 coeff: 3 coeff: -0.5", 3),
    "sum_plain_4": ("operation: SUM", 4),
    "prod_stable_2": ("operation: PROD", 2),
    "prod_stable_3": ("operation: PROD stable_prod_grad: true", 3),
    "prod_unstable_2": ("operation: PROD stable_prod_grad: false", 2),
    "prod_unstable_3": ("operation: PROD stable_prod_grad: false", 3),
    "max_2": ("operation: MAX", 2),
    "max_4": ("operation: MAX", 4),
    "max_coeff_ignored": ("operation: MAX coeff: 2 coeff: -3", 2),
}


@pytest.mark.parametrize("variant", sorted(ELTWISE))
def test_eltwise(real_caffe, variant):
    # Integer-valued inputs: many MAX ties and exact PROD zeros (stable_prod_grad: false then
    # divides 0 by 0, NaN in both).
    spec, k = ELTWISE[variant]
    rs = np.random.RandomState(11)
    names = ["data"] + [f"d{i}" for i in range(1, k)]
    extra = "".join(input_layer(n, (2, 3, 4)) for n in names[1:])
    inputs = {n: rs.randint(-2, 3, size=(2, 3, 4)).astype(np.float32) for n in names}
    bottoms = " ".join(f'bottom: "{n}"' for n in names)
    body = f'layer {{ name: "e" type: "Eltwise" {bottoms} top: "e" eltwise_param {{ {spec} }} }}'
    report = check(real_caffe, _net(body, (2, 3, 4), extra_inputs=extra), inputs=inputs)
    if "MAX" in spec:
        assert all(report.errors[f"diff:{n}"] == 0.0 for n in names)


def test_eltwise_refusals():
    extra = input_layer("d2", (2, 3))
    body = 'layer {{ name: "e" type: "Eltwise" bottom: "data" bottom: "d2" top: "{}" eltwise_param {{ {} }} }}'
    _refused(_net(body.format("data", ""), (2, 3), extra_inputs=extra), "same blob")
    _refused(_net(body.format("e", "operation: PROD coeff: 1 coeff: 2"), (2, 3), extra_inputs=extra),
             "only takes coefficients for summation")
    _refused(_net(body.format("e", "coeff: 1"), (2, 3), extra_inputs=extra), "one coeff per bottom")
    _refused(_net(body.format("e", ""), (2, 4), extra_inputs=extra), "differ")


# ---------------------------------------------------------------- Concat, Flatten, Split, Silence
CONCAT = {
    "axis0": ("axis: 0", [(2, 3, 2), (1, 3, 2), (3, 3, 2)]),
    "axis1_default": ("", [(2, 3, 2), (2, 1, 2)]),
    "axis_neg1": ("axis: -1", [(2, 3, 2), (2, 3, 4)]),
    "concat_dim2": ("concat_dim: 2", [(2, 3, 1), (2, 3, 3)]),
    "one_bottom": ("axis: 1", [(2, 3, 2)]),
}


@pytest.mark.parametrize("variant", sorted(CONCAT))
def test_concat(real_caffe, variant):
    spec, shapes = CONCAT[variant]
    names = ["data"] + [f"b{i}" for i in range(1, len(shapes))]
    extra = "".join(input_layer(n, s) for n, s in zip(names[1:], shapes[1:]))
    bottoms = " ".join(f'bottom: "{n}"' for n in names)
    body = f'layer {{ name: "cat" type: "Concat" {bottoms} top: "cat" concat_param {{ {spec} }} }}'
    check(real_caffe, _net(body, shapes[0], extra_inputs=extra))


def test_concat_one_bottom_in_place(real_caffe):
    body = ('layer { name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param { num_output: 2 kernel_size: 1 } }\n'
            'layer { name: "cat" type: "Concat" bottom: "c" top: "c" }')
    check(real_caffe, _net(body))


def test_concat_refusals():
    extra = input_layer("b", (2, 3))
    body = 'layer {{ name: "cat" type: "Concat" bottom: "data" bottom: "b" top: "{}" concat_param {{ {} }} }}'
    _refused(_net(body.format("data", ""), (2, 3), extra_inputs=extra), "same blob")
    _refused(_net(body.format("cat", "axis: 1 concat_dim: 1"), (2, 3), extra_inputs=extra), "not both")
    _refused(_net(body.format("cat", "concat_dim: 2"), (2, 3), extra_inputs=extra), "out of range")
    _refused(_net(body.format("cat", "axis: 0"), (2, 4), extra_inputs=extra), "differ outside")


FLATTEN = {
    "default": ("", (2, 12)),
    "axis0": ("axis: 0", (24,)),
    "axis2": ("axis: 2", (2, 3, 4)),
    "axis1_end2": ("axis: 1 end_axis: 2", (2, 6, 2)),
    "axis_neg2_end_neg1": ("axis: -2 end_axis: -1", (2, 3, 4)),
    "end_before_axis": ("axis: 2 end_axis: 1", (2, 3, 1, 2, 2)),
}


@pytest.mark.parametrize("variant", sorted(FLATTEN))
def test_flatten(real_caffe, variant):
    spec, expected = FLATTEN[variant]
    body = f'layer {{ name: "f" type: "Flatten" bottom: "data" top: "f" flatten_param {{ {spec} }} }}'
    report = check(real_caffe, _net(body, (2, 3, 2, 2)))
    assert report.ours.blobs["f"].shape == expected


def test_flatten_and_split_refusals():
    _refused(_net('layer { name: "f" type: "Flatten" bottom: "data" top: "data" }', (2, 3)), "same blob")
    _refused(_net('layer { name: "f" type: "Flatten" bottom: "data" top: "f" flatten_param { axis: 2 end_axis: 0 } }',
                  (2, 3, 4)), "end_axis")
    _refused(_net('layer { name: "s" type: "Split" bottom: "data" top: "data" }', (2, 3)), "same blob")


def test_split_and_silence(real_caffe):
    # An explicit Split with three tops: two read by layers, one silenced (its diff is 0).
    body = ('layer { name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param { num_output: 2 kernel_size: 1 } }\n'
            'layer { name: "split" type: "Split" bottom: "c" top: "s1" top: "s2" top: "s3" }\n'
            'layer { name: "sum" type: "Eltwise" bottom: "s1" bottom: "s2" top: "sum" eltwise_param { coeff: 2 coeff: -1 } }\n'
            'layer { name: "one" type: "Split" bottom: "sum" top: "one" }\n'
            'layer { name: "quiet" type: "Silence" bottom: "s3" bottom: "data" }')
    report = check(real_caffe, _net(body))
    assert not report.ours.blobs["s3"].diff.any()
    assert report.ours.blobs["data"].diff.any()


def test_silence_zeros_diffs(real_caffe):
    body = ('layer { name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param { num_output: 2 kernel_size: 1 } }\n'
            'layer { name: "quiet" type: "Silence" bottom: "c" }')
    report = check(real_caffe, _net(body))
    assert not report.ours.blobs["data"].diff.any()
    assert not report.ours.params["c"][0].diff.any()


def test_parameter_diff_is_assigned_through_iter_size(real_caffe, tmp_path):
    # Caffe's Parameter top shares the blob's diff, which the layer above assigns on every
    # pass: with iter_size 2 the update uses the last pass's gradient, halved, not the sum.
    net = tmp_path / "p.prototxt"
    net.write_text('name: "p"\n' + input_layer("t", (3, 4)) +
                   'layer { name: "p" type: "Parameter" top: "p" parameter_param { shape { dim: 3 dim: 4 } } }\n'
                   'layer { name: "loss" type: "EuclideanLoss" bottom: "p" bottom: "t" top: "loss" }\n')
    solver = tmp_path / "solver.prototxt"
    solver.write_text(f'net: "{net}"\nbase_lr: 0.5\nmomentum: 0.5\nlr_policy: "fixed"\niter_size: 2\n'
                      f'max_iter: 10\ndisplay: 0\nsnapshot_prefix: "{tmp_path / "s"}"\n')
    rs = np.random.RandomState(4)
    target, start = rs.randn(3, 4).astype(np.float32), rs.randn(3, 4).astype(np.float32)
    weights = []
    for solver_of in (real_caffe.get_solver, ours.get_solver):
        s = solver_of(str(solver))
        s.net.blobs["t"].data[...] = target
        s.net.params["p"][0].data[...] = start
        s.step(3)
        weights.append(s.net.params["p"][0].data.copy())
    np.testing.assert_allclose(weights[1], weights[0], rtol=1e-6, atol=1e-7)
    # One pass's gradient per step, not two: 3 steps of p -= lr * (p - t) / 3 ... with momentum.
    p, v = start.astype(np.float64), 0
    for _ in range(3):
        v = 0.5 * v + 0.5 * (p - target) / 3 / 2
        p = p - v
    np.testing.assert_allclose(weights[0], p, rtol=1e-5, atol=1e-6)


IN_PLACE_REFUSED = {
    "Crop": ('bottom: "data" bottom: "ref" top: "data"', "", input_layer("ref", (2, 3, 2, 2))),
    "BatchReindex": ('bottom: "data" bottom: "idx" top: "data"', "", input_layer("idx", (2,))),
    "Filter": ('bottom: "data" bottom: "sel" top: "data"', "", input_layer("sel", (2,))),
    "Reduction": ('bottom: "data" top: "data"', "", ""),
    "ArgMax": ('bottom: "data" top: "data"', "", ""),
    "Im2col": ('bottom: "data" top: "data"', "convolution_param { kernel_size: 1 }", ""),
    "Deconvolution": ('bottom: "data" top: "data"', "convolution_param { num_output: 3 kernel_size: 1 }", ""),
    "SPP": ('bottom: "data" top: "data"', "spp_param { pyramid_height: 1 }", ""),
}


@pytest.mark.parametrize("kind", sorted(IN_PLACE_REFUSED))
def test_in_place_refused_where_caffe_reads_a_resized_bottom(kind):
    blobs, param, extra = IN_PLACE_REFUSED[kind]
    body = f'layer {{ name: "x" type: "{kind}" {blobs} {param} }}'
    _refused(_net(body, (2, 3, 4, 4), extra_inputs=extra), "same blob")

