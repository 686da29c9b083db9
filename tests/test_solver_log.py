"""The training log: Caffe's glog lines, read by Caffe's own tools/extra/parse_log.py, the CSV
beside it, snapshot names, and solve()'s final snapshot and test."""
import csv
import os
import re
import sys
import types
import warnings

import pytest

from deepmammo.caffe.real import find_build
from deepmammo.caffe.scenario import make_data, write_solver
from deepmammo.caffe.solvers import get_solver
from deepmammo.caffe.train_log import TrainLog, fmt, glog_line

GLOG = re.compile(r"^I\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ [\w.]+:\d+\] ")


def caffe_parse_log(real_caffe):
    """Caffe's parse_log module (Python 2 source: one print statement needs a shim)."""
    extra = os.path.join(find_build(), "src", "tools", "extra")
    if extra not in sys.path:
        sys.path.insert(0, extra)
    with open(os.path.join(extra, "parse_log.py")) as f:
        source = re.sub(r"print '(.*)' % (\w+)", r"print('\1' % \2)", f.read())
    module = types.ModuleType("caffe_parse_log")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)   # its regexes are not raw strings
        exec(compile(source, "parse_log.py", "exec"), module.__dict__)
    return module


@pytest.fixture(scope="module")
def trained(real_caffe, tmp_path_factory):
    root = str(tmp_path_factory.mktemp("solver_log"))
    net = make_data(root)
    body = ('type: "SGD" base_lr: 0.05 momentum: 0.9 lr_policy: "step" gamma: 0.5 stepsize: 4 '
            "max_iter: 10 display: 2 average_loss: 3 test_iter: 2 test_interval: 5 "
            "snapshot: 4")
    path = write_solver(root, "logged", body, net, prefix=os.path.join(root, "snaps", "run"))
    os.makedirs(os.path.join(root, "snaps"))
    log_path = os.path.join(root, "train.log")
    with TrainLog(log_path) as log:
        solver = get_solver(path, log=log)
        solver.solve()
    return root, solver, log_path


def test_log_lines_are_glog_and_parse_log_reads_them(real_caffe, trained):
    root, solver, log_path = trained
    lines = open(log_path).read().splitlines()
    assert lines and all(GLOG.match(l) for l in lines), [l for l in lines if not GLOG.match(l)]
    text = "\n".join(lines)
    for needed in ("] Solving TinyMLP", "] Iteration 0, Testing net (#0)",
                   "]     Test net output #0: accuracy = ",
                   "]     Test net output #1: loss = ", " loss)",
                   "] Iteration 2 (", " iter/s, ", "s/2 iters), loss = ",
                   "]     Train net output #0: loss = ", "] Iteration 4, lr = 0.025",
                   "] Snapshotting to binary proto file ", "run_iter_4.caffemodel",
                   "] Snapshotting solver state to binary proto file ",
                   "] Iteration 10, loss = ", "] Iteration 10, Testing net (#0)",
                   "] Optimization Done."):
        assert needed in text, needed
    train, test = caffe_parse_log(real_caffe).parse_log(log_path)
    assert [r["NumIters"] for r in train] == [0, 2, 4, 6, 8]
    assert [r["NumIters"] for r in test] == [0, 5, 10]
    # parse_log.py gives each row the last lr printed before it; Caffe prints the lr after the
    # train outputs, so a row carries the previous display's rate (its own quirk).
    assert [r["LearningRate"] for r in train] == pytest.approx([0.05, 0.05, 0.05, 0.025,
                                                                0.025])
    assert all(0 <= r["accuracy"] <= 1 and r["loss"] > 0 for r in test)


def test_csv_beside_log(trained):
    root, solver, log_path = trained
    csv_path = os.path.join(root, "train_log.csv")
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["iteration", "lr", "loss", "train_loss", "test0_accuracy",
                             "test0_loss"]
    by_iter = {int(r["iteration"]): r for r in rows}
    assert sorted(by_iter) == [0, 2, 4, 5, 6, 8, 10]
    assert float(by_iter[4]["lr"]) == pytest.approx(0.025)
    assert by_iter[5]["train_loss"] == "" and by_iter[5]["test0_accuracy"] != ""
    assert by_iter[0]["test0_loss"] != "" and by_iter[0]["train_loss"] != ""
    assert by_iter[10]["loss"] != "" and by_iter[10]["test0_loss"] != ""


def test_snapshots_and_final_snapshot(trained):
    root, solver, _ = trained
    names = sorted(os.listdir(os.path.join(root, "snaps")))
    assert names == ["run_iter_10.caffemodel", "run_iter_10.solverstate",
                     "run_iter_4.caffemodel", "run_iter_4.solverstate",
                     "run_iter_8.caffemodel", "run_iter_8.solverstate"]
    assert solver.iter == 10


def test_snapshot_prefix_defaults_to_solver_name(real_caffe, tmp_path):
    root = str(tmp_path)
    net = make_data(root)
    path = os.path.join(root, "my_solver.prototxt")
    with open(path, "w") as f:
        f.write(f'net: "{net}"\ntype: "SGD" base_lr: 0.01 lr_policy: "fixed" max_iter: 2\n')
    solver = get_solver(path)
    assert solver.param.snapshot_prefix == os.path.join(root, "my_solver")
    solver.solve()
    assert os.path.isfile(os.path.join(root, "my_solver_iter_2.caffemodel"))


def test_fmt_like_cpp_ostream():
    assert fmt(0.01) == "0.01"
    assert fmt(1e-05) == "1e-05"
    assert fmt(0.693147182) == "0.693147"
    assert fmt(1234567.0) == "1.23457e+06"
    assert fmt(2.0) == "2"
    assert fmt(float("nan")) == "nan"
    assert GLOG.match(glog_line("hello", "solver.py:12"))


def test_bad_solver_names_file(tmp_path):
    bad = tmp_path / "bad.prototxt"
    bad.write_text('net: "missing.prototxt"\nbase_lr: 0.01 lr_policy: "fixed"\n')
    with pytest.raises(FileNotFoundError, match="missing.prototxt"):
        get_solver(str(bad))
    bad.write_text('net: "x"\nbase_lr: 0.01 lr_policy: "cosine"\n')
    with pytest.raises(ValueError, match="cosine"):
        get_solver(str(bad))


def test_test_initialization_false_and_test_loss(real_caffe, tmp_path):
    root = str(tmp_path)
    net = make_data(root)
    body = ('type: "SGD" base_lr: 0.01 lr_policy: "fixed" max_iter: 4 display: 0 test_iter: 2 '
            "test_interval: 2 test_initialization: false test_compute_loss: true "
            "snapshot_after_train: false")
    path = write_solver(root, "quiet", body, net)
    log_path = os.path.join(root, "quiet.log")
    with TrainLog(log_path) as log, get_solver(path, log=log) as solver:
        solver.solve()
    text = open(log_path).read()
    assert "Iteration 0, Testing net" not in text
    assert "Iteration 2, Testing net (#0)" in text and "Iteration 4, Testing net (#0)" in text
    assert text.count("] Test loss: ") == 2
    assert not [f for f in os.listdir(root) if f.endswith((".caffemodel", ".solverstate"))]
