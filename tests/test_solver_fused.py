"""The fused update (torch._foreach_* over all blobs, Solver.fused_update) against the per-blob
update it replaces: the same elementwise ops in the same order, so on the CPU every weight and
history value is bit-identical after many steps, for each of Caffe's six rules with clipping,
L1/L2 decay, iter_size and blobs of different lr_mult / decay_mult (frozen ones too). And the
losses deferred to the display (Solver.defer_losses) log the same smoothed loss as losses read
back every iteration."""
import pytest
import torch

from deepmammo.caffe.scenario import make_data, write_solver
from deepmammo.caffe.solvers import get_solver

STEPS = 9

CASES = {
    "SGD": 'base_lr: 0.05 momentum: 0.9 lr_policy: "step" gamma: 0.5 stepsize: 3 '
           "weight_decay: 0.01 clip_gradients: 0.4",
    "Nesterov": 'base_lr: 0.03 momentum: 0.9 lr_policy: "inv" gamma: 0.1 power: 0.75 '
                "weight_decay: 0.02 iter_size: 2",
    "AdaGrad": 'base_lr: 0.1 lr_policy: "exp" gamma: 0.95 weight_decay: 0.05 '
               'regularization_type: "L1" clip_gradients: 0.3',
    "RMSProp": 'base_lr: 0.01 lr_policy: "multistep" gamma: 0.3 stepvalue: 2 stepvalue: 5 '
               "rms_decay: 0.95 weight_decay: 0.01",
    "AdaDelta": 'base_lr: 1.0 momentum: 0.95 delta: 1e-6 lr_policy: "sigmoid" gamma: 0.5 '
                'stepsize: 4 weight_decay: 0.1 regularization_type: "L1"',
    "Adam": 'base_lr: 0.01 momentum: 0.9 momentum2: 0.999 lr_policy: "poly" power: 2 '
            "weight_decay: 0.1 iter_size: 3 clip_gradients: 0.5",
}


@pytest.fixture(scope="module")
def net_path(tmp_path_factory):
    return make_data(str(tmp_path_factory.mktemp("fused")))


def _train(path, fused):
    solver = get_solver(path)
    solver.fused_update = fused
    solver.progress = False
    with solver:
        assert solver.uses_fused_update() is fused
        solver.step(STEPS)
        weights = [b.tdata.clone() for b in solver.net.learnable_params]
        history = [h.clone() for h in solver.history]
        diffs = [b.tdiff.clone() for b in solver.net.learnable_params]
    return weights, history, diffs


@pytest.mark.parametrize("kind", sorted(CASES))
def test_fused_update_is_bit_identical_on_cpu(tmp_path, net_path, kind):
    body = f'type: "{kind}" display: 0 max_iter: 100 ' + CASES[kind]
    path = write_solver(str(tmp_path), kind, body, net_path)
    fused = _train(path, True)
    reference = _train(path, False)
    for what, got, want in zip(("weights", "history", "update"), fused, reference, strict=True):
        assert len(got) == len(want)
        for i, (a, b) in enumerate(zip(got, want, strict=True)):
            assert torch.equal(a, b), f"{kind}: {what} {i} differs (max |d| " \
                                      f"{(a - b).abs().max().item():.3g})"
    # The run moved the weights: a no-op update would also be "identical".
    start = get_solver(path)
    with start:
        moved = [not torch.equal(a, b.tdata)
                 for a, b in zip(fused[0], start.net.learnable_params, strict=True)]
    assert sum(moved) >= 4


def test_groups_follow_lr_and_decay_mult(tmp_path, net_path):
    path = write_solver(str(tmp_path), "groups", 'type: "SGD" base_lr: 0.1 momentum: 0.9 '
                        'lr_policy: "fixed" weight_decay: 0.5 max_iter: 1', net_path)
    with get_solver(path) as solver:
        groups = solver._update_groups(0.1)
    # TinyMLP's blobs: (1, 1) (2, 0) (0, 1) (0, 0) (0.5, 2) (1, 0.5) as (lr_mult, decay_mult).
    assert sorted(g.index for g in groups) == [[0], [1], [2], [3], [4], [5]]
    by_index = {g.index[0]: g for g in groups}
    assert by_index[1].local_rate == pytest.approx(0.2) and by_index[1].decay == 0
    assert by_index[4].local_rate == pytest.approx(0.05) and by_index[4].decay == 1.0


def test_deferred_losses_log_the_same_figures(tmp_path, net_path):
    body = ('type: "SGD" base_lr: 0.05 momentum: 0.9 lr_policy: "fixed" max_iter: 100 '
            "display: 3 average_loss: 4 iter_size: 2")
    path = write_solver(str(tmp_path), "defer", body, net_path)
    rows = {}
    for defer in (True, False):
        solver = get_solver(path)
        solver.defer_losses = defer
        solver.progress = False
        with solver:
            solver.step(7)       # displays at 0, 3, 6 and the ring of 4 losses wraps
            solver.step(5)       # a second step() starts a new average, as in Caffe
            rows[defer] = solver.log.rows
    assert [r["iteration"] for r in rows[True]] == [0, 3, 6, 9]
    assert rows[True] == rows[False]
