"""The paths a user walks, walked the same way: `deepmammo` and `make` in subprocesses, in a
workspace laid out like a checkout, on a tiny dataset the CLI builds. Each test reads what the
user reads (stdout, stderr, the files in the run folder)."""
import csv
import glob
import json
import os
import re
import subprocess

import pytest
import yaml
from helpers import ROOT, dm, env, run
from worlds import make_workspace

from deepmammo.caffe.parse_log import read_csv
from deepmammo.experiment import experiment_names, load_config, variant_name

pytestmark = pytest.mark.subprocess


@pytest.fixture(scope="module")
def data(tiny_data):
    """(cases.csv, DATASETS folder, the proportional2-none dataset) built by the CLI."""
    cases, datasets = tiny_data
    return cases, datasets, os.path.join(datasets, "proportional2-none")


@pytest.fixture
def workspace(tmp_path):
    return make_workspace(str(tmp_path / "ws"))


def loss_line(text):
    """The value of the last `Loss: X` line (caffe test's and ours)."""
    values = re.findall(r"\] Loss: ([-+\d.eE]+)", text)
    assert values, f"no 'Loss:' line in:\n{text[-2000:]}"
    return float(values[-1])


def latest(workspace, experiment):
    return os.path.realpath(os.path.join(workspace, "runs", experiment, "latest"))


# ------------------------------------------------------------------- make and the configs
def test_make_help_lists_every_experiment_from_the_configs():
    out = run(["make", "help"], ROOT).stdout
    names = experiment_names(os.path.join(ROOT, "configs"))
    assert {"levynet", "googlenet-deeper", "alexnet-noaug-small", "demo-levynet"} <= set(names)
    listed = re.findall(r"^  (\S+)\s", out, re.M)
    assert listed == names


def test_make_derives_each_experiments_dataset_variant_as_python_does(tmp_path):
    for name in experiment_names(os.path.join(ROOT, "configs")):
        config = load_config(os.path.join(ROOT, "configs", name + ".yaml"), environ={})
        out = run(["make", "-n", name, f"DATASETS={tmp_path}/ds"], ROOT).stdout
        assert f"dataset={tmp_path}/ds/{variant_name(config)} " in out, (name, out)


def test_a_config_only_experiment_trains_and_evaluates_through_make(data, workspace):
    cases, datasets, _ = data
    # Adding an experiment is adding one file.
    with open(os.path.join(workspace, "configs", "levynet.yaml")) as f:
        text = f.read()
    with open(os.path.join(workspace, "configs", "mine.yaml"), "w") as f:
        f.write(text.replace("description: LevyNet from scratch", "description: my LevyNet"))
    assert "my LevyNet" in run(["make", "help"], workspace).stdout
    proc = run(["make", "mine", f"CASES={cases}", f"DATASETS={datasets}", "AUG=none",
                'OVERRIDES=epochs=2 seed=3 batch_size=4 test_batch_size=4 display=1'],
               workspace)
    folder = latest(workspace, "mine")
    config = yaml.safe_load(open(os.path.join(folder, "config.yaml")))
    assert config["seed"] == 3 and config["epochs"] == 2 and config["augment"] == "none"
    assert "random_seed: 3" in open(os.path.join(folder, "solver.prototxt")).read()
    val = json.load(open(os.path.join(folder, "eval", "val.json")))
    test = json.load(open(os.path.join(folder, "eval", "test.json")))
    assert test["selected"]["snapshot"] == val["selected"]["snapshot"]
    assert "chosen on validation by accuracy, recall" in proc.stdout
    assert len(val["snapshots"]) == 4


def test_repeats_make_one_grouped_run_per_seed(data, workspace):
    _, _, dataset = data
    proc = dm("experiment", "configs/tiny.yaml", f"dataset={dataset}", "seeds=1,2",
              "max_iter=8", "--evaluate", cwd=workspace)
    folders = sorted(glob.glob(os.path.join(workspace, "runs", "tiny", "*-seed*")))
    assert [f[-5:] for f in folders] == ["seed1", "seed2"], proc.stdout
    records = [json.load(open(os.path.join(f, "provenance.json"))) for f in folders]
    assert [r["seed"] for r in records] == [1, 2]
    assert records[0]["repeat_group"] == records[1]["repeat_group"] is not None
    assert latest(workspace, "tiny") == folders[-1]
    assert records[1]["training"]["random_stream"].startswith("caffe-mt19937 seed 2")
    # the tables show both seeds of the group: mean +- sd (each seed's value)
    dm("tables", "--runs", "runs", "--alias", "tiny=levynet", "--out", "tables", cwd=workspace)
    row = next(r for r in csv.DictReader(open(os.path.join(workspace, "tables", "table2.csv")))
               if r["experiment"] == "levynet")
    assert len(row["accuracy_seeds"].split(";" if ";" in row["accuracy_seeds"] else ",")) == 2
    assert "±" in open(os.path.join(workspace, "tables", "table2.md")).read()


def test_a_dry_run_leaves_latest_alone(data, workspace):
    _, _, dataset = data
    dm("experiment", "configs/tiny.yaml", f"dataset={dataset}", "max_iter=2", cwd=workspace)
    before = latest(workspace, "tiny")
    out = dm("experiment", "configs/tiny.yaml", f"dataset={dataset}", "max_iter=2",
             "--dry-run", cwd=workspace).stdout
    dry = out.split("run folder:")[1].split()[0]
    assert dry.endswith("-dry-run") and os.path.isfile(os.path.join(workspace, dry,
                                                                    "solver.prototxt"))
    assert latest(workspace, "tiny") == before


def test_overrides_after_the_options_are_taken(data, workspace):
    """The Makefile's old order (options, then overrides) and the other one both work."""
    _, _, dataset = data
    for argv in (["--dry-run", "configs/tiny.yaml", f"dataset={dataset}", "max_iter=8"],
                 ["configs/tiny.yaml", f"dataset={dataset}", "--dry-run", "max_iter=8"]):
        out = dm("experiment", *argv, cwd=workspace).stdout
        folder = out.split("run folder:")[1].split()[0]
        assert "max_iter: 8" in open(os.path.join(workspace, folder, "solver.prototxt")).read()


# ----------------------------------------------------------------------- real Caffe, logs
def test_real_caffe_logs_hundreds_of_iterations_at_display_1_without_blocking(
        real_caffe, data, workspace):
    _, _, dataset = data
    proc = dm("experiment", "--engine", "caffe", "configs/tiny.yaml", f"dataset={dataset}",
              cwd=workspace, timeout=300)
    folder = latest(workspace, "tiny")
    log_text = open(os.path.join(folder, "train.log")).read()
    # far more than a pipe holds (64 KiB): the parent must have read as the child wrote
    assert len(proc.stderr) > 100_000 and "Optimization Done." in proc.stderr
    assert log_text.count("Train net output #0: loss") == 300
    rows = list(csv.DictReader(open(os.path.join(folder, "train_log.csv"))))
    assert [int(r["iteration"]) for r in rows] == list(range(301))
    assert rows[100]["test0_accuracy"] != "" and rows[5]["train_loss"] != ""
    assert sorted(os.path.basename(p) for p in glob.glob(os.path.join(folder, "*.caffemodel"))) \
        == [f"tiny_iter_{i}.caffemodel" for i in (150, 225, 300, 75)]  # the quarter points
    record = json.load(open(os.path.join(folder, "provenance.json")))
    assert record["training"]["engine"] == "caffe"


@pytest.mark.parametrize("engine", ["torch", "caffe"])
def test_piped_stderr_reads_like_the_run_log(engine, real_caffe, data, workspace, tmp_path):
    """`deepmammo train ... 2>&1 | tee train.log` gives a log parse-log (Caffe's parse_log.py)
    reads as it reads the log the run wrote."""
    _, _, dataset = data
    out = dm("experiment", "configs/tiny.yaml", f"dataset={dataset}", "--dry-run",
             "max_iter=20", "test_interval=10", cwd=workspace).stdout
    folder = os.path.join(workspace, out.split("run folder:")[1].split()[0])
    log_path = os.path.join(folder, "train.log")
    piped = tmp_path / "piped.log"
    proc = run(["bash", "-c", f"deepmammo train --solver {folder}/solver.prototxt "
                f"--engine {engine} --log {log_path} 2>&1 | tee {piped}"], workspace)
    assert proc.stdout.count("Train net output") >= 20
    for path, out_dir in ((piped, tmp_path / "a"), (log_path, tmp_path / "b")):
        dm("parse-log", path, out_dir, cwd=workspace)
    for kind in ("train", "test"):
        a = read_csv(tmp_path / "a" / f"piped.log.{kind}")
        b = read_csv(tmp_path / "b" / f"train.log.{kind}")
        assert len(a) == len(b) and len(a) >= (20 if kind == "train" else 3)
        for x, y in zip(a, b):
            assert x.pop("Seconds") == pytest.approx(y.pop("Seconds"), abs=0.05)
            assert x == y


def test_parse_log_reads_both_glog_date_forms(tmp_path, workspace):
    lines = ["I1130 10:00:00.000000  7 solver.cpp:1] Solving Net",
             "I1130 10:00:01.500000  7 solver.cpp:2] Iteration 0, loss = 0.7",
             "I1130 10:00:01.500000  7 solver.cpp:3]     Train net output #0: loss = 0.7",
             "I1130 10:00:01.600000  7 sgd_solver.cpp:4] Iteration 0, lr = 0.01",
             "I20261130 10:00:03.000000  7 solver.cpp:2] Iteration 10, loss = 0.5",
             "I20261130 10:00:03.000000  7 solver.cpp:3]     Train net output #0: loss = 0.4",
             "a progress bar: 10/20 [00:01<00:01]"]
    path = tmp_path / "mixed.log"
    path.write_text("\n".join(lines) + "\n")
    dm("parse-log", path, cwd=workspace)
    rows = read_csv(tmp_path / "mixed.log.train")
    assert [(r["NumIters"], r["LearningRate"], r["loss"]) for r in rows] == \
        [(0, 0.01, 0.7), (10, 0.01, 0.4)]
    assert rows[1]["Seconds"] == pytest.approx(3.0)


def test_deepmammo_test_prints_the_loss_caffe_test_prints(real_caffe, data, workspace):
    _, _, dataset = data
    dm("experiment", "configs/tiny.yaml", f"dataset={dataset}", "max_iter=20", cwd=workspace)
    folder = latest(workspace, "tiny")
    weights = os.path.join(folder, "tiny_iter_20.caffemodel")
    model = os.path.join(folder, "train_val.prototxt")
    from deepmammo.caffe.real import caffe_tool
    tool_env = dict(env(), GLOG_minloglevel="0", GLOG_logtostderr="1")
    theirs = loss_line(run([caffe_tool(), "test", f"--model={model}", f"--weights={weights}",
                            "--iterations=2"], workspace, env=tool_env).stderr)
    assert theirs > 0
    for engine in ("torch", "caffe"):
        ours = loss_line(dm("test", "--model", model, "--weights", weights, "--iterations", 2,
                            "--engine", engine, cwd=workspace).stderr)
        assert ours == pytest.approx(theirs, rel=1e-4), engine


# ------------------------------------------------------------------------------ selection
def test_the_test_evaluation_reports_the_snapshot_validation_chose(data, workspace):
    _, _, dataset = data
    dm("experiment", "configs/tiny.yaml", f"dataset={dataset}", "max_iter=40",
       "experiment=a-rather-long-experiment-name-for-the-tables", cwd=workspace)
    run_dir = latest(workspace, "a-rather-long-experiment-name-for-the-tables")
    common = ["--model", f"{run_dir}/deploy.prototxt", "--snapshots",
              f"{run_dir}/*_iter_*.caffemodel", "--train-val", f"{run_dir}/train_val.prototxt",
              "--bootstrap", "20"]
    val_out = dm("eval", *common, "--lmdb", f"{dataset}/val_lmdb", "--out",
                 f"{run_dir}/eval/val.json", "--select-by", "roc_auc", "accuracy",
                 cwd=workspace).stdout
    test_out = dm("eval", *common, "--lmdb", f"{dataset}/test_lmdb", "--out",
                  f"{run_dir}/eval/test.json", "--val-results", f"{run_dir}/eval/val.json",
                  cwd=workspace).stdout
    val = json.load(open(f"{run_dir}/eval/val.json"))
    test = json.load(open(f"{run_dir}/eval/test.json"))
    assert test["selected"]["snapshot"] == val["selected"]["snapshot"]
    assert test["selected"]["criteria"] == ["roc_auc", "accuracy"]
    chosen = val["selected"]["snapshot"]
    # snapshot names are printed whole
    assert f"chosen on validation by roc_auc, accuracy: {chosen}" in val_out
    assert f"chosen on validation by roc_auc, accuracy: {chosen}" in test_out
    assert "a-rather-long-experiment-name-for-the-tables_iter_40.caffemodel" in test_out
    # asking the test evaluation for other criteria is refused in one line
    refused = dm("eval", *common, "--lmdb", f"{dataset}/test_lmdb", "--out",
                 f"{run_dir}/eval/test2.json", "--val-results", f"{run_dir}/eval/val.json",
                 "--select-by", "accuracy", cwd=workspace, check=False)
    assert refused.returncode != 0 and "roc_auc, accuracy" in refused.stderr
    assert "Traceback" not in refused.stderr
    # the tables report the same snapshot
    dm("tables", "--runs", "runs", "--alias",
       "a-rather-long-experiment-name-for-the-tables=levynet", "--out", "tables", cwd=workspace)
    rows = list(csv.DictReader(open(os.path.join(workspace, "tables", "table2.csv"))))
    levynet = next(r for r in rows if r["experiment"] == "levynet")
    assert levynet["snapshot"] == chosen


# ------------------------------------------------------------------------------ the README
README_SIZES = (  # the README's numbers, made small enough for a test
    ("--patients 60", "--patients 10"),
    ("--augment paper", "--augment none"),
    ("epochs=1", "max_iter=4 batch_size=4 test_batch_size=4 augment=none"),
)


def test_the_readmes_by_hand_section_runs_as_written(workspace):
    text = open(os.path.join(ROOT, "README.md")).read()
    section = text.split("## By hand, stage by stage", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    for old, new in README_SIZES:
        assert old in block, old
        block = block.replace(old, new)
    assert "test_lmdb" in block and "--val-results" in block
    # a fresh shell: only what the README says is set up
    clean = {k: v for k, v in env().items() if k not in ("VIRTUAL_ENV",)}
    clean["PATH"] = os.pathsep.join(p for p in clean["PATH"].split(os.pathsep)
                                    if not p.startswith(os.path.dirname(os.path.dirname(
                                        os.path.realpath(__file__)))) and ".venv" not in p)
    proc = subprocess.run(["bash", "-e", "-c", block], cwd=workspace, env=clean,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert os.path.isfile(os.path.join(workspace, "reports", "mine", "index.html"))
    table2 = open(os.path.join(workspace, "reports", "mine", "tables", "table2.md")).read()
    assert "not evaluated on test" not in table2 and "mine-levynet" in table2


def test_opt_in_precision_is_recorded_and_marked_in_the_tables(data, workspace):
    _, _, dataset = data
    refused = dm("experiment", "configs/tiny.yaml", f"dataset={dataset}", "precision=tf32",
                 "max_iter=4", cwd=workspace, check=False)
    assert refused.returncode != 0 and "tf32 needs a CUDA GPU" in refused.stderr
    assert "Traceback" not in refused.stderr and not os.path.exists(
        os.path.join(workspace, "runs", "tiny"))  # refused before anything was written
    dm("experiment", "configs/tiny.yaml", f"dataset={dataset}", "precision=bf16",
       "max_iter=8", "--evaluate", cwd=workspace)
    folder = latest(workspace, "tiny")
    record = json.load(open(os.path.join(folder, "provenance.json")))
    assert record["training"]["precision"] == "bf16"
    assert json.load(open(os.path.join(folder, "eval", "test.json")))["precision"] == "bf16"
    dm("tables", "--runs", "runs", "--alias", "tiny=levynet", "--out", "tables", cwd=workspace)
    assert "[bf16]" in open(os.path.join(workspace, "tables", "table2.md")).read()
