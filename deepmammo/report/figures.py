"""The paper's figures (and a ROC figure) drawn with matplotlib, each saved as PNG and PDF.

Every function takes plain data (arrays, lists of rows) and an output stem, so it can be fed
from our runs or anyone else's; run_figures.py gathers the data from runs.
"""
import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from deepmammo.atomic import atomic_path  # noqa: E402

COLOURS = {"accuracy": "tab:blue", "precision": "tab:orange", "recall": "tab:green"}


def save(fig, stem):
    """Write stem.png and stem.pdf (each under a temporary name); return both paths."""
    os.makedirs(os.path.dirname(os.path.abspath(stem)), exist_ok=True)
    paths = []
    for ext in ("png", "pdf"):
        path = "%s.%s" % (stem, ext)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, dpi=110, bbox_inches="tight")
        paths.append(path)
    plt.close(fig)
    return paths


def _grey(image):
    """A displayable 2-D array from a (C, H, W) record (channel 0: the channels are equal)."""
    image = np.asarray(image, dtype=np.float32)
    return image[0] if image.ndim == 3 else image


def figure1_samples(samples, stem):
    """Figure 1: sample crops fed to the nets. samples: [(image (C,H,W) or (H,W), caption)]."""
    fig, axes = plt.subplots(1, len(samples), figsize=(3.2 * len(samples), 3.6), squeeze=False)
    for ax, (image, caption) in zip(axes[0], samples):
        ax.imshow(_grey(image), cmap="gray")
        ax.set_title(caption, fontsize=9)
        ax.axis("off")
    fig.suptitle("Figure 1: sample breast mass crops")
    return save(fig, stem)


def _column(rows, *needles, prefix=""):
    """The first column (in sorted order) starting with `prefix` and containing a needle."""
    names = sorted({k for r in rows for k in r if k.startswith(prefix)})
    for needle in needles:
        for name in names:
            if needle in name[len(prefix):]:
                return name
    return None


def _plot_series(ax, rows, column, label, style="-", color=None):
    if not column:
        return False
    xs = [r["iteration"] for r in rows if r.get(column) is not None]
    ys = [r[column] for r in rows if r.get(column) is not None]
    if not xs:
        return False
    ax.plot(xs, ys, style, label=label, marker="o" if len(xs) < 12 else None, markersize=3,
            color=color)
    return True


def learning_columns(train_rows, test_rows):
    """(train accuracy, val accuracy, train loss, val loss) column names, None where absent."""
    return (_column(train_rows, "accuracy", "acc", "top-1", prefix="train_"),
            _column(test_rows, "accuracy", "acc", "top-1", prefix="test0_"),
            _column(train_rows, "smoothed_loss", "loss", prefix="train_"),
            _column(test_rows, "loss", prefix="test0_"))


def _seed_curves(curve):
    """[(seed label or None, train rows, test rows)] of one model's entry in `curves`."""
    if len(curve) == 2:
        return list(curve[1])
    return [(None, curve[1], curve[2])]


def _label(kind, seed):
    return kind if seed is None else "%s %s" % (kind, seed)


def figure_learning(curves, stem, title, with_loss=True):
    """Figures 2 and 3: per model, train/val accuracy (left) and loss (right) against iterations.
    curves: [(model name, train rows, test rows)] as report/logs.py reads them, or, for a model
    repeated over seeds, [(model name, [(seed label, train rows, test rows), ...])]: every
    seed's curves on the model's axes."""
    ncols = 2 if with_loss else 1
    fig, axes = plt.subplots(len(curves), ncols, figsize=(5.2 * ncols, 3.4 * len(curves)),
                             squeeze=False)
    for i, curve in enumerate(curves):
        name, seeds = curve[0], _seed_curves(curve)
        ax = axes[i][0]
        drew = False
        for k, (label, train, test) in enumerate(seeds):
            tr_acc, va_acc, _, _ = learning_columns(train, test)
            # One colour per seed, validation dashed; a single run keeps the default colours.
            colour, dash = (None, "-") if label is None else ("C%d" % k, "--")
            drew |= _plot_series(ax, train, tr_acc, _label("train", label), "-", colour)
            drew |= _plot_series(ax, test, va_acc, _label("validation", label), dash, colour)
        ax.set_title("%s: accuracy" % name, fontsize=10)
        ax.set_xlabel("iteration")
        ax.set_ylabel("accuracy")
        if drew:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no accuracy in the log", ha="center", transform=ax.transAxes)
        if with_loss:
            ax = axes[i][1]
            drew, values = False, []
            for k, (label, train, test) in enumerate(seeds):
                _, _, tr_loss, va_loss = learning_columns(train, test)
                colour, dash = (None, "-") if label is None else ("C%d" % k, "--")
                drew |= _plot_series(ax, train, tr_loss, _label("train", label), "-", colour)
                drew |= _plot_series(ax, test, va_loss, _label("validation", label), dash,
                                     colour)
                values += [r[c] for rows, c in ((train, tr_loss), (test, va_loss)) if c
                           for r in rows if r.get(c) is not None and r[c] > 0]
            ax.set_title("%s: loss" % name, fontsize=10)
            if values and max(values) / min(values) > 50:
                ax.set_yscale("log")  # an early spike would flatten the rest of the curve
            ax.set_xlabel("iteration")
            ax.set_ylabel("loss")
            if drew:
                ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return save(fig, stem)


def figure4_snapshots(series, stem, paper_best=None):
    """Figure 4: validation accuracy, precision and recall per snapshot against the fraction of
    the run's epochs. series: [(model name, fractions, {metric: values})]."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    styles = ["-", "--", ":", "-."]
    for k, (name, fractions, values) in enumerate(series):
        for metric in ("accuracy", "precision", "recall"):
            ax.plot(fractions, values[metric], styles[k % len(styles)], marker="o",
                    color=COLOURS[metric], label="%s %s" % (name, metric))
    for name, fraction in (paper_best or {}).items():
        ax.axvline(fraction, color="grey", lw=0.8, ls=":")
        ax.text(fraction, ax.get_ylim()[0], " paper's best (%s)" % name, fontsize=7,
                rotation=90, va="bottom", color="grey")
    ax.set_xlabel("fraction of the run's epochs")
    ax.set_ylabel("validation metric")
    ax.set_xlim(0, 1.05)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("Figure 4: validation metrics per snapshot")
    return save(fig, stem)


def figure5_saliency(panels, stem):
    """Figure 5: per model, the input crops (top) and their saliency maps (below).
    panels: [(model name, images (N, C, H, W), maps (N, H, W), captions)]."""
    n = max(len(p[2]) for p in panels)
    fig, axes = plt.subplots(2 * len(panels), n, figsize=(2.2 * n, 4.6 * len(panels)),
                             squeeze=False)
    for p, (name, images, maps, captions) in enumerate(panels):
        for i in range(n):
            top, bottom = axes[2 * p][i], axes[2 * p + 1][i]
            top.axis("off")
            bottom.axis("off")
            if i >= len(maps):
                continue
            top.imshow(_grey(images[i]), cmap="gray")
            top.set_title(captions[i], fontsize=8)
            bottom.imshow(maps[i], cmap="hot")
        axes[2 * p][0].text(-0.1, 0.5, name, transform=axes[2 * p][0].transAxes, rotation=90,
                            ha="right", va="center", fontsize=9)
    fig.suptitle("Figure 5: saliency maps (|d class score / d input|, max over channels)")
    return save(fig, stem)


def filter_grid(weights, pad=1):
    """First-layer filters (N, C, kh, kw) tiled in a near-square grid, all filters scaled by one
    min/max (so their contrasts compare). Three channels are shown as colour, BGR (Caffe's
    channel order) turned to RGB; other channel counts show channel 0 in grey."""
    w = np.asarray(weights, dtype=np.float32)
    if w.ndim != 4:
        raise ValueError("filters must be (N, C, kh, kw), got shape %s" % (w.shape,))
    n, c, kh, kw = w.shape
    w = (w - w.min()) / max(float(w.max() - w.min()), 1e-12)
    tiles = w[:, ::-1].transpose(0, 2, 3, 1) if c == 3 else w[:, :1].transpose(0, 2, 3, 1)
    cols = int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / float(cols)))
    grid = np.ones((rows * (kh + pad) + pad, cols * (kw + pad) + pad, tiles.shape[3]),
                   dtype=np.float32)
    for i in range(n):
        r, col = divmod(i, cols)
        y, x = pad + r * (kh + pad), pad + col * (kw + pad)
        grid[y:y + kh, x:x + kw] = tiles[i]
    return grid if tiles.shape[3] == 3 else grid[:, :, 0]


def figure6_filters(grids, stem):
    """Figure 6: the conv1 filter grids. grids: [(model name, grid image, layer name)]."""
    fig, axes = plt.subplots(1, len(grids), figsize=(4.4 * len(grids), 4.6), squeeze=False)
    for ax, (name, grid, layer) in zip(axes[0], grids):
        ax.imshow(grid, cmap=None if grid.ndim == 3 else "gray", interpolation="nearest")
        ax.set_title("%s (%s)" % (name, layer), fontsize=9)
        ax.axis("off")
    fig.suptitle("Figure 6: first-layer filters")
    return save(fig, stem)


def roc_figure(curves, stem, title="ROC curves"):
    """ROC curves. curves: [(label, fpr, tpr, auc)]."""
    fig, ax = plt.subplots(figsize=(4.8, 4.6))
    for label, fpr, tpr, auc in curves:
        ax.plot(fpr, tpr, label="%s (AUC %s)" % (label, "%.3f" % auc if auc is not None else "-"))
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    ax.set_xlabel("false positive rate (1 - specificity)")
    ax.set_ylabel("true positive rate (recall)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(title)
    return save(fig, stem)


def scatter_figure(points, colourings, stem, title):
    """t-SNE maps: the same 2-D points coloured by each of `colourings` [(name, values)]."""
    fig, axes = plt.subplots(1, len(colourings), figsize=(4.6 * len(colourings), 4.4),
                             squeeze=False)
    for ax, (name, values) in zip(axes[0], colourings):
        values = np.asarray([str(v) if v not in (None, "") else "unknown" for v in values])
        for k, level in enumerate(sorted(set(values))):
            pick = values == level
            ax.scatter(points[pick, 0], points[pick, 1], s=12, label=level,
                       color=plt.cm.tab10(k % 10))
        ax.set_title("coloured by %s" % name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(fontsize=6, markerscale=1.2)
    fig.suptitle(title)
    return save(fig, stem)


def reliability_figure(curves, stem, title="Reliability diagram"):
    """Calibration: mean predicted p(malignant) against the fraction malignant, per bin.
    curves: [(label, bins as calibration.reliability gives them, ECE)]."""
    fig, ax = plt.subplots(figsize=(4.8, 4.6))
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":", label="perfectly calibrated")
    for label, bins, ece in curves:
        used = [b for b in bins if b["count"]]
        ax.plot([b["mean_prob"] for b in used], [b["frac_malignant"] for b in used],
                marker="o", markersize=3, label="%s (ECE %.3f)" % (label, ece))
    ax.set_xlabel("mean predicted p(malignant) in bin")
    ax.set_ylabel("fraction malignant in bin")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title(title)
    return save(fig, stem)
