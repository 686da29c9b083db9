import csv
import json
import os

import numpy as np
import pytest
from PIL import Image
from worlds import case_row, ellipse, make_archive, write_cases, write_mask, write_png16

from deepmammo.cli import main as cli_main
from deepmammo.prep import crops as C
from deepmammo.prep.images import read_grey


def test_fixed_padding_adds_50_on_every_side():
    pad = C.Padding.parse("fixed:50")
    assert C.wanted_box((100, 200, 130, 260), pad) == (50, 150, 180, 310)


@pytest.mark.parametrize("bbox,expected", [
    ((100, 200, 140, 260), (80, 170, 160, 290)),   # 40 x 60 -> 80 x 120, centred
    ((100, 200, 141, 261), (80, 170, 162, 292)),   # odd: exactly twice, extra pixel after
])
def test_proportional_padding_doubles_the_box_about_its_centre(bbox, expected):
    box = C.wanted_box(bbox, C.Padding.parse("proportional:2"))
    assert box == expected
    assert box[2] - box[0] == 2 * (bbox[2] - bbox[0])
    assert box[3] - box[1] == 2 * (bbox[3] - bbox[1])


def test_clipping_at_the_border_is_recorded_per_side():
    box, cut = C.clip_box((-20, 30, 90, 140), (80, 120))
    assert box == (0, 30, 80, 120)
    assert cut == (20, 0, 10, 20)


def test_bad_padding_is_rejected():
    for text, says in (("fixed", "expected fixed:N or proportional:K"),
                       ("fixed:-1", "a whole number of pixels >= 0"),
                       ("proportional:0.5", "a factor >= 1"),
                       ("square:2", "expected fixed:N or proportional:K")):
        with pytest.raises(ValueError, match=f"^padding '?{text}.*{says}"):
            C.Padding.parse(text)


def test_mask_bbox_is_half_open_and_none_for_empty():
    m = np.zeros((10, 10), bool)
    assert C.mask_bbox(m) is None
    m[2:5, 3:8] = True
    assert C.mask_bbox(m) == (2, 3, 5, 8)


def test_crops_keep_source_bits_and_match_the_image(tmp_path):
    cases = make_archive(str(tmp_path / "arch"), n_patients=8)
    out = tmp_path / "crops"
    summary = C.build_crops(cases, str(out), padding="proportional:2", workers=2)
    rows = C.read_crops(str(out))
    assert summary["crops"] == len(rows) > 8 and summary["skipped"] == 0
    with open(cases) as f:
        by_case = {(r["case_id"], r["abnormality_id"]): r for r in csv.DictReader(f)}
    clipped = 0
    for r in rows:
        src = by_case[(r["case_id"], r["abnormality_id"])]
        image = read_grey(os.path.join(tmp_path, "arch", src["image"]))
        crop = read_grey(r["path"])
        assert crop.dtype == np.uint16
        r0, c0, r1, c1 = map(int, r["crop_box"].split(","))
        np.testing.assert_array_equal(crop, image[r0:r1, c0:c1])
        w0, wc0, w1, wc1 = map(int, r["wanted_box"].split(","))
        assert int(r["clip_top"]) == r0 - w0 and int(r["clip_right"]) == wc1 - c1
        assert r["mask_bbox"] == src["bbox"]
        clipped += any(int(r[k]) for k in ("clip_top", "clip_left", "clip_bottom", "clip_right"))
    assert clipped > 0  # the synthetic masses come near the border
    meta = json.loads((out / "crops.json").read_text())
    assert meta["config"]["padding"] == "proportional:2"
    assert not os.path.exists(str(out) + ".partial")


def test_bad_cases_are_reported_and_skipped(tmp_path):
    root = tmp_path / "arch"
    (root / "images").mkdir(parents=True)
    shape = (60, 50)
    img = np.full(shape, 1000, np.uint16)
    write_png16(root / "images" / "a.png", img)
    good = ellipse(shape, (30, 25), (6, 5))
    write_mask(root / "images" / "good.png", good)
    write_mask(root / "images" / "empty.png", np.zeros(shape, bool))
    write_mask(root / "images" / "big.png", np.ones((70, 50), bool))
    rows = [
        case_row("A_1", "P1", "LEFT", "CC", 1, "images/a.png", "images/good.png", 1, 12, shape,
                 (24, 20, 37, 31)),
        case_row("A_2", "P1", "LEFT", "CC", 2, "images/a.png", "images/empty.png", 1, 12, shape,
                 (0, 0, 0, 0)),
        case_row("A_3", "P1", "LEFT", "CC", 3, "images/a.png", "images/big.png", 1, 12, shape,
                 (0, 0, 70, 50)),
        case_row("B_1", "P2", "LEFT", "CC", 1, "images/missing.png", "images/good.png", 0, 12,
                 shape, (24, 20, 37, 31)),
    ]
    write_cases(root / "cases.csv", rows)
    out = tmp_path / "crops"
    assert cli_main(["crops", str(root / "cases.csv"), "--out", str(out), "--workers", "1"]) == 0
    assert len(C.read_crops(str(out))) == 1
    with open(out / "skipped.csv") as f:
        skipped = {(r["case_id"], r["abnormality_id"]): r["reason"] for r in csv.DictReader(f)}
    assert "empty" in skipped[("A_2", "2")]
    assert "(70, 50)" in skipped[("A_3", "3")] and "big.png" in skipped[("A_3", "3")]
    assert "missing.png" in skipped[("B_1", "1")]
    assert json.loads((out / "crops.json").read_text())["summary"]["skipped"] == 3


def test_unfinished_build_resumes_with_same_settings_and_restarts_otherwise(tmp_path):
    cases = make_archive(str(tmp_path / "arch"), n_patients=4)
    out = str(tmp_path / "crops")
    C.build_crops(cases, out, padding="fixed:50", workers=1)
    first = C.read_crops(out)
    # Pretend a run with the same settings died after writing the crops (sidecars kept).
    partial = out + ".partial"
    os.makedirs(os.path.join(partial, "images"))
    cfg = {"padding": "fixed:50", "edge": "clip", "cases_sha1": C.file_sha1(cases)}
    with open(os.path.join(partial, "config.json"), "w") as f:
        json.dump(cfg, f)
    marker = np.full((3, 3), 7, np.uint16)
    c0 = first[0]
    same_image = [c for c in first  # every crop of c0's image (case ids are IMAGE_<abnormality>)
                  if c["case_id"].rsplit("_", 1)[0] == c0["case_id"].rsplit("_", 1)[0]]
    for c in same_image:
        write_png16(os.path.join(partial, "images", c["crop_id"] + ".png"), marker)
        with open(os.path.join(partial, "images", c["crop_id"] + ".json"), "w") as f:
            json.dump({k: c[k] for k in C.CROP_COLUMNS}, f)
    C.build_crops(cases, out, padding="fixed:50", workers=1)
    resumed = read_grey(os.path.join(out, "images", c0["crop_id"] + ".png"))
    np.testing.assert_array_equal(resumed, marker)  # taken from the partial build, not redone
    assert len(C.read_crops(out)) == len(first)
    # Other settings: the partial folder is discarded and everything recomputed.
    os.makedirs(os.path.join(partial, "images"))
    write_png16(os.path.join(partial, "images", c0["crop_id"] + ".png"), marker)
    with open(os.path.join(partial, "config.json"), "w") as f:
        json.dump({**cfg, "padding": "proportional:2"}, f)
    C.build_crops(cases, out, padding="fixed:50", workers=1)
    again = read_grey(os.path.join(out, "images", c0["crop_id"] + ".png"))
    assert again.shape != (3, 3)
    assert not os.path.exists(partial)


def test_edge_code_trims_saturated_border_columns(tmp_path):
    root = tmp_path / "arch"
    (root / "images").mkdir(parents=True)
    shape = (80, 80)
    img = np.full(shape, 500, np.uint16)
    img[:, :6] = 4095  # a white scanner border on the left
    write_png16(root / "images" / "a.png", img)
    m = ellipse(shape, (40, 20), (5, 5))
    write_mask(root / "images" / "m.png", m)
    write_cases(root / "cases.csv", [case_row("A", "P1", "LEFT", "CC", 1, "images/a.png",
                                              "images/m.png", 0, 12, shape, (35, 15, 46, 26))])
    plain = C.read_crops(str(tmp_path / "c1")) if C.build_crops(
        str(root / "cases.csv"), str(tmp_path / "c1"), "fixed:50", workers=1) else None
    coded = C.read_crops(str(tmp_path / "c2")) if C.build_crops(
        str(root / "cases.csv"), str(tmp_path / "c2"), "fixed:50", edge="code",
        workers=1) else None
    assert plain[0]["crop_box"].split(",")[1] == "0" and plain[0]["trim_left"] == "0"
    assert coded[0]["crop_box"].split(",")[1] == "6" and coded[0]["trim_left"] == "6"
    assert Image.open(coded[0]["path"]).size[0] == plain[0]["width"] - 6
