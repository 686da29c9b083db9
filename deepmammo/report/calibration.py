"""Calibration of p(malignant) in the report: ECE and MCE of every run's (every seed's)
snapshot chosen on validation, scored on test (else validation), and their reliability diagram.
evaluate/calibration.py holds the binning."""
import os

from deepmammo.evaluate.calibration import rows_reliability
from deepmammo.evaluate.runinfo import seed_label
from deepmammo.report import figures
from deepmammo.report.collect import ordered
from deepmammo.report.context import Figure
from deepmammo.report.table import Table


def calibration_of(results, entry):
    """The entry's reliability bins: from the results file, else from its predictions."""
    if entry.calibration:
        return entry.calibration
    return rows_reliability(results.predictions(entry))


def calibrated(runs):
    """(run, member, split, entry, calibration) of every run's and seed's chosen snapshot."""
    for run in ordered(runs):
        for member in run.repeats:
            scored = member.scored()
            if scored is not None:
                split, results, entry = scored
                yield run, member, split, entry, calibration_of(results, entry)


def calibration_table(runs):
    """(Table, rows): ECE and MCE of each run's (each seed's) snapshot chosen on validation."""
    table = Table("Calibration of p(malignant)",
                  ("Experiment", "Seed", "Split", "Snapshot", "n", "ECE", "MCE"),
                  notes="(snapshot chosen on validation; 10 equal-width bins; ECE: bin gaps "
                        "weighted by records, MCE: largest gap)")
    rows = []
    for run, member, split, entry, cal in calibrated(runs):
        rows.append({"experiment": run.experiment, "seed": seed_label(member.info),
                     "split": split, "snapshot": entry.name,
                     "n": entry.metrics["n"], "ece": cal["ece"], "mce": cal["mce"],
                     "bins": cal["bins"], "run_dir": member.run_dir})
        table.add(run.experiment, seed_label(member.info), split, entry.name,
                  "%d" % entry.metrics["n"], "%.3f" % cal["ece"], "%.3f" % cal["mce"])
    if not rows:
        table.add("no evaluated runs", *[None] * 6)
    return table, rows


def calibration_figure(runs, out_dir):
    """The reliability diagram of each run's chosen snapshot (every seed's), or None."""
    curves = []
    for run, member, split, _, cal in calibrated(runs):
        label = run.experiment + (" " + seed_label(member.info) if len(run.repeats) > 1 else "")
        curves.append(("%s (%s)" % (label, split), cal["bins"], cal["ece"]))
    if not curves:
        return None
    paths = figures.reliability_figure(curves, os.path.join(out_dir, "calibration"),
                                       "Reliability of p(malignant)")
    return Figure("calibration", "Reliability diagram: mean predicted p(malignant) against the "
                  "fraction malignant per bin (snapshot chosen on validation)", paths)
