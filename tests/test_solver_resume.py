"""Killing a training run and resuming from its last snapshot ends on the same weights as a run
that was never stopped; a requested stop (Ctrl-C) snapshots where it stopped."""
import os
import signal
import sys

import numpy as np
import pytest
from helpers import ROOT, run, run_cli

from deepmammo.caffe.formats.caffemodel import layer_blobs, read_caffemodel
from deepmammo.caffe.scenario import make_data, write_solver
from deepmammo.caffe.solvers import get_solver
from deepmammo.cli import main as cli_main

BODY = ('type: "Adam" base_lr: 0.01 momentum: 0.9 lr_policy: "step" gamma: 0.5 stepsize: 4 '
        "weight_decay: 0.01 max_iter: 12 snapshot: 6 display: 3 test_iter: 1 "
        "test_interval: 6")

# Runs 6 iterations (snapshot at 6, one pass over the data), starts the 7th and dies by SIGKILL
# in the middle of it: no clean-up of any kind.
CRASH = """
import os, signal, sys
from deepmammo.caffe.solvers import get_solver
from deepmammo.cli import main as cli_main
solver = get_solver(sys.argv[1])
solver.step(6)
solver.net.forward_backward()
os.kill(os.getpid(), signal.SIGKILL)
"""


def _weights(path):
    return layer_blobs(read_caffemodel(path))


@pytest.mark.subprocess
def test_kill_and_resume_equals_uninterrupted(tmp_path):
    root = str(tmp_path)
    net = make_data(root)
    full = write_solver(root, "full", BODY, net)
    cut = write_solver(root, "cut", BODY, net)

    assert cli_main(["train", "--solver", full]) == 0
    crashed = run([sys.executable, "-c", CRASH, cut], ROOT, check=False, timeout=120)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert os.path.isfile(os.path.join(root, "cut_iter_6.solverstate"))
    assert not os.path.exists(os.path.join(root, "cut_iter_12.caffemodel"))
    resumed = run_cli("train", "--solver", cut, "--snapshot",
                      os.path.join(root, "cut_iter_6.solverstate"), cwd=ROOT, timeout=120)
    assert resumed.returncode == 0, resumed.stderr

    a = _weights(os.path.join(root, "full_iter_12.caffemodel"))
    b = _weights(os.path.join(root, "cut_iter_12.caffemodel"))
    assert list(a) == list(b) == ["ip1", "ip2", "ip3"]
    for name in a:
        for x, y in zip(a[name], b[name]):
            np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7, err_msg=name)
    assert not np.array_equal(a["ip1"][0], _weights(
        os.path.join(root, "full_iter_6.caffemodel"))["ip1"][0])

    # The CLI's log: Caffe's format, in the snapshot folder, with the CSV beside it; the
    # resumed run appends to it.
    log = open(os.path.join(root, "train.log")).read()
    assert "Restoring previous solver status from" in log
    assert log.count("Optimization Done.") == 2
    assert os.path.isfile(os.path.join(root, "train_log.csv"))


def test_requested_stop_snapshots(tmp_path):
    root = str(tmp_path)
    net = make_data(root)
    path = write_solver(root, "stop", BODY, net)
    calls = []

    def request():
        # Asked once per test batch (one, at iteration 0) and once after each update.
        calls.append(1)
        return "stop" if len(calls) == 4 else "none"

    with get_solver(path) as solver:
        solver.action_request = request
        solver.solve()
        assert solver.iter == 3 and solver.requested_early_exit
    assert os.path.isfile(os.path.join(root, "stop_iter_3.caffemodel"))
    assert os.path.isfile(os.path.join(root, "stop_iter_3.solverstate"))
