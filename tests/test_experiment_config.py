"""Experiment configs: defaults < config < environment < command line; epochs -> iterations;
any solver field can be overridden."""
import glob
import os

import pytest

from deepmammo.caffe.formats.prototxt import read_solver
from deepmammo.caffe.proto import caffe_pb2 as pb
from deepmammo.experiment import (
    ExperimentError,
    experiment_names,
    iterations,
    load_config,
    parse_override,
    resolve_solver,
    set_solver_field,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "configs")
# Every experiment the configs folder defines (the list make help and the report use).
EXPERIMENTS = experiment_names(CONFIGS)


def config(name, *overrides, environ=None):
    return load_config(os.path.join(CONFIGS, name + ".yaml"), overrides, environ=environ or {})


def solver(name):
    return read_solver(os.path.join(ROOT, "solvers", name + ".prototxt"))


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_config_loads_and_names_existing_files(name):
    c = config(name)
    assert c["experiment"] == name
    for key in ("train_val", "deploy", "solver"):
        assert os.path.isfile(os.path.join(ROOT, c[key])), (key, c[key])
    assert (c["epochs"] or c["solver_params"].get("max_iter")) and c["snapshots"] == 4
    assert c["engine"] == "torch" and c["device"] == "cpu" and c["description"]


def test_the_paper_rows_come_from_the_configs():
    from deepmammo.report import paper
    tables = paper.tables()
    assert [r["experiment"] for r in tables["table2"]["rows"]] == [
        "levynet", "alexnet-aug-large", "googlenet-shallow", "googlenet-deeper"]
    assert tables["table1"]["rows"][1]["paper"] == {"accuracy": 0.71}
    assert paper.FIGURE4["paper_best_fraction"] == {"googlenet-deeper": 0.75}


def test_every_weights_file_is_named_once_in_the_registry():
    from deepmammo.experiment import registry
    known = registry(CONFIGS)
    for name in EXPERIMENTS:
        weights = config(name)["weights"]
        assert weights is None or weights in known, name
    # the sha1s are written in the registry alone
    for path in glob.glob(os.path.join(CONFIGS, "*.yaml")):
        if not path.endswith("weights.yaml"):
            assert "405fc5acd08a3bb12de8ee5e23a96bec22f08204" not in open(path).read(), path


@pytest.mark.parametrize("override,message", [
    ("dataset=true", "dataset must be a string, got True"),
    ("epochs=[1]", "epochs must be a number"),
    ("padding=fixed50", "padding must be fixed:N or proportional:K"),
    ("augment=more", "augment must be one of none, paper, code"),
    ("seeds=1,x", "seeds must be whole numbers"),
    ("max_iter=99999999999", "solver field max_iter"),
])
def test_wrong_types_are_named(override, message):
    with pytest.raises(ExperimentError, match=message):
        c = config("levynet", "dataset=x", override)
        resolve_solver(solver("levynet"), c, 100, 10, 10, 10)


def test_a_folder_given_as_the_config_is_named(tmp_path):
    with pytest.raises(ExperimentError, match="is a folder, not a config file"):
        load_config(str(tmp_path))


def test_demo_configs_load():
    for path in glob.glob(os.path.join(CONFIGS, "demo-*.yaml")):
        c = load_config(path, environ={})
        assert c["experiment"].startswith("demo-")


def test_epoch_resolution_at_the_papers_scale():
    # 36,400 records, batch 32, 40 epochs -> 45,500 iterations (the authors' Deeper run).
    assert iterations(40, 36400, 32) == 45500
    assert iterations(20, 36400, 32) == 22750
    assert iterations(10, 36400, 128) == 2844      # the authors' AlexNet file: 2,844
    assert iterations(50, 1456, 128) == 569        # the authors' alex_569_iter_solver
    assert iterations(0.5, 10, 3) == 2


@pytest.mark.parametrize("name,records,max_iter,snapshot,stepsize,test_interval", [
    ("googlenet-deeper", 36400, 45500, 11375, None, 1000),
    ("googlenet-shallow", 36400, 22752, 5688, None, 1000),
    ("alexnet-aug-large", 36400, 8532, 2133, 3000, 500),
    ("alexnet-noaug-large", 1456, 572, 143, 227, 20),
    ("levynet", 36400, 19908, 4977, 3000, 1000),
])
def test_resolution_reproduces_the_committed_solvers(name, records, max_iter, snapshot,
                                                     stepsize, test_interval):
    c = config(name)
    committed = solver(name)
    batch = {"googlenet": 32, "alexnet": 128, "levynet": 64}[name.split("-")[0]]
    resolved, how = resolve_solver(committed, c, records, 182, batch, 26)
    assert resolved.max_iter == max_iter == 4 * resolved.snapshot
    assert resolved.snapshot == snapshot
    if stepsize:
        assert resolved.stepsize == stepsize
    assert resolved.test_interval == test_interval
    assert list(resolved.test_iter) == [7]  # 182 / 26: the validation set once
    assert resolved.random_seed == 1 and resolved.solver_mode == pb.SolverParameter.CPU
    # at the paper's scale the committed file is already what a run resolves (bar tests)
    if records == 36400:
        assert (committed.max_iter, committed.snapshot) == (max_iter, snapshot)
    assert "max_iter" in how and "snapshot" in how


def test_small_dataset_resolution_gives_four_quarter_snapshots():
    c = config("googlenet-deeper")
    resolved, _ = resolve_solver(solver("googlenet-deeper"), c, 250, 20, 32, 26)
    # 40 x 250 / 32 = 312.5 -> 313 -> 316 (a multiple of 4)
    assert resolved.max_iter == 316 and resolved.snapshot == 79
    assert list(resolved.test_iter) == [1]


def test_any_solver_field_can_be_overridden():
    c = config("googlenet-deeper", "base_lr=1e-4", "solver_params.momentum=0.5",
               "max_iter=100", "snapshot=10", "lr_policy=step", "stepsize=7",
               "test_initialization=true", "solver_mode=GPU", "test_iter=[3]",
               "stepvalue=[10, 20]", "clip_gradients=5", "iter_size=2", "type=Nesterov")
    resolved, how = resolve_solver(solver("googlenet-deeper"), c, 36400, 182, 32, 26)
    assert resolved.base_lr == pytest.approx(1e-4)
    assert resolved.momentum == pytest.approx(0.5)
    assert (resolved.max_iter, resolved.snapshot, resolved.stepsize) == (100, 10, 7)
    assert resolved.lr_policy == "step" and resolved.type == "Nesterov"
    assert resolved.test_initialization is True
    assert resolved.solver_mode == pb.SolverParameter.GPU
    assert list(resolved.test_iter) == [3] and list(resolved.stepvalue) == [10, 20]
    assert resolved.clip_gradients == 5 and resolved.iter_size == 2
    assert how["base_lr"] == "set by the config"


def test_yaml_solver_params_and_precedence(tmp_path):
    (tmp_path / "defaults.yaml").write_text(
        open(os.path.join(CONFIGS, "defaults.yaml")).read())
    path = tmp_path / "mine.yaml"
    path.write_text("train_val: a\nsolver: b\ndataset: c\nepochs: 3\nweight_decay: 0.01\n"
                    "solver_params:\n  display: 7\n")
    c = load_config(str(path), ["epochs=4", "weights_dir=/w"],
                    environ={"WEIGHTS_DIR": "/env", "FROM_SCRATCH": "1"})
    assert c["experiment"] == "mine" and c["epochs"] == 4
    assert c["solver_params"] == {"weight_decay": 0.01, "display": 7}
    assert c["weights_dir"] == "/w"            # the command line beats the environment
    assert c["from_scratch"] is True           # FROM_SCRATCH=1
    c = load_config(str(path), [], environ={"WEIGHTS_DIR": "/env", "FROM_SCRATCH": "0"})
    assert c["weights_dir"] == "/env" and c["from_scratch"] is False


def test_override_values_are_typed():
    assert parse_override("base_lr=1e-4") == ("base_lr", 1e-4)
    assert parse_override("epochs=2") == ("epochs", 2)
    assert parse_override("from_scratch=true") == ("from_scratch", True)
    assert parse_override("weights=null") == ("weights", None)
    assert parse_override("dataset=data/x") == ("dataset", "data/x")
    with pytest.raises(ExperimentError, match="key=value"):
        parse_override("epochs")


@pytest.mark.parametrize("override,message", [
    ("epoch=3", "unknown key 'epoch'"),
    ("epochs=-1", "epochs must be a positive number"),
    ("snapshots=0", "snapshots must be a positive number"),
    ("engine=tensorflow", "engine must be one of torch, caffe"),
    ("device=tpu", "device must be one of cpu, cuda"),
    ("solver_params.nope=1", "SolverParameter has no such field"),
    ("net=x.prototxt", "sets the solver's net itself"),
])
def test_bad_configs_are_named(override, message):
    with pytest.raises(ExperimentError, match=message):
        config("levynet", override)


def test_bad_solver_values_are_named():
    s = pb.SolverParameter()
    with pytest.raises(ExperimentError, match="solver field max_iter: 'many'"):
        set_solver_field(s, "max_iter", "many")
    with pytest.raises(ExperimentError, match="solver_mode: 'TPU'"):
        set_solver_field(s, "solver_mode", "TPU")
    with pytest.raises(ExperimentError, match="max_iter: 2.5"):
        set_solver_field(s, "max_iter", 2.5)


def test_bad_yaml_is_named(tmp_path):
    (tmp_path / "defaults.yaml").write_text("a: 1\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1,\n")
    with pytest.raises(ExperimentError, match="bad.yaml: not valid YAML"):
        load_config(str(bad), environ={})
    with pytest.raises(ExperimentError, match="no such config file"):
        load_config(str(tmp_path / "missing.yaml"), environ={})
