"""Reliability diagram and expected calibration error of p(malignant)."""
import numpy as np
import pytest

from deepmammo.evaluate.calibration import reliability


def test_a_perfectly_calibrated_toy_has_ece_near_zero():
    rng = np.random.RandomState(0)
    probs = rng.uniform(0, 1, 200000)
    labels = (rng.uniform(0, 1, probs.size) < probs).astype(int)
    got = reliability(labels, probs)
    assert got["ece"] < 0.01 and got["mce"] < 0.02
    assert sum(b["count"] for b in got["bins"]) == probs.size
    for b in got["bins"]:
        assert b["low"] <= b["mean_prob"] <= b["high"]
        assert b["frac_malignant"] == pytest.approx(b["mean_prob"], abs=0.02)


def test_exactly_calibrated_bins_give_zero_and_an_overconfident_model_its_gap():
    # 0.25 with one malignant in four, 0.75 with three in four: calibrated exactly.
    probs = [0.25] * 4 + [0.75] * 4
    labels = [1, 0, 0, 0, 1, 1, 1, 0]
    assert reliability(labels, probs)["ece"] == pytest.approx(0.0, abs=1e-12)
    # Says 0.95 but is right half the time (6 records), 0.05 and right always (2 records).
    probs = [0.95] * 6 + [0.05] * 2
    labels = [1, 0, 1, 0, 1, 0, 0, 0]
    got = reliability(labels, probs, n_bins=10)
    assert got["ece"] == pytest.approx(6 / 8 * 0.45 + 2 / 8 * 0.05)
    assert got["mce"] == pytest.approx(0.45)
    assert got["bins"][9]["count"] == 6 and got["bins"][0]["count"] == 2
    assert got["bins"][5]["mean_prob"] is None


def test_edges_and_bad_input():
    got = reliability([1, 0], [1.0, 0.0], n_bins=4)
    assert got["bins"][3]["count"] == 1 and got["bins"][0]["count"] == 1 and got["ece"] == 0
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        reliability([1], [1.5])
    with pytest.raises(ValueError, match="differ in length"):
        reliability([1, 0], [0.5])
