"""RNN, LSTM and LSTMUnit through our Net and real pycaffe: forward tops and backward diffs
(inputs and parameters) agree to float rounding, over time steps, streams, widths, a static
input, exposed hidden states, sequence resets mid-sequence and state carried between forwards;
fillers draw Caffe's numbers in Caffe's order; weights load both ways through .caffemodel."""
import numpy as np
import pytest

import deepmammo.caffe as ours
from deepmammo.caffe.crosscheck import crosscheck, relative_error
from deepmammo.caffe.netstate import NetError

TOL = 2e-5


def _input(name, shape):
    dims = " ".join(f"dim: {d}" for d in shape)
    return f'layer {{ name: "{name}" type: "Input" top: "{name}" input_param {{ shape {{ {dims} }} }} }}\n'


def _recurrent_net(kind, steps, streams, hidden, x_dims=(4,), static_dims=None, expose=False,
                   fillers=""):
    text = 'name: "t"\nforce_backward: true\n'
    text += _input("x", (steps, streams) + tuple(x_dims)) + _input("cont", (steps, streams))
    bottoms, tops = ['x', 'cont'], ['y']
    if static_dims is not None:
        text += _input("xs", (streams,) + tuple(static_dims))
        bottoms.append("xs")
    if expose:
        states = ["h"] if kind == "RNN" else ["h", "c"]
        for s in states:
            text += _input(f"{s}0", (1, streams, hidden))
            bottoms.append(f"{s}0")
            tops.append(f"{s}T")
    links = " ".join(f'bottom: "{b}"' for b in bottoms) + " " + " ".join(f'top: "{t}"' for t in tops)
    text += (f'layer {{ name: "r" type: "{kind}" {links} recurrent_param {{ num_output: {hidden} '
             f'expose_hidden: {"true" if expose else "false"} {fillers} }} }}\n')
    return text


def _cont(steps, streams, resets=()):
    """cont 1 (go on from the previous step or the initial state) but 0 (start a new
    sequence) at each (t, n) in `resets`."""
    cont = np.ones((steps, streams), dtype=np.float32)
    for t, n in resets:
        cont[t, n] = 0
    return cont


def _check(real, text, inputs, phase=1):
    report = crosscheck(real, text, phase, inputs=inputs)
    assert report.worst() < TOL, report
    return report


# kind, steps, streams, hidden, x dims, static dims, expose, resets
CASES = {
    "rnn_basic": ("RNN", 3, 2, 4, (5,), None, False, ()),
    "rnn_one_step": ("RNN", 1, 3, 2, (3,), None, False, ()),
    "rnn_reset_mid": ("RNN", 6, 3, 5, (4,), None, False, ((3, 0), (2, 2), (4, 2))),
    "rnn_static": ("RNN", 4, 2, 3, (2, 3), (3, 2), False, ((2, 1),)),
    "rnn_expose": ("RNN", 5, 2, 4, (3,), None, True, ((0, 0), (3, 1))),
    "rnn_static_expose": ("RNN", 3, 4, 3, (2,), (5,), True, ()),
    "lstm_basic": ("LSTM", 3, 2, 4, (5,), None, False, ()),
    "lstm_one_step": ("LSTM", 1, 2, 3, (2,), None, False, ()),
    "lstm_reset_mid": ("LSTM", 7, 3, 5, (4,), None, False, ((3, 0), (2, 2), (5, 2))),
    "lstm_static": ("LSTM", 4, 3, 3, (2, 2), (4,), False, ((1, 1),)),
    "lstm_expose": ("LSTM", 5, 2, 4, (3,), None, True, ((0, 1), (2, 0))),
    "lstm_static_expose": ("LSTM", 3, 2, 6, (4,), (2, 3), True, ((1, 1),)),
    "lstm_wide": ("LSTM", 4, 5, 16, (12,), None, False, ((2, 3),)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_recurrent_forward_backward(real_caffe, case):
    kind, steps, streams, hidden, x_dims, static_dims, expose, resets = CASES[case]
    text = _recurrent_net(kind, steps, streams, hidden, x_dims, static_dims, expose)
    inputs = {"cont": _cont(steps, streams, resets)}
    report = _check(real_caffe, text, inputs, phase=0 if "static" in case else 1)
    assert not report.ours.blobs["cont"].diff.any()
    if expose:   # Caffe writes no diff into the initial states
        assert not report.ours.blobs["h0"].diff.any()


@pytest.mark.parametrize("kind", ["RNN", "LSTM"])
def test_recurrent_fractional_cont(real_caffe, kind):
    # cont scales the state (and the LSTM's forget gate) by its value; the LSTM cell's
    # gradient then uses Caffe's f * (1 - f), not autograd's exact one.
    text = _recurrent_net(kind, 4, 3, 3, (2,), None, True)
    cont = np.array([[0.5, 1, 0], [0.25, 0, 1], [1, 0.75, 2], [0, 1, 0.5]], dtype=np.float32)
    _check(real_caffe, text, {"cont": cont})


@pytest.mark.parametrize("kind", ["RNN", "LSTM"])
def test_state_carries_between_forwards(real_caffe, kind, tmp_path):
    # Without expose_hidden each forward starts from the last one's final state, and a
    # change of batch size keeps or zeroes that state as Caffe's blob memory does.
    path = tmp_path / "net.prototxt"
    path.write_text(_recurrent_net(kind, 3, 3, 4, (2,), (3,)))
    rnet, onet = real_caffe.Net(str(path), 1), ours.Net(str(path), 1)
    rs = np.random.RandomState(5)
    for name, blobs in rnet.params.items():
        for k, blob in enumerate(blobs):
            blob.data[...] = rs.randn(*blob.data.shape) * 0.5
            onet.params[name][k].data[...] = blob.data
    for streams, resets in ((3, ()), (3, ((0, 1),)), (2, ()), (3, ()), (5, ((1, 4),)),
                            (1, ())):
        cont = np.ones((3, streams), dtype=np.float32)
        for t, n in resets:
            cont[t, n] = 0
        feed = {"x": rs.randn(3, streams, 2), "cont": cont, "xs": rs.randn(streams, 3)}
        for net in (rnet, onet):
            for name, value in feed.items():
                net.blobs[name].reshape(*value.shape)
                net.blobs[name].data[...] = value
            net.reshape()
            net.forward()
        err = relative_error(onet.blobs["y"].data, rnet.blobs["y"].data)
        assert err < TOL, (streams, resets, err)
        diff = rs.randn(*rnet.blobs["y"].data.shape).astype(np.float32)
        for net in (rnet, onet):
            net.blobs["y"].diff[...] = diff
            for blobs in net.params.values():
                for blob in blobs:
                    blob.diff[...] = 0
            net.backward()
        for name in ("x", "xs"):
            err = relative_error(onet.blobs[name].diff, rnet.blobs[name].diff)
            assert err < TOL, (streams, name, err)
        for k, blob in enumerate(rnet.params["r"]):
            err = relative_error(onet.params["r"][k].diff, blob.diff)
            assert err < TOL, (streams, k, err)


LSTM_UNIT = """name: "u"
force_backward: true
""" + _input("c_prev", (1, 4, 3)) + _input("gates", (1, 4, 12)) + _input("cont", (1, 4)) + \
    'layer { name: "unit" type: "LSTMUnit" bottom: "c_prev" bottom: "gates" bottom: "cont" ' \
    'top: "c" top: "h" }\n'


@pytest.mark.parametrize("cont", [[1, 1, 1, 1], [0, 1, 0, 1], [0.5, 0, 1, 2.5]])
def test_lstm_unit(real_caffe, cont):
    _check(real_caffe, LSTM_UNIT, {"cont": np.array([cont], dtype=np.float32)})


@pytest.mark.parametrize("kind", ["RNN", "LSTM"])
def test_fillers_drawn_as_caffe_draws(real_caffe, tmp_path, kind):
    # The unrolled net fills every step's copy of the recurrent weights; only the first is
    # kept, and a layer after it starts where that left the stream.
    fillers = ('weight_filler { type: "gaussian" std: 0.3 } '
               'bias_filler { type: "uniform" min: -1 max: 1 }')
    text = _recurrent_net(kind, 4, 2, 3, (5,), (2,), fillers=fillers)
    text += ('layer { name: "ip" type: "InnerProduct" bottom: "y" top: "z" inner_product_param '
             '{ num_output: 2 axis: 2 weight_filler { type: "xavier" } } }\n')
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    real_caffe.set_random_seed(31)
    rnet = real_caffe.Net(str(path), 0)
    ours.set_random_seed(31)
    onet = ours.Net(str(path), 0)
    assert list(onet.params) == list(rnet.params)
    for name, blobs in rnet.params.items():
        assert [b.data.shape for b in onet.params[name]] == [b.data.shape for b in blobs]
        for k, blob in enumerate(blobs):
            np.testing.assert_array_equal(onet.params[name][k].data, blob.data,
                                          err_msg=f"{name}/{k}")


@pytest.mark.parametrize("kind", ["RNN", "LSTM"])
def test_caffemodel_both_ways(real_caffe, tmp_path, kind):
    path = tmp_path / "net.prototxt"
    path.write_text(_recurrent_net(kind, 3, 2, 4, (3,), (2,), True))
    rs = np.random.RandomState(9)
    feed = {"x": rs.randn(3, 2, 3), "cont": _cont(3, 2), "xs": rs.randn(2, 2),
            "h0": rs.randn(1, 2, 4), "c0": rs.randn(1, 2, 4)}

    def run(net):
        for name in net.inputs:
            net.blobs[name].data[...] = feed[name]
        net.forward()
        return np.array(net.blobs["y"].data, copy=True)

    rnet = real_caffe.Net(str(path), 1)
    for blobs in rnet.params.values():
        for blob in blobs:
            blob.data[...] = rs.randn(*blob.data.shape) * 0.5
    rnet.save(str(tmp_path / "real.caffemodel"))
    onet = ours.Net(str(path), ours.TEST, weights=str(tmp_path / "real.caffemodel"))
    assert relative_error(run(onet), run(rnet)) < TOL
    for blobs in onet.params.values():
        for blob in blobs:
            blob.data[...] = rs.randn(*blob.data.shape) * 0.5
    onet.save(str(tmp_path / "ours.caffemodel"))
    rnet2 = real_caffe.Net(str(path), real_caffe.TEST, weights=str(tmp_path / "ours.caffemodel"))
    assert relative_error(run(onet), run(rnet2)) < TOL


_BAD_INPUTS = (_input("x", (3, 2, 4)) + _input("cont", (3, 2)) + _input("flat", (3, 2))
               + _input("h0", (1, 2, 3)) + _input("c1", (1, 2, 3)) + _input("g", (1, 2, 8))
               + _input("k", (1, 2)))
ERRORS = {
    "num_output": ('type: "RNN" bottom: "x" bottom: "cont" top: "y" '
                   'recurrent_param { num_output: 0 }', "num_output must be positive"),
    "cont_shape": ('type: "LSTM" bottom: "x" bottom: "h0" top: "y" '
                   'recurrent_param { num_output: 3 }', r"bottom\[1\] \(cont\)"),
    "x_axes": ('type: "RNN" bottom: "flat" bottom: "cont" top: "y" '
               'recurrent_param { num_output: 3 }', "at least 3 axes"),
    "static_streams": ('type: "RNN" bottom: "x" bottom: "cont" bottom: "x" top: "y" '
                       'recurrent_param { num_output: 3 }', r"bottom\[2\] \(x_static\)"),
    "exposed_count": ('type: "LSTM" bottom: "x" bottom: "cont" bottom: "h0" top: "y" top: "hT" '
                      'recurrent_param { num_output: 3 expose_hidden: true }',
                      "needs 4..5 bottom"),
    "exposed_tops": ('type: "RNN" bottom: "x" bottom: "cont" bottom: "h0" top: "y" '
                     'recurrent_param { num_output: 3 expose_hidden: true }',
                     "needs exactly 2 top"),
    "exposed_shape": ('type: "RNN" bottom: "x" bottom: "cont" bottom: "h0" top: "y" top: "hT" '
                      'recurrent_param { num_output: 4 expose_hidden: true }',
                      r"initial state\) must have shape \(1, 2, 4\)"),
    "unit_gates": ('type: "LSTMUnit" bottom: "c1" bottom: "g" bottom: "k" top: "c" top: "h"',
                   "4 \\* 3 = 12"),
    "unit_cont": ('type: "LSTMUnit" bottom: "c1" bottom: "g" bottom: "h0" top: "c" top: "h"',
                  r"bottom\[2\] must have shape"),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_recurrent_refuses(case, tmp_path):
    spec, message = ERRORS[case]
    path = tmp_path / "net.prototxt"
    path.write_text(_BAD_INPUTS + f'layer {{ name: "r" {spec} }}\n')
    with pytest.raises(NetError, match=message):
        ours.Net(str(path), ours.TEST)


def test_timesteps_may_not_change(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(_recurrent_net("LSTM", 3, 2, 2))
    net = ours.Net(str(path), ours.TEST)
    net.blobs["x"].reshape(4, 2, 4)
    net.blobs["cont"].reshape(4, 2)
    with pytest.raises(NetError, match="number of timesteps changed"):
        net.reshape()


@pytest.mark.parametrize("kind", ["RNN", "LSTM"])
def test_backward_to_cont_is_refused(tmp_path, kind):
    # Caffe CHECK-fails when the sequence indicators come from a layer that learns.
    text = _recurrent_net(kind, 2, 2, 3).replace('bottom: "cont"', 'bottom: "cont2"')
    text = text.replace('layer { name: "r"', 'layer { name: "cs" type: "Scale" bottom: "cont" '
                        'top: "cont2" scale_param { axis: 0 num_axes: 0 '
                        'filler { type: "constant" value: 1 } } }\nlayer { name: "r" '
                        'loss_weight: 1', 1)
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    net = ours.Net(str(path), ours.TRAIN)
    net.forward()
    with pytest.raises(NetError, match="sequence indicators"):
        net.backward()
