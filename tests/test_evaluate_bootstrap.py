"""Patient-level bootstrap: deterministic per seed, contains the point estimate."""
import numpy as np
import pytest

from deepmammo.evaluate.bootstrap import bootstrap_ci, patient_groups
from deepmammo.evaluate.metrics import binary_metrics


def _predictions(seed=0, patients=60):
    rng = np.random.RandomState(seed)
    pid, labels, probs = [], [], []
    for p in range(patients):
        label = p % 2
        for _ in range(rng.randint(1, 4)):  # several views/masses per patient
            pid.append("P%03d" % p)
            labels.append(label)
            probs.append(np.clip(0.3 * label + 0.35 + rng.randn() * 0.2, 0, 1))
    return np.array(labels), np.array(probs), pid


def test_deterministic_per_seed_and_differs_across_seeds():
    labels, probs, pid = _predictions()
    a = bootstrap_ci(labels, probs, pid, n_boot=300, seed=5)
    b = bootstrap_ci(labels, probs, pid, n_boot=300, seed=5)
    c = bootstrap_ci(labels, probs, pid, n_boot=300, seed=6)
    assert a == b
    assert a != c


def test_intervals_contain_point_estimates():
    labels, probs, pid = _predictions()
    point = binary_metrics(labels, probs)
    ci = bootstrap_ci(labels, probs, pid, n_boot=500, seed=1)
    for name, (low, high) in ci.items():
        assert low <= point[name] <= high, name
        assert low < high, name


def test_resamples_whole_patients():
    # Two patients, one record each class-homogeneous: every replicate holds 2 patients' records,
    # so the record count of a replicate is always a sum of patient sizes.
    groups = patient_groups(["b", "a", "b", "c", "a"])
    assert [g.tolist() for g in groups] == [[0, 2], [1, 4], [3]]
    # One patient with all positives and one with all negatives: a replicate has one class with
    # probability 1/2, so ROC AUC is undefined there and left out, never an error.
    ci = bootstrap_ci([1, 1, 0, 0], [0.9, 0.8, 0.1, 0.2], ["x", "x", "y", "y"], n_boot=50)
    assert ci["roc_auc"] == [1.0, 1.0]


def test_empty_input_is_an_error():
    with pytest.raises(ValueError, match="no records"):
        bootstrap_ci([], [], [])
