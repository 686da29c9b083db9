import numpy as np
import pytest

from deepmammo.prep import augment as A
from deepmammo.prep.greylevel import GreyMapping


def marker_image():
    g = np.zeros((100, 60), np.float32)
    g[10:20, 25:35] = 255  # a block above the centre
    return g


def test_render_without_rotation_or_scaling_is_the_identity():
    g = marker_image()
    np.testing.assert_allclose(A.render(g, 0, 0, g.shape, g.shape), g, atol=1e-4)


def test_rotation_is_clockwise_about_the_centre_on_a_canvas_holding_the_whole_crop():
    g = marker_image()
    out = A.render(g, 90, 7, A.rotated_extent(100, 60, 90), (60, 100))
    ys, xs = np.nonzero(out > 128)
    # the block above the centre ends up right of the centre
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (25, 34, 80, 89)
    np.testing.assert_allclose(A.render(g, 180, 7, g.shape, g.shape), g[::-1, ::-1], atol=1e-4)


def test_rotation_corners_take_the_fill_value():
    g = np.full((50, 50), 200, np.float32)
    eh, ew = A.rotated_extent(50, 50, 45)
    assert eh == pytest.approx(50 * np.sqrt(2))
    out = A.render(g, 45, 33.5, (eh, ew), (71, 71))
    assert out[0, 0] == pytest.approx(33.5) and out[35, 35] == pytest.approx(200)


def test_shorter_side_resizing():
    assert A.shorter_side(300, 600, 224) == (224, 448)
    assert A.shorter_side(600, 300, 224) == (448, 224)
    assert A.shorter_side(100, 150, 224) == (224, 336)  # small crops are enlarged
    assert A.shorter_side(300, 301, 224, truncate=True) == (224, 224)


def test_paper_plan_5_rotations_x_5_random_crops():
    rng = np.random.default_rng(0)
    specs = A.plan_paper(300, 200, 224, rng, fill=91.0)
    assert len(specs) == 25
    angles = [s["angle"] for s in specs]
    assert len(set(angles)) == 5 and all(0 <= a < 360 for a in angles)
    for s in specs:
        assert min(s["resized_h"], s["resized_w"]) == 224 and s["fill"] == 91.0
        assert 0 <= s["offset_row"] <= s["resized_h"] - 224
        assert 0 <= s["offset_col"] <= s["resized_w"] - 224
        eh, ew = A.rotated_extent(300, 200, s["angle"])
        assert (s["window_h"], s["window_w"]) == (eh, ew)
    recs = A.realise(np.random.rand(300, 200).astype(np.float32) * 255, specs, 224)
    assert len(recs) == 25 and all(r.shape == (224, 224) and r.dtype == np.uint8 for r in recs)


def test_code_plan_original_plus_4_rotations_grey_132_centre_window():
    rng = np.random.default_rng(1)
    specs = A.plan_code(300, 200, 224, rng)
    assert len(specs) == 25
    first = specs[:5]
    assert all(s["angle"] == 0 and (s["window_h"], s["window_w"]) == (300, 200) for s in first)
    for s in specs[5:]:
        assert s["angle"] == int(s["angle"]) and s["fill"] == 132.0
        eh, ew = A.rotated_extent(300, 200, s["angle"])
        assert (s["window_h"], s["window_w"]) == (int(0.6 * eh), int(0.6 * ew))
        assert 0 <= s["offset_row"] <= max(0, s["resized_h"] - 224 - 1)


def test_eval_plan_is_one_centre_crop():
    (s,) = A.plan_eval(200, 500, 224)
    assert (s["resized_h"], s["resized_w"]) == (224, 560)
    assert (s["offset_row"], s["offset_col"]) == (0, (560 - 224) // 2)
    assert A.records_per_crop("paper", "train") == 25
    assert A.records_per_crop("paper", "val") == A.records_per_crop("none", "train") == 1


def test_grey_mappings():
    full = GreyMapping.parse("full-range")
    np.testing.assert_allclose(full.apply(np.array([[0, 4095]], np.uint16), 12), [[0, 255]])
    np.testing.assert_allclose(full.apply(np.array([[0, 65535, 32768]], np.uint16), 16),
                               [[0, 255, 32768 * 255 / 65535]], rtol=1e-6)
    # above the declared depth saturates
    assert full.apply(np.array([[5000]], np.uint16), 12)[0, 0] == 255
    win = GreyMapping.parse("window:0-100")
    np.testing.assert_allclose(win.apply(np.array([[100, 150, 200]], np.uint16), 16),
                               [[0, 127.5, 255]])
    od = GreyMapping.parse("od")
    v = od.apply(np.array([[1000, 2000, 3000]], np.uint16), 12, "LUMISYS")
    assert v[0, 0] < v[0, 1] < v[0, 2]  # higher grey level = lower density = brighter
    assert od.apply(np.array([[30000]], np.uint16), 16, "HOWTEK-MGH").shape == (1, 1)
    with pytest.raises(ValueError, match="scanner"):
        od.apply(np.array([[1]], np.uint16), 12, "unknown")
    for bad, says in (("gamma", "expected one of full-range, window, od"),
                      ("window:1", "expected window:LOW-HIGH"),
                      ("full-range:3", "full-range takes no parameters")):
        with pytest.raises(ValueError, match=f"^grey mapping '{bad}': {says}"):
            GreyMapping.parse(bad)


def test_eval_record_of_a_crop_already_at_size_is_its_centre_cut():
    rng = np.random.RandomState(0)
    raw = rng.randint(0, 4096, size=(32, 50)).astype(np.uint16)
    grey = GreyMapping().apply(raw, 12)
    (rec,) = A.realise(grey, A.plan_eval(32, 50, 32), 32)
    expected = np.clip(np.rint(raw[:, 9:41] * (255 / 4095)), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(rec, expected)


def test_squash_resize_for_the_authors_convert_imageset():
    (s,) = A.plan_eval(200, 500, 224, resize="squash")
    assert (s["resized_h"], s["resized_w"], s["offset_row"], s["offset_col"]) == (224, 224, 0, 0)
    g = np.tile(np.linspace(0, 255, 500, dtype=np.float32), (200, 1))
    (rec,) = A.realise(g, [s], 224)
    assert rec[:, 0].max() < 5 and rec[:, -1].min() > 250  # the whole width is kept
    stripes = np.zeros((200, 500), np.float32)
    stripes[::2] = 255  # one-pixel rows: the enlarged axis must not be blurred by the other's
    (rec,) = A.realise(stripes, [s], 224)
    assert rec[:, 100].std() > 60
    with pytest.raises(ValueError, match="^eval resize 'stretch': expected crop or squash$"):
        A.plan_eval(10, 10, 8, resize="stretch")
