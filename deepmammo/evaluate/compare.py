"""Two models on the same records: is one really better, or is the difference noise?

`compare(rows_a, rows_b)` gives
  - DeLong's test for two correlated ROC AUCs (DeLong, DeLong & Clarke-Pearson 1988), two-sided,
    from the placement values of each positive and negative record;
  - McNemar's exact test on the records exactly one model gets right (two-sided binomial,
    p = 1/2, over the discordant pairs);
  - patient-clustered paired bootstrap 95% intervals of the AUC and accuracy differences
    (A - B): each replicate draws patients with replacement and scores both models on the same
    records, so the pairing and the patient correlation both stay.

Decisions for accuracy are the network's argmax (the `pred` column) when the predictions have
it, as in `deepmammo eval`, else p(malignant) > 0.5.

Inputs are predictions CSVs as `deepmammo eval` writes them, or its results JSONs (then the
snapshot chosen on validation), joined by record key. numpy and scipy only: no engine, no torch.
"""
import json
import os

import numpy as np
from scipy import stats

from deepmammo.evaluate import predict
from deepmammo.evaluate.bootstrap import patient_groups

# The fields a comparison writes, in the order it prints them.
FIELDS = ("n", "auc_a", "auc_b", "delong_z", "delong_p", "acc_a", "acc_b", "mcnemar_b",
          "mcnemar_c", "mcnemar_p", "auc_diff_ci", "acc_diff_ci")


# ------------------------------------------------------------------------------ statistics

def placement_values(labels, scores):
    """(V10, V01): for each positive, the fraction of negatives it outranks (ties count one
    half); for each negative, the fraction of positives that outrank it. Their means are the
    AUC. Computed from midranks (Sun & Xu's fast form), O(N log N)."""
    labels = np.asarray(labels).astype(np.int64).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    pos, neg = scores[labels == 1], scores[labels == 0]
    m, n = pos.size, neg.size
    if m == 0 or n == 0:
        raise ValueError("DeLong's test needs both classes (%d malignant, %d benign)" % (m, n))
    both = stats.rankdata(np.r_[pos, neg])  # midranks: ties share the mean rank
    v10 = (both[:m] - stats.rankdata(pos)) / n
    v01 = 1.0 - (both[m:] - stats.rankdata(neg)) / m
    return v10, v01


def delong(labels, scores_a, scores_b):
    """{auc_a, auc_b, var_a, var_b, cov, z, p} of DeLong's test of auc_a == auc_b.

    The variance of each AUC and their covariance come from the sample covariances of the
    placement values (over positives, divided by their count, plus over negatives, likewise).
    z = (auc_a - auc_b) / sd of the difference; p is the two-sided normal tail. When the
    difference has no variance (identical rankings) z is 0 and p is 1 if the AUCs are equal.
    """
    v10a, v01a = placement_values(labels, scores_a)
    v10b, v01b = placement_values(labels, scores_b)
    m, n = v10a.size, v01a.size
    # With one positive (or negative) there is no sample covariance; it contributes nothing.
    s10 = np.cov(np.vstack([v10a, v10b])) if m > 1 else np.zeros((2, 2))
    s01 = np.cov(np.vstack([v01a, v01b])) if n > 1 else np.zeros((2, 2))
    s = s10 / m + s01 / n
    auc_a, auc_b = float(v10a.mean()), float(v10b.mean())
    var = float(s[0, 0] + s[1, 1] - 2.0 * s[0, 1])
    diff = auc_a - auc_b
    if var <= 1e-15:
        z, p = (0.0, 1.0) if abs(diff) < 1e-12 else (float(np.sign(diff) * np.inf), 0.0)
    else:
        z = diff / np.sqrt(var)
        p = float(2.0 * stats.norm.sf(abs(z)))
    return {"auc_a": auc_a, "auc_b": auc_b, "var_a": float(s[0, 0]), "var_b": float(s[1, 1]),
            "cov": float(s[0, 1]), "z": float(z), "p": p}


def mcnemar(correct_a, correct_b):
    """(b, c, p): b records A gets right and B wrong, c the reverse, and the exact two-sided
    McNemar p-value: the binomial test of b successes in b + c trials at p = 1/2 (1 when the
    models never disagree)."""
    a = np.asarray(correct_a, dtype=bool)
    b_ = np.asarray(correct_b, dtype=bool)
    if a.shape != b_.shape:
        raise ValueError("correctness vectors differ in length: %d vs %d" % (a.size, b_.size))
    b = int(np.sum(a & ~b_))
    c = int(np.sum(~a & b_))
    if b + c == 0:
        return b, c, 1.0
    # The binomial at 1/2 is symmetric: twice the smaller tail, capped at 1.
    p = min(1.0, 2.0 * float(stats.binom.cdf(min(b, c), b + c, 0.5)))
    return b, c, p


def _auc(labels, scores):
    """ROC AUC as the mean placement value (equal to the trapezoid area); None with one class."""
    if labels.min() == labels.max():
        return None
    return float(placement_values(labels, scores)[0].mean())


def paired_bootstrap(labels, probs_a, probs_b, correct_a, correct_b, patients, n_boot=1000,
                     seed=0, level=0.95):
    """Percentile intervals of auc_a - auc_b and acc_a - acc_b over patient-level replicates.

    Both models are scored on the same drawn records in each replicate. Replicates with one
    class only are left out of the AUC interval. Returns (auc_diff_ci, acc_diff_ci); an
    interval is None when no replicate defines it (or n_boot is 0).
    """
    if not n_boot:
        return None, None
    labels = np.asarray(labels).astype(np.int64)
    probs_a, probs_b = np.asarray(probs_a, float), np.asarray(probs_b, float)
    diff_correct = np.asarray(correct_a, float) - np.asarray(correct_b, float)
    groups = patient_groups(patients)
    rng = np.random.default_rng(seed)
    auc_diffs, acc_diffs = [], []
    for _ in range(n_boot):
        rows = np.concatenate([groups[g] for g in rng.integers(0, len(groups), len(groups))])
        acc_diffs.append(diff_correct[rows].mean())
        y = labels[rows]
        if y.min() != y.max():
            auc_diffs.append(_auc(y, probs_a[rows]) - _auc(y, probs_b[rows]))
    tail = (1.0 - level) / 2.0 * 100.0

    def interval(values):
        if not values:
            return None
        return [float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))]
    return interval(auc_diffs), interval(acc_diffs)


# --------------------------------------------------------------------------------- inputs

def _decisions(rows):
    """The network's argmax where the predictions carry it, else p(malignant) > 0.5."""
    if all(r.get("pred") not in (None, "") for r in rows):
        return np.array([int(r["pred"]) for r in rows])
    return (np.array([r["prob_malignant"] for r in rows]) > 0.5).astype(np.int64)


def load_side(path):
    """(rows, description) of one side: a predictions CSV, or a results JSON's chosen snapshot."""
    from deepmammo.evaluate.records import Results
    if not os.path.isfile(path):
        raise FileNotFoundError("predictions or results file not found: %s" % path)
    if path.endswith(".json"):
        results = Results.load(path)
        entry = results.chosen()
        csv_path = results.predictions_path(entry)
        return predict.read_predictions(csv_path), {
            "file": os.path.abspath(path), "predictions": csv_path,
            "snapshot": entry.name, "split": results.split, "run_dir": results.run_dir}
    return predict.read_predictions(path), {"file": os.path.abspath(path),
                                            "predictions": os.path.abspath(path)}


def _index(rows, column):
    index = {}
    for row in rows:
        value = row.get(column)
        if value in (None, "") or value in index:
            return None  # the column is missing or does not identify records
        index[value] = row
    return index


def _sample(keys, count=5):
    keys = sorted(keys)
    return ", ".join(keys[:count]) + (" and %d more" % (len(keys) - count)
                                      if len(keys) > count else "")


def join_records(rows_a, rows_b, name_a="A", name_b="B"):
    """(rows_a, rows_b, column) in one order, the same record on each line.

    Records are joined by `key`; predictions of the same crops from two datasets (another
    context or augmentation, whose LMDB keys may differ) are joined by `crop_id` when the keys
    differ but the crop ids match one to one. Anything else is an error naming the records one
    side lacks. A record whose label differs between the sides is an error too.
    """
    keyed_a, keyed_b = _index(rows_a, "key"), _index(rows_b, "key")
    column = "key"
    if keyed_a is None or keyed_b is None:
        raise ValueError("%s: record keys are missing or repeated" %
                         (name_a if keyed_a is None else name_b))
    if set(keyed_a) != set(keyed_b):
        crop_a, crop_b = _index(rows_a, "crop_id"), _index(rows_b, "crop_id")
        if crop_a is not None and crop_b is not None and set(crop_a) == set(crop_b):
            keyed_a, keyed_b, column = crop_a, crop_b, "crop_id"
        else:
            only_a, only_b = set(keyed_a) - set(keyed_b), set(keyed_b) - set(keyed_a)
            parts = []
            if only_a:
                parts.append("%d only in %s (%s)" % (len(only_a), name_a, _sample(only_a)))
            if only_b:
                parts.append("%d only in %s (%s)" % (len(only_b), name_b, _sample(only_b)))
            raise ValueError("the two predictions are not over the same records: %s"
                             % "; ".join(parts))
    order = sorted(keyed_a)
    a = [keyed_a[k] for k in order]
    b = [keyed_b[k] for k in order]
    wrong = [k for k, ra, rb in zip(order, a, b) if int(ra["label"]) != int(rb["label"])]
    if wrong:
        raise ValueError("records labelled differently in %s and %s: %s"
                         % (name_a, name_b, _sample(wrong)))
    return a, b, column


# ----------------------------------------------------------------------------- comparison

def compare(rows_a, rows_b, n_boot=1000, seed=0, name_a="A", name_b="B"):
    """Every field of FIELDS (and the join column) for two prediction row lists."""
    a, b, column = join_records(rows_a, rows_b, name_a, name_b)
    labels = np.array([r["label"] for r in a], dtype=np.int64)
    probs_a = np.array([r["prob_malignant"] for r in a])
    probs_b = np.array([r["prob_malignant"] for r in b])
    correct_a = _decisions(a) == labels
    correct_b = _decisions(b) == labels
    # Patients from A's rows: both sides read the same records, hence the same patients.
    patients = [r.get("patient_id") or r["key"] for r in a]
    test = delong(labels, probs_a, probs_b)
    mb, mc, mp = mcnemar(correct_a, correct_b)
    auc_ci, acc_ci = paired_bootstrap(labels, probs_a, probs_b, correct_a, correct_b, patients,
                                      n_boot, seed)
    return {"n": int(labels.size), "n_patients": len(set(patients)), "joined_on": column,
            "auc_a": test["auc_a"], "auc_b": test["auc_b"], "delong_z": test["z"],
            "delong_p": test["p"], "acc_a": float(correct_a.mean()),
            "acc_b": float(correct_b.mean()), "mcnemar_b": mb, "mcnemar_c": mc,
            "mcnemar_p": mp, "auc_diff_ci": auc_ci, "acc_diff_ci": acc_ci,
            "bootstrap": {"unit": "patient", "n_boot": n_boot, "seed": seed, "level": 0.95}}


def compare_files(path_a, path_b, out=None, n_boot=1000, seed=0):
    """Compare two predictions CSVs or results JSONs; write `out` (JSON) when given."""
    from deepmammo.atomic import write_text
    from deepmammo.provenance import provenance
    rows_a, side_a = load_side(path_a)
    rows_b, side_b = load_side(path_b)
    result = compare(rows_a, rows_b, n_boot, seed, path_a, path_b)
    result["a"], result["b"] = side_a, side_b
    if out:
        record = dict(result, format="deepmammo-compare/1",
                      provenance=provenance(config={"a": path_a, "b": path_b}, seed=seed,
                                            inputs=[side_a["predictions"],
                                                    side_b["predictions"]]))
        write_text(out, json.dumps(record, indent=1) + "\n")
    return result


def format_result(result):
    """The fields as `name  value` lines, intervals as [low, high]."""
    def value(v):
        if v is None:
            return "-"
        if isinstance(v, list):
            return "[%s]" % ", ".join("%.4f" % x for x in v)
        if isinstance(v, float):
            return "%.4g" % v
        return str(v)
    return "\n".join("%-12s %s" % (k, value(result.get(k))) for k in FIELDS)
