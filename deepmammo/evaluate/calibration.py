"""How far a model's probabilities can be taken at their word: the reliability diagram and the
expected calibration error (ECE) of the malignant probability.

The records are put into equal-width bins of p(malignant) over [0, 1] (10 by default; p = 1
falls in the last bin). Per bin: the record count, the mean predicted probability and the
fraction that is malignant; a calibrated model has the two equal in every bin. ECE is the mean
gap weighted by the share of records in each bin; MCE is the largest gap of a non-empty bin.

This is the reliability of the positive class (the curve scikit-learn's calibration_curve
draws, binned uniformly), not the top-label confidence: for a two-class screen the question is
whether "p = 0.8 malignant" means malignant 8 times in 10.
"""
import numpy as np

DEFAULT_BINS = 10


def reliability(labels, probs, n_bins=DEFAULT_BINS):
    """{n_bins, ece, mce, bins: [{low, high, count, mean_prob, frac_malignant}]}; bins without
    records have None for the means and do not count in ECE or MCE."""
    labels = np.asarray(labels).astype(np.float64).ravel()
    probs = np.asarray(probs, dtype=np.float64).ravel()
    if labels.shape != probs.shape:
        raise ValueError("labels and probabilities differ in length: %d vs %d"
                         % (labels.size, probs.size))
    if labels.size == 0:
        raise ValueError("no records to calibrate")
    if n_bins < 1:
        raise ValueError("need at least one bin, got %d" % n_bins)
    if not np.all(np.isfinite(probs)) or np.any((probs < -1e-6) | (probs > 1 + 1e-6)):
        raise ValueError("probabilities must lie in [0, 1]")
    probs = np.clip(probs, 0.0, 1.0)  # float32 softmax can overshoot 1 by a rounding step
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.searchsorted(edges, probs, side="right") - 1, 0, n_bins - 1)
    bins, ece, mce = [], 0.0, 0.0
    for b in range(n_bins):
        pick = which == b
        count = int(pick.sum())
        entry = {"low": float(edges[b]), "high": float(edges[b + 1]), "count": count,
                 "mean_prob": None, "frac_malignant": None}
        if count:
            entry["mean_prob"] = float(probs[pick].mean())
            entry["frac_malignant"] = float(labels[pick].mean())
            gap = abs(entry["frac_malignant"] - entry["mean_prob"])
            ece += count / float(labels.size) * gap
            mce = max(mce, gap)
        bins.append(entry)
    return {"n_bins": int(n_bins), "ece": float(ece), "mce": float(mce), "bins": bins}


def rows_reliability(rows, n_bins=DEFAULT_BINS):
    """reliability() of prediction rows (as predict.read_predictions gives them)."""
    return reliability([r["label"] for r in rows], [r["prob_malignant"] for r in rows], n_bins)
