"""Caffe's learning-rate policies (SGDSolver::GetLearningRate).

`iter` is the number of updates already applied. The rate is rounded to float32 at the end, as
Caffe keeps it in a `float`; the arithmetic before that is double, as in C++ where `pow` of a
float and an int promotes to double.
"""
import math

import numpy as np

POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")


class LRPolicyError(ValueError):
    """A solver whose lr_policy Caffe would refuse (unknown name, missing stepsize, ...)."""


def _f32(x):
    # Solver fields are float in caffe.proto: compute from their float32 values.
    return float(np.float32(x))


def learning_rate(param, iteration, current_step=0):
    """The rate for update number `iteration` and the (possibly advanced) multistep counter.

    Returns (rate as float32-rounded Python float, current_step). `current_step` matters only for
    `step` (Caffe recomputes it as iter // stepsize) and `multistep` (it advances by at most one
    per call, when iter reaches the next stepvalue: the counter is state, saved in the
    solverstate).
    """
    policy = param.lr_policy
    base_lr = _f32(param.base_lr)
    gamma = _f32(param.gamma)
    power = _f32(param.power)
    if policy == "fixed":
        rate = base_lr
    elif policy == "step":
        if param.stepsize <= 0:
            raise LRPolicyError("lr_policy step needs stepsize > 0")
        _check_gamma(gamma, policy)
        current_step = iteration // param.stepsize
        rate = base_lr * gamma ** current_step
    elif policy == "exp":
        _check_gamma(gamma, policy)
        rate = base_lr * gamma ** iteration
    elif policy == "inv":
        _check_gamma(gamma, policy)
        # (1 + gamma*iter) is a float expression in Caffe.
        rate = base_lr * float(np.float32(1.0) + np.float32(gamma) * np.float32(iteration)) ** (-power)
    elif policy == "multistep":
        stepvalues = list(param.stepvalue)
        if current_step < len(stepvalues) and iteration >= stepvalues[current_step]:
            current_step += 1
        _check_gamma(gamma, policy)
        rate = base_lr * gamma ** current_step
    elif policy == "poly":
        if param.max_iter <= 0:
            raise LRPolicyError("lr_policy poly needs max_iter > 0")
        frac = float(np.float32(1.0) - np.float32(iteration) / np.float32(param.max_iter))
        rate = base_lr * _pow(frac, power)
    elif policy == "sigmoid":
        _check_gamma(gamma, policy)
        if param.stepsize <= 0:
            raise LRPolicyError("lr_policy sigmoid needs stepsize > 0")
        try:
            e = math.exp(-gamma * (iteration - param.stepsize))
        except OverflowError:  # Caffe computes in float: exp overflows to inf, the rate to 0
            e = math.inf
        rate = base_lr * (1.0 / (1.0 + e))
    else:
        raise LRPolicyError(f"unknown lr_policy {policy!r} (one of {', '.join(POLICIES)})")
    return _f32(rate), current_step


def _pow(base, exponent):
    # poly past max_iter gives a negative base; C's pow returns NaN there, Python would raise or
    # go complex. Keep C's answer so that a run past max_iter behaves as Caffe's does.
    if base < 0 and not float(exponent).is_integer():
        return float("nan")
    return base ** exponent


def _check_gamma(gamma, policy):
    if gamma < 0:
        raise LRPolicyError(f"lr_policy {policy} needs gamma >= 0 (got {gamma})")
