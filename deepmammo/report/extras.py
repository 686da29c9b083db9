"""The report's analyses past the paper, each asked for by name (`deepmammo report --ensembles
--fusion --tsne`) and registered once in EXTRAS: model and snapshot ensembles and CC + MLO
fusion (a table each, on the test set), and t-SNE maps of the last pooled activations (a figure
per run). beyond.py holds the methods; this module applies them to the runs.
"""
import dataclasses
import logging
import os

from deepmammo.evaluate import predict
from deepmammo.evaluate.snapshots import score_rows
from deepmammo.report import beyond, figures
from deepmammo.report.collect import ordered
from deepmammo.report.context import Figure
from deepmammo.report.run_figures import class_name
from deepmammo.report.table import Table, interval

log = logging.getLogger(__name__)

EXTRAS = {}  # option name -> function(ctx) -> Analysis, in the page's order


@dataclasses.dataclass
class Analysis:
    """What an analysis adds to the report: a table (beyond/<name>.md) with its rows (for
    report.json), and figures."""
    table: Table = None
    rows: list = None
    figures: list = dataclasses.field(default_factory=list)


def extra(name):
    """Register an analysis under its option name."""
    def register(fn):
        EXTRAS[name] = fn
        return fn
    return register


def metric_row(name, rows, n_boot, seed, extra=None):
    metrics, ci = score_rows(rows, n_boot=n_boot, seed=seed)
    return {"name": name, "metrics": metrics, "ci": ci, **(extra or {})}


def rows_table(title, rows):
    """A table of metric rows (name, n, metrics with intervals, notes)."""
    table = Table(title, ("Name", "n", "Accuracy", "Precision", "Recall", "ROC AUC", "Notes"),
                  notes="(past the paper; test set)")
    for r in rows:
        m, ci = r["metrics"], r.get("ci") or {}
        table.add(r["name"], "%d" % m["n"],
                  *(interval(m.get(k), ci.get(k)) for k in ("accuracy", "precision", "recall",
                                                            "roc_auc")),
                  r.get("notes", ""))
    return table


def ensemble_rows(runs, n_boot=1000, seed=0):
    """Rows: each single model at its chosen snapshot, the model ensemble (AlexNet + GoogLeNet
    when both ran, else every model sharing the test records), and per run the ensemble of all
    its snapshots. Membership is fixed beforehand, never chosen on test."""
    rows, singles = [], []
    for r in ordered(runs):
        entry = r.chosen_test()
        if entry is None:
            continue
        preds = r.test.predictions(entry)
        singles.append((r.experiment, preds))
        rows.append(metric_row(r.experiment, preds, n_boot, seed,
                               {"notes": "single model, %s" % entry.name}))
    pair = [s for s in singles if s[0] in ("alexnet-aug-large", "googlenet-deeper")]
    members = pair if len(pair) == 2 else singles
    if len(members) >= 2:
        keysets = {frozenset(p["key"] for p in m[1]) for m in members}
        if len(keysets) == 1:
            rows.append(metric_row(" + ".join(m[0] for m in members),
                                   beyond.ensemble([m[1] for m in members],
                                                   [m[0] for m in members]), n_boot, seed,
                                   {"notes": "model ensemble (mean probability)"}))
        else:
            log.warning("model ensemble skipped: the runs were tested on different records")
    for r in ordered(runs):
        if not r.test or len(r.test.snapshots) < 2:
            continue
        sets = [r.test.predictions(e) for e in r.test.snapshots]
        rows.append(metric_row("%s: all %d snapshots" % (r.experiment, len(sets)),
                               beyond.ensemble(sets, [e.name for e in r.test.snapshots]),
                               n_boot, seed, {"notes": "snapshot ensemble (mean probability)"}))
    return rows


def find_crops_table(results):
    """crops.csv of the dataset a results file was computed on (see predict.find_crops_table)."""
    return predict.find_crops_table(results.manifest) if results.manifest else None


def fusion_rows(runs, crops_path=None, n_boot=1000, seed=0):
    """Rows: per run, per-view scoring vs CC + MLO fusion at the chosen snapshot (test)."""
    rows = []
    for r in ordered(runs):
        entry = r.chosen_test()
        if entry is None:
            continue
        path = crops_path or find_crops_table(r.test)
        if not path:
            raise ValueError("no crops.csv found for %s; pass --crops" % r.experiment)
        preds = r.test.predictions(entry)
        fused, counts = beyond.fuse_views(preds, beyond.read_crops(path))
        rows.append(metric_row("%s: per view" % r.experiment, preds, n_boot, seed,
                               {"notes": "each view scored alone"}))
        rows.append(metric_row("%s: CC + MLO" % r.experiment, fused, n_boot, seed, {
            "notes": "%d masses, %d with both views" % (counts["masses"],
                                                        counts["both_views"]),
            "counts": counts}))
    return rows


def pooled_activations(caffe, results, snapshot, blob):
    """The activations of `blob` for every record a results file was computed on (with
    predict.with_engine: real Caffe reads the records in its own process)."""
    from deepmammo.caffe.real_child import open_net
    from deepmammo.report.context import Context
    net = open_net(caffe, results.model, snapshot, caffe.TEST)
    return beyond.pooled_activations(net, predict.read_records(results.lmdb)[1], blob,
                                     Context.mean(results), results.scale)


def tsne_figures(ctx, out_dir):
    """A t-SNE map of each run's last pooled activations, coloured by label (and by shape and
    margins when the crops table says them), drawn into out_dir."""
    made = []
    for r in ordered(ctx.runs):
        results = r.test or r.val
        if results is None:
            continue
        entry = r.chosen_test() if r.test else r.chosen_val()
        layer, blob = beyond.last_pool_blob(results.model)
        keys, _, labels = ctx.records(results)
        feats = predict.with_engine(ctx.engine_for(results), pooled_activations, results,
                                    entry.snapshot, blob, source=results.model)
        points = beyond.tsne(feats, seed=ctx.seed)
        colourings = [("label", [class_name(v) for v in labels])]
        path = ctx.crops_path or find_crops_table(results)
        if path and results.manifest:
            crops = beyond.read_crops(path)
            manifest = predict.read_manifest(results.manifest)
            info = [crops.get(manifest.get(k, {}).get("crop_id", ""), {}) for k in keys]
            for column in ("shape", "margins"):
                colourings.append((column, [i.get(column) for i in info]))
        paths = figures.scatter_figure(points, colourings,
                                       os.path.join(out_dir, "tsne_%s" % r.experiment),
                                       "t-SNE of %s activations, %s (%s set)"
                                       % (layer, r.experiment, results.split))
        made.append(Figure("tsne_%s" % r.experiment, "t-SNE map of the last pooled "
                           "activations (%s, %s)" % (r.experiment, layer), paths))
    return made


@extra("ensembles")
def ensembles(ctx):
    rows = ensemble_rows(ctx.runs, ctx.n_boot, ctx.seed)
    return Analysis(rows_table("Ensembles", rows), rows)


@extra("fusion")
def fusion(ctx):
    rows = fusion_rows(ctx.runs, ctx.crops_path, ctx.n_boot, ctx.seed)
    return Analysis(rows_table("CC + MLO fusion", rows), rows)


@extra("tsne")
def tsne(ctx):
    """The t-SNE maps, drawn into the report's beyond/ folder."""
    return Analysis(figures=tsne_figures(ctx, ctx.path("beyond")))
