"""`deepmammo experiment`: the run folder, ImageNet weights, FROM_SCRATCH marks, and a short
training run through real Caffe with the resolved files."""
import argparse
import json
import os

import numpy as np
import pytest
import yaml

from deepmammo.caffe.formats.binaryproto import write_mean
from deepmammo.caffe.formats.datum import array_to_datum
from deepmammo.caffe.formats.lmdb_io import LMDBWriter, lmdb_key
from deepmammo.caffe.formats.prototxt import read_net, read_solver
from deepmammo.experiment import (
    ExperimentError,
    find_weights,
    load_config,
    prepare_run,
    registry,
    train,
)
from deepmammo.experiment.commands import register as register_experiment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "configs")


def make_dataset(folder, n_train=10, n_val=4, size=224, seed=0):
    """A dataset folder as `deepmammo lmdb` writes it: bright-centre crops are malignant."""
    rng = np.random.RandomState(seed)
    for split, count in (("train_lmdb", n_train), ("val_lmdb", n_val)):
        with LMDBWriter(os.path.join(folder, split)) as db:
            for i in range(count):
                label = i % 2
                grey = rng.randint(0, 120, size=(size, size)).astype(np.uint8)
                grey[size // 4:3 * size // 4, size // 4:3 * size // 4] += 100 * label
                db.put_datum(lmdb_key(i, f"c{i}"), array_to_datum(np.repeat(grey[None], 3, 0),
                                                                  label))
    write_mean(np.full((3, size, size), 80, np.float32), os.path.join(folder, "mean.binaryproto"))
    return folder


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(str(tmp_path_factory.mktemp("ds") / "large-aug"))


def experiment(name, dataset, runs, *overrides):
    return load_config(os.path.join(CONFIGS, name + ".yaml"),
                       [f"dataset={dataset}", f"runs_dir={runs}", *overrides],
                       environ={})


def fake_weights(folder, name):
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    with open(path, "wb") as f:
        f.write(b"not the real weights")
    return path


def test_run_folder_holds_resolved_files(dataset, tmp_path):
    runs = tmp_path / "runs"
    run = prepare_run(experiment("levynet", dataset, runs))
    assert os.path.dirname(run.folder) == str(runs / "levynet")
    assert os.path.realpath(runs / "levynet" / "latest") == os.path.realpath(run.folder)
    for name in ("solver.prototxt", "train_val.prototxt", "deploy.prototxt", "config.yaml",
                 "provenance.json"):
        assert os.path.isfile(os.path.join(run.folder, name)), name
    solver = read_solver(run.solver_path)
    # 35 epochs x 10 records / batch 64 = 5.47 -> 6 -> 8 (a multiple of 4)
    assert (solver.max_iter, solver.snapshot) == (8, 2)
    assert list(solver.test_iter) == [1]              # 4 validation records in one batch
    assert solver.stepsize == 1 and solver.test_interval == 1   # epochs of 10 records
    assert solver.net == os.path.abspath(run.train_val_path)
    assert solver.snapshot_prefix == os.path.join(os.path.abspath(run.folder), "levynet")
    net = read_net(run.train_val_path)
    sources = sorted(l.data_param.source for l in net.layer if l.type == "Data")
    assert sources == [os.path.abspath(os.path.join(dataset, "train_lmdb")),
                       os.path.abspath(os.path.join(dataset, "val_lmdb"))]
    # TEST batch 26 > 4 validation records would count records twice: clamped to 4
    assert [l.data_param.batch_size for l in net.layer if l.type == "Data"] == [64, 4]
    means = {l.transform_param.mean_file for l in net.layer if l.type == "Data"}
    assert means == {os.path.abspath(os.path.join(dataset, "mean.binaryproto"))}
    record = json.load(open(os.path.join(run.folder, "provenance.json")))
    assert record["dataset"]["train_records"] == 10 and record["dataset"]["val_records"] == 4
    assert record["solver"]["max_iter"] == 8 and record["from_scratch"] is False
    assert record["config"]["epochs"] == 35 and record["seed"] == 1
    saved = yaml.safe_load(open(os.path.join(run.folder, "config.yaml")))
    assert saved["experiment"] == "levynet" and saved["dataset"] == dataset
    # the committed files are untouched
    assert read_solver(os.path.join(ROOT, "solvers", "levynet.prototxt")).max_iter == 19908


def test_missing_dataset_says_how_to_build_it(tmp_path):
    c = experiment("levynet", str(tmp_path / "large-aug"), tmp_path / "runs")
    with pytest.raises(ExperimentError, match="make levynet. builds the proportional2-paper variant"):
        prepare_run(c)
    assert not os.path.exists(tmp_path / "runs")


def test_missing_imagenet_weights_say_what_to_put_where(dataset, tmp_path):
    c = experiment("googlenet-deeper", dataset, tmp_path / "runs",
                   f"weights_dir={tmp_path / 'w'}")
    with pytest.raises(ExperimentError) as err:
        prepare_run(c)
    message = str(err.value)
    assert "bvlc_googlenet.caffemodel" in message and str(tmp_path / "w") in message
    assert registry()["bvlc_googlenet.caffemodel"]["sha1"] in message
    assert "FROM_SCRATCH=1" in message and "WEIGHTS_DIR" in message


def test_wrong_weights_are_refused_by_sha1(tmp_path):
    fake_weights(tmp_path / "w", "bvlc_alexnet.caffemodel")
    c = load_config(os.path.join(CONFIGS, "alexnet-aug-large.yaml"),
                    [f"weights_dir={tmp_path / 'w'}"], environ={})
    with pytest.raises(ExperimentError, match="wrong sha1"):
        find_weights(c)
    path, scratch = find_weights(c, check_sha1=False)
    assert path == str(tmp_path / "w" / "bvlc_alexnet.caffemodel") and not scratch


def test_weights_dir_from_the_environment(tmp_path):
    fake_weights(tmp_path / "env", "bvlc_googlenet.caffemodel")
    c = load_config(os.path.join(CONFIGS, "googlenet-shallow.yaml"),
                    environ={"WEIGHTS_DIR": str(tmp_path / "env")})
    assert find_weights(c, check_sha1=False)[0] == str(tmp_path / "env" /
                                                        "bvlc_googlenet.caffemodel")


def test_from_scratch_marks_every_output(dataset, tmp_path):
    c = load_config(os.path.join(CONFIGS, "alexnet-aug-large.yaml"),
                    [f"dataset={dataset}", f"runs_dir={tmp_path / 'runs'}",
                     f"weights_dir={tmp_path / 'none'}"], environ={"FROM_SCRATCH": "1"})
    run = prepare_run(c)
    assert run.from_scratch and run.weights is None
    assert run.folder.endswith("-from-scratch")
    assert os.path.basename(run.snapshot_prefix) == "alexnet-aug-large-from-scratch"
    assert os.path.isfile(os.path.join(run.folder, "FROM_SCRATCH"))
    for name in ("solver.prototxt", "train_val.prototxt", "deploy.prototxt", "config.yaml"):
        assert "FROM_SCRATCH" in open(os.path.join(run.folder, name)).read(), name
    record = json.load(open(os.path.join(run.folder, "provenance.json")))
    assert record["from_scratch"] is True and record["config"]["from_scratch"] is True


def test_demo_goes_on_from_scratch_without_weights(dataset, tmp_path):
    run = prepare_run(experiment("demo-googlenet", dataset, tmp_path / "runs",
                                 f"weights_dir={tmp_path / 'none'}"))
    assert run.from_scratch
    solver = read_solver(run.solver_path)
    assert (solver.max_iter, solver.snapshot, solver.test_interval) == (24, 6, 12)
    net = read_net(run.train_val_path)
    assert [l.data_param.batch_size for l in net.layer if l.type == "Data"] == [8, 8]


def cli(argv):
    parser = argparse.ArgumentParser(prog="deepmammo")
    register_experiment(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_dry_run(dataset, tmp_path, capsys):
    assert cli(["experiment", os.path.join(CONFIGS, "googlenet-deeper.yaml"),
                f"dataset={dataset}", f"runs_dir={tmp_path / 'runs'}", "from_scratch=true",
                "base_lr=0.005", "--engine", "caffe", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "run folder:" in out and "FROM_SCRATCH" in out
    folder = out.split("run folder:")[1].split()[0]
    solver = read_solver(os.path.join(folder, "solver.prototxt"))
    assert solver.base_lr == pytest.approx(0.005)
    # 40 epochs x 10 / 32 = 12.5 -> 13 -> 16
    assert (solver.max_iter, solver.snapshot) == (16, 4)
    assert yaml.safe_load(open(os.path.join(folder, "config.yaml")))["engine"] == "caffe"


def test_cli_errors_are_value_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown key"):
        cli(["experiment", os.path.join(CONFIGS, "levynet.yaml"), "epoch=2", "--dry-run"])


def test_training_through_real_caffe_leaves_four_snapshots(real_caffe, dataset, tmp_path):
    run = prepare_run(experiment("levynet", dataset, tmp_path / "runs", "engine=caffe",
                                 "batch_size=4", "test_batch_size=4", "epochs=1.2",
                                 "display=1"))
    # 1.2 epochs x 10 / 4 = 3 -> 4 iterations, a snapshot after each
    found = train(run)
    assert found == [f"levynet_iter_{i}.caffemodel" for i in (1, 2, 3, 4)]
    for name in found:
        assert os.path.isfile(os.path.join(run.folder, name.replace(".caffemodel",
                                                                     ".solverstate")))
    record = json.load(open(os.path.join(run.folder, "provenance.json")))
    assert record["training"]["snapshots"] == found and record["training"]["engine"] == "caffe"
    assert os.path.isfile(os.path.join(run.folder, "train.log"))
    # the snapshot loads into the deploy net copied beside it
    net = real_caffe.Net(run.deploy_path, os.path.join(run.folder, found[-1]), real_caffe.TEST)
    assert net.params["fc3"][0].data.shape == (2, 64)


def test_training_through_our_engine_writes_caffe_log_and_snapshots(dataset, tmp_path):
    run = prepare_run(experiment("levynet", dataset, tmp_path / "runs", "batch_size=2",
                                 "test_batch_size=2", "epochs=0.8", "display=1",
                                 "test_interval=2"))
    # 0.8 epochs x 10 / 2 = 4 iterations, a snapshot after each
    assert train(run) == [f"levynet_iter_{i}.caffemodel" for i in (1, 2, 3, 4)]
    text = open(os.path.join(run.folder, "train.log")).read()
    assert "Iteration 4, Testing net (#0)" in text and "Optimization Done." in text
    assert os.path.isfile(os.path.join(run.folder, "train_log.csv"))
    record = json.load(open(os.path.join(run.folder, "provenance.json")))
    assert record["training"]["engine"] == "torch"


def test_a_runs_saved_config_reruns_it(dataset, tmp_path):
    first = prepare_run(experiment("googlenet-shallow", dataset, tmp_path / "runs",
                                   "from_scratch=true", "weight_decay=0.002"))
    again = prepare_run(load_config(os.path.join(first.folder, "config.yaml"), environ={}))
    assert os.path.dirname(again.folder) == os.path.dirname(first.folder)
    assert again.folder != first.folder
    a, b = read_solver(first.solver_path), read_solver(again.solver_path)
    b.net, b.snapshot_prefix = a.net, a.snapshot_prefix
    assert a == b and b.weight_decay == pytest.approx(0.002)
