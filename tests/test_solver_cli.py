"""`deepmammo train` and `deepmammo test` on both engines: the same solver file trains in real
Caffe and in ours to the same weights, and `test` scores them alike."""
import json
import os

import numpy as np
import pytest

from deepmammo.caffe.formats.caffemodel import layer_blobs, read_caffemodel
from deepmammo.caffe.scenario import make_data, make_initial_weights, write_solver
from deepmammo.cli import main as cli_main

BODY = ('type: "Nesterov" base_lr: 0.05 momentum: 0.9 lr_policy: "poly" power: 1 '
        "weight_decay: 0.01 max_iter: 8 display: 4 snapshot: 0")


@pytest.fixture
def scenario(real_caffe, tmp_path):
    root = str(tmp_path)
    net = make_data(root)
    weights = make_initial_weights(real_caffe, net, os.path.join(root, "init.caffemodel"))
    return root, net, weights


def test_train_both_engines_then_test(scenario):
    root, net, weights = scenario
    ours = write_solver(root, "ours", BODY, net)
    theirs = write_solver(root, "theirs", BODY, net)
    assert cli_main(["train", "--solver", ours, "--weights", weights]) == 0
    assert cli_main(["train", "--solver", theirs, "--weights", weights,
                     "--engine", "caffe"]) == 0
    a = layer_blobs(read_caffemodel(os.path.join(root, "ours_iter_8.caffemodel")))
    b = layer_blobs(read_caffemodel(os.path.join(root, "theirs_iter_8.caffemodel")))
    for name in b:
        for x, y in zip(a[name], b[name]):
            np.testing.assert_allclose(x, y, rtol=2e-5, atol=2e-6, err_msg=name)
    # No temporary solver file is left behind.
    assert not [f for f in os.listdir(root) if f.startswith(".deepmammo-solver-")]

    scores = {}
    for engine in ("torch", "caffe"):
        out = os.path.join(root, f"score_{engine}.json")
        assert cli_main(["test", "--model", net, "--weights",
                         os.path.join(root, "ours_iter_8.caffemodel"), "--iterations", "2",
                         "--engine", engine, "--output", out]) == 0
        scores[engine] = json.load(open(out))
    assert sorted(scores["torch"]["outputs"]) == ["accuracy", "loss"]
    for k, v in scores["caffe"]["outputs"].items():
        assert scores["torch"]["outputs"][k] == pytest.approx(v, rel=1e-5, abs=1e-6)


def test_train_errors_are_clean(scenario, capsys):
    root, net, weights = scenario
    assert cli_main(["train", "--solver", os.path.join(root, "nope.prototxt")]) == 2
    assert "nope.prototxt" in capsys.readouterr().err
    solver = write_solver(root, "s", BODY, net)
    assert cli_main(["train", "--solver", solver, "--snapshot",
                     os.path.join(root, "missing.solverstate")]) == 2
    assert "missing.solverstate" in capsys.readouterr().err
    assert cli_main(["train", "--solver", solver, "--gpu", "x"]) == 2
    assert cli_main(["train", "--solver", solver, "--gpu", "0"]) == 2   # no CUDA in CI
    assert "--gpu 0" in capsys.readouterr().err
