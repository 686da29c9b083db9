"""Past the paper: ensembles, CC + MLO fusion, t-SNE."""
import numpy as np
import pytest

from deepmammo.report.beyond import ensemble, fuse_views, tsne


def _rows(probs, labels, prefix="r"):
    return [{"key": "%s%d" % (prefix, i), "patient_id": "P%d" % (i // 2), "label": l,
             "prob_malignant": p, "crop_id": "c%d" % i} for i, (p, l) in
            enumerate(zip(probs, labels))]


def test_ensemble_averages_probabilities_by_key():
    a = _rows([0.2, 0.9, 0.6], [0, 1, 1])
    b = list(reversed(_rows([0.4, 0.5, 0.2], [0, 1, 1])))  # same records, other order
    out = {r["key"]: r for r in ensemble([a, b], ["a", "b"])}
    assert out["r0"]["prob_malignant"] == pytest.approx(0.3)
    assert out["r1"]["pred"] == 1 and out["r2"]["pred"] == 0  # mean 0.4 -> benign
    with pytest.raises(ValueError, match="other records"):
        ensemble([a, a[:2]], ["a", "short"])
    with pytest.raises(ValueError, match="different labels"):
        ensemble([a, _rows([0.2, 0.9, 0.6], [1, 1, 1])])
    with pytest.raises(ValueError, match="at least two"):
        ensemble([a])


def test_fusion_scores_a_mass_by_its_two_views():
    rows = _rows([0.4, 0.8, 0.3, 0.1, 0.7], [1, 1, 0, 0, 1])
    crops = {"c0": {"side": "LEFT", "view": "CC", "abnormality_id": "1"},
             "c1": {"side": "LEFT", "view": "MLO", "abnormality_id": "1"},
             "c2": {"side": "RIGHT", "view": "CC", "abnormality_id": "1"},
             "c3": {"side": "RIGHT", "view": "MLO", "abnormality_id": "1"},
             "c4": {"side": "LEFT", "view": "CC", "abnormality_id": "2"}}
    fused, counts = fuse_views(rows, crops)
    assert counts == {"masses": 3, "both_views": 2, "single_view": 1, "crops": 5}
    by_key = {r["key"]: r for r in fused}
    assert by_key["P0|LEFT|1"]["prob_malignant"] == pytest.approx(0.6)
    assert by_key["P0|LEFT|1"]["views"] == "CC+MLO" and by_key["P0|LEFT|1"]["pred"] == 1
    assert by_key["P2|LEFT|2"]["views"] == "CC"
    with pytest.raises(ValueError, match="not in the crops table"):
        fuse_views(rows, {})


def test_tsne_separates_clusters_and_is_deterministic():
    rng = np.random.RandomState(0)
    a = rng.randn(30, 20)
    b = rng.randn(30, 20) + 8.0
    y = tsne(np.vstack([a, b]), perplexity=10, seed=1)
    assert y.shape == (60, 2)
    ca, cb = y[:30].mean(axis=0), y[30:].mean(axis=0)
    spread = max(np.linalg.norm(y[:30] - ca, axis=1).mean(),
                 np.linalg.norm(y[30:] - cb, axis=1).mean())
    assert np.linalg.norm(ca - cb) > 2 * spread
    np.testing.assert_array_equal(y, tsne(np.vstack([a, b]), perplexity=10,
                                          seed=1))
    with pytest.raises(ValueError, match="at least 5"):
        tsne(np.zeros((3, 4)))


def test_crops_get_shape_and_margins_from_the_cases_table(tmp_path):
    import json

    from deepmammo.report.beyond import read_crops
    (tmp_path / "cases.csv").write_text("case_id,patient_id,shape,margins\n"
                                        "A_1,A,OVAL,CIRCUMSCRIBED\nB_1,B,IRREGULAR,SPICULATED\n")
    crops_dir = tmp_path / "crops"
    crops_dir.mkdir()
    (crops_dir / "crops.csv").write_text("crop_id,case_id,patient_id\ncA,A_1,A\ncB,B_1,B\n")
    # crops.json records its input as the crops command saw it: relative to where it ran.
    (crops_dir / "crops.json").write_text(json.dumps({"inputs": {"cases.csv": "0" * 40}}))
    crops = read_crops(str(crops_dir / "crops.csv"))
    assert crops["cB"]["shape"] == "IRREGULAR" and crops["cA"]["margins"] == "CIRCUMSCRIBED"
    with pytest.raises(FileNotFoundError, match="crops table not found"):
        read_crops(str(tmp_path / "nope.csv"))
