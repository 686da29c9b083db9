"""Snapshot choice and thresholds come from validation only."""
import numpy as np
import pytest

from deepmammo.evaluate.metrics import binary_metrics
from deepmammo.evaluate.select import choose_threshold, chosen_test_entry, select_snapshot


def _entry(name, it, acc, rec):
    return {"snapshot": "/runs/x/%s" % name, "iteration": it,
            "metrics": {"accuracy": acc, "recall": rec}}


class Untouchable(dict):
    """Metrics that fail the test if anything reads them."""

    def __getitem__(self, key):
        raise AssertionError("test metrics were read during selection (%s)" % key)

    get = __getitem__


def test_selection_uses_validation_and_never_reads_test():
    val = [_entry("m_iter_10.caffemodel", 10, 0.70, 0.6),
           _entry("m_iter_20.caffemodel", 20, 0.80, 0.7),
           _entry("m_iter_30.caffemodel", 30, 0.80, 0.9),
           _entry("m_iter_40.caffemodel", 40, 0.75, 0.9)]
    test = [{"snapshot": "/elsewhere/m_iter_%d.caffemodel" % it, "iteration": it,
             "metrics": Untouchable()} for it in (10, 20, 30, 40)]
    chosen, test_entry = chosen_test_entry(val, test)
    assert chosen["iteration"] == 30  # accuracy ties, recall decides
    assert test_entry["iteration"] == 30


def test_ties_go_to_the_earliest_snapshot_and_missing_test_is_an_error():
    val = [_entry("a_iter_20.caffemodel", 20, 0.8, 0.8), _entry("a_iter_10.caffemodel", 10, 0.8, 0.8)]
    assert select_snapshot(val)["iteration"] == 10
    with pytest.raises(ValueError, match="no test result"):
        chosen_test_entry(val, [])
    with pytest.raises(ValueError, match="no validation"):
        select_snapshot([])


def test_threshold_fitted_on_validation_improves_it_and_is_applied_unchanged():
    rng = np.random.RandomState(0)
    labels = rng.randint(0, 2, 300)
    # A net biased towards benign: every probability too low by 0.25.
    probs = np.clip(0.5 * labels + rng.rand(300) * 0.5 - 0.25, 0, 1)
    t = choose_threshold(labels, probs)
    assert t < 0.5
    at_argmax = binary_metrics(labels, probs)
    at_t = binary_metrics(labels, probs, threshold=t)
    assert at_t["recall"] + at_t["specificity"] >= at_argmax["recall"] + at_argmax["specificity"]
    # Applied unchanged to a new set: the decisions are probs >= t.
    test_probs = np.array([t - 1e-9, t, t + 0.1])
    assert binary_metrics([0, 1, 1], test_probs, threshold=t)["accuracy"] == 1.0


def test_threshold_stays_at_argmax_when_nothing_is_gained():
    labels = np.array([0, 0, 1, 1])
    probs = np.array([0.1, 0.2, 0.8, 0.9])
    assert choose_threshold(labels, probs) == 0.5
    with pytest.raises(ValueError, match="criterion"):
        choose_threshold(labels, probs, criterion="magic")


def test_an_unknown_selection_metric_is_an_error_not_a_silent_default():
    from deepmammo.evaluate.select import select_snapshot
    entries = [{"snapshot": "a_iter_1.caffemodel", "iteration": 1, "metrics": {"accuracy": 0.5}}]
    with pytest.raises(ValueError, match="unknown selection metric auc"):
        select_snapshot(entries, ("auc",))
