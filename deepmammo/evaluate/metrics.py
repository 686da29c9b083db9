"""Binary classification metrics with malignant (label 1) as the positive class.

The paper reports accuracy, precision and recall at the network's argmax decision; we add
specificity, F1, ROC AUC, PR AUC (average precision) and the confusion matrix. Definitions
follow scikit-learn's (the tests compare against it), written here in numpy because
scikit-learn is a test dependency only.
"""
import numpy as np

# The metrics a table or bootstrap may ask for, in the order reports show them.
METRIC_NAMES = ("accuracy", "precision", "recall", "specificity", "f1", "roc_auc", "pr_auc")


def _as_arrays(labels, probs):
    labels = np.asarray(labels).astype(np.int64).ravel()
    probs = np.asarray(probs, dtype=np.float64).ravel()
    if labels.shape != probs.shape:
        raise ValueError("labels and probabilities differ in length: %d vs %d"
                         % (labels.size, probs.size))
    bad = set(np.unique(labels)) - {0, 1}
    if bad:
        raise ValueError("labels must be 0 (benign) or 1 (malignant), got %s" % sorted(bad))
    return labels, probs


def decisions(probs, threshold=None):
    """Predicted labels: argmax of a two-way softmax (malignant iff p > 0.5, a tie goes to
    benign as numpy's argmax picks the first class) or, with a threshold, p >= threshold."""
    probs = np.asarray(probs, dtype=np.float64)
    if threshold is None:
        return (probs > 0.5).astype(np.int64)
    return (probs >= threshold).astype(np.int64)


def confusion(labels, preds):
    """(tn, fp, fn, tp) as ints."""
    labels = np.asarray(labels).astype(np.int64)
    preds = np.asarray(preds).astype(np.int64)
    tp = int(np.sum((labels == 1) & (preds == 1)))
    tn = int(np.sum((labels == 0) & (preds == 0)))
    fp = int(np.sum((labels == 0) & (preds == 1)))
    fn = int(np.sum((labels == 1) & (preds == 0)))
    return tn, fp, fn, tp


def _ratio(num, den):
    # scikit-learn's zero_division default: an undefined ratio counts as 0.
    return float(num) / den if den else 0.0


def _ranked_counts(labels, probs):
    """Cumulative true and false positives at each distinct score, highest score first."""
    order = np.argsort(-probs, kind="mergesort")
    scores = probs[order]
    hits = labels[order]
    # The last index of each run of equal scores: ties enter the curve together.
    last = np.r_[np.nonzero(np.diff(scores))[0], scores.size - 1]
    tps = np.cumsum(hits)[last]
    fps = (last + 1) - tps
    return tps.astype(np.float64), fps.astype(np.float64), scores[last]


def roc_curve(labels, probs):
    """False and true positive rates and thresholds, starting at (0, 0) (threshold +inf)."""
    labels, probs = _as_arrays(labels, probs)
    tps, fps, thr = _ranked_counts(labels, probs)
    npos, nneg = tps[-1] if tps.size else 0, fps[-1] if fps.size else 0
    fpr = np.r_[0.0, fps / nneg] if nneg else np.r_[0.0, np.full(fps.size, np.nan)]
    tpr = np.r_[0.0, tps / npos] if npos else np.r_[0.0, np.full(tps.size, np.nan)]
    return fpr, tpr, np.r_[np.inf, thr]


def roc_auc(labels, probs):
    """Area under the ROC curve (trapezoids, ties halved); None when one class is absent."""
    labels, probs = _as_arrays(labels, probs)
    if np.unique(labels).size < 2:
        return None
    fpr, tpr, _ = roc_curve(labels, probs)
    return float(np.trapezoid(tpr, fpr)) if hasattr(np, "trapezoid") else float(np.trapz(tpr, fpr))


def average_precision(labels, probs):
    """PR AUC as average precision: sum over score levels of (R_n - R_{n-1}) * P_n, the step
    interpolation scikit-learn uses (no trapezoids, which overstate it). None without positives."""
    labels, probs = _as_arrays(labels, probs)
    if labels.sum() == 0:
        return None
    tps, fps, _ = _ranked_counts(labels, probs)
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def binary_metrics(labels, probs, threshold=None, preds=None):
    """Every metric of one set of predictions.

    probs: malignant probability per record. Decisions are `preds` when given (the argmax the
    network made), else `decisions(probs, threshold)`.
    """
    labels, probs = _as_arrays(labels, probs)
    if preds is None:
        preds = decisions(probs, threshold)
    tn, fp, fn, tp = confusion(labels, preds)
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    return {
        "n": int(labels.size),
        "n_malignant": int(labels.sum()),
        "n_benign": int(labels.size - labels.sum()),
        "threshold": None if threshold is None else float(threshold),
        "accuracy": _ratio(tp + tn, labels.size),
        "precision": precision,
        "recall": recall,
        "specificity": _ratio(tn, tn + fp),
        "f1": _ratio(2 * precision * recall, precision + recall),
        "roc_auc": roc_auc(labels, probs),
        "pr_auc": average_precision(labels, probs),
        # scikit-learn's layout: rows are the true class, columns the prediction (benign first).
        "confusion": [[tn, fp], [fn, tp]],
    }
