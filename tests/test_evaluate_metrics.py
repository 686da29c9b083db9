"""Our metrics equal scikit-learn's on the same predictions (scikit-learn is test-only)."""
import numpy as np
import pytest
from sklearn import metrics as skm

from deepmammo.evaluate.metrics import (
    average_precision,
    binary_metrics,
    decisions,
    roc_auc,
    roc_curve,
)


def _cases():
    rng = np.random.RandomState(7)
    labels = rng.randint(0, 2, 200)
    probs = np.clip(0.35 * labels + rng.rand(200) * 0.65, 0, 1)
    yield labels, probs
    # Heavy ties: scores rounded to one decimal.
    yield labels, np.round(probs, 1)
    # Perfect and inverted rankers, tiny set.
    yield np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9])
    yield np.array([0, 0, 1, 1]), np.array([0.9, 0.8, 0.2, 0.1])
    # All predicted benign: precision undefined, sklearn's zero_division gives 0.
    yield np.array([0, 1, 1, 0, 1]), np.array([0.1, 0.2, 0.3, 0.4, 0.45])


@pytest.mark.parametrize("labels,probs", list(_cases()))
def test_metrics_equal_scikit_learn(labels, probs):
    m = binary_metrics(labels, probs)
    preds = (probs > 0.5).astype(int)
    zd = {"zero_division": 0}
    assert m["n"] == len(labels)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(labels, preds))
    assert m["precision"] == pytest.approx(skm.precision_score(labels, preds, **zd))
    assert m["recall"] == pytest.approx(skm.recall_score(labels, preds, **zd))
    assert m["specificity"] == pytest.approx(
        skm.recall_score(labels, preds, pos_label=0, **zd))
    assert m["f1"] == pytest.approx(skm.f1_score(labels, preds, **zd))
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(labels, probs), abs=1e-12)
    assert m["pr_auc"] == pytest.approx(skm.average_precision_score(labels, probs), abs=1e-12)
    assert m["confusion"] == skm.confusion_matrix(labels, preds, labels=[0, 1]).tolist()


def test_roc_curve_points_match_scikit_learn():
    rng = np.random.RandomState(3)
    labels = rng.randint(0, 2, 50)
    probs = np.round(rng.rand(50), 1)
    fpr, tpr, thr = roc_curve(labels, probs)
    sfpr, stpr, _ = skm.roc_curve(labels, probs, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sfpr)
    np.testing.assert_allclose(tpr, stpr)


def test_threshold_and_argmax_rules():
    probs = np.array([0.2, 0.5, 0.5000001, 0.9])
    # argmax of a two-way softmax: a tie at 0.5 goes to benign (class 0 comes first).
    assert decisions(probs).tolist() == [0, 0, 1, 1]
    assert decisions(probs, threshold=0.5).tolist() == [0, 1, 1, 1]
    m = binary_metrics([0, 0, 1, 1], probs, threshold=0.3)
    assert m["threshold"] == 0.3 and m["confusion"] == [[1, 1], [0, 2]]


def test_given_decisions_override_probabilities():
    m = binary_metrics([0, 1], [0.9, 0.1], preds=[0, 1])
    assert m["accuracy"] == 1.0


def test_undefined_aucs_and_bad_labels():
    assert roc_auc([1, 1, 1], [0.2, 0.3, 0.4]) is None
    assert average_precision([0, 0], [0.2, 0.3]) is None
    with pytest.raises(ValueError, match="0 .benign. or 1"):
        binary_metrics([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="differ in length"):
        binary_metrics([0, 1], [0.1])
