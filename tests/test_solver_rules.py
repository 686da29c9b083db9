"""Caffe's update rules and lr policies against a hand computation (the closed-form least squares
check of Caffe's own test_gradient_based_solver.cpp), on a stand-in net with two blobs.

E = 1/(2N) ||X w + b - y||^2, plus weight decay lambda/2 ||w||^2 (L2) or lambda |w| (L1).
The reference below is written from Caffe's update formulas (docs/engine.md), in float64 numpy, so it
shares no code with the torch update ops under test.
"""
import math

import numpy as np
import pytest
import torch

from deepmammo.caffe import lr_policy
from deepmammo.caffe.blob import Blob
from deepmammo.caffe.formats.prototxt import parse_solver
from deepmammo.caffe.proto import caffe_pb2 as pb
from deepmammo.caffe.solvers import SOLVERS, create_solver

N, D = 8, 3


class LeastSquaresNet:
    """Just enough of the Net contract: learnable_params, forward_backward (accumulating),
    clear_param_diffs, outputs, blobs, forward, blob_loss_weights, name."""

    def __init__(self, seed=0, lr_mults=(1.0, 2.0), decay_mults=(1.0, 0.0)):
        rng = np.random.RandomState(seed)
        self.X = rng.randn(4 * N, D).astype(np.float32)
        self.y = rng.randn(4 * N).astype(np.float32)
        self.w = Blob((1, D), name="w")
        self.b = Blob((1,), name="b")
        self.w.data[...] = rng.randn(1, D)
        self.b.data[...] = rng.randn(1)
        for blob, lr, decay in zip((self.w, self.b), lr_mults, decay_mults):
            blob.lr_mult, blob.decay_mult = lr, decay
        self.learnable_params = [self.w, self.b]
        self.name = "LeastSquares"
        self.outputs = ["loss"]
        self.blob_loss_weights = {"loss": 1.0}
        self.blobs = {"loss": Blob((), name="loss")}
        self.cursor = 0

    def batch(self):
        idx = (self.cursor + np.arange(N)) % len(self.X)
        self.cursor = (self.cursor + N) % len(self.X)
        return self.X[idx], self.y[idx]

    def forward_backward(self):
        X, y = self.batch()
        w, b = self.w.tdata, self.b.tdata
        r = torch.from_numpy(X) @ w[0] + b[0] - torch.from_numpy(y)
        loss = float((r * r).sum() / (2 * N))
        # As Caffe's Net: a blob with lr_mult 0 gets no gradient (param_propagate_down false).
        if self.w.lr_mult != 0:
            self.w.tdiff += (torch.from_numpy(X).T @ r / N)[None, :]
        if self.b.lr_mult != 0:
            self.b.tdiff += r.sum() / N
        self.blobs["loss"].data[...] = loss
        return loss

    def forward(self):
        return {"loss": self.blobs["loss"].data.copy()}

    def clear_param_diffs(self):
        for p in self.learnable_params:
            p.tdiff.zero_()


def reference_run(net0, param, steps):
    """float64 numpy trajectory of (w, b) under the solver `param` (Caffe's formulas)."""
    X_all, y_all = net0.X.astype(np.float64), net0.y.astype(np.float64)
    params = [net0.w.data.astype(np.float64).copy(), net0.b.data.astype(np.float64).copy()]
    lr_mults = [p.lr_mult for p in net0.learnable_params]
    decay_mults = [p.decay_mult for p in net0.learnable_params]
    hist = [np.zeros_like(p) for p in params]
    hist2 = [np.zeros_like(p) for p in params]
    cursor, current_step, out = 0, 0, []
    kind = param.type
    m, delta = param.momentum, param.delta
    for it in range(steps):
        grads = [np.zeros_like(p) for p in params]
        for _ in range(param.iter_size):
            idx = (cursor + np.arange(N)) % len(X_all)
            cursor = (cursor + N) % len(X_all)
            X, y = X_all[idx], y_all[idx]
            r = X @ params[0][0] + params[1][0] - y
            grads[0] += (X.T @ r / N)[None, :]
            grads[1] += np.array([r.sum() / N])
        rate = _reference_rate(param, it, current_step)
        if param.lr_policy == "multistep":
            if current_step < len(param.stepvalue) and it >= param.stepvalue[current_step]:
                current_step += 1
            rate = param.base_lr * param.gamma ** current_step
        # A frozen blob (lr_mult 0) gets no gradient in Caffe.
        grads = [g * (lr_mults[i] != 0) for i, g in enumerate(grads)]
        if param.clip_gradients >= 0:
            norm = math.sqrt(sum((g ** 2).sum() for g in grads))
            if norm > param.clip_gradients:
                grads = [g * param.clip_gradients / norm for g in grads]
        for i, (p, g) in enumerate(zip(params, grads)):
            g = g / param.iter_size
            lam = param.weight_decay * decay_mults[i]
            g = g + lam * (p if param.regularization_type == "L2" else np.sign(p))
            lr = rate * lr_mults[i]
            if kind == "SGD":
                hist[i] = m * hist[i] + lr * g
                step = hist[i]
            elif kind == "Nesterov":
                old = hist[i]
                hist[i] = m * hist[i] + lr * g
                step = (1 + m) * hist[i] - m * old
            elif kind == "AdaGrad":
                hist[i] = hist[i] + g * g
                step = lr * g / (np.sqrt(hist[i]) + delta)
            elif kind == "RMSProp":
                rho = param.rms_decay
                hist[i] = rho * hist[i] + (1 - rho) * g * g
                step = lr * g / (np.sqrt(hist[i]) + delta)
            elif kind == "AdaDelta":
                hist[i] = m * hist[i] + (1 - m) * g * g
                u = g * np.sqrt((hist2[i] + delta) / (hist[i] + delta))
                hist2[i] = m * hist2[i] + (1 - m) * u * u
                step = lr * u
            elif kind == "Adam":
                b1, b2, t = m, param.momentum2, it + 1
                hist[i] = b1 * hist[i] + (1 - b1) * g
                hist2[i] = b2 * hist2[i] + (1 - b2) * g * g
                step = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t) * hist[i] / (
                    np.sqrt(hist2[i]) + delta)
            params[i] = p - step
        out.append([q.copy() for q in params])
    return out


def _reference_rate(param, it, current_step):
    base, gamma, power = param.base_lr, param.gamma, param.power
    policy = param.lr_policy
    if policy == "fixed":
        return base
    if policy == "step":
        return base * gamma ** (it // param.stepsize)
    if policy == "exp":
        return base * gamma ** it
    if policy == "inv":
        return base * (1 + gamma * it) ** (-power)
    if policy == "poly":
        return base * (1 - it / param.max_iter) ** power
    if policy == "sigmoid":
        return base / (1 + math.exp(-gamma * (it - param.stepsize)))
    return None  # multistep: handled by the caller (it keeps state)


def make_solver(text, net=None):
    param = parse_solver(text + '\nnet_param { name: "LeastSquares" }\n')
    net = net or LeastSquaresNet()
    return create_solver(param, source="<test>", net_factory=lambda p, s: net), net


CASES = [
    ("SGD", 'base_lr: 0.05 momentum: 0.9 lr_policy: "step" gamma: 0.5 stepsize: 3 '
            "weight_decay: 0.1"),
    ("SGD", 'base_lr: 0.05 momentum: 0.5 lr_policy: "poly" power: 0.5 '
            "iter_size: 2 weight_decay: 0.05"),
    ("Nesterov", 'base_lr: 0.03 momentum: 0.9 lr_policy: "inv" gamma: 0.1 power: 0.75 '
                 "weight_decay: 0.1 clip_gradients: 0.5"),
    ("AdaGrad", 'base_lr: 0.2 lr_policy: "exp" gamma: 0.95 weight_decay: 0.05 '
                'regularization_type: "L1"'),
    ("RMSProp", 'base_lr: 0.01 lr_policy: "multistep" gamma: 0.3 stepvalue: 2 stepvalue: 5 '
                "rms_decay: 0.95 weight_decay: 0.01"),
    ("AdaDelta", 'base_lr: 1.0 momentum: 0.95 delta: 1e-6 lr_policy: "sigmoid" gamma: 0.5 '
                 "stepsize: 4 weight_decay: 0.1"),
    ("Adam", 'base_lr: 0.01 momentum: 0.9 momentum2: 0.999 lr_policy: "fixed" '
             "weight_decay: 0.1 iter_size: 3 clip_gradients: 1.0"),
]


@pytest.mark.parametrize("kind,text", CASES, ids=[f"{k}-{i}" for i, (k, _) in enumerate(CASES)])
def test_update_rules_match_hand_computation(kind, text):
    solver, net = make_solver(f'type: "{kind}" display: 0 max_iter: 12 ' + text)
    expected = reference_run(LeastSquaresNet(), solver.param, 12)
    for it in range(12):
        solver.step(1)
        np.testing.assert_allclose(net.w.data, expected[it][0], rtol=2e-5, atol=2e-6,
                                   err_msg=f"{kind} w after step {it + 1}")
        np.testing.assert_allclose(net.b.data, expected[it][1], rtol=2e-5, atol=2e-6,
                                   err_msg=f"{kind} b after step {it + 1}")
    assert solver.iter == 12
    assert len(solver.history) == (2 if kind in ("AdaDelta", "Adam") else 1) * 2


def test_frozen_blob_stays_and_weighs_nothing():
    net = LeastSquaresNet(lr_mults=(0.0, 1.0), decay_mults=(1.0, 1.0))
    w0 = net.w.data.copy()
    solver, _ = make_solver('type: "Adam" base_lr: 0.1 momentum: 0.9 lr_policy: "fixed" '
                            "weight_decay: 0.5 clip_gradients: 0.1 display: 0", net)
    solver.step(4)
    np.testing.assert_array_equal(net.w.data, w0)
    expected = reference_run(LeastSquaresNet(lr_mults=(0.0, 1.0), decay_mults=(1.0, 1.0)),
                             solver.param, 4)
    np.testing.assert_allclose(net.b.data, expected[-1][1], rtol=2e-5, atol=2e-6)


def test_legacy_solver_type_and_conflict():
    solver, _ = make_solver('solver_type: ADAM base_lr: 0.01 lr_policy: "fixed" display: 0')
    assert solver.type == "Adam" and solver.param.type == "Adam"
    with pytest.raises(ValueError, match="not both"):
        make_solver('solver_type: ADAM type: "Adam" base_lr: 0.01 lr_policy: "fixed"')


def test_adagrad_refuses_momentum():
    with pytest.raises(ValueError, match="momentum must be 0"):
        make_solver('type: "AdaGrad" base_lr: 0.01 momentum: 0.9 lr_policy: "fixed"')


def test_all_types_registered():
    assert set(SOLVERS) == {"SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam"}


@pytest.mark.parametrize("text,expected", [
    ('lr_policy: "fixed" base_lr: 0.1', [0.1] * 5),
    ('lr_policy: "step" base_lr: 0.1 gamma: 0.1 stepsize: 2', [0.1, 0.1, 0.01, 0.01, 0.001]),
    ('lr_policy: "exp" base_lr: 1 gamma: 0.5', [1, 0.5, 0.25, 0.125, 0.0625]),
    ('lr_policy: "inv" base_lr: 1 gamma: 1 power: 1', [1, 1 / 2, 1 / 3, 1 / 4, 1 / 5]),
    ('lr_policy: "multistep" base_lr: 1 gamma: 0.5 stepvalue: 1 stepvalue: 3',
     [1, 0.5, 0.5, 0.25, 0.25]),
    ('lr_policy: "poly" base_lr: 1 power: 2 max_iter: 4', [1, 0.5625, 0.25, 0.0625, 0]),
    ('lr_policy: "sigmoid" base_lr: 1 gamma: 1 stepsize: 2',
     [1 / (1 + math.exp(2)), 1 / (1 + math.e), 0.5, 1 / (1 + math.exp(-1)),
      1 / (1 + math.exp(-2))]),
])
def test_lr_policies(text, expected):
    param = parse_solver(text)
    step, got = 0, []
    for it in range(5):
        rate, step = lr_policy.learning_rate(param, it, step)
        got.append(rate)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-12)


def test_lr_policy_errors():
    with pytest.raises(ValueError, match="stepsize"):
        lr_policy.learning_rate(parse_solver('lr_policy: "step" base_lr: 1 gamma: 0.1'), 0)
    bad = pb.SolverParameter(lr_policy="cosine", base_lr=1)
    with pytest.raises(ValueError, match="unknown lr_policy"):
        lr_policy.learning_rate(bad, 0)


def test_sigmoid_policy_far_from_its_step_is_rate_zero_not_an_overflow():
    # exp(-gamma * (iter - stepsize)) overflows a double at iteration 0; Caffe's float gives 0.
    param = parse_solver('lr_policy: "sigmoid" base_lr: 0.1 gamma: 0.1 stepsize: 10000')
    rate, _ = lr_policy.learning_rate(param, 0)
    assert rate == 0.0
    assert lr_policy.learning_rate(param, 10000)[0] == pytest.approx(0.05)
