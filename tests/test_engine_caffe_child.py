"""Real pycaffe in a child process (deepmammo/caffe/real_child.py), as a user meets it:
`deepmammo test --engine caffe` and `deepmammo eval --engine caffe` in subprocesses. A CHECK
failing inside Caffe (which aborts its process) ends as one line naming the user's file — the
net prototxt while it is set up, the caffemodel while its weights are copied — with the layer
being set up, exit status 2, no C++ stack and no traceback; a good run prints what it printed
when pycaffe ran in the command's own process; Ctrl-C ends it with `interrupted` and takes
the child with it."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import ROOT, env, error_line, run_cli

from deepmammo.caffe.formats.datum import array_to_datum
from deepmammo.caffe.formats.lmdb_io import LMDBWriter, lmdb_key

TRAIN_NET = """name: "tiny"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 2 dim: INPUTS } shape { dim: 2 }
                     data_filler { type: "gaussian" } data_filler { type: "constant" value: 1 } } }
layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc"
  inner_product_param { num_output: 2 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }
"""

# Input 2x2 under a 5x5 kernel: Caffe's output size is negative and Blob::Reshape's CHECK
# fails while the layer is set up.
BIG_KERNEL = """name: "big"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 dim: 2 dim: 2 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 1 kernel_size: 5 } }
"""

DEPLOY = """name: "deploy"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: SIDE dim: SIDE } } }
layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc"
  inner_product_param { num_output: 2 weight_filler { type: "xavier" } } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""

# A Python layer that records its process and takes its time over each forward pass.
SLOW_LAYER = """import os
import time

import caffe


class Slow(caffe.Layer):
    def setup(self, bottom, top):
        with open("child.pid", "w") as f:
            f.write(str(os.getpid()))

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        time.sleep(0.05)
        top[0].data[...] = bottom[0].data

    def backward(self, top, propagate_down, bottom):
        pass
"""
SLOW_NET = """name: "slow"
layer { name: "data" type: "DummyData" top: "data" dummy_data_param { shape { dim: 1 dim: 2 } } }
layer { name: "py" type: "Python" bottom: "data" top: "out"
  python_param { module: "slow_layer" layer: "Slow" } }
"""


def user_env(**extra):
    out = env(PYTHONPATH=ROOT)
    out.pop("GLOG_minloglevel", None)
    out.update(extra)
    return out


def dm(folder, *args, **extra):
    return run_cli(*args, cwd=folder, env=user_env(**extra))


@pytest.fixture
def project(tmp_path, real_caffe):
    """Nets and caffemodels (saved by real pycaffe) for a 3-input and a 4-input InnerProduct,
    a net whose convolution cannot fit its input, deploy nets for 8x8 and 4x4 records, and
    an LMDB of six 3x8x8 records."""
    for name, text in (("tiny.prototxt", TRAIN_NET.replace("INPUTS", "3")),
                       ("wide.prototxt", TRAIN_NET.replace("INPUTS", "4")),
                       ("big_kernel.prototxt", BIG_KERNEL),
                       ("deploy.prototxt", DEPLOY.replace("SIDE", "8")),
                       ("deploy4.prototxt", DEPLOY.replace("SIDE", "4")),
                       ("slow.prototxt", SLOW_NET)):
        (tmp_path / name).write_text(text)
    (tmp_path / "slow_layer.py").write_text(SLOW_LAYER)
    for net, weights in (("tiny", "tiny.caffemodel"), ("wide", "wide.caffemodel"),
                         ("deploy", "run_iter_10.caffemodel"),
                         ("deploy4", "small_iter_10.caffemodel")):
        real_caffe.Net(str(tmp_path / f"{net}.prototxt"), real_caffe.TEST).save(
            str(tmp_path / weights))
    rng = np.random.RandomState(0)
    with LMDBWriter(str(tmp_path / "val_lmdb")) as db:
        for i in range(6):
            image = rng.randint(0, 256, (3, 8, 8)).astype(np.uint8)
            db.put_datum(lmdb_key(i, f"r{i}"), array_to_datum(image, label=i % 2))
    return tmp_path


def no_stack(err):
    assert "Traceback" not in err, err
    assert "Check failure stack trace" not in err, err
    assert not [line for line in err.splitlines() if line.lstrip().startswith("@ ")], err
    assert not [line for line in err.splitlines() if line.startswith("F")], err


def last_line(err):
    return err.strip().splitlines()[-1]


# ------------------------------------------------------------------------- deepmammo test

@pytest.mark.subprocess
def test_test_check_failure_is_one_line_naming_the_net(project):
    proc = dm(project, "test", "--engine", "caffe", "--model", "big_kernel.prototxt",
              "--weights", "tiny.caffemodel", "--iterations", "1")
    line = error_line("test", proc.returncode, proc.stderr, "big_kernel.prototxt:",
                      "Check failed: shape[i] >= 0 (-2 vs. 0)", "(setting up layer 'conv')")
    assert line == last_line(proc.stderr)
    no_stack(proc.stderr)


@pytest.mark.subprocess
def test_test_weights_of_another_shape_name_the_caffemodel(project):
    proc = dm(project, "test", "--engine", "caffe", "--model", "tiny.prototxt", "--weights",
              "wide.caffemodel", "--iterations", "1")
    line = error_line("test", proc.returncode, proc.stderr, "wide.caffemodel:",
                      "Cannot copy param 0 weights from layer 'fc'; shape mismatch")
    assert "setting up" not in line      # the net was set up; its weights did not fit
    assert line == last_line(proc.stderr)
    no_stack(proc.stderr)


@pytest.mark.subprocess
def test_test_good_run_prints_its_outputs_and_caffes_log_only_when_asked(project):
    proc = dm(project, "test", "--engine", "caffe", "--model", "tiny.prototxt", "--weights",
              "tiny.caffemodel", "--iterations", "2", "--output", "out.json")
    assert proc.returncode == 0, proc.stderr
    # stdout: the mean outputs; stderr: our log line, none of Caffe's INFO lines (pycaffe
    # shows errors only unless GLOG_minloglevel asks for more).
    assert proc.stdout.startswith("loss = ")
    assert "] Loss: " in proc.stderr
    assert "Creating Layer" not in proc.stderr and "Initializing net" not in proc.stderr
    assert "InitGoogleLogging" not in proc.stderr and 'name: "tiny"' not in proc.stderr
    saved = json.loads((project / "out.json").read_text())
    assert saved["iterations"] == 2 and "loss" in saved["outputs"]
    # Asked for, Caffe's own setup log comes through.
    proc = dm(project, "test", "--engine", "caffe", "--model", "tiny.prototxt", "--weights",
              "tiny.caffemodel", "--iterations", "1", GLOG_minloglevel="0")
    assert proc.returncode == 0, proc.stderr
    assert "net.cpp:" in proc.stderr and "Creating Layer fc" in proc.stderr


@pytest.mark.subprocess
def test_ctrl_c_ends_test_and_its_child(project):
    # A session of its own: Ctrl-C at a terminal reaches the whole process group.
    proc = subprocess.Popen([sys.executable, "-m", "deepmammo", "test", "--engine", "caffe",
                             "--model", "slow.prototxt", "--weights", "tiny.caffemodel",
                             "--iterations", "100000"], cwd=project, env=user_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    pid_file = project / "child.pid"
    deadline = time.time() + 120
    while not pid_file.exists() or not pid_file.read_text():
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read()
        time.sleep(0.01)
    child = int(pid_file.read_text())
    assert child != proc.pid
    time.sleep(0.3)                 # into its forward passes
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode in (130, -signal.SIGINT) and "Traceback" not in err, err
    assert last_line(err) == "deepmammo test: interrupted"
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)


# ------------------------------------------------------------------------- deepmammo eval

def eval_args(model, *snapshots, out="results.json"):
    return ["eval", "--engine", "caffe", "--model", model, "--snapshots", *snapshots,
            "--lmdb", "val_lmdb", "--out", out, "--bootstrap", "0"]


@pytest.mark.subprocess
def test_eval_good_run_prints_its_table(project):
    proc = dm(project, *eval_args("deploy.prototxt", "run_iter_10.caffemodel"))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["snapshot", "(val)", "acc", "prec", "recall", "auc", "n"]
    assert lines[1].startswith("run_iter_10.caffemodel") and lines[1].split()[5] == "6"
    assert "evaluating run_iter_10.caffemodel on val_lmdb (6 records)" in proc.stderr
    assert "Creating Layer" not in proc.stderr
    results = json.loads((project / "results.json").read_text())
    assert results["engine"] == "caffe" and len(results["snapshots"]) == 1


@pytest.mark.subprocess
def test_eval_snapshot_of_another_net_is_one_line_naming_it(project):
    proc = dm(project, *eval_args("deploy.prototxt", "run_iter_10.caffemodel",
                                  "small_iter_10.caffemodel"))
    line = error_line("eval", proc.returncode, proc.stderr, "small_iter_10.caffemodel:",
                      "Cannot copy param 0 weights from layer 'fc'",
                      "Source param shape is 2 48 (96); target param shape is 2 192 (384)")
    assert line == last_line(proc.stderr)
    no_stack(proc.stderr)
    assert not (project / "results.json").exists()


@pytest.mark.subprocess
def test_eval_check_failure_in_the_deploy_net_names_it(project):
    proc = dm(project, *eval_args("big_kernel.prototxt", "run_iter_10.caffemodel"))
    line = error_line("eval", proc.returncode, proc.stderr, "big_kernel.prototxt:",
                      "Check failed: shape[i] >= 0", "(setting up layer 'conv')")
    assert line == last_line(proc.stderr)
    no_stack(proc.stderr)


# ------------------------------------------------------------------ the library, in-process

@pytest.mark.subprocess
def test_with_engine_raises_naming_the_file_and_keeps_this_process(project):
    from deepmammo.caffe.real_child import CaffeStopped
    from deepmammo.evaluate.predict import with_engine
    from deepmammo.report.saliency import compute_saliency
    images = np.zeros((2, 3, 8, 8), np.uint8)
    model = str(project / "deploy.prototxt")
    maps, batch = with_engine("caffe", compute_saliency, model,
                              str(project / "run_iter_10.caffemodel"), images,
                              np.array([0, 1]), source=model)
    assert maps.shape[0] == 2 and batch.shape == (2, 3, 8, 8)
    with pytest.raises(CaffeStopped) as info:
        with_engine("caffe", compute_saliency, model,
                    str(project / "small_iter_10.caffemodel"), images, np.array([0, 1]),
                    source=model)
    assert str(info.value).startswith(str(project / "small_iter_10.caffemodel") + ": ")
    # An exception the child raises comes back as itself.
    with pytest.raises(FileNotFoundError):
        with_engine("caffe", compute_saliency, str(project / "missing.prototxt"),
                    str(project / "run_iter_10.caffemodel"), images, np.array([0, 1]))


def test_relay_shows_what_pycaffe_showed_and_keeps_every_line():
    import io

    from deepmammo.caffe.real_child import Relay
    out = io.StringIO()
    relay = Relay(out, level=2)
    text = ("WARNING: Logging before InitGoogleLogging() is written to STDERR\n"
            "I20261206 03:49:20.517335  5171 net.cpp:53] Initializing net from parameters: \n"
            'name: "bad"\nlayer {\n  name: "data"\n}\n'
            "I20261206 03:49:20.517436  5171 net.cpp:86] Creating Layer conv\n"
            "I1206 03:49:20.600000  5171 snapshots.py:151] evaluating x\n"
            "\rread: 50%|#####     | 3/6\rread: 100%|##########| 6/6\n"
            "E20261206 03:49:20.517436  5171 net.cpp:9] an error Caffe logs\n"
            "F20261206 03:49:20.517527  5171 blob.cpp:32] Check failed: shape[i] >= 0 \n"
            "*** Check failure stack trace: ***\n    @     0x7f caffe::Blob<>::Reshape()\n")
    data = text.encode()
    pieces = [data[i:i + 7] for i in range(0, len(data), 7)]   # lines split anywhere
    for piece in pieces:
        relay.feed(piece)
    relay.feed(b"", final=True)
    assert out.getvalue() == (
        "I1206 03:49:20.600000  5171 snapshots.py:151] evaluating x\n"
        "\rread: 50%|#####     | 3/6\rread: 100%|##########| 6/6\n"
        "E20261206 03:49:20.517436  5171 net.cpp:9] an error Caffe logs\n")
    assert list(relay.lines) == text.split("\n")[:-1]
    # A progress bar's unfinished line is shown at once.
    out = io.StringIO()
    relay = Relay(out, level=2)
    relay.feed(b"\rread:  10%|#")
    assert out.getvalue() == "\rread:  10%|#"
    relay.feed(b"         | 1/10\rread:  20%")
    assert out.getvalue() == "\rread:  10%|#         | 1/10\rread:  20%"
    # Everything of Caffe's, when GLOG_minloglevel is 0 (the stack dump still not).
    out = io.StringIO()
    relay = Relay(out, level=0)
    relay.feed(data, final=True)
    assert out.getvalue() == text[:text.index("F2026")]


def test_failure_summary_of_a_pycaffe_child():
    from deepmammo.caffe.real_log import failure_summary, signal_name
    lines = ["I20261206 00:00:01.000000  7 net.cpp:86] Creating Layer prob",
             "I20261206 00:00:01.000000  7 net.cpp:283] Network initialization done.",
             "F20261206 00:00:01.100000  7 net.cpp:767] Cannot copy param 0 weights ",
             "*** Check failure stack trace: ***"]
    # The net was set up: the failure is not its setup's.
    assert failure_summary(lines, "SIGABRT") == "Cannot copy param 0 weights"
    assert failure_summary(lines[:2], "SIGSEGV") == "killed by SIGSEGV"
    assert failure_summary(lines[:1], "SIGSEGV") == ("killed by SIGSEGV (setting up layer "
                                                     "'prob')")
    assert signal_name(-6) == "SIGABRT" and signal_name(1) is None and signal_name(0) is None


@pytest.mark.subprocess
def test_a_missing_build_is_one_line_from_the_child(project):
    proc = dm(project, "test", "--engine", "caffe", "--model", "tiny.prototxt", "--weights",
              "tiny.caffemodel", "--iterations", "1", DEEPMAMMO_CAFFE=str(project / "none"))
    error_line("test", proc.returncode, proc.stderr, "real BVLC Caffe is not built",
               "make caffe")
