"""Caffe's multi-GPU meaning on CPU: two gloo workers, each with its own batches and gradients
averaged before the update, end where one worker with iter_size 2 ends; the log's first lines
name the workers."""
import os

import numpy as np
import pytest

from deepmammo.caffe import distributed
from deepmammo.caffe.formats.caffemodel import layer_blobs, read_caffemodel
from deepmammo.caffe.scenario import make_data, make_initial_weights, params_of, write_solver
from deepmammo.caffe.solvers import get_solver

SCHEDULE = ('type: "SGD" base_lr: 0.1 momentum: 0.9 lr_policy: "step" gamma: 0.5 stepsize: 3 '
            "weight_decay: 0.01 clip_gradients: 2 max_iter: 6 display: 0")


@pytest.mark.subprocess
def test_two_gloo_workers_equal_one_worker_with_iter_size_2(real_caffe, tmp_path):
    root = str(tmp_path)
    net = make_data(root)
    weights = make_initial_weights(real_caffe, net, os.path.join(root, "init.caffemodel"))
    two = write_solver(root, "two", SCHEDULE, net, weights=weights)
    one = write_solver(root, "one", SCHEDULE + " iter_size: 2", net, weights=weights)
    result = os.path.join(root, "two_workers.caffemodel")
    log_path = os.path.join(root, "train.log")

    distributed.spawn(2, {"solver": two, "steps": 6, "result": result, "log": log_path},
                      backend="gloo")
    with open(log_path) as f:
        first = [line.split("] ", 1)[1] for line in f.read().splitlines()[:3]]
    assert first[0] == "Using 2 workers, backend gloo"
    for rank, line in enumerate(first[1:]):
        assert line.startswith(f"Worker {rank}: CPU on host ")

    with get_solver(one) as solver:
        solver.step(6)
        expected = params_of(solver.net)
    got = layer_blobs(read_caffemodel(result))
    assert list(got) == list(expected)
    for name in expected:
        for a, b in zip(got[name], expected[name]):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=name)
    start = layer_blobs(read_caffemodel(weights))
    assert not np.allclose(got["ip1"][0], start["ip1"][0])


@pytest.mark.subprocess
def test_two_torchrun_nodes_train_as_one_and_say_so(tmp_path):
    """Two `torchrun --nnodes 2` launches on this host, as two nodes of a cluster would run
    them: both train, rank 0 logs every worker and snapshots."""
    import subprocess
    import sys

    root = str(tmp_path)
    net = make_data(root)
    solver = write_solver(root, "nodes", SCHEDULE + " snapshot: 6", net)
    port = str(distributed.free_port())
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(__file__)))
    nodes = [subprocess.Popen(
        [torchrun, "--nnodes", "2", "--node_rank", str(r), "--nproc_per_node", "1",
         "--master_addr", "127.0.0.1", "--master_port", port,
         "-m", "deepmammo", "train", "--solver", solver],
        cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for r in (0, 1)]
    outputs = [p.communicate(timeout=300)[0] for p in nodes]
    assert [p.returncode for p in nodes] == [0, 0], outputs
    with open(os.path.join(root, "train.log")) as f:      # beside the snapshots
        first = [line.split("] ", 1)[1] for line in f.read().splitlines()[:3]]
    assert first[0] == "Using 2 workers, backend gloo"
    assert [line.split(":")[0] for line in first[1:]] == ["Worker 0", "Worker 1"]
    assert os.path.isfile(os.path.join(root, "nodes_iter_6.caffemodel"))
