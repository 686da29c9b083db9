"""Helpers for tests that walk the paths a user walks: the CLI and make in subprocesses, in a
workspace that looks like a checkout (configs/, prototxt/, solvers/, Makefile, .venv), on a
tiny dataset built by the CLI itself."""
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_BIN = os.path.dirname(sys.executable)

# A net small enough that hundreds of iterations take seconds: an 8x8 crop of the mass crop,
# one InnerProduct. Data layers read data/datasets/<variant>/... as the committed nets do.
TINY_NET = """name: "Tiny"
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TRAIN }
  transform_param { crop_size: 8 mirror: true mean_file: "ds/mean.binaryproto" scale: 0.00390625 }
  data_param { source: "ds/train_lmdb" batch_size: 4 backend: LMDB } }
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TEST }
  transform_param { crop_size: 8 mean_file: "ds/mean.binaryproto" scale: 0.00390625 }
  data_param { source: "ds/val_lmdb" batch_size: 4 backend: LMDB } }
layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc"
  inner_product_param { num_output: 2 weight_filler { type: "xavier" } } }
layer { name: "accuracy" type: "Accuracy" bottom: "fc" bottom: "label" top: "accuracy"
  include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }
"""
TINY_DEPLOY = """name: "Tiny"
layer { name: "data" type: "Input" top: "data"
  input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc"
  inner_product_param { num_output: 2 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""
TINY_SOLVER = """net: "prototxt/tiny/train_val.prototxt"
type: "Adam"
base_lr: 0.001
momentum: 0.9
momentum2: 0.999
lr_policy: "fixed"
display: 1
max_iter: 300
snapshot: 100
test_iter: 1
test_interval: 100
random_seed: 1
"""
TINY_CONFIG = """# A tiny experiment for the user-path tests.
description: tiny test net
train_val: prototxt/tiny/train_val.prototxt
deploy: prototxt/tiny/deploy.prototxt
solver: solvers/tiny.prototxt
padding: proportional:2
augment: none
"""


def env():
    """The environment of a shell where `source .venv/bin/activate` was run."""
    out = dict(os.environ)
    out["PATH"] = VENV_BIN + os.pathsep + out.get("PATH", "")
    # this checkout's package, whichever checkout the venv was installed from
    out["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, out.get("PYTHONPATH")) if p)
    out.pop("MAKEFLAGS", None)
    out.pop("MAKELEVEL", None)
    return out


def run(args, cwd, timeout=600, check=True, **kwargs):
    """Run a command as a user would; on failure the assertion shows what it printed."""
    proc = subprocess.run(args, cwd=cwd, env=kwargs.pop("env", env()), capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL, **kwargs)
    if check:
        assert proc.returncode == 0, (f"{args} exited {proc.returncode}\nstdout:\n"
                                      f"{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}")
    return proc


def dm(*args, cwd, **kwargs):
    """`deepmammo ARGS` (as `python -m deepmammo`, the venv's)."""
    return run([sys.executable, "-m", "deepmammo", *map(str, args)], cwd, **kwargs)


def error_line(command, rc, err, *needles):
    """The one line a failed `deepmammo COMMAND` printed (exit status 2, no traceback);
    checks that it names every needle."""
    assert rc == 2, (rc, err)
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith(f"deepmammo {command}:")]
    assert len(lines) == 1, err
    for needle in needles:
        assert str(needle) in lines[0], (needle, lines[0])
    return lines[0]


def build_tiny_data(folder, patients=10):
    """synth -> ingest -> crops -> split -> lmdb (no augmentation) through the CLI, laid out as
    the Makefile lays out DATASETS: crops/proportional2, splits-proportional2.csv,
    proportional2-none. Returns (cases.csv, DATASETS folder)."""
    os.makedirs(folder, exist_ok=True)
    cases = os.path.join(folder, "cases", "cases.csv")
    datasets = os.path.join(folder, "datasets")
    crops = os.path.join(datasets, "crops", "proportional2")
    splits = os.path.join(datasets, "splits-proportional2.csv")
    dm("synth", "ddsm", "--out", "synth", "--patients", patients, "--seed", 0, cwd=folder)
    dm("ingest", "ddsm", "synth", "--out", cases, cwd=folder)
    dm("crops", cases, "--padding", "proportional:2", "--out", crops, cwd=folder)
    dm("split", crops, "--seed", 0, "--out", splits, cwd=folder)
    dm("lmdb", crops, "--splits", splits, "--augment", "none", "--seed", 0, "--out",
       os.path.join(datasets, "proportional2-none"), cwd=folder)
    return cases, datasets


def make_workspace(folder):
    """A folder that looks like a checkout to make and the CLI: the repository's Makefile,
    configs, prototxt and solvers copied (tests edit them), the venv linked (make sees the
    install done), plus the tiny net, solver and config."""
    os.makedirs(folder, exist_ok=True)
    for name in ("configs", "prototxt", "solvers"):
        shutil.copytree(os.path.join(ROOT, name), os.path.join(folder, name))
    for name in ("Makefile", "ruff.toml"):
        shutil.copy2(os.path.join(ROOT, name), os.path.join(folder, name))
    # setup.py dated long ago, so make sees the shared install as up to date and never
    # reinstalls the venv from this folder (which holds no package)
    shutil.copy2(os.path.join(ROOT, "setup.py"), os.path.join(folder, "setup.py"))
    os.utime(os.path.join(folder, "setup.py"), (0, 0))
    os.symlink(os.path.dirname(VENV_BIN), os.path.join(folder, ".venv"))
    os.makedirs(os.path.join(folder, "prototxt", "tiny"))
    for path, text in (("prototxt/tiny/train_val.prototxt", TINY_NET),
                       ("prototxt/tiny/deploy.prototxt", TINY_DEPLOY),
                       ("solvers/tiny.prototxt", TINY_SOLVER), ("configs/tiny.yaml", TINY_CONFIG)):
        with open(os.path.join(folder, path), "w") as f:
            f.write(text)
    return folder
