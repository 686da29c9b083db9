"""Every layer type and parameter variant, through our Net and real pycaffe with the same
weights and inputs: forward tops, backward bottom and parameter diffs agree to float rounding
(about 1e-5 relative), blob and layer lists (Split names included) are identical."""
import numpy as np
import pytest
from layer_nets import check, layer_net

CONV = {
    "basic": 'num_output: 4 kernel_size: 3 pad: 1',
    "stride_rect": 'num_output: 3 kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 0',
    "group": 'num_output: 4 kernel_size: 3 group: 3 pad: 2 stride: 2',
    "dilation": 'num_output: 2 kernel_size: 3 dilation: 2',
    "no_bias": 'num_output: 2 kernel_size: 1 bias_term: false',
    "two_values": 'num_output: 2 kernel_size: 3 kernel_size: 1 pad: 1 pad: 0 stride: 2 stride: 1',
}


def _net(body, shape=(2, 3, 9, 9), force_backward=True, extra_inputs=""):
    return layer_net(body, shape, force_backward, extra_inputs)


@pytest.mark.parametrize("variant", sorted(CONV))
def test_convolution(real_caffe, variant):
    shape = (2, 6, 9, 9) if variant == "group" else (2, 3, 9, 9)
    body = f'layer {{ name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param {{ {CONV[variant]} }} }}'
    if variant == "group":
        body = body.replace("group: 3", "group: 2")
    check(real_caffe, _net(body, shape))


def test_convolution_two_bottoms_share_weights(real_caffe):
    body = ('layer { name: "d2" type: "Input" top: "d2" input_param { shape { dim: 2 dim: 3 dim: 9 dim: 9 } } }\n'
            'layer { name: "c" type: "Convolution" bottom: "data" bottom: "d2" top: "c1" top: "c2" '
            'convolution_param { num_output: 2 kernel_size: 3 } }')
    check(real_caffe, _net(body))


POOL = {
    # ceil rounding gives an extra, partial last window
    "max_ceil": ("MAX", "kernel_size: 3 stride: 2", (2, 2, 8, 8)),
    "ave_ceil": ("AVE", "kernel_size: 3 stride: 2", (2, 2, 8, 8)),
    "ave_pad": ("AVE", "kernel_size: 3 stride: 2 pad: 1", (2, 2, 9, 9)),
    "max_pad": ("MAX", "kernel_size: 3 stride: 2 pad: 1", (2, 2, 8, 8)),
    # pad > kernel/2: PyTorch refuses it, Caffe allows it
    "max_pad_gt_half": ("MAX", "kernel_size: 3 stride: 2 pad: 2", (2, 2, 9, 9)),
    "ave_pad_gt_half": ("AVE", "kernel_size: 3 stride: 2 pad: 2", (2, 2, 9, 9)),
    # pad > 0 and the last window would start beyond H + pad: dropped
    "ave_drop_last": ("AVE", "kernel_size: 2 stride: 2 pad: 1", (1, 2, 6, 6)),
    "max_rect": ("MAX", "kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 0",
                 (2, 2, 7, 6)),
    "ave_rect": ("AVE", "kernel_h: 2 kernel_w: 3 stride_h: 1 stride_w: 2 pad_h: 0 pad_w: 1",
                 (2, 2, 7, 6)),
    "max_global": ("MAX", "global_pooling: true", (2, 3, 5, 4)),
    "ave_global": ("AVE", "global_pooling: true", (2, 3, 5, 4)),
    "max_floor": ("MAX", "kernel_size: 3 stride: 2 round_mode: FLOOR", (2, 2, 8, 8)),
    "ave_floor_pad": ("AVE", "kernel_size: 3 stride: 2 pad: 1 round_mode: FLOOR", (2, 2, 8, 8)),
    "ave_googlenet": ("AVE", "kernel_size: 7 stride: 1", (1, 2, 7, 7)),
}


@pytest.mark.parametrize("variant", sorted(POOL))
def test_pooling(real_caffe, variant):
    method, spec, shape = POOL[variant]
    body = f'layer {{ name: "p" type: "Pooling" bottom: "data" top: "p" pooling_param {{ pool: {method} {spec} }} }}'
    check(real_caffe, _net(body, shape))


def test_pooling_max_stride_beyond_kernel_keeps_window(real_caffe):
    # pad 0, stride > kernel: Caffe keeps a last window that starts past the image (its max
    # is -FLT_MAX, its mask -1); PyTorch would drop it.
    # Forward only against Caffe: its backward writes through the -1 mask (out of bounds).
    body = ('layer { name: "p" type: "Pooling" bottom: "data" top: "p" top: "mask" '
            'pooling_param { pool: MAX kernel_size: 2 stride: 3 } }')
    report = check(real_caffe, _net(body, (1, 2, 9, 9)), backward=False)
    net = report.ours
    assert net.blobs["p"].shape == (1, 2, 4, 4)
    assert net.blobs["p"].data[0, 0, 3, 3] < -1e38 and net.blobs["mask"].data[0, 0, 3, 3] == -1
    # Our backward sends nothing from the empty windows, the rest as Caffe's mask says.
    net.blobs["p"].diff[...] = 1.0
    net.backward()
    mask = net.blobs["mask"].data[0, 0]
    expected = np.zeros(81)
    for m in mask[mask >= 0].ravel():
        expected[int(m)] += 1
    np.testing.assert_array_equal(net.blobs["data"].diff[0, 0].ravel(), expected)


def test_pooling_mask_top(real_caffe):
    body = ('layer { name: "p" type: "Pooling" bottom: "data" top: "p" top: "mask" '
            'pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 } }')
    check(real_caffe, _net(body, (2, 2, 8, 8)))


def test_pooling_ave_stride_beyond_kernel(real_caffe):
    # Caffe divides an empty window's zero sum by its (empty) size: NaN, kept in place.
    body = ('layer { name: "p" type: "Pooling" bottom: "data" top: "p" '
            'pooling_param { pool: AVE kernel_size: 2 stride: 3 } }')
    report = check(real_caffe, _net(body, (1, 2, 9, 9)))
    assert np.isnan(report.ours.blobs["p"].data[0, 0, 3, 3])


LRN = {
    "across_default": "",
    "across_params": "local_size: 3 alpha: 0.5 beta: 0.6 k: 2",
    "within": "norm_region: WITHIN_CHANNEL local_size: 3 alpha: 0.7 beta: 0.8",
    "within_5": "norm_region: WITHIN_CHANNEL local_size: 5 alpha: 2.0",
}


@pytest.mark.parametrize("variant", sorted(LRN))
def test_lrn(real_caffe, variant):
    body = f'layer {{ name: "n" type: "LRN" bottom: "data" top: "n" lrn_param {{ {LRN[variant]} }} }}'
    check(real_caffe, _net(body, (2, 7, 6, 5)), inputs={"data": np.random.RandomState(3).randn(2, 7, 6, 5).astype(np.float32) * 2})


@pytest.mark.parametrize("phase,spec", [(1, ""), (0, ""), (0, "moving_average_fraction: 0.9 eps: 0.001"),
                                        (1, "use_global_stats: false"), (0, "use_global_stats: true")])
def test_batchnorm(real_caffe, phase, spec):
    body = (f'layer {{ name: "bn" type: "BatchNorm" bottom: "data" top: "bn" batch_norm_param {{ {spec} }} }}\n'
            'layer { name: "sc" type: "Scale" bottom: "bn" top: "bn" scale_param { bias_term: true } }')
    check(real_caffe, _net(body, (3, 4, 5, 5)), phase=phase)


def test_batchnorm_2d_input_in_place(real_caffe):
    body = 'layer { name: "bn" type: "BatchNorm" bottom: "data" top: "data" }'
    check(real_caffe, _net(body, (6, 4)), phase=0)


SCALE = {
    "gamma": "",
    "gamma_beta": "bias_term: true",
    "axis0_two_axes": "axis: 0 num_axes: 2",
    "axis2": "axis: 2 num_axes: 1 bias_term: true",
    "all_axes": "axis: 1 num_axes: -1",
    "filler": 'filler { type: "constant" value: 2 } bias_term: true bias_filler { type: "constant" value: 1 }',
}


@pytest.mark.parametrize("variant", sorted(SCALE))
def test_scale(real_caffe, variant):
    body = f'layer {{ name: "s" type: "Scale" bottom: "data" top: "s" scale_param {{ {SCALE[variant]} }} }}'
    check(real_caffe, _net(body, (2, 3, 4, 5)))


def test_scale_second_bottom(real_caffe):
    extra = 'layer { name: "g" type: "Input" top: "g" input_param { shape { dim: 2 dim: 3 } } }\n'
    body = ('layer { name: "s" type: "Scale" bottom: "data" bottom: "g" top: "s" '
            'scale_param { axis: 0 bias_term: true } }')
    check(real_caffe, _net(body, (2, 3, 4, 5), extra_inputs=extra))


IP = {
    "basic": "num_output: 5",
    "axis2": "num_output: 4 axis: 2",
    "transpose": "num_output: 3 transpose: true",
    "no_bias": "num_output: 2 bias_term: false",
    "axis_neg": "num_output: 2 axis: -1",
}


@pytest.mark.parametrize("variant", sorted(IP))
def test_inner_product(real_caffe, variant):
    body = f'layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param {{ {IP[variant]} }} }}'
    check(real_caffe, _net(body, (2, 3, 4, 5)))


@pytest.mark.parametrize("slope", [0.0, 0.1, -0.5, 2.0])
@pytest.mark.parametrize("in_place", [True, False])
def test_relu(real_caffe, slope, in_place):
    top = "c" if in_place else "r"
    body = ('layer { name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param { num_output: 3 kernel_size: 3 } }\n'
            f'layer {{ name: "r" type: "ReLU" bottom: "c" top: "{top}" relu_param {{ negative_slope: {slope} }} }}')
    check(real_caffe, _net(body))


@pytest.mark.parametrize("slope", [0.0, -0.5])
def test_relu_in_place_then_sign_change_in_place(real_caffe, slope):
    # Caffe's ReLU backward reads the blob after the in-place Power shifted it.
    body = ('layer { name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param { num_output: 3 kernel_size: 3 } }\n'
            f'layer {{ name: "r" type: "ReLU" bottom: "c" top: "c" relu_param {{ negative_slope: {slope} }} }}\n'
            'layer { name: "p" type: "Power" bottom: "c" top: "c" power_param { shift: -0.3 } }')
    check(real_caffe, _net(body))


def test_dropout_test_phase_is_identity(real_caffe):
    body = ('layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 6 } }\n'
            'layer { name: "drop" type: "Dropout" bottom: "ip" top: "ip" dropout_param { dropout_ratio: 0.3 } }')
    check(real_caffe, _net(body), phase=1)


def test_concat_eltwise_flatten_split_silence(real_caffe):
    body = '''
layer { name: "a" type: "Convolution" bottom: "data" top: "a" convolution_param { num_output: 2 kernel_size: 1 } }
layer { name: "b" type: "Convolution" bottom: "data" top: "b" convolution_param { num_output: 2 kernel_size: 1 } }
layer { name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param { num_output: 2 kernel_size: 1 } }
layer { name: "cat1" type: "Concat" bottom: "a" bottom: "b" bottom: "c" top: "cat1" }
layer { name: "cat2" type: "Concat" bottom: "a" bottom: "b" top: "cat2" concat_param { axis: 2 } }
layer { name: "cat3" type: "Concat" bottom: "b" bottom: "c" top: "cat3" concat_param { concat_dim: 3 } }
layer { name: "sum" type: "Eltwise" bottom: "a" bottom: "b" bottom: "c" top: "sum" eltwise_param { operation: SUM coeff: 0.5 coeff: -2 coeff: 1.5 } }
layer { name: "sum1" type: "Eltwise" bottom: "a" bottom: "c" top: "sum1" }
layer { name: "prod" type: "Eltwise" bottom: "a" bottom: "b" bottom: "c" top: "prod" eltwise_param { operation: PROD } }
layer { name: "prod2" type: "Eltwise" bottom: "b" bottom: "c" top: "prod2" eltwise_param { operation: PROD stable_prod_grad: false } }
layer { name: "max" type: "Eltwise" bottom: "a" bottom: "b" bottom: "c" top: "max" eltwise_param { operation: MAX } }
layer { name: "flat" type: "Flatten" bottom: "cat1" top: "flat" }
layer { name: "flat2" type: "Flatten" bottom: "cat2" top: "flat2" flatten_param { axis: 2 end_axis: 3 } }
layer { name: "split" type: "Split" bottom: "sum" top: "s1" top: "s2" }
layer { name: "prod3" type: "Eltwise" bottom: "s1" bottom: "s2" top: "prod3" eltwise_param { operation: PROD } }
layer { name: "quiet" type: "Silence" bottom: "prod2" }
'''
    check(real_caffe, _net(body, (2, 3, 4, 5)))


def test_eltwise_max_ties_follow_caffe(real_caffe):
    # Caffe gives a tie between bottoms 0 and 1 to bottom 1, and later ties to the earlier one.
    extra = ('layer { name: "d2" type: "Input" top: "d2" input_param { shape { dim: 1 dim: 4 } } }\n'
             'layer { name: "d3" type: "Input" top: "d3" input_param { shape { dim: 1 dim: 4 } } }\n')
    body = 'layer { name: "max" type: "Eltwise" bottom: "data" bottom: "d2" bottom: "d3" top: "max" eltwise_param { operation: MAX } }'
    inputs = {"data": np.array([[1, 2, 3, 0]], np.float32), "d2": np.array([[1, 1, 3, 0]], np.float32),
              "d3": np.array([[0, 2, 3, 0]], np.float32)}
    check(real_caffe, _net(body, (1, 4), extra_inputs=extra), inputs=inputs)


@pytest.mark.parametrize("axis,shape", [(1, (3, 5)), (1, (2, 3, 4, 2)), (2, (2, 3, 4, 2)), (-1, (2, 3, 4))])
def test_softmax(real_caffe, axis, shape):
    body = f'layer {{ name: "sm" type: "Softmax" bottom: "data" top: "sm" softmax_param {{ axis: {axis} }} }}'
    check(real_caffe, _net(body, shape))


def _labels_input(shape):
    dims = " ".join(f"dim: {d}" for d in shape)
    return f'layer {{ name: "label" type: "Input" top: "label" input_param {{ shape {{ {dims} }} }} }}\n'


SWL = {
    "default": "",
    "ignore": "loss_param { ignore_label: 2 }",
    "full": "loss_param { ignore_label: 2 normalization: FULL }",
    "batch": "loss_param { normalization: BATCH_SIZE }",
    "none": "loss_param { ignore_label: 1 normalization: NONE }",
    "normalize_false": "loss_param { normalize: false }",
    "weight": "loss_weight: 2.5",
}


@pytest.mark.parametrize("variant", sorted(SWL))
def test_softmax_with_loss(real_caffe, variant):
    rs = np.random.RandomState(5)
    labels = rs.randint(0, 4, size=(2, 1, 3, 2)).astype(np.float32)
    labels[0, 0, 0, 0] = 2
    body = ('layer { name: "ip" type: "Convolution" bottom: "data" top: "ip" convolution_param { num_output: 4 kernel_size: 1 } }\n'
            f'layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" {SWL[variant]} }}')
    text = _net(body, (2, 3, 3, 2), force_backward=False, extra_inputs=_labels_input((2, 1, 3, 2)))
    check(real_caffe, text, phase=0, inputs={"label": labels})


def test_softmax_with_loss_all_ignored_normaliser_is_at_least_one(real_caffe):
    labels = np.full((4,), 1, np.float32)
    body = ('layer { name: "loss" type: "SoftmaxWithLoss" bottom: "data" bottom: "label" top: "loss" '
            'loss_param { ignore_label: 1 } }')
    check(real_caffe, _net(body, (4, 3), extra_inputs=_labels_input((4,))), phase=0,
           inputs={"label": labels})


@pytest.mark.parametrize("spec", ["", "accuracy_param { top_k: 2 }", "accuracy_param { ignore_label: 0 }",
                                  'top: "per_class"', 'top: "per_class" accuracy_param { top_k: 3 ignore_label: 2 }'])
def test_accuracy_with_ties(real_caffe, spec):
    rs = np.random.RandomState(2)
    scores = rs.randint(0, 3, size=(12, 4)).astype(np.float32)   # many ties
    labels = rs.randint(0, 4, size=(12,)).astype(np.float32)
    body = f'layer {{ name: "acc" type: "Accuracy" bottom: "data" bottom: "label" top: "acc" {spec} }}'
    report = check(real_caffe, _net(body, (12, 4), force_backward=False, extra_inputs=_labels_input((12,))),
                    inputs={"data": scores, "label": labels}, backward=False)
    assert report.errors["data:acc"] == 0.0


def test_accuracy_spatial_axis(real_caffe):
    rs = np.random.RandomState(4)
    labels = rs.randint(0, 3, size=(2, 1, 2, 2)).astype(np.float32)
    body = 'layer { name: "acc" type: "Accuracy" bottom: "data" bottom: "label" top: "acc" }'
    check(real_caffe, _net(body, (2, 3, 2, 2), force_backward=False, extra_inputs=_labels_input((2, 1, 2, 2))),
           inputs={"label": labels}, backward=False)


def test_euclidean_loss(real_caffe):
    extra = 'layer { name: "target" type: "Input" top: "target" input_param { shape { dim: 3 dim: 4 } } }\n'
    body = ('layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 4 } }\n'
            'layer { name: "loss" type: "EuclideanLoss" bottom: "ip" bottom: "target" top: "loss" loss_weight: 0.7 }')
    check(real_caffe, _net(body, (3, 2, 2, 2), extra_inputs=extra), phase=0)


INCEPTION = '''
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 8 kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "norm1" type: "LRN" bottom: "pool1" top: "norm1" lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 } }
layer { name: "i/1x1" type: "Convolution" bottom: "norm1" top: "i/1x1" convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "i/relu_1x1" type: "ReLU" bottom: "i/1x1" top: "i/1x1" }
layer { name: "i/3x3_reduce" type: "Convolution" bottom: "norm1" top: "i/3x3_reduce" convolution_param { num_output: 3 kernel_size: 1 } }
layer { name: "i/relu_3x3_reduce" type: "ReLU" bottom: "i/3x3_reduce" top: "i/3x3_reduce" }
layer { name: "i/3x3" type: "Convolution" bottom: "i/3x3_reduce" top: "i/3x3" convolution_param { num_output: 5 kernel_size: 3 pad: 1 } }
layer { name: "i/relu_3x3" type: "ReLU" bottom: "i/3x3" top: "i/3x3" }
layer { name: "i/5x5_reduce" type: "Convolution" bottom: "norm1" top: "i/5x5_reduce" convolution_param { num_output: 2 kernel_size: 1 } }
layer { name: "i/relu_5x5_reduce" type: "ReLU" bottom: "i/5x5_reduce" top: "i/5x5_reduce" }
layer { name: "i/5x5" type: "Convolution" bottom: "i/5x5_reduce" top: "i/5x5" convolution_param { num_output: 3 kernel_size: 5 pad: 2 } }
layer { name: "i/relu_5x5" type: "ReLU" bottom: "i/5x5" top: "i/5x5" }
layer { name: "i/pool" type: "Pooling" bottom: "norm1" top: "i/pool" pooling_param { pool: MAX kernel_size: 3 stride: 1 pad: 1 } }
layer { name: "i/pool_proj" type: "Convolution" bottom: "i/pool" top: "i/pool_proj" convolution_param { num_output: 2 kernel_size: 1 } }
layer { name: "i/relu_pool_proj" type: "ReLU" bottom: "i/pool_proj" top: "i/pool_proj" }
layer { name: "i/output" type: "Concat" bottom: "i/1x1" bottom: "i/3x3" bottom: "i/5x5" bottom: "i/pool_proj" top: "i/output" }
layer { name: "pool5" type: "Pooling" bottom: "i/output" top: "pool5" pooling_param { pool: AVE kernel_size: 4 stride: 1 } }
layer { name: "drop" type: "Dropout" bottom: "pool5" top: "pool5" dropout_param { dropout_ratio: 0.4 } include { phase: TEST } }
layer { name: "classifier" type: "InnerProduct" bottom: "pool5" top: "classifier" inner_product_param { num_output: 3 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "classifier" bottom: "label" top: "loss" }
layer { name: "acc" type: "Accuracy" bottom: "classifier" bottom: "label" top: "acc" include { phase: TEST } }
layer { name: "acc5" type: "Accuracy" bottom: "classifier" bottom: "label" top: "acc5" accuracy_param { top_k: 2 } include { phase: TEST } }
'''


# Real Caffe aborts in backward when force_backward reaches an Accuracy layer, so the
# force_backward run is the TRAIN net (no Accuracy, no Dropout).
@pytest.mark.parametrize("phase,force_backward", [(0, True), (1, False)])
def test_inception_module(real_caffe, phase, force_backward):
    labels = np.array([0, 2, 1, 2], np.float32)
    text = _net(INCEPTION, (4, 3, 17, 17), force_backward=force_backward,
                extra_inputs=_labels_input((4,)))
    report = check(real_caffe, text, phase=phase, inputs={"label": labels})
    # Caffe's Split layers: norm1 feeds four branches, classifier three readers at TEST.
    names = list(report.ours.blobs)
    assert "norm1_norm1_0_split_3" in names
    if phase == 1:
        assert "classifier_classifier_0_split_2" in names
        assert report.ours.outputs == ["acc", "acc5", "loss"]
    if force_backward:
        assert report.ours.blobs["data"].diff.any()
    else:
        assert not report.ours.blobs["data"].diff.any()


@pytest.mark.parametrize("spec", ["kernel_size: 3 stride: 2", "kernel_size: 3 stride: 1 pad: 1",
                                  "kernel_size: 2 stride: 2"])
def test_max_pooling_ties_go_to_the_first_maximum(real_caffe, spec):
    # After a ReLU most windows tie at zero: the gradient goes to the first in row-major order.
    x = np.maximum(np.random.RandomState(0).randn(2, 3, 9, 9), 0).astype(np.float32)
    x[0, 0, :4, :4] = 1.0
    body = f'layer {{ name: "p" type: "Pooling" bottom: "data" top: "p" top: "mask" pooling_param {{ pool: MAX {spec} }} }}'
    report = check(real_caffe, _net(body, (2, 3, 9, 9)), inputs={"data": x})
    assert report.errors["diff:data"] == 0.0 and report.errors["data:mask"] == 0.0

