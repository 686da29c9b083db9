"""Our solvers against real BVLC Caffe (pycaffe), step by step, on the same files and weights.

Every solver type with two lr policies over 12 steps, on a net with lr_mult / decay_mult, a
frozen layer (lr_mult 0), and across the cases iter_size, gradient clipping and L1 decay; the
weights are compared after every step. Then solverstates both ways: Caffe's restored in ours,
ours restored in Caffe, each continuing as the other does; and the test-net outputs.
"""
import os

import numpy as np
import pytest

from deepmammo.caffe.scenario import (
    assert_params_close,
    make_data,
    make_initial_weights,
    params_of,
    write_solver,
)
from deepmammo.caffe.solvers import get_solver

STEPS = 12
RTOL, ATOL = 1e-5, 1e-6   # observed: at most 1.2e-7 absolute over 12 steps

CASES = {
    "sgd-step-iter_size": 'type: "SGD" base_lr: 0.1 momentum: 0.9 lr_policy: "step" gamma: 0.5 '
                          "stepsize: 4 weight_decay: 0.01 iter_size: 2",
    "sgd-poly-clip-l1": 'type: "SGD" base_lr: 0.2 momentum: 0.5 lr_policy: "poly" power: 0.5 '
                        'weight_decay: 0.02 regularization_type: "L1" clip_gradients: 0.3',
    "nesterov-inv": 'type: "Nesterov" base_lr: 0.1 momentum: 0.9 lr_policy: "inv" gamma: 0.1 '
                    "power: 0.75 weight_decay: 0.005",
    "nesterov-multistep-clip": 'type: "Nesterov" base_lr: 0.1 momentum: 0.8 lr_policy: '
                               '"multistep" gamma: 0.3 stepvalue: 3 stepvalue: 8 '
                               "clip_gradients: 0.5 weight_decay: 0.01",
    "adagrad-exp": 'type: "AdaGrad" base_lr: 0.1 lr_policy: "exp" gamma: 0.9 weight_decay: 0.01',
    "adagrad-fixed-l1-iter_size": 'type: "AdaGrad" base_lr: 0.05 lr_policy: "fixed" '
                                  'weight_decay: 0.01 regularization_type: "L1" iter_size: 3',
    "rmsprop-multistep": 'type: "RMSProp" base_lr: 0.01 lr_policy: "multistep" gamma: 0.5 '
                         "stepvalue: 2 stepvalue: 6 rms_decay: 0.95 weight_decay: 0.01",
    "rmsprop-sigmoid-clip": 'type: "RMSProp" base_lr: 0.02 lr_policy: "sigmoid" gamma: 0.5 '
                            "stepsize: 6 rms_decay: 0.9 clip_gradients: 0.2",
    "adadelta-fixed": 'type: "AdaDelta" base_lr: 1.0 momentum: 0.95 delta: 1e-6 '
                      'lr_policy: "fixed" weight_decay: 0.01',
    "adadelta-step-iter_size": 'type: "AdaDelta" base_lr: 1.0 momentum: 0.9 delta: 1e-5 '
                               'lr_policy: "step" gamma: 0.5 stepsize: 5 iter_size: 2',
    "adam-step": 'type: "Adam" base_lr: 0.01 momentum: 0.9 momentum2: 0.999 lr_policy: "step" '
                 "gamma: 0.5 stepsize: 4 weight_decay: 0.01",
    "adam-poly-clip-l1": 'type: "Adam" base_lr: 0.02 momentum: 0.9 momentum2: 0.99 '
                         'lr_policy: "poly" power: 2 clip_gradients: 0.1 weight_decay: 0.01 '
                         'regularization_type: "L1"',
}


@pytest.fixture(scope="module")
def setup(real_caffe, tmp_path_factory):
    root = str(tmp_path_factory.mktemp("solver_caffe"))
    net = make_data(root)
    weights = make_initial_weights(real_caffe, net, os.path.join(root, "init.caffemodel"))
    return root, net, weights


@pytest.mark.parametrize("case", sorted(CASES))
def test_trajectory_matches_caffe(real_caffe, setup, case):
    root, net, weights = setup
    body = CASES[case] + f" max_iter: {STEPS} display: 0"
    path = write_solver(root, case, body, net, weights=weights)
    theirs = real_caffe.get_solver(path)
    with get_solver(path) as ours:
        assert_params_close(params_of(ours.net), params_of(theirs.net), 0, 0, f"{case} start")
        for step in range(1, STEPS + 1):
            ours.step(1)
            theirs.step(1)
            assert ours.iter == theirs.iter == step
            assert_params_close(params_of(ours.net), params_of(theirs.net), RTOL, ATOL,
                                f"{case} after step {step}")
        final = params_of(ours.net)
    # The frozen layer never moved.
    init = params_of(real_caffe.Net(net, weights, real_caffe.TRAIN))
    for a, b in zip(final["ip2"], init["ip2"]):
        np.testing.assert_array_equal(a, b)


def _continue_pair(real_caffe, path, state, steps):
    """Ours and Caffe's solvers, both restored from `state`, stepped together; returns the
    final weights of ours and the real solver."""
    theirs = real_caffe.get_solver(path)
    theirs.restore(state)
    with get_solver(path) as ours:
        ours.restore(state)
        assert ours.iter == theirs.iter
        for step in range(steps):
            ours.step(1)
            theirs.step(1)
            assert_params_close(params_of(ours.net), params_of(theirs.net), RTOL, ATOL,
                                f"{os.path.basename(state)} + {step + 1}")
        return params_of(ours.net), theirs


@pytest.mark.parametrize("case", ["adam-step", "rmsprop-multistep", "sgd-step-iter_size"])
def test_caffe_solverstate_restored_in_ours(real_caffe, setup, case):
    root, net, weights = setup
    name = "restore-caffe-" + case
    body = CASES[case] + f" max_iter: {STEPS} display: 0 snapshot: 6"
    path = write_solver(root, name, body, net, weights=weights)
    theirs = real_caffe.get_solver(path)
    theirs.step(6)
    state = os.path.join(root, f"{name}_iter_6.solverstate")
    assert os.path.isfile(state)
    ours, _ = _continue_pair(real_caffe, path, state, 6)
    # Continuing from the restore equals the run that never stopped (6 iterations = one pass
    # over the data, so the data position agrees too).
    theirs.step(6)
    assert_params_close(ours, params_of(theirs.net), RTOL, ATOL,
                        f"{case}: restored vs uninterrupted")


@pytest.mark.parametrize("case", ["adadelta-fixed", "nesterov-multistep-clip"])
def test_our_solverstate_restored_in_caffe(real_caffe, setup, case):
    root, net, weights = setup
    name = "restore-ours-" + case
    body = CASES[case] + f" max_iter: {STEPS} display: 0 snapshot: 6"
    path = write_solver(root, name, body, net, weights=weights)
    with get_solver(path) as ours:
        ours.step(6)
    state = os.path.join(root, f"{name}_iter_6.solverstate")
    assert os.path.isfile(state) and os.path.isfile(state.replace(".solverstate", ".caffemodel"))
    assert not [f for f in os.listdir(root) if f.endswith(".tmp")]
    _, theirs = _continue_pair(real_caffe, path, state, 6)
    # Caffe continuing from our state ends where Caffe's own uninterrupted run ends.
    uninterrupted = real_caffe.get_solver(path)
    uninterrupted.step(12)
    assert_params_close(params_of(theirs.net), params_of(uninterrupted.net), RTOL, ATOL,
                        f"{case}: Caffe from our state vs Caffe uninterrupted")


def test_test_net_outputs_match_caffe(real_caffe, setup):
    root, net, weights = setup
    body = CASES["adam-step"] + " max_iter: 4 display: 0 test_iter: 2 test_interval: 100"
    path = write_solver(root, "testnet", body, net, weights=weights)
    theirs = real_caffe.get_solver(path)
    with get_solver(path) as ours:
        ours.step(4)
        result = ours.test(0)
    theirs.step(4)
    test_net = theirs.test_nets[0]
    test_net.share_with(theirs.net)
    sums = {}
    for _ in range(2):
        out = test_net.forward()
        for k, v in out.items():
            sums[k] = sums.get(k, 0.0) + float(np.asarray(v).sum())
    assert sorted(result) == ["accuracy", "loss"]
    for k in sums:
        np.testing.assert_allclose(result[k], sums[k] / 2, rtol=1e-5, atol=1e-6)
