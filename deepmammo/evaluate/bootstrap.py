"""Bootstrap 95% intervals resampled by patient.

Records of one patient (both views, both breasts, several masses) are not independent, so the
unit of resampling is the patient: each replicate draws patients with replacement and takes all
their records. Percentile intervals; deterministic for a given seed.
"""
import numpy as np

from deepmammo.evaluate.metrics import METRIC_NAMES, binary_metrics


def patient_groups(patients):
    """Row indices of each patient, in first-seen order."""
    patients = np.asarray(patients).astype(str)
    _, first, inverse = np.unique(patients, return_index=True, return_inverse=True)
    order = np.argsort(first)  # unique() sorts by name; keep the data's order instead
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    inverse = rank[inverse.ravel()]
    return [np.nonzero(inverse == g)[0] for g in range(order.size)]


def bootstrap_ci(labels, probs, patients, threshold=None, preds=None, n_boot=1000, seed=0,
                 level=0.95, metrics=METRIC_NAMES):
    """{metric: [low, high]} percentile intervals over `n_boot` patient-level replicates.

    A replicate where a metric is undefined (e.g. ROC AUC with one class) is left out for that
    metric; an interval is None when every replicate left it out.
    """
    labels = np.asarray(labels).astype(np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    preds = None if preds is None else np.asarray(preds).astype(np.int64)
    groups = patient_groups(patients)
    if not groups:
        raise ValueError("no records to bootstrap")
    rng = np.random.default_rng(seed)
    values = {m: [] for m in metrics}
    for _ in range(n_boot):
        pick = rng.integers(0, len(groups), size=len(groups))
        rows = np.concatenate([groups[g] for g in pick])
        m = binary_metrics(labels[rows], probs[rows], threshold=threshold,
                           preds=None if preds is None else preds[rows])
        for name in metrics:
            if m[name] is not None:
                values[name].append(m[name])
    tail = (1.0 - level) / 2.0 * 100.0
    out = {}
    for name in metrics:
        v = np.asarray(values[name], dtype=np.float64)
        out[name] = None if v.size == 0 else [float(np.percentile(v, tail)),
                                              float(np.percentile(v, 100.0 - tail))]
    return out
