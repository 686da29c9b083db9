"""`deepmammo train --engine caffe` as a user runs it: real Caffe's `caffe train` in a child
process. Whatever stops Caffe (a net its parser refuses, a CHECK failing while it sets up a
layer, a Python layer that cannot be imported or raises) ends as one line naming the user's
solver (never the temporary copy handed to Caffe), exit status 2, as on the torch engine; and
a Python layer whose module sits beside the net prototxt imports with no PYTHONPATH set."""
import os

import pytest
from helpers import ROOT, dm, env, error_line, run_cli

NET = """name: "tiny"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 2 dim: 3 } shape { dim: LABELS }
                     data_filler { type: "gaussian" } data_filler { type: "constant" value: 1 } } }
layer { name: "py" type: "Python" bottom: "data" top: "doubled"
  python_param { module: "MODULE" layer: "Double" } }
layer { name: "fc" type: "InnerProduct" bottom: "doubled" top: "fc"
  inner_product_param { num_output: 2 EXTRA} }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }
"""

# A Python layer for real pycaffe (caffe.Layer): doubles its input.
LAYER = """import caffe


class Double(caffe.Layer):
    def setup(self, bottom, top):
        if self.param_str == "fail":
            raise ValueError("this layer refuses to set up")

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = 2 * bottom[0].data

    def backward(self, top, propagate_down, bottom):
        bottom[0].diff[...] = 2 * top[0].diff
"""

SOLVER = """net: "nets/NET"
base_lr: 0.01
lr_policy: "fixed"
max_iter: 2
display: 1
snapshot_prefix: "out/tiny"
"""


def user_env():
    """A shell's environment with no PYTHONPATH of its own beyond this checkout (which the
    `deepmammo` command imports)."""
    return env(PYTHONPATH=ROOT)


@pytest.fixture
def project(tmp_path, real_caffe):
    """A working folder whose nets/ holds the net prototxts and the Python layer's module."""
    (tmp_path / "nets").mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "nets" / "double_layer.py").write_text(LAYER)
    return tmp_path


def write_case(project, name, module="double_layer", labels=2, extra="", param_str=None):
    net = NET.replace("MODULE", module).replace("LABELS", str(labels)).replace("EXTRA", extra)
    if param_str:
        net = net.replace('layer: "Double"', f'layer: "Double" param_str: "{param_str}"')
    (project / "nets" / f"{name}.prototxt").write_text(net)
    solver = project / f"{name}_solver.prototxt"
    solver.write_text(SOLVER.replace("NET", f"{name}.prototxt"))
    return solver.name


def train(project, solver):
    return run_cli("train", "--engine", "caffe", "--solver", solver, cwd=project,
                   env=user_env())


def no_temporaries(project):
    leftovers = [n for n in os.listdir(project) if n.startswith(".deepmammo-solver-")]
    assert not leftovers, leftovers


@pytest.mark.subprocess
def test_python_layer_beside_the_net_imports_without_pythonpath(project):
    solver = write_case(project, "good")
    proc = train(project, solver)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Optimization Done" in proc.stderr
    assert (project / "out" / "tiny_iter_2.caffemodel").is_file()
    no_temporaries(project)
    # `deepmammo test --engine caffe` (pycaffe in this process) finds the module the same way
    proc = dm("test", "--engine", "caffe", "--model", "nets/good.prototxt", "--weights",
              "out/tiny_iter_2.caffemodel", "--iterations", "1", cwd=project, env=user_env(),
              timeout=300)
    assert "loss = " in proc.stdout


@pytest.mark.subprocess
def test_missing_python_module_is_one_line(project):
    solver = write_case(project, "nomodule", module="no_such_layer_module")
    proc = train(project, solver)
    line = error_line("train", proc.returncode, proc.stderr, solver,
                      "No module named 'no_such_layer_module'", "layer 'py'",
                      "nets/nomodule.prototxt")
    assert ".deepmammo-solver-" not in line
    no_temporaries(project)


@pytest.mark.subprocess
def test_check_failure_inside_caffe_is_one_line(project):
    solver = write_case(project, "mismatch", labels=4)
    proc = train(project, solver)
    assert "Check failed" in proc.stderr        # Caffe's own log is still shown
    line = error_line("train", proc.returncode, proc.stderr, solver, "Check failed",
                      "(2 vs. 4)", "layer 'loss'")
    assert ".deepmammo-solver-" not in line
    no_temporaries(project)


@pytest.mark.subprocess
def test_python_layer_raising_in_setup_is_one_line(project):
    solver = write_case(project, "raising", param_str="fail")
    proc = train(project, solver)
    error_line("train", proc.returncode, proc.stderr, solver, "a Python layer raised",
               "layer 'py'")
    no_temporaries(project)


@pytest.mark.subprocess
def test_bad_field_in_the_net_names_the_net_file_and_line(project):
    solver = write_case(project, "bogus", extra="bogus_field: 1 ")
    proc = train(project, solver)
    error_line("train", proc.returncode, proc.stderr, "nets/bogus.prototxt:8:",
               'no field named "bogus_field"')


@pytest.mark.subprocess
def test_missing_net_file_names_the_solver(project):
    (project / "lost_solver.prototxt").write_text(SOLVER.replace("NET", "lost.prototxt"))
    proc = train(project, "lost_solver.prototxt")
    error_line("train", proc.returncode, proc.stderr, "lost_solver.prototxt",
               "'nets/lost.prototxt' not found")


@pytest.mark.subprocess
def test_bad_solver_field_names_the_solver(project):
    (project / "bad_solver.prototxt").write_text(SOLVER.replace("NET", "x.prototxt")
                                                 + "momentum: fast\n")
    proc = train(project, "bad_solver.prototxt")
    error_line("train", proc.returncode, proc.stderr, "bad_solver.prototxt:7:")


def test_failure_summary_reads_glog_and_python_lines():
    from deepmammo.caffe.real_log import failure_summary
    lines = [
        "I0000 00:00:01.000000  7 solver.cpp:87] Creating training net from net file: n.pt",
        "I0000 00:00:01.000000  7 net.cpp:86] Creating Layer conv",
        "F0000 00:00:01.100000  7 conv_layer.cpp:9] Check failed: num_output > 0",
        "*** Check failure stack trace: ***",
        "    @     0x7f caffe::Net<>::Init()",
    ]
    assert failure_summary(lines) == ("Check failed: num_output > 0 (setting up layer 'conv' "
                                      "of n.pt)")
    later = ["I20261206 00:00:01.000000  7 solver.cpp:57] Solver scaffolding done.",
             "E20261206 00:00:02.000000  7 x.cpp:1] something odd",
             "ZeroDivisionError: division by zero", "terminate called after throwing"]
    assert failure_summary(later).startswith("ZeroDivisionError: division by zero")
    assert failure_summary(["  @ 0x1 main", ""]) == "no output"


def test_child_pythonpath_keeps_the_users(monkeypatch, tmp_path, real_caffe):
    from deepmammo.caffe.real_train import python_path
    monkeypatch.setenv("PYTHONPATH", "/users/own/path")
    monkeypatch.chdir(tmp_path)
    entries = python_path([tmp_path / "nets"]).split(os.pathsep)
    assert entries[:3] == [str(tmp_path), str(tmp_path / "nets"), "/users/own/path"]
    assert any(e.endswith(os.path.join("src", "python")) for e in entries)
