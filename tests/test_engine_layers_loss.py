"""Loss layers through our Net and real pycaffe with the same inputs: the loss and every
bottom diff agree to float rounding, across each layer's parameters, normalization modes,
ignore_label, loss_weight and force_backward; kinks and clamps are fed on purpose. A backward
that must reach a label (or InfogainLoss's H) is refused, as Caffe aborts on it (checked in a
child process for real Caffe)."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from deepmammo.caffe import Net
from deepmammo.caffe.crosscheck import crosscheck
from deepmammo.caffe.formats.blobproto import array_to_blob
from deepmammo.caffe.netstate import NetError

TOL = 2e-6


def _input(name, shape):
    dims = " ".join(f"dim: {d}" for d in shape)
    return f'layer {{ name: "{name}" type: "Input" top: "{name}" input_param {{ shape {{ {dims} }} }} }}\n'


def _text(inputs, body, force_backward=True):
    head = f'name: "loss"\nforce_backward: {"true" if force_backward else "false"}\n'
    return head + "".join(_input(n, s) for n, s in inputs.items()) + body


def _check(real, inputs, body, values, force_backward=True, phase=0):
    text = _text(inputs, body, force_backward)
    report = crosscheck(real, text, phase, inputs=values)
    assert report.worst() < TOL, report
    return report


def _ours(tmp_path, inputs, body, force_backward=True):
    path = tmp_path / "net.prototxt"
    path.write_text(_text(inputs, body, force_backward))
    return Net(str(path), 0)


# ---------------------------------------------------------------- ContrastiveLoss
def _pairs(n=8, c=3, scale=0.8):
    rs = np.random.RandomState(11)
    a = (rs.randn(n, c) * scale).astype(np.float32)
    b = (rs.randn(n, c) * scale).astype(np.float32)
    b[0] = a[0]                      # distance 0: the 1e-4 guard of the gradient
    b[1] = a[1] + 0.01
    y = np.array([1, 0, 1, 0, 0, 0.7, 2, 0][:n], np.float32)   # 0.7 truncates to dissimilar
    return a, b, y


CONTRASTIVE = {
    "default": "",
    "margin": "contrastive_loss_param { margin: 2.5 }",
    "legacy": "contrastive_loss_param { legacy_version: true }",
    "legacy_margin": "contrastive_loss_param { margin: 3.0 legacy_version: true }",
    "weight": "loss_weight: 1.7 contrastive_loss_param { margin: 1.5 }",
}


@pytest.mark.parametrize("variant", sorted(CONTRASTIVE))
@pytest.mark.parametrize("four_d", [False, True])
def test_contrastive_loss(real_caffe, variant, four_d):
    a, b, y = _pairs()
    if four_d:
        a, b, y = a[:, :, None, None], b[:, :, None, None], y[:, None, None, None]
    body = ('layer { name: "loss" type: "ContrastiveLoss" bottom: "a" bottom: "b" bottom: "y" '
            f'top: "loss" {CONTRASTIVE[variant]} }}')
    report = _check(real_caffe, {"a": a.shape, "b": b.shape, "y": y.shape}, body,
                    {"a": a, "b": b, "y": y})
    assert report.ours.blobs["loss"].data > 0
    assert not report.ours.blobs["y"].diff.any()      # force_backward stops at y


def test_contrastive_loss_shape_checks(tmp_path):
    body = 'layer { name: "loss" type: "ContrastiveLoss" bottom: "a" bottom: "b" bottom: "y" top: "loss" }'
    with pytest.raises(NetError, match="height and width 1"):
        _ours(tmp_path, {"a": (2, 3, 2), "b": (2, 3, 2), "y": (2,)}, body)
    with pytest.raises(NetError, match="same channels"):
        _ours(tmp_path, {"a": (2, 3), "b": (2, 4), "y": (2,)}, body)
    with pytest.raises(NetError, match="same first dimension"):
        _ours(tmp_path, {"a": (2, 3), "b": (3, 3), "y": (2,)}, body)


# ---------------------------------------------------------------- HingeLoss
def _hinge_inputs(shape=(6, 5)):
    rs = np.random.RandomState(4)
    x = rs.uniform(-2, 2, size=shape).astype(np.float32)
    n, dim = shape[0], int(np.prod(shape[1:]))
    labels = rs.randint(0, dim, size=n).astype(np.float32)
    flat = x.reshape(n, dim)
    flat[0, :] = -1.0                          # 1 + x = 0 off the label: at the kink
    flat[1, int(labels[1])] = 1.0              # 1 - x = 0 at the label
    return x, labels


@pytest.mark.parametrize("norm", ["", "hinge_loss_param { norm: L1 }",
                                  "hinge_loss_param { norm: L2 }",
                                  "loss_weight: 0.3 hinge_loss_param { norm: L2 }",
                                  "loss_weight: 2 hinge_loss_param { norm: L1 }"])
@pytest.mark.parametrize("shape", [(6, 5), (4, 2, 2, 3)])
def test_hinge_loss(real_caffe, norm, shape):
    x, labels = _hinge_inputs(shape)
    body = f'layer {{ name: "loss" type: "HingeLoss" bottom: "x" bottom: "label" top: "loss" {norm} }}'
    _check(real_caffe, {"x": shape, "label": (shape[0],)}, body, {"x": x, "label": labels})


def test_hinge_loss_behind_a_learning_layer(real_caffe):
    # No force_backward: the gradient reaches the scores because an InnerProduct learns.
    rs = np.random.RandomState(2)
    labels = rs.randint(0, 4, size=5).astype(np.float32)
    body = ('layer { name: "ip" type: "InnerProduct" bottom: "x" top: "ip" inner_product_param { num_output: 4 } }\n'
            'layer { name: "loss" type: "HingeLoss" bottom: "ip" bottom: "label" top: "loss" '
            'hinge_loss_param { norm: L2 } }')
    _check(real_caffe, {"x": (5, 3), "label": (5,)}, body, {"label": labels}, force_backward=False)


# ---------------------------------------------------------------- MultinomialLogisticLoss
@pytest.mark.parametrize("spec", ["", "loss_weight: 0.5"])
@pytest.mark.parametrize("label_shape", [(6,), (6, 1, 1, 1)])
def test_multinomial_logistic_loss(real_caffe, spec, label_shape):
    rs = np.random.RandomState(8)
    p = rs.dirichlet(np.ones(4), size=6).astype(np.float32)
    labels = rs.randint(0, 4, size=6).astype(np.float32)
    p[0, int(labels[0])] = 0.0                   # clamped at kLOG_THRESHOLD
    p[1, int(labels[1])] = 1e-25
    body = f'layer {{ name: "loss" type: "MultinomialLogisticLoss" bottom: "p" bottom: "label" top: "loss" {spec} }}'
    report = _check(real_caffe, {"p": (6, 4), "label": label_shape}, body,
                    {"p": p, "label": labels.reshape(label_shape)})
    assert report.ours.blobs["loss"].data > 46 / 6 * 2     # two clamped terms of -log(1e-20)


def test_multinomial_logistic_loss_after_softmax(real_caffe):
    labels = np.random.RandomState(1).randint(0, 3, size=(4, 1, 1, 1)).astype(np.float32)
    body = ('layer { name: "sm" type: "Softmax" bottom: "x" top: "p" }\n'
            'layer { name: "loss" type: "MultinomialLogisticLoss" bottom: "p" bottom: "label" top: "loss" }')
    _check(real_caffe, {"x": (4, 3, 2, 1), "label": (4, 1, 1, 1)}, body, {"label": labels})


def test_multinomial_logistic_loss_label_shape(tmp_path):
    body = 'layer { name: "loss" type: "MultinomialLogisticLoss" bottom: "p" bottom: "label" top: "loss" }'
    with pytest.raises(NetError, match="channels, height and width 1"):
        _ours(tmp_path, {"p": (3, 4), "label": (3, 2)}, body)


# ---------------------------------------------------------------- InfogainLoss
def _infogain_matrix(n, seed=3):
    rs = np.random.RandomState(seed)
    return (np.eye(n) + rs.uniform(0, 0.4, size=(n, n))).astype(np.float32)


def _write_h(path, H, legacy=False):
    blob = array_to_blob(H[None, None] if legacy else H, legacy=legacy)
    path.write_bytes(blob.SerializeToString())
    return str(path)


INFOGAIN = {
    "default": ("", 1),
    "ignore": ("loss_param { ignore_label: 2 }", 1),
    "full": ("loss_param { ignore_label: 2 normalization: FULL }", 1),
    "batch": ("loss_param { ignore_label: 0 normalization: BATCH_SIZE }", 1),
    "none": ("loss_param { normalization: NONE }", 1),
    "valid_no_ignore": ("loss_param { normalization: VALID }", 1),
    "weight": ("loss_weight: 2.5", 1),
    "axis2": ("infogain_loss_param { axis: 2 }", 2),
    "axis_last": ("infogain_loss_param { axis: -1 } loss_param { ignore_label: 1 }", -1),
}


@pytest.mark.parametrize("variant", sorted(INFOGAIN))
def test_infogain_loss_source(real_caffe, tmp_path, variant):
    spec, axis = INFOGAIN[variant]
    shape = (2, 4, 3, 2) if axis == 1 else (2, 3, 4, 4)
    n_labels = shape[axis]
    label_shape = tuple(d for i, d in enumerate(shape) if i != axis % 4)
    rs = np.random.RandomState(6)
    labels = rs.randint(0, n_labels, size=label_shape).astype(np.float32)
    labels.flat[0] = 2
    x = (rs.randn(*shape) * 3).astype(np.float32)
    x.flat[1] = 60.0                         # a probability of ~0 somewhere: the clamp
    source = _write_h(tmp_path / "H.binaryproto", _infogain_matrix(n_labels),
                      legacy=variant == "weight")
    if "infogain_loss_param" in spec:
        spec = spec.replace("infogain_loss_param {", f'infogain_loss_param {{ source: "{source}"')
    else:
        spec += f' infogain_loss_param {{ source: "{source}" }}'
    body = f'layer {{ name: "loss" type: "InfogainLoss" bottom: "x" bottom: "label" top: "loss" {spec} }}'
    _check(real_caffe, {"x": shape, "label": label_shape}, body, {"x": x, "label": labels})


def test_infogain_loss_third_bottom_and_prob_top(real_caffe):
    rs = np.random.RandomState(9)
    labels = rs.randint(0, 4, size=(5,)).astype(np.float32)
    H = _infogain_matrix(4, seed=5)
    body = ('layer { name: "ip" type: "InnerProduct" bottom: "x" top: "ip" inner_product_param { num_output: 4 } }\n'
            'layer { name: "loss" type: "InfogainLoss" bottom: "ip" bottom: "label" bottom: "H" '
            'top: "loss" top: "prob" loss_weight: 1.5 loss_weight: 0 loss_param { ignore_label: 3 } }')
    report = _check(real_caffe, {"x": (5, 3), "label": (5,), "H": (1, 1, 4, 4)}, body,
                    {"label": labels, "H": H[None, None]}, force_backward=False)
    prob = report.ours.blobs["prob"].data
    np.testing.assert_allclose(prob.sum(axis=1), 1, rtol=1e-6)


def test_infogain_loss_refusals(tmp_path):
    body = 'layer { name: "loss" type: "InfogainLoss" bottom: "x" bottom: "label" top: "loss" SPEC }'
    with pytest.raises(NetError, match="infogain matrix source must be specified"):
        _ours(tmp_path, {"x": (2, 3), "label": (2,)}, body.replace("SPEC", ""))
    source = _write_h(tmp_path / "H.binaryproto", _infogain_matrix(3))
    with pytest.raises(NetError, match="normalize is deprecated"):
        _ours(tmp_path, {"x": (2, 3), "label": (2,)},
              body.replace("SPEC", f'infogain_loss_param {{ source: "{source}" }} '
                           'loss_param { normalize: true }'))
    with pytest.raises(NetError, match="H must be 4x4"):
        _ours(tmp_path, {"x": (2, 4), "label": (2,)},
              body.replace("SPEC", f'infogain_loss_param {{ source: "{source}" }}'))
    # H as a bottom with force_backward: Caffe forces H into backward, then refuses it.
    net = _ours(tmp_path, {"x": (2, 3), "label": (2,), "H": (3, 3)},
                'layer { name: "loss" type: "InfogainLoss" bottom: "x" bottom: "label" bottom: "H" top: "loss" }')
    net.blobs["H"].data[...] = _infogain_matrix(3)
    net.forward()
    with pytest.raises(NetError, match="cannot backpropagate to infogain inputs"):
        net.backward()


# ---------------------------------------------------------------- SigmoidCrossEntropyLoss
SIGMOID_CE = {
    "default": "",
    "ignore": "loss_param { ignore_label: -1 }",
    "full": "loss_param { ignore_label: -1 normalization: FULL }",
    "valid": "loss_param { ignore_label: -1 normalization: VALID }",
    "valid_no_ignore": "loss_param { normalization: VALID }",
    "none": "loss_param { normalization: NONE }",
    "normalize_true": "loss_param { normalize: true ignore_label: -1 }",
    "normalize_false": "loss_param { normalize: false }",
    "weight": "loss_weight: 0.25 loss_param { ignore_label: -1 }",
}


@pytest.mark.parametrize("variant", sorted(SIGMOID_CE))
def test_sigmoid_cross_entropy_loss(real_caffe, variant):
    rs = np.random.RandomState(12)
    x = (rs.randn(3, 2, 2, 2) * 4).astype(np.float32)
    x.flat[:4] = [40.0, -40.0, 0.0, -0.0]        # the stable form at its extremes and at 0
    t = rs.uniform(0, 1, size=(3, 8)).astype(np.float32)
    t[t > 0.6] = 1.0
    t[t < 0.1] = -1.0                            # ignored where ignore_label is -1
    body = f'layer {{ name: "loss" type: "SigmoidCrossEntropyLoss" bottom: "x" bottom: "t" top: "loss" {SIGMOID_CE[variant]} }}'
    _check(real_caffe, {"x": x.shape, "t": t.shape}, body, {"x": x, "t": t})


def test_sigmoid_cross_entropy_count_check(tmp_path):
    body = 'layer { name: "loss" type: "SigmoidCrossEntropyLoss" bottom: "x" bottom: "t" top: "loss" }'
    with pytest.raises(NetError, match="same count"):
        _ours(tmp_path, {"x": (2, 3), "t": (2, 4)}, body)


# ---------------------------------------------------------------- EuclideanLoss
@pytest.mark.parametrize("spec", ["", "loss_weight: 0.7", "loss_weight: -2"])
def test_euclidean_loss_both_bottoms(real_caffe, spec):
    # force_backward reaches both bottoms (Caffe's EuclideanLoss allows it), of different
    # shapes with the same count per sample.
    body = f'layer {{ name: "loss" type: "EuclideanLoss" bottom: "a" bottom: "b" top: "loss" {spec} }}'
    report = _check(real_caffe, {"a": (3, 4), "b": (3, 2, 2)}, body, {})
    assert report.ours.blobs["b"].diff.any()


def test_euclidean_loss_checks(tmp_path):
    body = 'layer { name: "loss" type: "EuclideanLoss" bottom: "a" bottom: "b" top: "loss" }'
    with pytest.raises(NetError, match="same first dimension"):
        _ours(tmp_path, {"a": (3, 4), "b": (4, 3)}, body)
    with pytest.raises(NetError, match="equal dimensions"):
        _ours(tmp_path, {"a": (3, 4), "b": (3, 5)}, body)


# ---------------------------------------------------------------- SoftmaxWithLoss
SOFTMAX = {
    "valid": "",
    "valid_ignore": "loss_param { ignore_label: 2 }",
    "full": "loss_param { normalization: FULL }",
    "full_ignore": "loss_param { ignore_label: 2 normalization: FULL }",
    "batch": "loss_param { normalization: BATCH_SIZE }",
    "batch_ignore": "loss_param { ignore_label: 0 normalization: BATCH_SIZE }",
    "none": "loss_param { normalization: NONE }",
    "none_ignore": "loss_param { ignore_label: 1 normalization: NONE }",
    "normalize_true": "loss_param { normalize: true ignore_label: 2 }",
    "normalize_false": "loss_param { normalize: false ignore_label: 2 }",
    "normalization_beats_normalize": "loss_param { normalize: false normalization: FULL }",
    "weight": "loss_weight: 3 loss_param { ignore_label: 2 }",
    "axis2": "softmax_param { axis: 2 } loss_param { ignore_label: 1 }",
}


@pytest.mark.parametrize("variant", sorted(SOFTMAX))
def test_softmax_with_loss_modes(real_caffe, variant):
    rs = np.random.RandomState(5)
    if variant == "axis2":
        shape, label_shape, n = (2, 3, 4, 2), (2, 3, 2), 4
    else:
        shape, label_shape, n = (2, 4, 3, 2), (2, 1, 3, 2), 4
    labels = rs.randint(0, n, size=label_shape).astype(np.float32)
    labels.flat[0] = 2
    x = (rs.randn(*shape) * 2).astype(np.float32)
    body = f'layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "x" bottom: "label" top: "loss" {SOFTMAX[variant]} }}'
    _check(real_caffe, {"x": shape, "label": label_shape}, body, {"x": x, "label": labels})


# ---------------------------------------------------------------- labels take no gradient
LABELLED = {
    "SoftmaxWithLoss": ((3, 4), (3,), ""),
    "HingeLoss": ((3, 4), (3,), ""),
    "MultinomialLogisticLoss": ((3, 4), (3,), ""),
    "SigmoidCrossEntropyLoss": ((3, 4), (3, 4), ""),
    "InfogainLoss": ((3, 4), (3,), "SOURCE"),
}


@pytest.mark.parametrize("kind", sorted(LABELLED))
def test_backward_to_labels_is_refused(tmp_path, kind):
    x_shape, label_shape, extra = LABELLED[kind]
    if extra == "SOURCE":
        source = _write_h(tmp_path / "H.binaryproto", _infogain_matrix(4))
        extra = f'infogain_loss_param {{ source: "{source}" }}'
    body = (f'layer {{ name: "loss" type: "{kind}" bottom: "x" bottom: "label" top: "loss" '
            f'propagate_down: true propagate_down: true {extra} }}')
    net = _ours(tmp_path, {"x": x_shape, "label": label_shape}, body)
    net.blobs["x"].data[...] = np.random.RandomState(0).uniform(0.1, 1, size=x_shape)
    net.blobs["label"].data[...] = 1
    net.forward()
    with pytest.raises(NetError, match=f"{kind} Layer cannot backpropagate to label inputs"):
        net.backward()


@pytest.mark.subprocess
@pytest.mark.parametrize("kind", ["SoftmaxWithLoss", "SigmoidCrossEntropyLoss"])
def test_real_caffe_aborts_on_label_backward(real_caffe, tmp_path, kind):
    # What the refusal above reproduces: real Caffe's Backward aborts the process.
    label_shape = (3,) if kind == "SoftmaxWithLoss" else (3, 4)
    path = tmp_path / "net.prototxt"
    path.write_text(_text({"x": (3, 4), "label": label_shape},
                          f'layer {{ name: "loss" type: "{kind}" bottom: "x" bottom: "label" '
                          'top: "loss" propagate_down: true propagate_down: true }'))
    python_dir = os.path.dirname(os.path.dirname(real_caffe.__file__))
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {python_dir!r})
        import caffe
        caffe.set_mode_cpu()
        net = caffe.Net({str(path)!r}, caffe.TRAIN)
        net.blobs["label"].data[...] = 1
        net.forward()
        net.backward()
        print("survived")
    """)
    env = dict(os.environ, GLOG_minloglevel="2")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env, timeout=120)
    assert run.returncode != 0 and "survived" not in run.stdout
    assert f"{kind} Layer cannot backpropagate to label inputs" in run.stderr
