"""`deepmammo compare`: DeLong's test, exact McNemar and the paired patient bootstrap."""
import csv
import json
import math
import os
import sys

import numpy as np
import pytest
from helpers import ROOT, run, run_cli
from scipy import stats

from deepmammo.evaluate import compare as cmp
from deepmammo.evaluate.metrics import roc_auc


def _direct_delong(labels, a, b):
    """DeLong's statistic from the placement values written out as the pairwise kernel."""
    labels = np.asarray(labels)
    out = []
    for scores in (a, b):
        x, y = scores[labels == 1], scores[labels == 0]
        psi = (x[:, None] > y[None, :]) + 0.5 * (x[:, None] == y[None, :])
        out.append((psi.mean(axis=1), psi.mean(axis=0)))
    (v10a, v01a), (v10b, v01b) = out
    m, n = v10a.size, v01a.size
    s10 = np.cov(np.vstack([v10a, v10b]))
    s01 = np.cov(np.vstack([v01a, v01b]))
    s = s10 / m + s01 / n
    auc_a, auc_b = v10a.mean(), v10b.mean()
    z = (auc_a - auc_b) / math.sqrt(s[0, 0] + s[1, 1] - 2 * s[0, 1])
    return auc_a, auc_b, z, math.erfc(abs(z) / math.sqrt(2))


@pytest.mark.parametrize("seed", range(6))
def test_delong_equals_the_direct_placement_value_computation(seed):
    rng = np.random.RandomState(seed)
    n = rng.randint(20, 200)
    labels = rng.randint(0, 2, n)
    labels[:2] = [0, 1]
    # Rounded scores: plenty of ties within and across the classes.
    a = np.round(rng.normal(labels * 0.8, 1.0), 1)
    b = np.round(0.6 * a + rng.normal(labels * 0.3, 0.8), 1)
    got = cmp.delong(labels, a, b)
    auc_a, auc_b, z, p = _direct_delong(labels, a, b)
    assert got["auc_a"] == pytest.approx(auc_a, abs=1e-12)
    assert got["auc_b"] == pytest.approx(auc_b, abs=1e-12)
    assert got["auc_a"] == pytest.approx(roc_auc(labels, a), abs=1e-12)
    assert got["z"] == pytest.approx(z, rel=1e-9)
    assert got["p"] == pytest.approx(p, rel=1e-9)
    assert got["p"] == pytest.approx(2 * stats.norm.sf(abs(got["z"])), rel=1e-12)


def test_delong_of_identical_scores_is_no_difference():
    labels = np.array([0, 1, 0, 1, 1, 0])
    scores = np.array([0.1, 0.9, 0.4, 0.35, 0.8, 0.2])
    got = cmp.delong(labels, scores, scores)
    assert got["z"] == 0.0 and got["p"] == 1.0
    with pytest.raises(ValueError, match="both classes"):
        cmp.delong([1, 1], [0.2, 0.3], [0.4, 0.5])


@pytest.mark.parametrize("seed", range(8))
def test_mcnemar_equals_scipys_exact_binomial_test(seed):
    rng = np.random.RandomState(100 + seed)
    n = rng.randint(5, 300)
    a = rng.rand(n) < rng.uniform(0.4, 0.95)
    b = rng.rand(n) < rng.uniform(0.4, 0.95)
    got_b, got_c, p = cmp.mcnemar(a, b)
    assert got_b == int(np.sum(a & ~b)) and got_c == int(np.sum(~a & b))
    assert p == pytest.approx(stats.binomtest(got_b, got_b + got_c, 0.5).pvalue, rel=1e-12)


def test_mcnemar_without_disagreement_is_one():
    assert cmp.mcnemar([True, False], [True, False]) == (0, 0, 1.0)


def _rows(n_patients=30, seed=0, shift=0.0, keys=None):
    """Prediction rows: two views per patient, a model whose score tracks the label."""
    rng = np.random.RandomState(seed)
    rows = []
    for p in range(n_patients):
        label = p % 2
        for view in ("CC", "MLO"):
            key = "%08d_P%02d_%s" % (len(rows), p, view)
            prob = float(np.clip(0.5 + (label - 0.5) * 0.5 + shift + rng.normal(0, 0.25),
                                 0.001, 0.999))
            rows.append({"key": key, "crop_id": "P%02d_%s" % (p, view), "case_id": "P%02d" % p,
                         "patient_id": "P%02d" % p, "label": label,
                         "prob_benign": 1 - prob, "prob_malignant": prob,
                         "pred": int(prob > 0.5)})
    if keys:
        for row, key in zip(rows, keys):
            row["key"] = key
    return rows


def _write(rows, path):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return str(path)


def test_compare_fields_and_the_paired_bootstrap():
    a, b = _rows(seed=1), _rows(seed=2, shift=0.05)
    b = list(reversed(b))  # the join is by key, not by line
    got = cmp.compare(a, b, n_boot=300, seed=3)
    assert set(cmp.FIELDS) <= set(got)
    by_key = {r["key"]: r for r in b}
    labels = np.array([r["label"] for r in a])
    pa = np.array([r["prob_malignant"] for r in a])
    pb = np.array([by_key[r["key"]]["prob_malignant"] for r in a])
    assert got["n"] == 60 and got["n_patients"] == 30 and got["joined_on"] == "key"
    assert got["auc_a"] == pytest.approx(roc_auc(labels, pa))
    assert got["auc_b"] == pytest.approx(roc_auc(labels, pb))
    assert got["acc_a"] == pytest.approx(np.mean((pa > 0.5) == labels))
    low, high = got["auc_diff_ci"]
    assert low <= got["auc_a"] - got["auc_b"] <= high
    low, high = got["acc_diff_ci"]
    assert low <= got["acc_a"] - got["acc_b"] <= high
    assert cmp.compare(a, b, n_boot=300, seed=3) == got  # deterministic for a seed


@pytest.mark.subprocess
def test_cli_compares_two_predictions_csvs_and_writes_json(tmp_path):
    a = _write(_rows(seed=1), tmp_path / "a.csv")
    b = _write(_rows(seed=2, shift=0.1), tmp_path / "b.csv")
    out = tmp_path / "cmp" / "ab.json"
    proc = run_cli("compare", a, b, "--out", str(out), "--bootstrap", "200")
    assert proc.returncode == 0, proc.stderr
    with open(out) as f:
        written = json.load(f)
    direct = cmp.compare(_rows(seed=1), cmp.predict.read_predictions(b), n_boot=200, seed=0)
    for field in cmp.FIELDS:
        assert written[field] == pytest.approx(direct[field]), field
        assert field in proc.stdout
    assert written["format"] == "deepmammo-compare/1" and written["provenance"]["inputs"]
    assert "delong_p" in proc.stdout and "%.4g" % direct["delong_p"] in proc.stdout


@pytest.mark.subprocess
def test_compare_refuses_mismatched_records_naming_them(tmp_path):
    a_rows = _rows(seed=1)
    b_rows = _rows(seed=2)[:-2]
    a = _write(a_rows, tmp_path / "a.csv")
    b = _write(b_rows, tmp_path / "b.csv")
    out = tmp_path / "ab.json"
    proc = run_cli("compare", a, b, "--out", str(out))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "not over the same records" in lines[0]
    assert a_rows[-1]["key"] in lines[0] and "only in %s" % a in lines[0]
    assert not out.exists()
    b_rows = _rows(seed=2)
    b_rows[0]["label"] = 1 - b_rows[0]["label"]
    with pytest.raises(ValueError, match="labelled differently.*%s" % b_rows[0]["key"]):
        cmp.compare(a_rows, b_rows)


def test_records_of_another_dataset_join_by_crop_id():
    a = _rows(seed=1)
    b = _rows(seed=2, keys=["%08d_x" % i for i in range(60)])
    assert cmp.compare(a, b, n_boot=0)["joined_on"] == "crop_id"


@pytest.mark.subprocess
def test_results_json_gives_the_snapshot_chosen_on_validation(tmp_path):
    folder = tmp_path / "eval"
    os.makedirs(folder / "test_predictions")
    for name, seed in (("x_iter_1", 5), ("x_iter_2", 6)):
        _write(_rows(seed=seed), folder / "test_predictions" / (name + ".csv"))
    results = {"format": "deepmammo-eval/1", "split": "test",
               "selected": {"snapshot": "x_iter_2.caffemodel"},
               "snapshots": [{"snapshot": "/r/x_iter_%d.caffemodel" % i, "iteration": i,
                              "predictions": "test_predictions/x_iter_%d.csv" % i}
                             for i in (1, 2)]}
    with open(folder / "test.json", "w") as f:
        json.dump(results, f)
    other = _write(_rows(seed=9), tmp_path / "other.csv")
    got = cmp.compare_files(str(folder / "test.json"), other, n_boot=0)
    assert got["a"]["snapshot"] == "x_iter_2.caffemodel"
    assert got["auc_a"] == pytest.approx(cmp.compare(_rows(seed=6), _rows(seed=9),
                                                     n_boot=0)["auc_a"])
    results["selected"] = None
    with open(folder / "test.json", "w") as f:
        json.dump(results, f)
    proc = run_cli("compare", str(folder / "test.json"), other)
    assert proc.returncode == 2 and "marks no snapshot chosen on validation" in proc.stderr


@pytest.mark.subprocess
def test_compare_needs_no_torch(tmp_path):
    a = _write(_rows(seed=1), tmp_path / "a.csv")
    b = _write(_rows(seed=2), tmp_path / "b.csv")
    # The library path (the `deepmammo` parser itself loads every stage's commands).
    code = ("import sys; from deepmammo.evaluate.compare import compare_files; "
            "compare_files(%r, %r, %r, n_boot=20); "
            "assert 'torch' not in sys.modules, 'torch imported'"
            % (a, b, str(tmp_path / "ab.json")))
    proc = run([sys.executable, "-c", code], ROOT, check=False)
    assert proc.returncode == 0, proc.stderr
    with open(tmp_path / "ab.json") as f:
        written = json.load(f)
    assert written["format"] == "deepmammo-compare/1" and set(cmp.FIELDS) <= set(written)
    assert written["n"] == len(_rows(seed=1))
