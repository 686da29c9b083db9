"""Choices made on validation only: which snapshot a table reports, and an optional decision
threshold. The test set is read only after the choice, for the chosen snapshot alone."""
import numpy as np

from deepmammo.evaluate.metrics import METRIC_NAMES, binary_metrics

# What the paper looks at when it picks a snapshot (section 5.4): accuracy, then recall (the
# metric it values most for screening), then the earlier snapshot (less training, same result).
DEFAULT_CRITERIA = ("accuracy", "recall")


def select_snapshot(val_entries, criteria=DEFAULT_CRITERIA):
    """The validation entry to report: the best by `criteria` in order, ties to the earliest
    iteration. Entries are results.json snapshot records ({"snapshot", "iteration", "metrics"})."""
    entries = list(val_entries)
    if not entries:
        raise ValueError("no validation results to select a snapshot from")
    unknown = [c for c in criteria if c not in METRIC_NAMES]
    if unknown:
        raise ValueError(f"unknown selection metric {', '.join(unknown)} "
                         f"(one of {', '.join(METRIC_NAMES)})")

    def key(entry):
        m = entry["metrics"]
        scores = tuple(-(m[c] if m.get(c) is not None else -np.inf) for c in criteria)
        return scores + (entry.get("iteration") or 0,)

    return min(entries, key=key)


def snapshot_id(entry):
    """How snapshots are matched across the validation and test results: the file's name."""
    return entry["snapshot"].replace("\\", "/").rsplit("/", 1)[-1]


def chosen_test_entry(val_entries, test_entries, criteria=DEFAULT_CRITERIA):
    """(validation entry, test entry) for the snapshot chosen on validation.

    The test entries are only searched by name after the choice; their metrics are never read.
    """
    chosen = select_snapshot(val_entries, criteria)
    want = snapshot_id(chosen)
    for entry in test_entries:
        if snapshot_id(entry) == want:
            return chosen, entry
    raise ValueError("snapshot %s chosen on validation has no test result" % want)


def choose_threshold(labels, probs, criterion="youden"):
    """A decision threshold on the malignant probability, fitted on validation.

    Candidates are the midpoints between consecutive distinct scores (so a test score equal to a
    validation score is not decided by rounding) plus 0.5, the argmax rule. `youden` maximises
    sensitivity + specificity - 1; `accuracy` maximises accuracy. Ties go to the candidate nearest
    0.5, so the threshold moves away from the paper's rule only when it gains something.
    """
    labels = np.asarray(labels).astype(np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    if criterion not in ("youden", "accuracy"):
        raise ValueError("unknown threshold criterion %r (youden or accuracy)" % criterion)
    levels = np.unique(probs)
    candidates = np.unique(np.r_[0.5, (levels[1:] + levels[:-1]) / 2.0,
                                 levels[0] - 1e-6 if levels.size else 0.0, np.inf])

    def score(t):
        m = binary_metrics(labels, probs, threshold=t)
        if criterion == "youden":
            return m["recall"] + m["specificity"] - 1.0
        return m["accuracy"]

    scored = [(-score(t), abs(t - 0.5), t) for t in candidates]
    best = min(scored)[2]
    return float(best)
