"""The Makefile asks the package: `deepmammo experiment-info` says what a config names (its
dataset variant under AUG=, its dataset and run paths) and make builds and passes exactly that;
`deepmammo eval-run` evaluates a run folder on validation then test as the two `deepmammo eval`
calls it replaces did (`make evaluate`, `make external`, `experiment --evaluate`)."""
import glob
import json
import os
import shutil
import subprocess
import time

import pytest
from helpers import ROOT, env
from worlds import CROP, DEPLOY, build_world, make_workspace

from deepmammo.cli import main
from deepmammo.experiment import experiment_names, load_config, variant_name
from deepmammo.experiment.config import ExperimentError, with_augmentation

CONFIGS = os.path.join(ROOT, "configs")


def _info(*args, capsys):
    assert main(["experiment-info", *args]) == 0
    return capsys.readouterr().out.splitlines()


# ------------------------------------------------------------------------ experiment-info
@pytest.mark.parametrize("aug", [None, "code", "none", "paper"])
def test_experiment_info_names_each_configs_variant_under_aug(aug, capsys):
    for name in experiment_names(CONFIGS):
        path = os.path.join(CONFIGS, name + ".yaml")
        config = load_config(path)
        augment = config["augment"] if not aug or config["augment"] == "none" else aug
        args = [path, "--field", "variant", "--field", "augment"] + (["--aug", aug] if aug else [])
        assert _info(*args, capsys=capsys) == [
            variant_name(dict(config, augment=augment)), augment], name


def test_experiment_info_prints_every_field_paths_and_make_lines(capsys):
    path = os.path.join(CONFIGS, "levynet.yaml")
    lines = _info(path, "runs_dir=elsewhere", "--datasets", "data/datasets/x/seed0",
                  capsys=capsys)
    fields = dict(line.split(": ", 1) for line in lines)
    assert fields == {
        "experiment": "levynet", "description": load_config(path)["description"],
        "padding": "proportional:2", "augment": "paper", "variant": "proportional2-paper",
        "dataset": "data/datasets/x/seed0/proportional2-paper",
        "runs": "elsewhere/levynet", "latest": "elsewhere/levynet/latest"}
    assert _info(path, "dataset=d", "--field", "dataset", capsys=capsys) == ["d"]
    assert _info(path, "--aug", "code", "--field", "variant", "--field", "augment", "--make",
                 capsys=capsys) == ["variant.levynet := proportional2-code",
                                    "augment.levynet := code"]


def test_a_bad_aug_or_config_is_one_line(tmp_path, capsys):
    assert main(["experiment-info", os.path.join(CONFIGS, "levynet.yaml"), "--aug", "x"]) == 2
    assert capsys.readouterr().err.strip() == (
        "deepmammo experiment-info: error: AUG=x: augment must be one of none, paper, code")
    assert main(["experiment-info", str(tmp_path / "none.yaml")]) == 2
    assert "none.yaml: no such config file" in capsys.readouterr().err
    with pytest.raises(ExperimentError):
        with_augmentation({"augment": "paper"}, "rotate")
    assert with_augmentation({"augment": "none"}, "code") == {"augment": "none"}


# ------------------------------------------------------------------------------- make
def _make_n(workspace, *args):
    proc = subprocess.run(["make", "-n", *args], cwd=workspace, capture_output=True, text=True,
                          env=env(), timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.subprocess
def test_make_builds_and_passes_the_variant_the_package_names(tmp_path, capsys):
    ws = make_workspace(str(tmp_path / "ws"))
    for name in ("levynet", "alexnet-noaug-small"):
        for aug in ("", "code"):
            out = _make_n(ws, name, "DATASETS=ds", f"AUG={aug}")
            variant, augment = _info(os.path.join(CONFIGS, name + ".yaml"), "--aug", aug,
                                     "--field", "variant", "--field", "augment", capsys=capsys)
            assert f"--out ds/{variant}\n" in out and f"--augment {augment} " in out
            assert f"dataset=ds/{variant} augment={augment} " in out, out
    # a changed config is asked again (make keeps the answers in build/make/); one dated in
    # the future is asked once per make; a broken one stops only its own target
    for path in glob.glob(os.path.join(ws, "build", "make", "*", "*.mk")):
        os.utime(path, (1, 1))
    config = os.path.join(ws, "configs", "levynet.yaml")
    with open(config) as f:
        text = f.read()
    with open(config, "w") as f:
        f.write(text.replace("padding: proportional:2", "padding: fixed:50"))
    assert "dataset=ds/fixed50-paper " in _make_n(ws, "levynet", "DATASETS=ds")
    os.utime(config, (time.time() + 3600,) * 2)
    assert "dataset=ds/fixed50-paper " in _make_n(ws, "levynet", "DATASETS=ds")
    with open(os.path.join(ws, "configs", "broken.yaml"), "w") as f:
        f.write("padding: [\n")
    assert "dataset=ds/fixed50-paper " in _make_n(ws, "levynet", "DATASETS=ds")
    proc = subprocess.run(["make", "-n", "broken", "DATASETS=ds"], cwd=ws, capture_output=True,
                          text=True, env=env(), timeout=300)
    assert proc.returncode != 0 and "deepmammo experiment-info: error: " in proc.stderr
    assert "broken.yaml: not valid YAML" in proc.stderr


@pytest.mark.subprocess
def test_make_evaluate_and_external_are_one_eval_run_each(tmp_path):
    ws = make_workspace(str(tmp_path / "ws"))
    out = _make_n(ws, "evaluate", "RUN=runs/x/latest", "DATA=data/d", "DEVICE=cuda",
                  "PRECISION=bf16")
    assert out.replace("\\\n", " ").split() == [".venv/bin/python", "-m", "deepmammo", "eval-run", "runs/x/latest",
                           "--dataset", "data/d", "--engine", "torch", "--precision", "bf16",
                           "--gpu", "0"]
    out = _make_n(ws, "external", "RUN=runs/x/latest",
                  "EXTERNAL=data/datasets/mias/seed0/proportional2-none",
                  "EXTERNAL_SPLITS=val test")
    assert "eval-run runs/x/latest --dataset data/datasets/mias/seed0/proportional2-none " \
           "--external mias-seed0-proportional2-none --splits val test --engine torch" \
           in " ".join(out.replace("\\\n", " ").split())


# --------------------------------------------------------------------------- eval-run
TRAIN_VAL = """name: "TinyMammo"
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TEST }
  transform_param { crop_size: %d mean_file: "%s" }
  data_param { source: "%s/val_lmdb" batch_size: 4 backend: LMDB } }
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two copies of one run folder (deploy and train_val inside, as a run has them) and the
    dataset."""
    world = build_world(str(tmp_path_factory.mktemp("world")))
    run = world["runs"]["levynet"]
    with open(os.path.join(run, "deploy.prototxt"), "w") as f:
        f.write(DEPLOY)
    with open(os.path.join(run, "train_val.prototxt"), "w") as f:
        f.write(TRAIN_VAL % (CROP, world["mean"], world["data"]))
    parent = os.path.dirname(run)
    copies = [shutil.copytree(run, os.path.join(parent, name)) for name in ("by-eval", "by-run")]
    return copies, world["data"]


def _comparable(path, folder):
    """A results file with its run folder's name taken out and the provenance's clock."""
    with open(path) as f:
        results = json.loads(f.read().replace(folder, "RUN"))
    provenance = results.pop("provenance")
    return results, provenance["config"], provenance.get("inputs")


def test_eval_run_writes_what_the_two_eval_calls_wrote(runs, capsys):
    (by_eval, by_run), data = runs
    printed = []
    for split, extra in (("val", []), ("test", ["--val-results", f"{by_eval}/eval/val.json",
                                                "--threshold", "val"])):
        # the recipe `make evaluate` had
        assert main(["eval", "--model", f"{by_eval}/deploy.prototxt", "--snapshots",
                     f"{by_eval}/*_iter_*.caffemodel", "--lmdb", f"{data}/{split}_lmdb",
                     "--train-val", f"{by_eval}/train_val.prototxt", "--out",
                     f"{by_eval}/eval/{split}.json", *extra, "--engine", "torch",
                     "--precision", "fp32"]) == 0
        printed.append(capsys.readouterr().out)
    assert main(["eval-run", by_run, "--dataset", data, "--engine", "torch",
                 "--precision", "fp32"]) == 0
    assert capsys.readouterr().out == "".join(printed)
    assert sorted(os.listdir(os.path.join(by_run, "eval"))) == \
        sorted(os.listdir(os.path.join(by_eval, "eval")))
    for split in ("val", "test"):
        assert _comparable(f"{by_run}/eval/{split}.json", by_run) == \
            _comparable(f"{by_eval}/eval/{split}.json", by_eval)
    test = json.load(open(f"{by_run}/eval/test.json"))
    assert test["selected"]["snapshot"] == json.load(open(f"{by_run}/eval/val.json"))[
        "selected"]["snapshot"]


def test_eval_run_external_scores_each_split_with_the_runs_choice(runs, capsys):
    (_, by_run), data = runs
    if not os.path.isfile(f"{by_run}/eval/val.json"):
        assert main(["eval-run", by_run, "--dataset", data]) == 0
    assert main(["eval-run", by_run, "--dataset", data, "--external", "other",
                 "--splits", "val", "test"]) == 0
    assert capsys.readouterr().out.count("chosen on validation by accuracy, recall") >= 2
    val = json.load(open(f"{by_run}/eval/val.json"))
    for split in ("val", "test"):
        external = json.load(open(f"{by_run}/eval/external-other-{split}.json"))
        assert external["selected"]["snapshot"] == val["selected"]["snapshot"]
        assert external["provenance"]["config"]["val_results"] == f"{by_run}/eval/val.json"
    assert main(["eval-run", by_run, "--dataset", data, "--external", "other",
                 "--select-by", "roc_auc"]) == 2
    assert "takes the choice RUN's validation made" in capsys.readouterr().err
    # without --dataset: the run's own, from its config.yaml (here a name, not a folder)
    assert main(["eval-run", by_run]) == 2
    assert f"{os.getcwd()}/large-aug" in capsys.readouterr().err


@pytest.mark.subprocess
def test_a_dry_run_without_the_package_installs_nothing_and_says_so(tmp_path):
    ws = make_workspace(str(tmp_path / "ws"))
    os.remove(os.path.join(ws, ".venv"))
    proc = subprocess.run(["make", "-n", "levynet", "DATASETS=ds"], cwd=ws, capture_output=True,
                          text=True, env=env(), timeout=300)
    assert proc.returncode == 2 and "make install first" in proc.stderr
    assert not os.path.exists(os.path.join(ws, ".venv"))
