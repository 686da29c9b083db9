"""The paper's pairwise claims put to paired tests on our runs (and any pair asked for).

Each claim compares two experiments on the test set at the snapshot each chose on validation:
DeLong's test of the ROC AUCs, exact McNemar on the argmax decisions and patient-clustered
bootstrap intervals of the differences (evaluate/compare.py). The paper read its claims off
validation figures for context and augmentation (Table 1, Figure 3); we test every claim on
the test set, which chose nothing.

Repeated experiments: one test per pair of seeds, never pooled. A run of seed 1 and a run of
seed 2 score the same test images; stacking their records would count each image several times
as if it were a new case and shrink every p-value for nothing. Each seed pair answers the
paper's own question (this run against that run on these images); the summary row gives the
mean AUC and accuracy of each side, the mean +- sd of the differences across seed pairs, and
how many seed pairs reach p < 0.05. Runs are paired by (data seed, training seed) when both
experiments have those seeds; a single run is set against every seed of the other side;
otherwise seeds are paired in order, and the row says so.
"""
import json
import os

import numpy as np

from deepmammo.atomic import write_text
from deepmammo.evaluate.compare import compare
from deepmammo.evaluate.runinfo import seed_label
from deepmammo.report.table import Table, interval, number

ALPHA = 0.05

# The paper's pairwise claims, A being the model the paper found better.
PAPER_CLAIMS = (
    {"claim": "GoogLeNet Deeper beats Shallow training", "a": "googlenet-deeper",
     "b": "googlenet-shallow", "source": "Table 2"},
    {"claim": "GoogLeNet Deeper beats AlexNet", "a": "googlenet-deeper",
     "b": "alexnet-aug-large", "source": "Table 2"},
    {"claim": "AlexNet beats LevyNet", "a": "alexnet-aug-large", "b": "levynet",
     "source": "Table 2"},
    {"claim": "augmentation beats none (AlexNet, large context)", "a": "alexnet-aug-large",
     "b": "alexnet-noaug-large", "source": "section 5.3, Figure 3"},
    {"claim": "large context beats small (AlexNet, no augmentation)",
     "a": "alexnet-noaug-large", "b": "alexnet-noaug-small", "source": "Table 1"},
)


def parse_pairs(items):
    """[(a, b)] from 'A:B' strings (experiment names)."""
    pairs = []
    for item in items or ():
        a, sep, b = item.partition(":")
        if not sep or not a or not b:
            raise ValueError("a comparison is EXPERIMENT_A:EXPERIMENT_B, got %r" % item)
        pairs.append((a, b))
    return pairs


def _find(runs, name):
    """The Run of an experiment by its table name or, after an alias, its own name."""
    if name in runs:
        return runs[name]
    return next((r for r in runs.values() if r.shown_as == name), None)


def _test_sides(run):
    """[(member run, prediction rows)] of each seed's chosen test snapshot."""
    sides = []
    for member in run.repeats:
        entry = member.chosen_test()
        if entry is not None:
            sides.append((member, member.test.predictions(entry)))
    return sides


def _seed_key(member):
    return (member.info.get("data_seed"), member.info.get("seed"))


def pair_seeds(side_a, side_b):
    """([(a side, b side)], note): see the module docstring for the rule."""
    by_a = {_seed_key(m): (m, rows) for m, rows in side_a}
    by_b = {_seed_key(m): (m, rows) for m, rows in side_b}
    if len(side_a) == 1 or len(side_b) == 1:
        return [(a, b) for a in side_a for b in side_b], None
    common = sorted(set(by_a) & set(by_b), key=str)
    if common:
        left = len(side_a) + len(side_b) - 2 * len(common)
        return ([(by_a[k], by_b[k]) for k in common],
                "%d run(s) without a seed on the other side left out" % left if left else None)
    return list(zip(side_a, side_b)), "seeds differ between the two; paired in seed order"


def claim_row(label, a, b, runs, n_boot=1000, seed=0, source=None):
    """One claim: its status, each seed pair's comparison and the summary over pairs."""
    row = {"claim": label, "a": a, "b": b, "source": source, "pairs": [], "note": None}
    run_a, run_b = _find(runs, a), _find(runs, b)
    missing = [name for name, run in ((a, run_a), (b, run_b)) if run is None]
    if missing:
        row["status"] = "not run: %s" % ", ".join(missing)
        return row
    side_a, side_b = _test_sides(run_a), _test_sides(run_b)
    if not side_a or not side_b:
        row["status"] = "not evaluated on test: %s" % ", ".join(
            name for name, side in ((a, side_a), (b, side_b)) if not side)
        return row
    pairs, row["note"] = pair_seeds(side_a, side_b)
    try:
        for (ma, rows_a), (mb, rows_b) in pairs:
            result = compare(rows_a, rows_b, n_boot, seed, a, b)
            result.update(seed_a=seed_label(ma.info), seed_b=seed_label(mb.info),
                          run_a=ma.run_dir, run_b=mb.run_dir)
            row["pairs"].append(result)
    except ValueError as exc:  # e.g. tested on different records: say so in the table
        row["status"], row["pairs"] = "not comparable: %s" % exc, []
        return row
    row["status"] = "ok"
    row["summary"] = summarise(row["pairs"])
    return row


def summarise(pairs):
    """Means over seed pairs, the spread of the differences and the count of p < ALPHA."""
    def mean(key):
        return float(np.mean([p[key] for p in pairs]))

    def spread(values):
        return float(np.std(values, ddof=1)) if len(values) > 1 else None
    auc_diffs = [p["auc_a"] - p["auc_b"] for p in pairs]
    acc_diffs = [p["acc_a"] - p["acc_b"] for p in pairs]
    return {"pairs": len(pairs), "n": pairs[0]["n"], "auc_a": mean("auc_a"),
            "auc_b": mean("auc_b"), "acc_a": mean("acc_a"), "acc_b": mean("acc_b"),
            "auc_diff": float(np.mean(auc_diffs)), "auc_diff_sd": spread(auc_diffs),
            "acc_diff": float(np.mean(acc_diffs)), "acc_diff_sd": spread(acc_diffs),
            "delong_significant": sum(p["delong_p"] < ALPHA for p in pairs),
            "mcnemar_significant": sum(p["mcnemar_p"] < ALPHA for p in pairs)}


def claims_rows(runs, pairs=(), n_boot=1000, seed=0, paper_claims=True):
    """The paper's claims (when `paper_claims`), then each asked-for (a, b) pair."""
    rows = []
    if paper_claims:
        for claim in PAPER_CLAIMS:
            rows.append(claim_row(claim["claim"], claim["a"], claim["b"], runs, n_boot, seed,
                                  claim["source"]))
    for a, b in pairs:
        rows.append(claim_row("%s vs %s" % (a, b), a, b, runs, n_boot, seed, "asked"))
    return rows


# --------------------------------------------------------------------------------- output

HEAD = ("Claim", "A", "B", "Seeds", "n", "AUC A", "AUC B", "DeLong z", "DeLong p", "Acc A",
        "Acc B", "McNemar b / c", "McNemar p", "AUC A - B [95% CI]", "Acc A - B [95% CI]",
        "Notes")


def _p(value):
    if value is None:
        return "-"
    return "<0.001" if value < 0.001 else "%.3f" % value


def _pair_cells(p):
    return [str(p["n"]), number(p["auc_a"]), number(p["auc_b"]), number(p["delong_z"], 2),
            _p(p["delong_p"]), number(p["acc_a"]), number(p["acc_b"]),
            "%d / %d" % (p["mcnemar_b"], p["mcnemar_c"]), _p(p["mcnemar_p"]),
            interval(p["auc_a"] - p["auc_b"], p["auc_diff_ci"]),
            interval(p["acc_a"] - p["acc_b"], p["acc_diff_ci"])]


def claims_table(rows):
    """The claims as a Table: one row per claim with one seed pair, else a summary row over
    the seed pairs followed by one row per pair."""
    table = Table("The paper's pairwise claims, tested", HEAD, notes=(
        "(test set, snapshot chosen on validation; DeLong's test of the ROC AUCs, exact McNemar "
        "on the argmax decisions, patient-clustered bootstrap 95% intervals of A - B; several "
        "seeds: one test per seed pair, never pooled)"))
    for row in rows:
        claim = row["claim"] + (" (%s)" % row["source"] if row.get("source") else "")
        if row["status"] != "ok":
            table.add(claim, row["a"], row["b"], *["-"] * (len(HEAD) - 4), row["status"])
            continue
        pairs, note = row["pairs"], row.get("note") or ""
        if len(pairs) == 1:
            p = pairs[0]
            table.add(claim, row["a"], row["b"], "%s vs %s" % (p["seed_a"], p["seed_b"]),
                      *_pair_cells(p), note)
            continue
        s = row["summary"]
        k = s["pairs"]
        table.add(claim, row["a"], row["b"], "%d pairs" % k, "%d" % s["n"], number(s["auc_a"]),
                  number(s["auc_b"]), "-", "%d/%d < 0.05" % (s["delong_significant"], k),
                  number(s["acc_a"]), number(s["acc_b"]), "-",
                  "%d/%d < 0.05" % (s["mcnemar_significant"], k),
                  "%s ± %s" % (number(s["auc_diff"]), number(s["auc_diff_sd"])),
                  "%s ± %s" % (number(s["acc_diff"]), number(s["acc_diff_sd"])),
                  ("mean (± sd) over seed pairs; " + note).rstrip("; "))
        for p in pairs:
            table.add("↳", None, None, "%s vs %s" % (p["seed_a"], p["seed_b"]), *_pair_cells(p),
                      None)
    return table


CSV_COLUMNS = ("claim", "a", "b", "source", "status", "seed_a", "seed_b", "n", "auc_a", "auc_b",
               "delong_z", "delong_p", "acc_a", "acc_b", "mcnemar_b", "mcnemar_c", "mcnemar_p",
               "auc_diff_low", "auc_diff_high", "acc_diff_low", "acc_diff_high", "run_a",
               "run_b")


def _csv_cell(value):
    if value is None:
        return ""
    return "%.6g" % value if isinstance(value, float) else value


def data_table(rows):
    """One line per seed pair (a claim not compared: one line with its status)."""
    table = Table(columns=CSV_COLUMNS)
    for row in rows:
        base = {k: row.get(k) for k in ("claim", "a", "b", "source", "status")}
        for p in row["pairs"] or [{}]:
            line = dict(base, **p)
            for name in ("auc_diff", "acc_diff"):
                ci = p.get(name + "_ci") or (None, None)
                line[name + "_low"], line[name + "_high"] = ci
            table.add(*(_csv_cell(line.get(c)) for c in CSV_COLUMNS))
    return table


def write_claims(runs, out_dir, pairs=(), n_boot=1000, seed=0, paper_claims=True):
    """Write claims.md, claims.csv and claims.json into out_dir; return (Table, rows)."""
    rows = claims_rows(runs, pairs, n_boot, seed, paper_claims)
    table = claims_table(rows)
    write_text(os.path.join(out_dir, "claims.md"), table.markdown())
    write_text(os.path.join(out_dir, "claims.csv"), data_table(rows).csv())
    write_text(os.path.join(out_dir, "claims.json"), json.dumps(
        {"format": "deepmammo-claims/1", "bootstrap": {"unit": "patient", "n_boot": n_boot,
                                                       "seed": seed}, "claims": rows},
        indent=1, default=str) + "\n")
    return table, rows
