"""External validation in the report: each run's scores on other archives' datasets beside its
internal test, at the snapshot chosen on validation. Rows come from results files marked
`external` (see evaluate/external.py)."""
import os

from deepmammo.evaluate.runinfo import seed_label
from deepmammo.report.calibration import calibration_of
from deepmammo.report.collect import ordered
from deepmammo.report.table import Table, interval

METRICS = ("accuracy", "recall", "specificity", "roc_auc")


def external_entry(results, run):
    """The entry of an external results file for the snapshot chosen on validation: the one it
    marks, else its run's validation choice; None when it has no entry for it."""
    try:
        return results.chosen(None if results.selected else run.val)
    except ValueError:
        return None


def external_table(runs):
    """(Table, rows) of every run with external results: its internal test, then each
    external dataset."""
    table = Table("External validation",
                  ("Experiment", "Seed", "Data", "Cases", "n", "Accuracy", "Recall",
                   "Specificity", "ROC AUC", "ECE"),
                  notes="(a run's snapshot chosen on validation, scored on a dataset built from "
                        "another cases table with the run's own training mean and grey mapping; "
                        "internal: the run's own test set)")
    rows = []
    for run in ordered(runs):
        for member in run.repeats:
            if not member.external:
                continue
            sets = [("internal test", None, member.test, member.chosen_test())]
            sets += [("external: %s (%s)" % (r.external.get("name"), r.split),
                      r.external.get("cases"), r, external_entry(r, member))
                     for r in member.external]
            for label, cases, results, entry in sets:
                if entry is None:
                    continue
                m, ci = entry.metrics, entry.ci
                cal = calibration_of(results, entry)
                rows.append({"experiment": run.experiment, "seed": seed_label(member.info),
                             "data": label, "cases": cases, "snapshot": entry.name,
                             "results": results.path, "ece": cal["ece"], **m})
                table.add(run.experiment, seed_label(member.info), label,
                          os.path.basename(os.path.dirname(cases)) if cases else "-",
                          "%d" % m["n"], *(interval(m.get(k), ci.get(k)) for k in METRICS),
                          "%.3f" % cal["ece"])
    if not rows:
        table.add("no external evaluation yet (`make external RUN=... EXTERNAL=...`)",
                  *[None] * 9)
    return table, rows
