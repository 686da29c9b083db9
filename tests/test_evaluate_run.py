"""`deepmammo eval` end to end on a synthetic run: results.json, predictions, patient
bootstrap, selection on validation, validation thresholds applied to test."""
import csv
import json
import os

import numpy as np
import pytest
from worlds import build_world, evaluate_world

from deepmammo.cli import main
from deepmammo.evaluate.metrics import binary_metrics
from deepmammo.evaluate.predict import PREDICTION_COLUMNS, read_predictions
from deepmammo.evaluate.records import predictions_path
from deepmammo.evaluate.select import select_snapshot


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = build_world(str(tmp_path_factory.mktemp("eval_world")))
    w["results"] = evaluate_world(w, n_boot=100)
    return w


def test_results_hold_every_snapshot_with_metrics_and_intervals(world):
    val, test = world["results"]["levynet"]
    assert val["split"] == "val" and test["split"] == "test"
    assert [e["iteration"] for e in val["snapshots"]] == [25, 50, 75, 100]
    assert [e["fraction"] for e in val["snapshots"]] == [0.25, 0.5, 0.75, 1.0]
    assert val["snapshots"][2]["epoch"] == pytest.approx(30.0)  # 0.75 of 40 epochs
    for entry in val["snapshots"] + test["snapshots"]:
        m = entry["metrics"]
        assert m["n"] == 32 and m["n_malignant"] == 16
        for name in ("accuracy", "precision", "recall", "specificity", "f1", "roc_auc",
                     "pr_auc"):
            low, high = entry["ci"][name]
            assert low <= m[name] <= high
    assert val["bootstrap"]["unit"] == "patient"
    assert val["provenance"]["inputs"]  # data and weight hashes
    assert val["run"]["seed"] == 7 and val["run"]["experiment"] == "levynet"
    # The file on disk is the same JSON.
    with open(os.path.join(world["runs"]["levynet"], "eval", "val.json")) as f:
        assert json.load(f)["snapshots"][0]["metrics"] == val["snapshots"][0]["metrics"]


def test_predictions_csv_joins_the_manifest_and_reproduces_the_metrics(world):
    val, _ = world["results"]["googlenet-deeper"]
    val["_path"] = os.path.join(world["runs"]["googlenet-deeper"], "eval", "val.json")
    entry = val["snapshots"][1]
    path = predictions_path(val, entry)
    with open(path) as f:
        assert tuple(csv.DictReader(f).fieldnames) == PREDICTION_COLUMNS
    rows = read_predictions(path)
    assert {r["patient_id"] for r in rows} == {"val-P%02d" % p for p in range(16)}
    assert all(r["crop_id"].startswith(r["patient_id"]) for r in rows)
    again = binary_metrics([r["label"] for r in rows], [r["prob_malignant"] for r in rows])
    assert again == {**entry["metrics"], "threshold": None}


def test_test_results_mark_the_snapshot_chosen_on_validation(world):
    for val, test in world["results"].values():
        chosen = select_snapshot(val["snapshots"])
        assert test["selected"]["snapshot"] == os.path.basename(chosen["snapshot"])
        assert test["selected"]["source"].endswith(os.path.join("eval", "val.json"))


def test_validation_threshold_is_applied_unchanged_to_test(world):
    val, test = world["results"]["levynet"]
    test["_path"] = os.path.join(world["runs"]["levynet"], "eval", "test.json")
    for v, t in zip(val["snapshots"], test["snapshots"]):
        fitted = v["fitted_threshold"]["value"]
        assert t["threshold_metrics"]["threshold"] == fitted
        rows = read_predictions(predictions_path(test, t))
        expect = binary_metrics([r["label"] for r in rows], [r["prob_malignant"] for r in rows],
                                threshold=fitted)
        assert t["threshold_metrics"]["metrics"] == expect


def test_cli_eval_and_its_errors(world, tmp_path, capsys):
    run = world["runs"]["levynet"]
    out = str(tmp_path / "cli.json")
    args = ["eval", "--model", world["model"], "--snapshots",
            os.path.join(run, "*_iter_100.caffemodel"), "--lmdb",
            os.path.join(world["data"], "val_lmdb"), "--mean", world["mean"], "--out", out,
            "--engine", "torch", "--bootstrap", "20", "--tta", "mirror"]
    assert main(args) == 0
    assert "levynet_iter_100.caffemodel" in capsys.readouterr().out
    with open(out) as f:
        first = json.load(f)
    assert first["tta"] == "mirror"
    # The same from the train_val's TEST Data layer instead of --mean.
    train_val = tmp_path / "train_val.prototxt"
    train_val.write_text('layer { name: "d" type: "Data" top: "data" include { phase: TEST }\n'
                         '  transform_param { crop_size: 12 mean_file: "%s" } }\n'
                         % world["mean"])
    via = args[:args.index("--mean")] + args[args.index("--mean") + 2:]
    via[via.index("--out") + 1] = str(tmp_path / "via.json")
    assert main(via + ["--train-val", str(train_val)]) == 0
    with open(tmp_path / "via.json") as f:
        assert json.load(f)["snapshots"][0]["metrics"] == first["snapshots"][0]["metrics"]
    bad = list(args)
    bad[bad.index("--snapshots") + 1] = os.path.join(run, "*_iter_999.caffemodel")
    assert main(bad) == 2
    assert "no snapshot matches" in capsys.readouterr().err
    # Selection must come from validation results, never from a test file.
    test_json = os.path.join(run, "eval", "test.json")
    assert main(args + ["--val-results", test_json]) == 2
    assert "must come from validation" in capsys.readouterr().err
    assert main(args[:-2] + ["--threshold", "val"]) == 2
    assert "needs --val-results" in capsys.readouterr().err
    # Nor from another run (its snapshots are named alike).
    other = next(r for name, r in world["runs"].items() if name != "levynet")
    assert main(args + ["--val-results", os.path.join(other, "eval", "val.json")]) == 2
    assert "validation results of run" in capsys.readouterr().err


def test_both_engines_give_the_same_numbers(world, tmp_path, real_caffe):
    """Our engine and real BVLC Caffe, same deploy net, weights and records."""
    from deepmammo.evaluate.snapshots import evaluate
    run = world["runs"]["googlenet-deeper"]
    lmdb = os.path.join(world["data"], "test_lmdb")
    results = {}
    for engine in ("torch", "caffe"):
        results[engine] = evaluate(world["model"], os.path.join(run, "*_iter_*.caffemodel"),
                                   lmdb, str(tmp_path / engine / "test.json"),
                                   mean_path=world["mean"], engine=engine, n_boot=50,
                                   tta="mirror")
    for ours, theirs in zip(results["torch"]["snapshots"], results["caffe"]["snapshots"]):
        a = read_predictions(predictions_path(results["torch"], ours))
        b = read_predictions(predictions_path(results["caffe"], theirs))
        assert [r["key"] for r in a] == [r["key"] for r in b]
        np.testing.assert_allclose([r["prob_malignant"] for r in a],
                                   [r["prob_malignant"] for r in b], rtol=1e-5, atol=1e-6)
        assert ours["metrics"] == theirs["metrics"]
        assert ours["ci"] == theirs["ci"]


@pytest.mark.parametrize("engine", ["torch", pytest.param("caffe", marks=pytest.mark.caffe)])
def test_eval_equals_the_nets_own_test_phase(world, tmp_path, engine):
    """The accuracy Caffe's TEST phase reports (Data layer, transform_param, Accuracy layer)
    over the whole validation LMDB equals eval's accuracy for the same snapshot."""
    from worlds import DEPLOY

    from deepmammo.engine import caffe_module
    caffe = caffe_module(engine)
    body = DEPLOY.split("\n", 3)[3]  # the layers after the Input layer
    body = body.replace('layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }\n', "")
    train_val = tmp_path / "train_val.prototxt"
    train_val.write_text(
        'name: "TinyMammo"\n'
        'layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TEST }\n'
        '  transform_param { crop_size: 12 mean_file: "%s" }\n'
        '  data_param { source: "%s" batch_size: 32 backend: LMDB } }\n%s'
        'layer { name: "accuracy" type: "Accuracy" bottom: "fc" bottom: "label" top: "accuracy" }\n'
        % (world["mean"], os.path.join(world["data"], "val_lmdb"), body))
    val, _ = world["results"]["levynet"]
    for entry in val["snapshots"]:
        net = caffe.Net(str(train_val), entry["snapshot"], caffe.TEST)
        accuracy = float(net.forward()["accuracy"])
        assert accuracy == pytest.approx(entry["metrics"]["accuracy"], abs=1e-6)
