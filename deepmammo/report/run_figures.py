"""The paper's figures (and the learning curves of repeated runs, and ROC curves) drawn from
evaluated runs. Each figure is a function of the report's Context registered once in FIGURES,
in the order the page shows them; it returns the files it drew, None when it does not apply to
these runs, or raises to say why it cannot be drawn. figures.py holds the drawing itself.
"""
import logging
import os

import numpy as np

from deepmammo.evaluate import predict
from deepmammo.evaluate.metrics import roc_curve
from deepmammo.evaluate.runinfo import seed_label
from deepmammo.report import figures, logs, paper
from deepmammo.report.collect import ordered
from deepmammo.report.context import Context, Figure

log = logging.getLogger(__name__)

FIGURES = []  # (key, caption, function), in the page's order


def figure(key, caption):
    """Register a figure function under its file name and caption."""
    def register(fn):
        FIGURES.append((key, caption, fn))
        return fn
    return register


def draw_figures(ctx, notes):
    """Draw every registered figure the runs allow; return [Figure]. A figure that cannot be
    drawn adds a line to `notes` saying why (and the log says it too)."""
    made = []
    for key, caption, fn in FIGURES:
        try:
            paths = fn(ctx)
        except Exception as exc:  # one figure failing must not lose the others
            log.warning("figure %s not drawn: %s", key, exc)
            notes.append("%s: not drawn (%s)" % (key, exc))
            continue
        if paths:
            made.append(Figure(key, caption, paths))
    return made


def build_figures(runs, out_dir, engine=None, saliency_count=5, notes=None):
    """Draw every figure the runs allow into out_dir (`deepmammo figures`); return [Figure]."""
    ctx = Context(runs, out_dir, figure_dir=out_dir, engine=engine,
                  saliency_count=saliency_count)
    return draw_figures(ctx, notes if notes is not None else [])


# ------------------------------------------------------------------------------ helpers

def balanced_pick(labels, count):
    """Indices of up to `count` records alternating benign and malignant, in key order."""
    benign = list(np.nonzero(labels == 0)[0])
    malignant = list(np.nonzero(labels == 1)[0])
    picked = []
    while len(picked) < count and (benign or malignant):
        for pool in (benign, malignant):
            if pool and len(picked) < count:
                picked.append(int(pool.pop(0)))
    return picked


def centre_crop(image, height, width):
    """The part of a (C, H, W) record the net sees at TEST (Caffe's centre crop)."""
    top, left = (image.shape[1] - height) // 2, (image.shape[2] - width) // 2
    return image[:, top:top + height, left:left + width]


def class_name(label):
    return "malignant" if int(label) == 1 else "benign"


def _with_val(ctx):
    return [r for r in ordered(ctx.runs) if r.val]


def _with_logs(ctx):
    return [r for r in ordered(ctx.runs) if has_log(r.run_dir)]


def _visual(ctx):
    """The runs whose saliency and filters are shown: the paper's Figure 2 models, else two."""
    with_val = _with_val(ctx)
    return [r for r in with_val if r.experiment in paper.FIGURE2["experiments"]] \
        or with_val[:2]


def has_log(run_dir):
    return any(os.path.isfile(os.path.join(run_dir, n)) for n in ("train_log.csv", "train.log"))


def learning_curves(run):
    """(name, train, test) of a run, or (name, [(seed, train, test)]) for every seed of a
    repeated experiment (runs of the repeat without a log are left out)."""
    if len(run.repeats) == 1:
        return (run.experiment,) + logs.read_training_log(run.run_dir)
    return (run.experiment, [(seed_label(m.info),) + logs.read_training_log(m.run_dir)
                             for m in run.repeats if has_log(m.run_dir)])


def _learning(ctx, experiments, name, title, with_loss, fallback):
    with_logs = _with_logs(ctx)
    chosen = [r for r in with_logs if r.experiment in experiments]
    if not chosen and fallback:
        chosen = with_logs[:3]
    if not chosen:
        raise ValueError("needs training logs of %s" % " and ".join(experiments))
    curves = [learning_curves(r) for r in chosen]
    return figures.figure_learning(curves, ctx.figure_path(name), title, with_loss)


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


# ------------------------------------------------------------------------------ figures

@figure("figure1_samples", "Figure 1: sample benign and malignant crops (validation set)")
def figure1_samples(ctx):
    with_val = _with_val(ctx)
    if not with_val:
        raise ValueError("no validation results")
    keys, images, labels = ctx.records(with_val[0].val)
    pick = balanced_pick(labels, 2)
    return figures.figure1_samples(
        [(images[i], "(%s) %s\n%s" % ("ab"[n], class_name(labels[i]), keys[i][:36]))
         for n, i in enumerate(pick)], ctx.figure_path("figure1_samples"))


@figure("figure2_learning", "Figure 2: train/validation accuracy and loss against iterations "
        "(paper: AlexNet Aug-Large and GoogLeNet Deeper; else the runs present)")
def figure2_learning(ctx):
    return _learning(ctx, paper.FIGURE2["experiments"], "figure2_learning",
                     "Figure 2: learning curves", True, True)


@figure("figure3_augmentation", "Figure 3: AlexNet validation accuracy without and with "
        "augmentation")
def figure3_augmentation(ctx):
    return _learning(ctx, paper.FIGURE3["experiments"], "figure3_augmentation",
                     "Figure 3: unaugmented vs augmented", False, False)


@figure("learning_seeds", "Learning curves of every seed of each repeated experiment (past "
        "the paper: it shows one run per model)")
def learning_seeds(ctx):
    repeated = [r.experiment for r in _with_logs(ctx) if len(r.repeats) > 1]
    if not repeated:
        return None
    return _learning(ctx, repeated, "learning_seeds", "Learning curves, every seed", True,
                     False)


@figure("figure4_snapshots", "Figure 4: validation accuracy, precision and recall per snapshot "
        "against the fraction of training")
def figure4_snapshots(ctx):
    with_val = _with_val(ctx)
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
    return figures.figure4_snapshots(series, ctx.figure_path("figure4_snapshots"), best)


@figure("figure5_saliency", "Figure 5: saliency maps of the snapshot chosen on validation")
def figure5_saliency(ctx):
    from deepmammo.report.saliency import compute_saliency
    panels = []
    for r in _visual(ctx):
        keys, images, labels = ctx.records(r.val)
        pick = balanced_pick(labels, ctx.saliency_count)
        chosen = r.chosen_val()
        maps, batch = predict.with_engine(
            ctx.engine_for(r.val), compute_saliency, r.val.model, chosen.snapshot,
            images[pick], labels[pick], ctx.mean(r.val), r.val.scale, source=r.val.model)
        shown = [centre_crop(im, batch.shape[2], batch.shape[3]) for im in images[pick]]
        panels.append(("%s (%s)" % (r.experiment, chosen.name), shown, maps,
                       [class_name(labels[i]) for i in pick]))
    if not panels:
        raise ValueError("no validation results")
    return figures.figure5_saliency(panels, ctx.figure_path("figure5_saliency"))


@figure("figure6_filters", "Figure 6: first-layer filters of the snapshot chosen on validation")
def figure6_filters(ctx):
    grids = []
    for r in _visual(ctx):
        layer, weights = first_conv_weights(r.val.model, r.chosen_val().snapshot)
        grids.append((r.experiment, figures.filter_grid(weights), layer))
    if not grids:
        raise ValueError("no validation results")
    return figures.figure6_filters(grids, ctx.figure_path("figure6_filters"))


def _roc(ctx, split):
    curves = []
    for r in ordered(ctx.runs):
        entry = r.chosen_test() if split == "test" else r.chosen_val()
        if entry is None:
            continue
        rows = (r.test if split == "test" else r.val).predictions(entry)
        fpr, tpr, _ = roc_curve([x["label"] for x in rows], [x["prob_malignant"] for x in rows])
        curves.append((r.experiment, fpr, tpr, entry.metrics["roc_auc"]))
    if not curves:
        raise ValueError("no %s results" % split)
    return figures.roc_figure(curves, ctx.figure_path("roc_%s" % split),
                              "ROC curves (%s set)" % split)


@figure("roc_test", "ROC curves on the test set (snapshot chosen on validation)")
def roc_test(ctx):
    return _roc(ctx, "test")


@figure("roc_val", "ROC curves on the validation set (snapshot chosen on validation)")
def roc_val(ctx):
    return _roc(ctx, "val")
