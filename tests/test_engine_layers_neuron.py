"""The element-wise ("neuron") layers, Bias, MVN, Embed and the rest of Scale, through our Net
and real pycaffe with the same weights and inputs (the crosscheck pattern of
test_engine_layers.py): forward tops, backward bottom and parameter diffs agree to float
rounding, in place too. In place, Caffe's backward reads the blob as it holds the top (and
whatever a later in-place layer wrote), and Log and Power write the bottom diff over the top
diff they read: those are Caffe's numbers, and ours.
"""
import numpy as np
import pytest
from layer_nets import check, input_layer, layer_net

import deepmammo.caffe as ours
from deepmammo.caffe.netstate import NetError

SHAPE = (2, 3, 4, 5)


def _net(body, shape=SHAPE, force_backward=True, extra_inputs=""):
    return layer_net(body, shape, force_backward, extra_inputs)


def _values(seed=11, shape=SHAPE, scale=2.0, special=()):
    """Random normal values times `scale`, the first few replaced by `special` ones (kinks,
    bounds, zeros)."""
    x = np.random.RandomState(seed).randn(*shape).astype(np.float32) * scale
    flat = x.reshape(-1)
    flat[:len(special)] = special
    return x


def _positive(seed=12, shape=SHAPE):
    return np.random.RandomState(seed).uniform(0.2, 3.0, shape).astype(np.float32)


def _layer(kind, spec="", top="n", bottom="data", name="n"):
    return f'layer {{ name: "{name}" type: "{kind}" bottom: "{bottom}" top: "{top}" {spec} }}\n'


# ---------------------------------------------------------------- element-wise layers
SPECIAL = (0.0, -0.0, 1.0, -1.0, 0.5, 1.5, 60.0, -60.0, 2.0, -2.0)

# name -> (type, param text, inputs)
NEURON = {
    "absval": ("AbsVal", "", _values(special=SPECIAL)),
    "bnll": ("BNLL", "", _values(special=SPECIAL, scale=5)),
    "clip": ("Clip", "clip_param { min: -1 max: 1.5 }", _values(special=SPECIAL)),
    "clip_narrow": ("Clip", "clip_param { min: 0.5 max: 2 }", _values(special=SPECIAL)),
    "clip_point": ("Clip", "clip_param { min: 0 max: 0 }", _values(special=SPECIAL)),
    "clip_unset": ("Clip", "", _values(special=SPECIAL)),
    "elu": ("ELU", "", _values(special=SPECIAL)),
    "elu_half": ("ELU", "elu_param { alpha: 0.5 }", _values(special=SPECIAL)),
    "elu_two": ("ELU", "elu_param { alpha: 2 }", _values(special=SPECIAL)),
    "elu_zero": ("ELU", "elu_param { alpha: 0 }", _values(special=SPECIAL)),
    "elu_negative": ("ELU", "elu_param { alpha: -0.7 }", _values(special=SPECIAL)),
    "exp": ("Exp", "", _values(special=SPECIAL[:6])),
    "exp_base2": ("Exp", "exp_param { base: 2 }", _values(special=SPECIAL[:6])),
    "exp_scale_shift": ("Exp", "exp_param { scale: 0.5 shift: 1 }", _values()),
    "exp_all": ("Exp", "exp_param { base: 0.5 scale: -1.5 shift: -0.7 }", _values()),
    "exp_base_shift": ("Exp", "exp_param { base: 3 shift: 2 }", _values()),
    "log": ("Log", "", _positive()),
    "log_base2": ("Log", "log_param { base: 2 }", _positive()),
    "log_all": ("Log", "log_param { base: 10 scale: 2 shift: 1 }", _positive()),
    "log_negative_scale": ("Log", "log_param { base: 0.5 scale: -1 shift: 4 }", _positive()),
    "log_nan": ("Log", "log_param { shift: -1 }", _positive()),    # log of negatives: NaN
    "power_identity": ("Power", "", _values(special=SPECIAL)),
    "power_affine": ("Power", "power_param { power: 1 scale: 3 shift: -1 }", _values()),
    "power_square": ("Power", "power_param { power: 2 }", _values(special=SPECIAL)),
    "power_square_shift": ("Power", "power_param { power: 2 scale: -0.5 shift: 1 }",
                           _values(special=SPECIAL)),
    "power_cube": ("Power", "power_param { power: 3 scale: 0.5 }", _values(special=SPECIAL)),
    "power_sqrt": ("Power", "power_param { power: 0.5 shift: 10 }", _values()),
    "power_inverse": ("Power", "power_param { power: -1 scale: 2 shift: 9 }", _values()),
    "power_fraction_nan": ("Power", "power_param { power: 1.5 shift: 0.5 }", _values()),
    "power_zero": ("Power", "power_param { power: 0 scale: 2 shift: 3 }", _values()),
    "power_constant": ("Power", "power_param { power: 2 scale: 0 shift: 3 }", _values()),
    "prelu": ("PReLU", "", _values(special=SPECIAL)),
    "prelu_shared": ("PReLU", "prelu_param { channel_shared: true }", _values(special=SPECIAL)),
    "sigmoid": ("Sigmoid", "", _values(special=SPECIAL, scale=4)),
    "swish": ("Swish", "", _values(special=SPECIAL)),
    "swish_half": ("Swish", "swish_param { beta: 0.5 }", _values(special=SPECIAL)),
    "swish_two": ("Swish", "swish_param { beta: 2 }", _values(special=SPECIAL)),
    "swish_negative": ("Swish", "swish_param { beta: -1.5 }", _values(special=SPECIAL)),
    "tanh": ("TanH", "", _values(special=SPECIAL, scale=3)),
}


# AbsVal refuses in-place use (test_absval_in_place_is_refused).
@pytest.mark.parametrize("variant,in_place", [(v, p) for v in sorted(NEURON) for p in (False, True)
                                              if not (p and NEURON[v][0] == "AbsVal")])
def test_neuron(real_caffe, variant, in_place):
    kind, spec, x = NEURON[variant]
    body = _layer(kind, spec, top="data" if in_place else "n")
    check(real_caffe, _net(body), phase=0 if in_place else 1, inputs={"data": x})


def test_absval_in_place_is_refused(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(_net(_layer("AbsVal", top="data")))
    with pytest.raises(NetError, match="in-place"):
        ours.Net(str(path), ours.TEST)


@pytest.mark.parametrize("in_place", [False, True])
@pytest.mark.parametrize("kind,spec", [
    ("PReLU", ""), ("PReLU", "prelu_param { channel_shared: true }"), ("Sigmoid", ""),
    ("ELU", "elu_param { alpha: 0.3 }"), ("Power", "power_param { power: 2 shift: 1 }"),
    ("Log", "log_param { shift: 10 }"), ("Clip", "clip_param { min: -0.2 max: 0.3 }")])
def test_neuron_after_a_learned_layer(real_caffe, kind, spec, in_place):
    # A learned layer below: the parameter diffs and Split-free in-place naming are checked too.
    body = ('layer { name: "c" type: "Convolution" bottom: "data" top: "c" '
            'convolution_param { num_output: 3 kernel_size: 3 pad: 1 } }\n')
    body += _layer(kind, spec, bottom="c", top="c" if in_place else "n")
    check(real_caffe, _net(body, (2, 2, 5, 4)), phase=0)


@pytest.mark.parametrize("first,second", [
    ("Sigmoid", 'type: "Scale" scale_param { bias_term: true }'),
    ("TanH", 'type: "Power" power_param { power: 2 scale: 0.5 shift: 0.3 }'),
    ("ELU", 'type: "Bias"'),
    ("Exp", 'type: "Scale"'),
    ("Swish", 'type: "PReLU"'),
    ("BNLL", 'type: "Scale" scale_param { axis: 0 num_axes: -1 }'),
])
def test_in_place_chain_reads_the_overwritten_blob(real_caffe, first, second):
    # Caffe's backward of the first layer reads the blob the second one overwrote.
    body = _layer(first, top="data", name="a")
    body += f'layer {{ name: "b" {second} bottom: "data" top: "data" }}\n'
    check(real_caffe, _net(body), phase=0)


@pytest.mark.parametrize("kind", ["Sigmoid", "TanH", "ELU"])
def test_in_place_dropout_after_it_at_train(real_caffe, kind):
    # The same seed gives both engines the same dropout mask.
    body = _layer(kind, top="data", name="a")
    body += 'layer { name: "d" type: "Dropout" bottom: "data" top: "data" dropout_param { dropout_ratio: 0.4 } }\n'
    real_caffe.set_random_seed(3)
    ours.set_random_seed(3)
    report = check(real_caffe, _net(body), phase=0)
    assert (report.ours.blobs["data"].data == 0).any()


def test_non_in_place_top_overwritten_later(real_caffe):
    body = _layer("Sigmoid", top="s", name="a")
    body += 'layer { name: "b" type: "Scale" bottom: "s" top: "s" scale_param { bias_term: true } }\n'
    check(real_caffe, _net(body))


@pytest.mark.parametrize("spec", ["", "prelu_param { channel_shared: true }"])
def test_prelu_in_place_twice_accumulates_slope_diff(real_caffe, spec):
    # Caffe adds to the slope's diff: a second backward doubles it.
    report = check(real_caffe, _net(_layer("PReLU", spec, top="data")), phase=0)
    for net in (report.ours, report.real):
        net.blobs["data"].diff[...] = np.float32(0.5)
        net.backward()
    np.testing.assert_allclose(report.ours.params["n"][0].diff, report.real.params["n"][0].diff,
                               rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- Threshold
@pytest.mark.parametrize("in_place", [False, True])
@pytest.mark.parametrize("threshold", ["", "threshold_param { threshold: 0.5 }",
                                       "threshold_param { threshold: -1 }"])
def test_threshold(real_caffe, threshold, in_place):
    # Caffe has no Threshold backward: forward only (no loss, no force_backward).
    x = _values(special=(0.0, 0.5, -1.0, 0.4999, 0.5001, -1.0001))
    body = _layer("Threshold", threshold, top="data" if in_place else "n")
    report = check(real_caffe, _net(body, force_backward=False), inputs={"data": x})
    top = report.ours.blobs["data" if in_place else "n"].data
    assert set(np.unique(top)) <= {0.0, 1.0}


def _write(tmp_path, text):
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    return str(path)


def test_threshold_backward_is_refused_where_needed(tmp_path):
    extra = input_layer("target", (2, 3, 4, 5))
    body = ('layer { name: "c" type: "Convolution" bottom: "data" top: "c" '
            'convolution_param { num_output: 3 kernel_size: 1 } }\n'
            + _layer("Threshold", bottom="c", top="t")
            + 'layer { name: "loss" type: "EuclideanLoss" bottom: "t" bottom: "target" top: "loss" }\n')
    net = ours.Net(_write(tmp_path, _net(body, force_backward=False, extra_inputs=extra)), ours.TRAIN)
    net.forward()
    with pytest.raises(NetError, match="no backward"):
        net.backward()


def test_threshold_force_backward_stops_at_it(tmp_path):
    body = _layer("Threshold", top="t") + _layer("Sigmoid", bottom="t", top="s", name="s")
    net = ours.Net(_write(tmp_path, _net(body)), ours.TRAIN)
    net.blobs["data"].data[...] = _values()
    net.forward()
    net.blobs["s"].diff[...] = 1.0
    net.blobs["data"].diff[...] = 7.0
    net.backward()
    assert net.blobs["t"].diff.any()
    assert (net.blobs["data"].diff == 7.0).all()    # untouched: no gradient below Threshold


# ---------------------------------------------------------------- parameters and checks
@pytest.mark.parametrize("text,message", [
    ('Exp" exp_param { base: -2 }', "strictly positive"),
    ('Exp" exp_param { base: 0 }', "strictly positive"),
    ('Log" log_param { base: 1 }', "not finite"),
    ('Log" log_param { base: -0.5 }', "strictly positive"),
    ('Clip" clip_param { min: 1 }', "required"),
])
def test_parameter_checks(tmp_path, text, message):
    kind, spec = text.split('"', 1)
    with pytest.raises(NetError, match=message):
        ours.Net(_write(tmp_path, _net(_layer(kind, spec.strip()))), ours.TEST)


def test_prelu_needs_two_axes(tmp_path):
    with pytest.raises(NetError, match="at least 2 axes"):
        ours.Net(_write(tmp_path, _net(_layer("PReLU"), shape=(6,))), ours.TEST)


FILLED = {
    "prelu_default": _layer("PReLU"),
    "prelu_gaussian": _layer("PReLU", 'prelu_param { filler { type: "gaussian" std: 0.3 } }'),
    "prelu_shared_uniform": _layer("PReLU", 'prelu_param { channel_shared: true '
                                            'filler { type: "uniform" min: -1 max: 2 } }'),
    "bias_default": _layer("Bias"),
    "bias_gaussian": _layer("Bias", 'bias_param { axis: 0 num_axes: 2 '
                                    'filler { type: "gaussian" mean: 1 std: 2 } }'),
    "scale_fillers": _layer("Scale", 'scale_param { num_axes: 2 filler { type: "uniform" } '
                                     'bias_term: true bias_filler { type: "gaussian" } }'),
    "scale_default_bias": _layer("Scale", "scale_param { axis: 0 num_axes: 0 bias_term: true }"),
    "embed_default": _layer("Embed", "embed_param { num_output: 3 input_dim: 5 }"),
    "embed_fillers": _layer("Embed", 'embed_param { num_output: 4 input_dim: 6 '
                                     'weight_filler { type: "xavier" } '
                                     'bias_filler { type: "gaussian" std: 0.5 } }'),
}


@pytest.mark.parametrize("variant", sorted(FILLED))
def test_fillers_and_defaults(real_caffe, tmp_path, variant):
    path = _write(tmp_path, _net(FILLED[variant], force_backward=False))
    real_caffe.set_random_seed(1705)
    theirs = real_caffe.Net(path, real_caffe.TRAIN)
    ours.set_random_seed(1705)
    mine = ours.Net(path, ours.TRAIN)
    assert list(mine.params["n"]) and len(mine.params["n"]) == len(theirs.params["n"])
    for a, b in zip(mine.params["n"], theirs.params["n"]):
        assert a.data.shape == b.data.shape
        np.testing.assert_array_equal(a.data, b.data)


# ---------------------------------------------------------------- Bias
BIAS = {
    "default": ("", ()),
    "axis0_two": ("bias_param { axis: 0 num_axes: 2 }", ()),
    "axis2_rest": ("bias_param { axis: 2 num_axes: -1 }", ()),
    "scalar": ("bias_param { num_axes: 0 }", ()),
    "scalar_any_axis": ("bias_param { axis: -1 num_axes: 0 }", ()),
    "negative_axis": ("bias_param { axis: -2 }", ()),
    "all": ("bias_param { axis: 0 num_axes: -1 }", ()),
    "bottom": ("", (3,)),
    "bottom_axis2": ("bias_param { axis: 2 }", (4, 5)),
    "bottom_axis0": ("bias_param { axis: 0 }", (2, 3, 4)),
    "bottom_negative_axis": ("bias_param { axis: -3 }", (3, 4)),
}


@pytest.mark.parametrize("in_place", [False, True])
@pytest.mark.parametrize("variant", sorted(BIAS))
def test_bias(real_caffe, variant, in_place):
    spec, bshape = BIAS[variant]
    extra = input_layer("b", bshape) if bshape else ""
    bottoms = 'bottom: "data" bottom: "b"' if bshape else 'bottom: "data"'
    top = "data" if in_place else "y"
    body = f'layer {{ name: "n" type: "Bias" {bottoms} top: "{top}" {spec} }}\n'
    check(real_caffe, _net(body, extra_inputs=extra), phase=0 if in_place else 1)


@pytest.mark.parametrize("spec,bshape,message", [
    ("bias_param { axis: 2 num_axes: 3 }", None, "extends past"),
    ("bias_param { num_axes: -2 }", None, "num_axes"),
    ("bias_param { axis: 4 }", None, "out of range"),
    ("", (4,), "does not match"),
    ("bias_param { axis: 3 }", (5, 2), "extends past"),
])
def test_bias_checks(tmp_path, spec, bshape, message):
    extra = input_layer("b", bshape) if bshape else ""
    bottoms = 'bottom: "data" bottom: "b"' if bshape else 'bottom: "data"'
    body = f'layer {{ name: "n" type: "Bias" {bottoms} top: "y" {spec} }}\n'
    with pytest.raises(NetError, match=message):
        ours.Net(_write(tmp_path, _net(body, extra_inputs=extra)), ours.TEST)


# ---------------------------------------------------------------- Scale (beyond test_engine_layers)
SCALE = {
    "scalar": ("scale_param { num_axes: 0 bias_term: true }", ()),
    "scalar_axis_ignored": ("scale_param { axis: -1 num_axes: 0 }", ()),
    "negative_axis": ("scale_param { axis: -1 bias_term: true }", ()),
    "rest_from_2": ("scale_param { axis: 2 num_axes: -1 bias_term: true }", ()),
    "all": ("scale_param { axis: 0 num_axes: -1 }", ()),
    "axis0_one": ("scale_param { axis: 0 bias_term: true }", ()),
    "axis0_two": ("scale_param { axis: 0 num_axes: 2 }", ()),
    "bottom": ("", (3,)),
    "bottom_bias": ("scale_param { bias_term: true }", (3, 4)),
    "bottom_axis2_bias": ("scale_param { axis: 2 bias_term: true }", (4, 5)),
    "bottom_negative_axis": ("scale_param { axis: -2 bias_term: true }", (4,)),
    "bottom_eltwise": ("scale_param { axis: 0 bias_term: true }", SHAPE),
    "bottom_axis0": ("scale_param { axis: 0 }", (2,)),
}


@pytest.mark.parametrize("in_place", [False, True])
@pytest.mark.parametrize("variant", sorted(SCALE))
def test_scale(real_caffe, variant, in_place):
    spec, gshape = SCALE[variant]
    extra = input_layer("g", gshape) if gshape else ""
    bottoms = 'bottom: "data" bottom: "g"' if gshape else 'bottom: "data"'
    top = "data" if in_place else "y"
    body = f'layer {{ name: "n" type: "Scale" {bottoms} top: "{top}" {spec} }}\n'
    check(real_caffe, _net(body, extra_inputs=extra), phase=0 if in_place else 1)


@pytest.mark.parametrize("variant", ["axis0_one", "axis0_two", "all", "scalar", "negative_axis",
                                     "rest_from_2"])
def test_scale_param_diff_accumulates_or_not_as_caffe(real_caffe, variant):
    # Caffe assigns gamma's diff when gamma starts at axis 0 with several values (or covers
    # the bottom) and adds to it otherwise: a second backward shows which.
    spec, _ = SCALE[variant]
    body = f'layer {{ name: "n" type: "Scale" bottom: "data" top: "y" {spec} }}\n'
    report = check(real_caffe, _net(body))
    diff = np.random.RandomState(9).randn(*SHAPE).astype(np.float32)
    for net in (report.ours, report.real):
        net.blobs["y"].diff[...] = diff
        net.backward()
    for k, (a, b) in enumerate(zip(report.ours.params["n"], report.real.params["n"])):
        np.testing.assert_allclose(a.diff, b.diff, rtol=1e-5, atol=1e-5, err_msg=f"param {k}")


def test_scale_scalar_second_bottom_ignores_axis(real_caffe):
    # A scalar gamma sits at axis 0 whatever axis says (here beyond the bottom's axes).
    extra = input_layer("g", ())
    body = 'layer { name: "n" type: "Scale" bottom: "data" bottom: "g" top: "y" scale_param { axis: 3 } }\n'
    check(real_caffe, _net(body, extra_inputs=extra))


# ---------------------------------------------------------------- MVN
MVN = {
    "default": "",
    "mean_only": "mvn_param { normalize_variance: false }",
    "across": "mvn_param { across_channels: true }",
    "across_mean_only": "mvn_param { across_channels: true normalize_variance: false }",
    "eps_large": "mvn_param { eps: 0.5 }",
    "across_eps": "mvn_param { across_channels: true eps: 0.01 }",
}


@pytest.mark.parametrize("shape", [SHAPE, (3, 4), (2, 3, 6)])
@pytest.mark.parametrize("in_place", [False, True])
@pytest.mark.parametrize("variant", sorted(MVN))
def test_mvn(real_caffe, variant, in_place, shape):
    top = "data" if in_place else "y"
    body = f'layer {{ name: "n" type: "MVN" bottom: "data" top: "{top}" {MVN[variant]} }}\n'
    # In place, Caffe's top (and so the shared blob) is 4-D from construction on.
    x = (_values(shape=shape, scale=3) + 1.5).reshape(shape + (1,) * (4 - len(shape)) if in_place
                                                       else shape)
    report = check(real_caffe, _net(body, shape), phase=0 if in_place else 1, inputs={"data": x})
    assert report.ours.blobs[top].data.ndim == 4


@pytest.mark.parametrize("phase", [0, 1])
@pytest.mark.parametrize("variant", ["default", "eps_large", "mean_only"])
def test_mvn_then_in_place_scale(real_caffe, variant, phase):
    body = (f'layer {{ name: "n" type: "MVN" bottom: "data" top: "y" {MVN[variant]} }}\n'
            'layer { name: "s" type: "Scale" bottom: "y" top: "y" scale_param { bias_term: true } }\n')
    check(real_caffe, _net(body), phase=phase)


def test_mvn_refuses_five_axes(tmp_path):
    with pytest.raises(NetError, match="at most 4"):
        ours.Net(_write(tmp_path, _net(_layer("MVN"), shape=(1, 2, 2, 2, 2))), ours.TEST)


# ---------------------------------------------------------------- Embed
def _embed_net(spec, shape, force_backward=False):
    top_shape = shape + (spec[1],)
    extra = input_layer("target", top_shape)
    body = (f'layer {{ name: "n" type: "Embed" bottom: "data" top: "e" embed_param {{ '
            f'num_output: {spec[1]} input_dim: {spec[0]} {spec[2]} }} }}\n'
            'layer { name: "loss" type: "EuclideanLoss" bottom: "e" bottom: "target" top: "loss" }\n')
    return _net(body, shape, force_backward=force_backward, extra_inputs=extra)


EMBED = {
    "bias": ((7, 3, ""), (2, 5)),
    "no_bias": ((4, 2, "bias_term: false"), (6,)),
    "repeats": ((3, 4, ""), (2, 3, 4)),
}


@pytest.mark.parametrize("phase", [0, 1])
@pytest.mark.parametrize("variant", sorted(EMBED))
def test_embed(real_caffe, variant, phase):
    spec, shape = EMBED[variant]
    index = np.random.RandomState(3).randint(0, spec[0], size=shape).astype(np.float32)
    index.reshape(-1)[:2] = (0, spec[0] - 1)
    report = check(real_caffe, _embed_net(spec, shape), phase=phase, inputs={"data": index})
    assert report.ours.params["n"][0].diff.any()


@pytest.mark.parametrize("value", [-1.0, 7.0, 2.5])
def test_embed_refuses_bad_indices(tmp_path, value):
    net = ours.Net(_write(tmp_path, _embed_net((7, 3, ""), (2, 5))), ours.TEST)
    net.blobs["data"].data[...] = 1.0
    net.blobs["data"].data[1, 2] = value
    with pytest.raises(NetError, match="integer index"):
        net.forward()


def test_embed_indices_get_no_gradient(tmp_path):
    # force_backward does not reach the indices (Caffe would abort); a layer below that
    # needs their diff is refused in backward.
    net = ours.Net(_write(tmp_path, _embed_net((7, 3, ""), (2, 5), force_backward=True)),
                   ours.TRAIN)
    net.blobs["data"].data[...] = 2.0
    net.forward()
    net.backward()
    assert not net.blobs["data"].diff.any()
    body = ('layer { name: "c" type: "InnerProduct" bottom: "data" top: "c" '
            'inner_product_param { num_output: 4 } }\n'
            'layer { name: "n" type: "Embed" bottom: "c" top: "e" '
            'embed_param { num_output: 2 input_dim: 5 } }\n'
            'layer { name: "loss" type: "EuclideanLoss" bottom: "e" bottom: "target" top: "loss" }\n')
    net = ours.Net(_write(tmp_path, _net(body, (2, 3), force_backward=False,
                                         extra_inputs=input_layer("target", (2, 4, 2)))), ours.TRAIN)
    net.params["c"][0].data[...] = 0.0
    net.params["c"][1].data[...] = 1.0
    net.forward()
    with pytest.raises(NetError, match="cannot backpropagate"):
        net.backward()


def test_embed_checks(tmp_path):
    for spec, message in (("input_dim: 3", "num_output"), ("num_output: 3", "input_dim")):
        body = f'layer {{ name: "n" type: "Embed" bottom: "data" top: "e" embed_param {{ {spec} }} }}\n'
        with pytest.raises(NetError, match=message):
            ours.Net(_write(tmp_path, _net(body, (2,))), ours.TEST)

