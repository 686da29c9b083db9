"""Repeated runs (one per training seed, grouped): tables show mean +- sd beside each seed's
value, the learning figure draws every seed, and claims test each pair of seeds."""
import csv
import json
import os

import numpy as np
import pytest
import yaml
from helpers import ROOT, run_cli
from worlds import build_world, evaluate_world, snapshot_weights, write_logs

from deepmammo.caffe.formats.caffemodel import write_caffemodel
from deepmammo.evaluate import predict
from deepmammo.evaluate.compare import compare
from deepmammo.evaluate.records import predictions_path
from deepmammo.evaluate.runinfo import run_info
from deepmammo.evaluate.snapshots import evaluate
from deepmammo.report.collect import collect_runs
from deepmammo.report.tables import runs_table, write_table

GROUP = "levynet/20261130-120000"


def make_run(world, folder, seed, group, data_seed=None, shift=0.0):
    """A levynet run folder as the repeat runner writes it, with its own snapshots."""
    os.makedirs(folder)
    config = {"experiment": "levynet", "seed": seed, "epochs": 40, "repeat_group": group}
    if data_seed is not None:
        config["data_seed"] = data_seed
    with open(os.path.join(folder, "config.yaml"), "w") as f:
        yaml.safe_dump(config, f)
    with open(os.path.join(folder, "provenance.json"), "w") as f:
        json.dump({"git_commit": "abc123", "seed": seed, "data_seed": data_seed,
                   "repeat_group": group}, f)
    with open(os.path.join(folder, "solver.prototxt"), "w") as f:
        f.write('net: "train_val.prototxt"\nmax_iter: 100\nsnapshot_prefix: "levynet"\n')
    write_logs(folder, 100, csv_log=seed % 2 == 0)
    for it, k, b in zip((25, 50, 75, 100), (0.002, 0.004, 0.006, 0.008),
                        (-1.5, -0.8, -0.3, 0.6)):
        write_caffemodel(snapshot_weights(k * (1 + 0.3 * seed), b + shift, it + seed),
                         os.path.join(folder, "levynet_iter_%d.caffemodel" % it))
    return folder


def evaluate_run(world, run):
    snaps = os.path.join(run, "*_iter_*.caffemodel")
    val = os.path.join(run, "eval", "val.json")
    evaluate(world["model"], snaps, os.path.join(world["data"], "val_lmdb"), val,
             mean_path=world["mean"], engine="torch", n_boot=0)
    return evaluate(world["model"], snaps, os.path.join(world["data"], "test_lmdb"),
                    os.path.join(run, "eval", "test.json"), mean_path=world["mean"],
                    engine="torch", n_boot=0, val_results=val)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = build_world(str(tmp_path_factory.mktemp("repeats_world")))
    evaluate_world(w, n_boot=0)  # the older single runs
    exp = os.path.join(w["root"], "runs", "levynet")
    # Another, older repeat group: never mixed into the newest one.
    evaluate_run(w, make_run(w, os.path.join(exp, "20261129-000000-seed1"), 1,
                             "levynet/20261129-000000", shift=0.5))
    w["seeds"] = {}
    for seed, shift in ((1, 0.0), (2, 0.4), (3, -0.3)):
        run = make_run(w, os.path.join(exp, "20261130-120000-seed%d" % seed), seed, GROUP,
                       shift=shift)
        w["seeds"][seed] = (run, evaluate_run(w, run))
    os.symlink("20261130-120000-seed3", os.path.join(exp, "latest"))
    return w


def test_run_info_reads_the_repeat_keys(world):
    info = run_info(world["seeds"][2][0])
    assert (info["seed"], info["data_seed"], info["repeat_group"]) == (2, None, GROUP)
    single = run_info(world["runs"]["levynet"])
    assert single["seed"] == 7 and single["repeat_group"] is None


def test_the_newest_group_gives_every_seed_and_the_table_its_mean_and_sd(world, tmp_path):
    runs = collect_runs(os.path.join(world["root"], "runs"))
    members = runs["levynet"].repeats
    assert [m.run_dir for m in members] == [world["seeds"][s][0] for s in (1, 2, 3)]
    assert len(runs["googlenet-deeper"].repeats) == 1
    table, rows = write_table("table2", runs, str(tmp_path))
    markdown = table.markdown()
    row = next(r for r in rows if r["experiment"] == "levynet")
    per_seed = []
    for seed in (1, 2, 3):
        test = world["seeds"][seed][1]
        chosen = test["selected"]["snapshot"]
        per_seed.append(next(e for e in test["snapshots"]
                             if e["snapshot"].endswith(chosen))["metrics"]["accuracy"])
    assert row["accuracy_seeds"] == pytest.approx(per_seed)
    assert row["accuracy"] == pytest.approx(np.mean(per_seed))
    assert row["accuracy_sd"] == pytest.approx(np.std(per_seed, ddof=1))
    assert row["seeds"] == ["s1", "s2", "s3"] and row["accuracy_paper"] == 0.604
    cell = "%.3f ± %.3f (%s)" % (np.mean(per_seed), np.std(per_seed, ddof=1),
                                 ", ".join("%.3f" % v for v in per_seed))
    assert cell in markdown and "3 seeds (s1, s2, s3)" in markdown and "| 0.604 |" in markdown
    with open(tmp_path / "table2.csv") as f:
        line = next(r for r in csv.DictReader(f) if r["experiment"] == "levynet")
    assert [float(v) for v in line["accuracy_seeds"].split(";")] == pytest.approx(per_seed)
    assert float(line["accuracy_sd"]) == pytest.approx(np.std(per_seed, ddof=1))
    table, all_rows = runs_table(runs)
    md = table.markdown()
    assert sum(r["experiment"] == "levynet" and r["split"] == "test" for r in all_rows) == 3
    assert "| levynet | s2 |" in md


@pytest.mark.subprocess
def test_claims_test_each_seed_against_the_other_model(world, tmp_path):
    out = tmp_path / "compare"
    proc = run_cli("compare", "--runs", os.path.join(world["root"], "runs"), "--pair",
                   "googlenet-deeper:levynet", "--bootstrap", "50", "--out", out, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    with open(out / "claims.json") as f:
        claims = json.load(f)["claims"]
    assert [c["status"] for c in claims[:5]] == ["not run: googlenet-shallow",
                                                 "not run: alexnet-aug-large",
                                                 "not run: alexnet-aug-large",
                                                 "not run: alexnet-aug-large, "
                                                 "alexnet-noaug-large",
                                                 "not run: alexnet-noaug-large, "
                                                 "alexnet-noaug-small"]
    asked = claims[5]
    assert asked["status"] == "ok" and len(asked["pairs"]) == 3
    runs = collect_runs(os.path.join(world["root"], "runs"))
    google = runs["googlenet-deeper"]
    g_rows = predict.read_predictions(predictions_path(google.test, google.chosen_test()))
    for pair, member in zip(asked["pairs"], runs["levynet"].repeats):
        l_rows = predict.read_predictions(predictions_path(member.test, member.chosen_test()))
        direct = compare(g_rows, l_rows, n_boot=50, seed=0)
        assert pair["seed_b"] == "s%d" % member.info["seed"]
        for field in ("auc_a", "auc_b", "delong_p", "mcnemar_b", "mcnemar_c", "mcnemar_p"):
            assert pair[field] == pytest.approx(direct[field])
    assert asked["summary"]["auc_b"] == pytest.approx(np.mean([p["auc_b"]
                                                               for p in asked["pairs"]]))
    assert "3 pairs" in proc.stdout and "↳" in proc.stdout and "s2" in proc.stdout


def test_report_draws_every_seed_and_adds_claims_and_calibration(world, tmp_path):
    from deepmammo.report.build import build_report
    runs = collect_runs(os.path.join(world["root"], "runs"))
    index = build_report(None, str(tmp_path / "rep"), runs=runs, n_boot=20,
                         compare_pairs=[("googlenet-deeper", "levynet")])
    with open(tmp_path / "rep" / "report.json") as f:
        data = json.load(f)
    assert "figures/learning_seeds.png" in data["figures"]
    assert "figures/calibration.png" in data["figures"]
    assert [r["seed"] for r in data["calibration"] if r["experiment"] == "levynet"] == \
        ["s1", "s2", "s3"]
    assert data["claims"][-1]["status"] == "ok"
    with open(index) as f:
        page = f.read()
    assert "Paired comparisons" in page and "Calibration" in page and "External" in page
    from deepmammo.report.run_figures import learning_curves
    name, seeds = learning_curves(runs["levynet"])
    assert name == "levynet" and [s[0] for s in seeds] == ["s1", "s2", "s3"]
