"""Gather evaluated runs into tables, figures, the past-the-paper extras and the HTML report.

reports/<name>/
  index.html                 the page (opens offline)
  report.json                every number on the page, with where it came from
  tables/table{1,2,3}.{md,csv}, tables/runs.md
  figures/<figure>.{png,pdf}
  beyond/...                 ensembles, fusion, t-SNE (only when asked)
"""
import json
import logging
import os

import numpy as np

from deepmammo.atomic import write_text
from deepmammo.evaluate import predict
from deepmammo.evaluate.calibration import rows_reliability
from deepmammo.evaluate.metrics import roc_curve
from deepmammo.evaluate.runinfo import seed_label
from deepmammo.evaluate.snapshots import score_rows
from deepmammo.report import beyond, claims, figures, html, logs, paper, tables
from deepmammo.report.collect import collect_runs

log = logging.getLogger(__name__)

BEYOND_CHOICES = ("ensembles", "fusion", "tsne")


class Figure:
    def __init__(self, key, caption, paths):
        self.key, self.caption = key, caption
        self.png = next(p for p in paths if p.endswith(".png"))
        self.pdf = next((p for p in paths if p.endswith(".pdf")), None)


def ordered(runs, preferred=()):
    """Runs in the paper's order (then by name), the `preferred` experiments first."""
    names = [e for e in preferred if e in runs]
    names += [e for e in paper.experiment_order() if e in runs and e not in names]
    names += sorted(e for e in runs if e not in names)
    return [runs[e] for e in names]


def _mean_of(results):
    mean = results.mean
    if isinstance(mean, str):
        from deepmammo.caffe.formats.binaryproto import read_mean
        return read_mean(mean)
    return None if mean is None else np.asarray(mean, dtype=np.float32)


_RECORDS = {}  # LMDB path -> (keys, images, labels): several figures read the same LMDB


def _records(results):
    """(keys, images, labels) of the LMDB a results file was computed on (cached per path)."""
    path = results.lmdb
    if path not in _RECORDS:
        _RECORDS[path] = predict.read_records(path)
    return _RECORDS[path]


def _balanced_pick(labels, count):
    """Indices of up to `count` records alternating benign and malignant, in key order."""
    benign = list(np.nonzero(labels == 0)[0])
    malignant = list(np.nonzero(labels == 1)[0])
    picked = []
    while len(picked) < count and (benign or malignant):
        for pool in (benign, malignant):
            if pool and len(picked) < count:
                picked.append(int(pool.pop(0)))
    return picked


def _centre_crop(image, height, width):
    """The part of a (C, H, W) record the net sees at TEST (Caffe's centre crop)."""
    top, left = (image.shape[1] - height) // 2, (image.shape[2] - width) // 2
    return image[:, top:top + height, left:left + width]


def _caption(label):
    return "malignant" if int(label) == 1 else "benign"


# ------------------------------------------------------------------------------- figures

def build_figures(runs, out_dir, engine=None, saliency_count=5, notes=None):
    """Draw every figure the runs allow into out_dir; return [Figure]. Figures that cannot be
    drawn add a line to `notes` saying why (and the log says it too)."""
    notes = notes if notes is not None else []
    made = []

    def attempt(key, caption, fn):
        try:
            paths = fn()
        except Exception as exc:  # one figure failing must not lose the others
            log.warning("figure %s not drawn: %s", key, exc)
            notes.append("%s: not drawn (%s)" % (key, exc))
            return
        if paths:
            made.append(Figure(key, caption, paths))

    stem = lambda name: os.path.join(out_dir, name)  # noqa: E731
    with_val = [r for r in ordered(runs) if r.val]
    with_logs = [r for r in ordered(runs) if _has_log(r.run_dir)]

    def fig1():
        if not with_val:
            raise ValueError("no validation results")
        keys, images, labels = _records(with_val[0].val)
        pick = _balanced_pick(labels, 2)
        return figures.figure1_samples(
            [(images[i], "(%s) %s\n%s" % ("ab"[n], _caption(labels[i]), keys[i][:36]))
             for n, i in enumerate(pick)], stem("figure1_samples"))
    attempt("figure1_samples", "Figure 1: sample benign and malignant crops (validation set)",
            fig1)

    def learning(experiments, name, title, with_loss, fallback):
        chosen = [r for r in with_logs if r.experiment in experiments]
        if not chosen and fallback:
            chosen = with_logs[:3]
        if not chosen:
            raise ValueError("needs training logs of %s" % " and ".join(experiments))
        curves = [_learning_curves(r) for r in chosen]
        return figures.figure_learning(curves, stem(name), title, with_loss)
    attempt("figure2_learning", "Figure 2: train/validation accuracy and loss against "
            "iterations (paper: AlexNet Aug-Large and GoogLeNet Deeper; else the runs present)",
            lambda: learning(paper.FIGURE2["experiments"], "figure2_learning",
                             "Figure 2: learning curves", True, True))
    attempt("figure3_augmentation", "Figure 3: AlexNet validation accuracy without and with "
            "augmentation", lambda: learning(paper.FIGURE3["experiments"],
                                             "figure3_augmentation",
                                             "Figure 3: unaugmented vs augmented", False, False))

    repeated = [r.experiment for r in with_logs if len(r.repeats) > 1]
    if repeated:
        attempt("learning_seeds", "Learning curves of every seed of each repeated experiment "
                "(past the paper: it shows one run per model)",
                lambda: learning(repeated, "learning_seeds",
                                 "Learning curves, every seed", True, False))

    def fig4():
        chosen = [r for r in with_val if r.experiment in paper.FIGURE4["experiments"]] or with_val
        series = []
        for r in chosen:
            entries = [e for e in r.val.snapshots if e.fraction is not None]
            if not entries:
                continue
            series.append((r.experiment, [e.fraction for e in entries],
                           {m: [e.metrics[m] for e in entries]
                            for m in ("accuracy", "precision", "recall")}))
        if not series:
            raise ValueError("no snapshot knows its fraction of training (no solver.prototxt "
                             "with max_iter in the run folders)")
        best = {e: f for e, f in paper.FIGURE4["paper_best_fraction"].items()
                if e in [s[0] for s in series]}
        return figures.figure4_snapshots(series, stem("figure4_snapshots"), best)
    attempt("figure4_snapshots", "Figure 4: validation accuracy, precision and recall per "
            "snapshot against the fraction of training", fig4)

    visual = [r for r in with_val if r.experiment in paper.FIGURE2["experiments"]] \
        or with_val[:2]

    def fig5():
        panels = []
        for r in visual:
            from deepmammo.report.saliency import compute_saliency
            keys, images, labels = _records(r.val)
            pick = _balanced_pick(labels, saliency_count)
            chosen = r.chosen_val()
            maps, batch = predict.with_engine(
                engine or r.val.engine or "torch", compute_saliency, r.val.model,
                chosen.snapshot, images[pick], labels[pick], _mean_of(r.val),
                r.val.scale, source=r.val.model)
            shown = [_centre_crop(im, batch.shape[2], batch.shape[3]) for im in images[pick]]
            panels.append(("%s (%s)" % (r.experiment, chosen.name), shown, maps,
                           [_caption(labels[i]) for i in pick]))
        if not panels:
            raise ValueError("no validation results")
        return figures.figure5_saliency(panels, stem("figure5_saliency"))
    attempt("figure5_saliency", "Figure 5: saliency maps of the snapshot chosen on validation",
            fig5)

    def fig6():
        grids = []
        for r in visual:
            layer, weights = first_conv_weights(r.val.model, r.chosen_val().snapshot)
            grids.append((r.experiment, figures.filter_grid(weights), layer))
        if not grids:
            raise ValueError("no validation results")
        return figures.figure6_filters(grids, stem("figure6_filters"))
    attempt("figure6_filters", "Figure 6: first-layer filters of the snapshot chosen on "
            "validation", fig6)

    for split in ("test", "val"):
        def roc(split=split):
            curves = []
            for r in ordered(runs):
                entry = r.chosen_test() if split == "test" else r.chosen_val()
                if entry is None:
                    continue
                results = r.test if split == "test" else r.val
                rows = results.predictions(entry)
                fpr, tpr, _ = roc_curve([x["label"] for x in rows],
                                        [x["prob_malignant"] for x in rows])
                curves.append((r.experiment, fpr, tpr, entry.metrics["roc_auc"]))
            if not curves:
                raise ValueError("no %s results" % split)
            return figures.roc_figure(curves, stem("roc_%s" % split),
                                      "ROC curves (%s set)" % split)
        attempt("roc_%s" % split, "ROC curves on the %s set (snapshot chosen on validation)"
                % ("test" if split == "test" else "validation"), roc)
    return made


def _learning_curves(run):
    """(name, train, test) of a run, or (name, [(seed, train, test)]) for every seed of a
    repeated experiment (runs of the repeat without a log are left out)."""
    if len(run.repeats) == 1:
        return (run.experiment,) + logs.read_training_log(run.run_dir)
    return (run.experiment, [(seed_label(m.info),) + logs.read_training_log(m.run_dir)
                             for m in run.repeats if _has_log(m.run_dir)])


def _has_log(run_dir):
    return any(os.path.isfile(os.path.join(run_dir, n)) for n in ("train_log.csv", "train.log"))


def first_conv_weights(model_path, weights_path):
    """(layer name, weights (N, C, kh, kw)) of the deploy net's first Convolution layer, read
    from the caffemodel directly (no engine needed)."""
    from deepmammo.caffe.formats.caffemodel import layer_blobs, read_caffemodel
    from deepmammo.caffe.formats.prototxt import read_net
    convs = [l.name for l in read_net(model_path).layer if l.type == "Convolution"]
    if not convs:
        raise ValueError("%s has no Convolution layer" % model_path)
    blobs = layer_blobs(read_caffemodel(weights_path))
    if convs[0] not in blobs or not blobs[convs[0]]:
        raise ValueError("%s holds no weights for layer %s" % (weights_path, convs[0]))
    return convs[0], blobs[convs[0]][0]


# ----------------------------------------------------------------------------- beyond

def _metric_row(name, rows, n_boot, seed, extra=None):
    metrics, ci = score_rows(rows, n_boot=n_boot, seed=seed)
    return {"name": name, "metrics": metrics, "ci": ci, **(extra or {})}


def _beyond_markdown(title, rows):
    lines = ["**%s** (past the paper; test set)" % title, "",
             "| Name | n | Accuracy | Precision | Recall | ROC AUC | Notes |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        m, ci = r["metrics"], r.get("ci") or {}

        def cell(k, m=m, ci=ci):
            if m.get(k) is None:
                return "-"
            return "%.3f" % m[k] + (" [%.3f, %.3f]" % tuple(ci[k]) if ci.get(k) else "")
        lines.append("| %s | %d | %s | %s |" % (r["name"], m["n"], " | ".join(
            cell(k) for k in ("accuracy", "precision", "recall", "roc_auc")), r.get("notes", "")))
    return "\n".join(lines) + "\n"


def ensembles(runs, n_boot=1000, seed=0):
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
        rows.append(_metric_row(r.experiment, preds, n_boot, seed,
                                {"notes": "single model, %s" % entry.name}))
    pair = [s for s in singles if s[0] in ("alexnet-aug-large", "googlenet-deeper")]
    members = pair if len(pair) == 2 else singles
    if len(members) >= 2:
        keysets = {frozenset(p["key"] for p in m[1]) for m in members}
        if len(keysets) == 1:
            rows.append(_metric_row(" + ".join(m[0] for m in members),
                                    beyond.ensemble([m[1] for m in members],
                                                    [m[0] for m in members]), n_boot, seed,
                                    {"notes": "model ensemble (mean probability)"}))
        else:
            log.warning("model ensemble skipped: the runs were tested on different records")
    for r in ordered(runs):
        if not r.test or len(r.test.snapshots) < 2:
            continue
        sets = [r.test.predictions(e) for e in r.test.snapshots]
        rows.append(_metric_row("%s: all %d snapshots" % (r.experiment, len(sets)),
                                beyond.ensemble(sets, [e.name for e in r.test.snapshots]),
                                n_boot, seed,
                                {"notes": "snapshot ensemble (mean probability)"}))
    return rows


def find_crops_table(results):
    """crops.csv of the dataset a results file was computed on (see predict.find_crops_table)."""
    return predict.find_crops_table(results.manifest) if results.manifest else None


def fusion(runs, crops_path=None, n_boot=1000, seed=0):
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
        rows.append(_metric_row("%s: per view" % r.experiment, preds, n_boot, seed,
                                {"notes": "each view scored alone"}))
        rows.append(_metric_row("%s: CC + MLO" % r.experiment, fused, n_boot, seed, {
            "notes": "%d masses, %d with both views" % (counts["masses"],
                                                        counts["both_views"]),
            "counts": counts}))
    return rows


def _pooled_activations(caffe, results, snapshot, blob):
    """The activations of `blob` for every record a results file was computed on (with
    predict.with_engine: real Caffe reads the records in its own process)."""
    from deepmammo.caffe.real_child import open_net
    net = open_net(caffe, results.model, snapshot, caffe.TEST)
    return beyond.pooled_activations(net, _records(results)[1], blob, _mean_of(results),
                                     results.scale)


def tsne_figures(runs, out_dir, engine=None, crops_path=None, seed=0):
    made = []
    for r in ordered(runs):
        results = r.test or r.val
        if results is None:
            continue
        entry = r.chosen_test() if r.test else r.chosen_val()
        layer, blob = beyond.last_pool_blob(results.model)
        keys, images, labels = _records(results)
        feats = predict.with_engine(engine or results.engine or "torch",
                                    _pooled_activations, results, entry.snapshot, blob,
                                    source=results.model)
        points = beyond.tsne(feats, seed=seed)
        colourings = [("label", [_caption(v) for v in labels])]
        path = crops_path or find_crops_table(results)
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


# ------------------------------------------------------------- calibration, external

def _calibration_of(results, entry):
    """The entry's reliability bins: from the results file, else from its predictions."""
    if entry.calibration:
        return entry.calibration
    return rows_reliability(results.predictions(entry))


def _calibrated(runs):
    """(run, member, split, entry, calibration) of every run's and seed's chosen snapshot."""
    for run in ordered(runs):
        for member in run.repeats:
            scored = member.scored()
            if scored is not None:
                split, results, entry = scored
                yield run, member, split, entry, _calibration_of(results, entry)


def calibration_table(runs):
    """ECE and MCE of every run's (every seed's) snapshot chosen on validation, on test."""
    lines = ["**Calibration of p(malignant)** (snapshot chosen on validation; 10 equal-width "
             "bins; ECE: bin gaps weighted by records, MCE: largest gap)", "",
             "| Experiment | Seed | Split | Snapshot | n | ECE | MCE |", "|---|---|---|---|---|---|---|"]
    rows = []
    for run, member, split, entry, cal in _calibrated(runs):
        rows.append({"experiment": run.experiment, "seed": seed_label(member.info),
                     "split": split, "snapshot": entry.name,
                     "n": entry.metrics["n"], "ece": cal["ece"], "mce": cal["mce"],
                     "bins": cal["bins"], "run_dir": member.run_dir})
        lines.append("| %s | %s | %s | %s | %d | %.3f | %.3f |" % (
            run.experiment, seed_label(member.info), split, entry.name,
            entry.metrics["n"], cal["ece"], cal["mce"]))
    if not rows:
        lines.append("| no evaluated runs | | | | | | |")
    return "\n".join(lines) + "\n", rows


def calibration_figure(runs, out_dir):
    """The reliability diagram of each run's chosen snapshot (every seed's), or None."""
    curves = []
    for run, member, split, _, cal in _calibrated(runs):
        label = run.experiment + (" " + seed_label(member.info) if len(run.repeats) > 1 else "")
        curves.append(("%s (%s)" % (label, split), cal["bins"], cal["ece"]))
    if not curves:
        return None
    paths = figures.reliability_figure(curves, os.path.join(out_dir, "calibration"),
                                       "Reliability of p(malignant)")
    return Figure("calibration", "Reliability diagram: mean predicted p(malignant) against the "
                  "fraction malignant per bin (snapshot chosen on validation)", paths)


def _external_entry(results, run):
    """The entry of an external results file for the snapshot chosen on validation: the one it
    marks, else its run's validation choice; None when it has no entry for it."""
    try:
        return results.chosen(None if results.selected else run.val)
    except ValueError:
        return None


def _metric_cell(metrics, ci, name):
    text = "-" if metrics.get(name) is None else "%.3f" % metrics[name]
    return text + (" [%.3f, %.3f]" % tuple(ci[name]) if ci.get(name) else "")


def external_table(runs):
    """Each run's scores on other archives beside its internal test, at the snapshot chosen on
    validation. Rows come from results files marked `external` (see evaluate/external.py)."""
    metrics = ("accuracy", "recall", "specificity", "roc_auc")
    lines = ["**External validation** (a run's snapshot chosen on validation, scored on a "
             "dataset built from another cases table with the run's own training mean and grey "
             "mapping; internal: the run's own test set)", "",
             "| Experiment | Seed | Data | Cases | n | Accuracy | Recall | Specificity | "
             "ROC AUC | ECE |", "|---|---|---|---|---|---|---|---|---|---|"]
    rows = []
    for run in ordered(runs):
        for member in run.repeats:
            if not member.external:
                continue
            sets = [("internal test", None, member.test, member.chosen_test())]
            sets += [("external: %s (%s)" % (r.external.get("name"), r.split),
                      r.external.get("cases"), r, _external_entry(r, member))
                     for r in member.external]
            for label, cases, results, entry in sets:
                if entry is None:
                    continue
                m, ci = entry.metrics, entry.ci
                cal = _calibration_of(results, entry)
                rows.append({"experiment": run.experiment, "seed": seed_label(member.info),
                             "data": label, "cases": cases, "snapshot": entry.name,
                             "results": results.path, "ece": cal["ece"], **m})
                lines.append("| %s | %s | %s | %s | %d | %s | %.3f |" % (
                    run.experiment, seed_label(member.info), label,
                    os.path.basename(os.path.dirname(cases)) if cases else "-", m["n"],
                    " | ".join(_metric_cell(m, ci, k) for k in metrics), cal["ece"]))
    if not rows:
        lines.append("| no external evaluation yet (`make external RUN=... EXTERNAL=...`) "
                     "| | | | | | | | | |")
    return "\n".join(lines) + "\n", rows


# ------------------------------------------------------------------------------ report

def provenance_entries(runs):
    entries = []
    for r in ordered(runs):
        facts = {"run folder": r.run_dir, "experiment": r.experiment,
                 "seed": r.info.get("seed"), "from scratch": r.from_scratch}
        prov = r.info.get("provenance") or {}
        facts["training commit"] = prov.get("git_commit")
        for split, results in (("validation", r.val), ("test", r.test)):
            if not results:
                continue
            p = results.provenance
            facts["%s results" % split] = results.path
            facts["%s engine" % split] = "%s (tta %s)" % (results.engine, results.tta)
            facts["%s eval commit" % split] = p.get("git_commit")
            facts["%s data hashes (sha1)" % split] = {
                os.path.basename(k.rstrip("/")): v for k, v in (p.get("inputs") or {}).items()
                if not k.endswith(".caffemodel")}
        chosen = r.chosen_val()
        if chosen:
            facts["snapshot chosen on validation"] = "%s (by %s)" \
                % (chosen.name, ", then ".join(r.criteria))
        entries.append({"title": r.experiment, "facts": facts, "config": r.info.get("config")})
    return entries


def model_cards(runs, out_dir):
    """Each run's model card (report/model_card.py) under model-cards/, shown in the report;
    returns (HTML, the runs' data origins)."""
    from deepmammo.report.model_card import card_facts, render
    parts, origins = [], []
    for experiment, member in ((e, m) for e, run in sorted(runs.items()) for m in run.repeats):
        facts = card_facts(member.run_dir)
        origins.append({"synthetic": facts["data"]["synthetic"]})
        name = "%s-%s.md" % (experiment, os.path.basename(member.run_dir.rstrip("/")))
        text = render(facts)
        write_text(os.path.join(out_dir, "model-cards", name), text)
        parts.append('<details><summary>%s</summary><pre>%s</pre><p class="note">Also as '
                     '<a href="model-cards/%s">Markdown</a>.</p></details>'
                     % (html.esc(experiment + " (" + member.run_dir + ")"), html.esc(text),
                        html.esc(name)))
    return "\n".join(parts) or "<p>No runs.</p>", origins


def build_report(runs_root, out_dir, engine=None, overrides=None, extras=(), crops_path=None,
                 saliency_count=5, n_boot=1000, seed=0, title=None, runs=None,
                 compare_pairs=()):
    """Write the whole report folder; return the path of index.html. `runs` ({experiment:
    Run}) replaces collecting them from runs_root and overrides. compare_pairs: [(experiment
    A, experiment B)] tested beside the paper's pairwise claims."""
    from deepmammo.provenance import provenance
    extras = set(extras)
    unknown = extras - set(BEYOND_CHOICES)
    if unknown:
        raise ValueError("unknown report option(s) %s (choose from %s)"
                         % (sorted(unknown), ", ".join(BEYOND_CHOICES)))
    if runs is None:
        runs = collect_runs(runs_root, overrides)
    table_dir = os.path.join(out_dir, "tables")
    sections, data = [], {"tables": {}, "beyond": {}}
    table_html = []
    for name in paper.TABLES:
        markdown, rows = tables.write_table(name, runs, table_dir)
        data["tables"][name] = rows
        table_html.append(html.markdown_table(markdown) +
                          '<p class="note">Also as <a href="tables/%s.md">Markdown</a> and '
                          '<a href="tables/%s.csv">CSV</a>.</p>' % (name, name))
    all_md, all_rows = tables.runs_table(runs)
    write_text(os.path.join(table_dir, "runs.md"), all_md)
    data["runs"] = all_rows
    table_html.append("<p><strong>Every evaluated run</strong> (snapshot chosen on "
                      "validation)</p>" + html.markdown_table(all_md))
    sections.append(("Tables (ours beside the paper's)", "\n".join(table_html)))

    claims_md, claims_rows = claims.write_claims(runs, table_dir, compare_pairs, n_boot, seed)
    data["claims"] = claims_rows
    sections.append(("Paired comparisons (past the paper)", html.markdown_table(claims_md) +
                     '<p class="note">Also as <a href="tables/claims.md">Markdown</a>, '
                     '<a href="tables/claims.csv">CSV</a> and '
                     '<a href="tables/claims.json">JSON</a>.</p>'))

    notes = []
    made = build_figures(runs, os.path.join(out_dir, "figures"), engine, saliency_count, notes)
    fig_html = [html.figure_html(os.path.relpath(f.png, out_dir), f.caption,
                                 os.path.relpath(f.pdf, out_dir) if f.pdf else None)
                for f in made]
    if notes:
        fig_html.append('<p class="note">%s</p>' % "<br>".join(html.esc(n) for n in notes))
    sections.append(("Figures", "\n".join(fig_html)))
    data["figures"] = [os.path.relpath(f.png, out_dir) for f in made]
    data["figure_notes"] = notes

    cal_md, cal_rows = calibration_table(runs)
    write_text(os.path.join(table_dir, "calibration.md"), cal_md)
    data["calibration"] = cal_rows
    cal_html = [html.markdown_table(cal_md)]
    cal_fig = calibration_figure(runs, os.path.join(out_dir, "figures"))
    if cal_fig:
        cal_html.append(html.figure_html(os.path.relpath(cal_fig.png, out_dir), cal_fig.caption,
                                         os.path.relpath(cal_fig.pdf, out_dir)))
        data["figures"].append(os.path.relpath(cal_fig.png, out_dir))
    sections.append(("Calibration (past the paper)", "\n".join(cal_html)))

    ext_md, ext_rows = external_table(runs)
    write_text(os.path.join(table_dir, "external.md"), ext_md)
    data["external"] = ext_rows
    sections.append(("External validation (past the paper)", html.markdown_table(ext_md)))

    beyond_dir = os.path.join(out_dir, "beyond")
    beyond_html = []
    if "ensembles" in extras:
        rows = ensembles(runs, n_boot, seed)
        md = _beyond_markdown("Ensembles", rows)
        write_text(os.path.join(beyond_dir, "ensembles.md"), md)
        beyond_html.append(html.markdown_table(md))
        data["beyond"]["ensembles"] = rows
    if "fusion" in extras:
        rows = fusion(runs, crops_path, n_boot, seed)
        md = _beyond_markdown("CC + MLO fusion", rows)
        write_text(os.path.join(beyond_dir, "fusion.md"), md)
        beyond_html.append(html.markdown_table(md))
        data["beyond"]["fusion"] = rows
    if "tsne" in extras:
        for f in tsne_figures(runs, beyond_dir, engine, crops_path, seed):
            beyond_html.append(html.figure_html(os.path.relpath(f.png, out_dir), f.caption,
                                                os.path.relpath(f.pdf, out_dir)))
            data["figures"].append(os.path.relpath(f.png, out_dir))
    if beyond_html:
        sections.append(("Past the paper (not part of the paper's tables)",
                         "\n".join(beyond_html)))

    cards_html, origins = model_cards(runs, out_dir)
    sections.append(("Model cards (data, training, metrics, limits of each run)", cards_html))

    prov = provenance(config={"runs": runs_root, "extras": sorted(extras), "engine": engine},
                      seed=seed)
    entries = provenance_entries(runs)
    entries.append({"title": "this report", "facts": {k: prov[k] for k in
                                                      ("created", "git_commit", "command")}})
    sections.append(("Provenance of every number", html.provenance_html(entries)))
    data["provenance"] = prov
    write_text(os.path.join(out_dir, "report.json"),
               json.dumps(data, indent=1, default=str) + "\n")
    index = os.path.join(out_dir, "index.html")
    from deepmammo.report.origin import synthetic_note
    write_text(index, html.render((title or "DeepMammo report: %s"
                                   % os.path.basename(os.path.abspath(out_dir)))
                                  + synthetic_note(origins), sections))
    log.info("report written: %s", index)
    return index
