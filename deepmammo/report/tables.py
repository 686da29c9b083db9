"""Tables 1-3 from evaluated runs, each row beside the paper's figure, as Markdown and CSV.

A row reports the snapshot chosen on validation: its validation metrics (Tables 1 and 3) or its
test metrics (Table 2). Rows of experiments not run yet show the paper's value and "not run".
An experiment repeated over seeds shows mean +- sd over its seeds (each at its own chosen
snapshot), the per-seed values beside them, then the paper's number.
"""
import os

import numpy as np

from deepmammo.atomic import write_text
from deepmammo.evaluate.runinfo import seed_label
from deepmammo.report import paper
from deepmammo.report.table import Table, interval, number

LABELS = {"accuracy": "Accuracy", "precision": "Precision", "recall": "Recall",
          "epochs": "# Epochs", "specificity": "Specificity", "f1": "F1", "roc_auc": "ROC AUC",
          "pr_auc": "PR AUC"}


def _entry_scores(entry, decision):
    """(metrics, CIs) of a results entry at argmax, or at the validation-fitted threshold."""
    if decision == "val-threshold":
        scored = entry.threshold_metrics
        if not scored:
            raise ValueError("snapshot %s was not scored at a validation threshold; run "
                             "`deepmammo eval` on test with --val-results and --threshold val"
                             % os.path.basename(entry.snapshot))
        return scored["metrics"], scored.get("ci") or {}
    return entry.metrics, entry.ci


def _precision(run):
    """The arithmetic a run's results were computed in (fp32 unless a results file says)."""
    if run is None:
        return "fp32"
    for results in (run.val, run.test):
        if results and results.precision not in (None, "fp32"):
            return results.precision
    training = ((run.info.get("provenance") or {}).get("training") or {})
    return training.get("precision") or "fp32"


def table_rows(spec, runs, decision="argmax"):
    """Rows of one table: dicts with model, experiment, per metric ours/low/high/paper, and
    where each number came from. decision: 'argmax' (the paper's) or 'val-threshold' (test
    tables only: the threshold fitted on validation, applied unchanged)."""
    if decision not in ("argmax", "val-threshold"):
        raise ValueError("unknown decision rule %r (argmax or val-threshold)" % decision)
    if spec["split"] != "test":
        decision = "argmax"  # a threshold fitted on validation says nothing new there
    rows = []
    for row_spec in spec["rows"]:
        run = runs.get(row_spec["experiment"])
        entry = None
        if run is not None:
            entry = run.chosen_val() if spec["split"] == "val" else run.chosen_test()
        row = {"model": row_spec["model"], "experiment": row_spec["experiment"],
               "status": "ok" if entry else ("not evaluated on %s" % spec["split"]
                                             if run else "not run")}
        if run is not None and run.from_scratch:
            row["model"] += " [from scratch]"
        if run is not None and run.shown_as:
            row["model"] += " [run: %s]" % run.shown_as
        precision = _precision(run)
        if precision != "fp32":  # an opt-in faster mode: not Caffe's numbers
            row["model"] += " [%s]" % precision
        scores = _entry_scores(entry, decision) if entry is not None else ({}, {})
        row["decision"] = decision
        for metric in spec["metrics"]:
            row[metric + "_paper"] = row_spec["paper"].get(metric)
            ours, ci = None, None
            if entry is not None:
                if metric == "epochs":
                    ours = entry.epoch
                else:
                    ours = scores[0].get(metric)
                    ci = scores[1].get(metric)
            row[metric] = ours
            row[metric + "_low"], row[metric + "_high"] = ci if ci else (None, None)
        if entry is not None:
            results = run.val if spec["split"] == "val" else run.test
            row.update(snapshot=os.path.basename(entry.snapshot),
                       iteration=entry.iteration, n=entry.metrics["n"],
                       engine=results.engine, run_dir=run.run_dir,
                       results=results.path,
                       seed=run.info.get("seed"))
            if len(run.repeats) > 1:
                _over_seeds(row, spec, run, decision)
        rows.append(row)
    return rows


def _chosen(run, split):
    return run.chosen_val() if split == "val" else run.chosen_test()


def _over_seeds(row, spec, run, decision):
    """Replace a row's numbers by mean and sd over the runs of its repeat (each at its own
    snapshot chosen on validation), keeping each seed's value. Seeds without results on the
    table's split are left out and named in `missing_seeds`."""
    members = [(m, _chosen(m, spec["split"])) for m in run.repeats]
    scored = [(m, e) for m, e in members if e is not None]
    row["seeds"] = [seed_label(m.info) for m, _ in scored]
    row["missing_seeds"] = [seed_label(m.info) for m, e in members if e is None]
    row["snapshot"] = "iter " + "/".join(str(e.iteration) for _, e in scored)
    row["run_dir"] = ";".join(m.run_dir for m, _ in scored)
    row["seed"] = ";".join(row["seeds"])
    for metric in spec["metrics"]:
        values = []
        for _, entry in scored:
            values.append(entry.epoch if metric == "epochs"
                          else _entry_scores(entry, decision)[0].get(metric))
        values = [v for v in values if v is not None]
        row[metric + "_seeds"] = values
        row[metric] = float(np.mean(values)) if values else None
        row[metric + "_sd"] = float(np.std(values, ddof=1)) if len(values) > 1 else None
        # A single run's bootstrap interval does not describe the spread over seeds.
        row[metric + "_low"] = row[metric + "_high"] = None


def _fmt(value, metric):
    if value is None:
        return "-"
    if metric == "epochs":
        return "%.1f" % value if abs(value - round(value)) > 0.05 else "%d" % round(value)
    return number(value)


def paper_table(spec, rows):
    """The Table of a paper table: for each metric ours [95% CI] and the paper's, then the
    snapshot."""
    decision = rows[0].get("decision", "argmax") if rows else "argmax"
    head = ["Model"]
    for metric in spec["metrics"]:
        head += ["%s (ours)" % LABELS[metric], "%s (paper)" % LABELS[metric]]
    head += ["Snapshot", "n"]
    repeated = any(row.get("seeds") for row in rows)
    table = Table(spec["title"], head, notes="(%s set; snapshot chosen on validation; "
                  "decisions %s%s)" % (
                      "validation" if spec["split"] == "val" else "test",
                      "at argmax, as in the paper" if decision == "argmax"
                      else "at the threshold fitted on validation",
                      "; repeated runs: mean ± sd over seeds (each seed's value)"
                      if repeated else ""))
    for row in rows:
        cells = [row["model"]]
        for metric in spec["metrics"]:
            def fmt(value, metric=metric):
                return _fmt(value, metric)
            if row.get(metric + "_seeds"):
                # mean +- sd over seeds, then each seed's value
                ours = "%s ± %s (%s)" % (fmt(row.get(metric)), fmt(row.get(metric + "_sd")),
                                         ", ".join(fmt(v) for v in row[metric + "_seeds"]))
            else:
                low = row.get(metric + "_low")
                ours = interval(row.get(metric), None if low is None
                                else (low, row[metric + "_high"]), fmt)
            cells += [ours, fmt(row.get(metric + "_paper"))]
        snapshot = row.get("snapshot") or row["status"]
        if row.get("seeds"):
            snapshot = "%d seeds (%s): %s" % (len(row["seeds"]), ", ".join(row["seeds"]),
                                               snapshot)
        cells += [snapshot, str(row.get("n", "-"))]
        table.add(*cells)
    return table


def to_markdown(spec, rows):
    """The paper table as Markdown."""
    return paper_table(spec, rows).markdown()


def csv_columns(spec):
    cols = ["model", "experiment", "status", "decision"]
    for metric in spec["metrics"]:
        cols += [metric, metric + "_low", metric + "_high", metric + "_sd", metric + "_seeds",
                 metric + "_paper"]
    return cols + ["snapshot", "iteration", "n", "engine", "seed", "seeds", "run_dir",
                   "results"]


def _csv_cell(value):
    if value is None:
        return ""
    if isinstance(value, list):
        return ";".join(_csv_cell(x) for x in value)
    return "%.6g" % value if isinstance(value, float) else value


def data_table(spec, rows):
    """Every number of a paper table's rows, one column each (its CSV)."""
    columns = csv_columns(spec)
    return Table(columns=columns, rows=[[_csv_cell(row.get(c)) for c in columns]
                                        for row in rows])


def write_table(name, runs, out_dir, decision="argmax"):
    """Write <out_dir>/<name>.md and .csv for table1/table2/table3; return (Table, rows)."""
    if name not in paper.TABLES:
        raise ValueError("unknown table %r (choose from %s)" % (name, ", ".join(paper.TABLES)))
    spec = paper.TABLES[name]
    rows = table_rows(spec, runs, decision)
    from deepmammo.report.origin import run_origin, synthetic_note
    note = synthetic_note(run_origin(r.get("run_dir")) for r in rows)
    spec = dict(spec, title=spec["title"] + note) if note else spec
    table = paper_table(spec, rows)
    write_text(os.path.join(out_dir, name + ".md"), table.markdown())
    write_text(os.path.join(out_dir, name + ".csv"), data_table(spec, rows).csv())
    return table, rows


def runs_table(runs):
    """Every evaluated run (whatever its experiment) at its chosen snapshot: val and test
    metrics side by side. The paper's tables only name its six experiments; this one shows all.
    Returns (Table, rows)."""
    metrics = ("accuracy", "precision", "recall", "roc_auc")
    table = Table("Every evaluated run", ("Experiment", "Seed", "Snapshot", "Split", "n",
                                          "Accuracy", "Precision", "Recall", "ROC AUC"),
                  notes="(snapshot chosen on validation)")
    rows = []
    for experiment, member in ((e, m) for e, run in sorted(runs.items()) for m in run.repeats):
        for split, entry in (("val", member.chosen_val()), ("test", member.chosen_test())):
            if entry is None:
                continue
            m, ci = entry.metrics, entry.ci
            table.add(experiment, seed_label(member.info), os.path.basename(entry.snapshot),
                      split, m["n"], *(interval(m.get(k), ci.get(k)) for k in metrics))
            rows.append({"experiment": experiment, "split": split,
                         "seed": member.info.get("seed"),
                         "data_seed": member.info.get("data_seed"),
                         "run_dir": member.run_dir,
                         "snapshot": os.path.basename(entry.snapshot), **m})
    return table, rows
