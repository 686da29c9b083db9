"""Caffe's six update rules, as in-place torch ops on each learnable blob, and the solver factory.

Each `compute_update_value(i, rate)` turns the (normalised, regularised) gradient in
`blob.tdiff` into the step that `Net::Update` subtracts from the weights, using the history
tensors Caffe keeps. The order of operations follows Caffe's CPU code so that float32 rounding
stays close to it. The differences from torch.optim matter (docs/engine.md): Caffe's SGD keeps
the learning rate inside the momentum buffer, and its Adam puts the bias correction into the rate
and leaves delta uncorrected.

`compute_update_values(diffs, groups)` is the same rule for every blob at once, in
torch._foreach_* ops (one multi-tensor kernel per step on CUDA instead of one launch per blob
and step); apply_update runs it. It does the same elementwise ops in the same order, so on the
CPU it gives bit-identical results; the per-blob form stays as the reference it is tested
against (Solver.fused_update = False).
"""
import os

import numpy as np
import torch

from deepmammo.caffe.solver import Solver, SolverError, read_solver_param

_F1 = np.float32(1.0)


def _f32(x):
    return float(np.float32(x))


def _pick(tensors, group):
    """The tensors of one UpdateGroup (a list, as _foreach_* ops take)."""
    return [tensors[i] for i in group.index]


def _scaled_by_root(diffs, h, delta, groups):
    """AdaGrad's and RMSProp's step, fused: g = local_rate * g / (sqrt(h) + delta)."""
    denom = torch._foreach_sqrt(h)
    torch._foreach_add_(denom, delta)
    torch._foreach_div_(diffs, denom)
    for grp in groups:
        torch._foreach_mul_(_pick(diffs, grp), grp.local_rate)


class SGDSolver(Solver):
    """Stochastic gradient descent with momentum: v = m*v + local_rate*g; w -= v."""
    type = "SGD"

    def compute_update_value(self, i, rate):
        g, h = self.net.learnable_params[i].tdiff, self.history[i]
        local_rate = self.local_rate(i, rate)
        h.mul_(_f32(self.param.momentum)).add_(g, alpha=local_rate)
        g.copy_(h)

    def compute_update_values(self, diffs, groups):
        h = self.history
        torch._foreach_mul_(h, _f32(self.param.momentum))
        for grp in groups:
            torch._foreach_add_(_pick(h, grp), _pick(diffs, grp), alpha=grp.local_rate)
        torch._foreach_copy_(diffs, h)


class NesterovSolver(Solver):
    """Nesterov's accelerated gradient: v' = m*v + local_rate*g; step = (1+m)*v' - m*v."""
    type = "Nesterov"

    def compute_update_value(self, i, rate):
        g, h = self.net.learnable_params[i].tdiff, self.history[i]
        m = np.float32(self.param.momentum)
        local_rate = self.local_rate(i, rate)
        previous = h.clone()
        h.mul_(float(m)).add_(g, alpha=local_rate)
        previous.mul_(float(-m)).add_(h, alpha=float(_F1 + m))
        g.copy_(previous)

    def compute_update_values(self, diffs, groups):
        h = self.history
        m = np.float32(self.param.momentum)
        previous = torch._foreach_mul(h, float(-m))
        torch._foreach_mul_(h, float(m))
        for grp in groups:
            torch._foreach_add_(_pick(h, grp), _pick(diffs, grp), alpha=grp.local_rate)
        torch._foreach_add_(previous, h, alpha=float(_F1 + m))
        torch._foreach_copy_(diffs, previous)


class AdaGradSolver(Solver):
    """AdaGrad: h += g^2; step = local_rate * g / (sqrt(h) + delta)."""
    type = "AdaGrad"

    def check_param(self):
        if self.param.momentum != 0:
            raise SolverError(f"{self.source}: momentum must be 0 for AdaGrad (it has no momentum "
                              f"term), got {self.param.momentum}")

    def compute_update_value(self, i, rate):
        g, h = self.net.learnable_params[i].tdiff, self.history[i]
        h.add_(g * g)
        denom = h.sqrt().add_(_f32(self.param.delta))
        g.div_(denom).mul_(self.local_rate(i, rate))

    def compute_update_values(self, diffs, groups):
        h = self.history
        torch._foreach_add_(h, torch._foreach_mul(diffs, diffs))
        _scaled_by_root(diffs, h, _f32(self.param.delta), groups)


class RMSPropSolver(Solver):
    """RMSProp: h = rho*h + (1-rho)*g^2; step = local_rate * g / (sqrt(h) + delta)."""
    type = "RMSProp"

    def check_param(self):
        if self.param.momentum != 0:
            raise SolverError(f"{self.source}: momentum must be 0 for RMSProp (use rms_decay), "
                              f"got {self.param.momentum}")
        if not 0 <= self.param.rms_decay < 1:
            raise SolverError(f"{self.source}: rms_decay must be in [0, 1), "
                              f"got {self.param.rms_decay}")

    def compute_update_value(self, i, rate):
        g, h = self.net.learnable_params[i].tdiff, self.history[i]
        rho = np.float32(self.param.rms_decay)
        h.mul_(float(rho)).add_(g * g, alpha=float(_F1 - rho))
        denom = h.sqrt().add_(_f32(self.param.delta))
        g.div_(denom).mul_(self.local_rate(i, rate))

    def compute_update_values(self, diffs, groups):
        h = self.history
        rho = np.float32(self.param.rms_decay)
        torch._foreach_mul_(h, float(rho))
        torch._foreach_add_(h, torch._foreach_mul(diffs, diffs), alpha=float(_F1 - rho))
        _scaled_by_root(diffs, h, _f32(self.param.delta), groups)


class AdaDeltaSolver(Solver):
    """AdaDelta: two histories per blob (squared gradients, then squared steps)."""
    type = "AdaDelta"
    history_per_param = 2

    def compute_update_value(self, i, rate):
        g = self.net.learnable_params[i].tdiff
        n = len(self.net.learnable_params)
        h_grad, h_step = self.history[i], self.history[n + i]
        m = np.float32(self.param.momentum)
        delta = _f32(self.param.delta)
        h_grad.mul_(float(m)).add_(g * g, alpha=float(_F1 - m))
        ratio = (h_step + delta).div_(h_grad + delta).sqrt_()
        g.mul_(ratio)
        h_step.mul_(float(m)).add_(g * g, alpha=float(_F1 - m))
        g.mul_(self.local_rate(i, rate))

    def compute_update_values(self, diffs, groups):
        n = len(diffs)
        h_grad, h_step = self.history[:n], self.history[n:]
        m = np.float32(self.param.momentum)
        delta = _f32(self.param.delta)
        torch._foreach_mul_(h_grad, float(m))
        torch._foreach_add_(h_grad, torch._foreach_mul(diffs, diffs), alpha=float(_F1 - m))
        ratio = torch._foreach_add(h_step, delta)
        torch._foreach_div_(ratio, torch._foreach_add(h_grad, delta))
        torch._foreach_sqrt_(ratio)
        torch._foreach_mul_(diffs, ratio)
        torch._foreach_mul_(h_step, float(m))
        torch._foreach_add_(h_step, torch._foreach_mul(diffs, diffs), alpha=float(_F1 - m))
        for grp in groups:
            torch._foreach_mul_(_pick(diffs, grp), grp.local_rate)


class AdamSolver(Solver):
    """Adam (Kingma & Ba) with Caffe's placement: the bias correction multiplies the rate."""
    type = "Adam"
    history_per_param = 2

    def compute_update_value(self, i, rate):
        g = self.net.learnable_params[i].tdiff
        n = len(self.net.learnable_params)
        m, v = self.history[i], self.history[n + i]
        beta1 = np.float32(self.param.momentum)
        beta2 = np.float32(self.param.momentum2)
        correction = self._correction(beta1, beta2)
        m.mul_(float(beta1)).add_(g, alpha=float(_F1 - beta1))
        v.mul_(float(beta2)).add_(g * g, alpha=float(_F1 - beta2))
        denom = v.sqrt().add_(_f32(self.param.delta))
        step_rate = float(np.float32(self.local_rate(i, rate)) * correction)
        torch.div(m, denom, out=g).mul_(step_rate)

    def compute_update_values(self, diffs, groups):
        n = len(diffs)
        m, v = self.history[:n], self.history[n:]
        beta1 = np.float32(self.param.momentum)
        beta2 = np.float32(self.param.momentum2)
        correction = self._correction(beta1, beta2)
        torch._foreach_mul_(m, float(beta1))
        torch._foreach_add_(m, diffs, alpha=float(_F1 - beta1))
        torch._foreach_mul_(v, float(beta2))
        torch._foreach_mul_(diffs, diffs)    # g is not needed after this: square it in place
        torch._foreach_add_(v, diffs, alpha=float(_F1 - beta2))
        denom = torch._foreach_sqrt(v)
        torch._foreach_add_(denom, _f32(self.param.delta))
        torch._foreach_copy_(diffs, m)
        torch._foreach_div_(diffs, denom)
        for grp in groups:
            step_rate = float(np.float32(grp.local_rate) * correction)
            torch._foreach_mul_(_pick(diffs, grp), step_rate)

    def _correction(self, beta1, beta2):
        """Caffe: sqrt(1 - beta2^t) / (1 - beta1^t) in double, then stored as float."""
        t = self.iter + 1
        return np.float32(np.sqrt(1.0 - float(beta2) ** t) / (1.0 - float(beta1) ** t))


SOLVERS = {cls.type: cls for cls in (SGDSolver, NesterovSolver, AdaGradSolver, RMSPropSolver,
                                     AdaDeltaSolver, AdamSolver)}


def create_solver(param, source=None, **kwargs):
    """A solver of the class that `param.type` (or the legacy `solver_type`) names."""
    param, source = read_solver_param(param, source)
    cls = SOLVERS.get(param.type)
    if cls is None:
        raise SolverError(f"{source}: unknown solver type {param.type!r} "
                          f"(one of {', '.join(SOLVERS)})")
    return cls(param, source=source, **kwargs)


def get_solver(path, **kwargs):
    """pycaffe's `caffe.get_solver(path)`: read a solver prototxt and build its solver."""
    return create_solver(os.fspath(path), **kwargs)
