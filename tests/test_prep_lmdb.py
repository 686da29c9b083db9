import csv
import json
import os

import numpy as np
import pytest
from worlds import make_archive

from deepmammo.caffe.formats.binaryproto import read_mean
from deepmammo.caffe.formats.datum import datum_to_array
from deepmammo.caffe.formats.lmdb_io import LMDBReader
from deepmammo.cli import main as cli_main
from deepmammo.prep import build as B
from deepmammo.prep.crops import build_crops, read_crops
from deepmammo.prep.greylevel import GreyMapping
from deepmammo.prep.split import make_split, read_split, write_split

SIZE = 32  # small records keep the tests fast; the geometry is the same at 224


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("prep")
    cases = make_archive(str(root / "arch"), n_patients=30, seed=7)
    crops_dir = str(root / "crops")
    build_crops(cases, crops_dir, "proportional:2", workers=2)
    crops = read_crops(crops_dir)
    splits = str(root / "splits.csv")
    write_split(crops, make_split(crops, seed=1), splits, {"seed": 1})
    return root, crops_dir, splits


@pytest.fixture(scope="module")
def paper_build(dataset):
    root, crops_dir, splits = dataset
    out = str(root / "paper")
    record = B.build_lmdbs(crops_dir, splits, out, augment="paper", seed=5, size=SIZE,
                           workers=2)
    return out, record


def read_records(path):
    with LMDBReader(path) as db:
        return [(k.decode(), d.label, datum_to_array(d)) for k, d in
                ((k.encode(), d) for k, d in db.datums())]


def read_manifest(out):
    with open(os.path.join(out, "manifest.csv")) as f:
        return list(csv.DictReader(f))


def test_paper_build_has_25_records_per_training_crop(dataset, paper_build):
    _, crops_dir, splits = dataset
    out, record = paper_build
    assignment = read_split(splits)
    crops = {c["crop_id"]: c for c in read_crops(crops_dir)}
    n = {s: sum(v == s for v in assignment.values()) for s in ("train", "val", "test")}
    manifest = read_manifest(out)
    for split in ("train", "val", "test"):
        recs = read_records(os.path.join(out, f"{split}_lmdb"))
        per = 25 if split == "train" else 1
        assert len(recs) == per * n[split] == record["counts"][split]["records"]
        rows = {r["key"]: r for r in manifest if r["split"] == split}
        assert sorted(rows) == [k for k, _, _ in recs]  # manifest lists every record
        for key, label, arr in recs:
            row = rows[key]
            assert arr.shape == (3, SIZE, SIZE) and arr.dtype == np.uint8
            assert (arr[0] == arr[1]).all() and (arr[1] == arr[2]).all()
            assert label == crops[row["crop_id"]]["label"] == int(row["label"])
    train = [r for r in manifest if r["split"] == "train"]
    by_crop = {}
    for r in train:
        by_crop.setdefault(r["crop_id"], []).append(r)
    for rows in by_crop.values():
        assert len(rows) == 25
        angles = {float(r["angle"]) for r in rows}
        assert len(angles) == 5 and all(0 <= a < 360 for a in angles)
        for r in rows:
            assert min(int(r["resized_h"]), int(r["resized_w"])) == SIZE
            assert 0 <= int(r["offset_row"]) <= int(r["resized_h"]) - SIZE
            assert 0 <= int(r["offset_col"]) <= int(r["resized_w"]) - SIZE
    # keys: %08d_<name>, a shuffled order (not crop by crop)
    keys = [r["key"] for r in train]
    assert all(k[:8].isdigit() and k[8] == "_" for k in keys)
    assert sorted(int(k[:8]) for k in keys) == list(range(len(keys)))
    first = [r["crop_id"] for r in sorted(train, key=lambda r: r["key"])[:25]]
    assert len(set(first)) > 5
    for r in manifest:
        if r["split"] != "train":
            assert float(r["angle"]) == 0
            assert int(r["offset_row"]) == (int(r["resized_h"]) - SIZE) // 2


def test_mean_file_is_the_mean_of_the_training_records(paper_build):
    out, _ = paper_build
    recs = read_records(os.path.join(out, "train_lmdb"))
    expected = np.mean([a.astype(np.float64) for _, _, a in recs], axis=0)
    mean = read_mean(os.path.join(out, "mean.binaryproto"))
    assert mean.shape == (3, SIZE, SIZE)
    np.testing.assert_allclose(mean, expected, rtol=0, atol=1e-4)


def test_fill_is_the_training_mean_pixel(dataset, paper_build):
    _, crops_dir, splits = dataset
    out, record = paper_build
    assignment = read_split(splits)
    mapping = GreyMapping()
    total = count = 0
    for c in read_crops(crops_dir):
        if assignment[c["crop_id"]] == "train":
            g = B.load_grey(c, mapping)
            total += g.sum(dtype=np.float64)
            count += g.size
    assert record["config"]["fill"] == pytest.approx(total / count, rel=1e-9)
    assert {float(r["fill"]) for r in read_manifest(out) if r["split"] == "train"} == \
        {float(f"{total / count:.6g}")}


def test_build_json_hashes_match_the_databases(paper_build):
    out, record = paper_build
    with open(os.path.join(out, "build.json")) as f:
        saved = json.load(f)
    assert saved["seed"] == 5 and saved["config"]["augment"] == "paper"
    assert saved["config"]["grey"]["kind"] == "full-range"
    assert set(saved["inputs"]) >= {k for k in saved["inputs"] if k.endswith("crops.csv")}
    assert len(saved["inputs"]) == 3
    for split in ("train", "val", "test"):
        assert B.lmdb_content_hash(os.path.join(out, f"{split}_lmdb")) == \
            saved["counts"][split]["content_sha256"]


def test_same_seed_same_records_any_workers_other_seed_differs(dataset, paper_build, tmp_path):
    _, crops_dir, splits = dataset
    _, record = paper_build
    again = B.build_lmdbs(crops_dir, splits, str(tmp_path / "a"), augment="paper", seed=5,
                          size=SIZE, workers=1)
    other = B.build_lmdbs(crops_dir, splits, str(tmp_path / "b"), augment="paper", seed=6,
                          size=SIZE, workers=2)
    for split in ("train", "val", "test"):
        assert again["counts"][split]["content_sha256"] == \
            record["counts"][split]["content_sha256"]
    assert other["counts"]["train"]["content_sha256"] != \
        record["counts"]["train"]["content_sha256"]
    a = dict((k, v) for k, v in LMDBReader(str(tmp_path / "a" / "train_lmdb")))
    b = dict((k, v) for k, v in LMDBReader(os.path.join(paper_build[0], "train_lmdb")))
    assert a == b


def test_code_and_none_modes(dataset, tmp_path):
    _, crops_dir, splits = dataset
    out = str(tmp_path / "code")
    rec = B.build_lmdbs(crops_dir, splits, out, augment="code", seed=0, size=SIZE, workers=2)
    train = [r for r in read_manifest(out) if r["split"] == "train"]
    assert len(train) == 25 * rec["counts"]["train"]["crops"]
    for r in train:
        angle = float(r["angle"])
        assert angle == int(angle)
        assert float(r["fill"]) == 132.0
        if r["rotation"] == "0":
            assert angle == 0
    out = str(tmp_path / "none")
    assert cli_main(["lmdb", crops_dir, "--splits", splits, "--augment", "none", "--size",
                     str(SIZE), "--out", out, "--workers", "1"]) == 0
    rec = json.loads(open(os.path.join(out, "build.json")).read())
    assert rec["counts"]["train"]["records"] == rec["counts"]["train"]["crops"]


def test_a_failed_build_leaves_nothing_under_the_final_name(dataset, tmp_path):
    _, crops_dir, splits = dataset
    bad = tmp_path / "crops"
    os.makedirs(bad / "images")
    rows = read_crops(crops_dir)
    with open(os.path.join(crops_dir, "crops.csv")) as f:
        text = f.read()
    (bad / "crops.csv").write_text(text)
    for r in rows:  # copy the crops, then corrupt the last one
        (bad / r["file"]).write_bytes(open(r["path"], "rb").read())
    (bad / rows[-1]["file"]).write_bytes(b"not a png")
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=rows[-1]["crop_id"] + ".png: cannot read"):
        B.build_lmdbs(str(bad), splits, str(out), augment="none", size=SIZE, workers=2)
    assert not out.exists()
    assert [p for p in os.listdir(tmp_path) if p.startswith(".out")] == []


def test_a_split_from_other_crops_is_refused(dataset, tmp_path):
    _, crops_dir, splits = dataset
    other = tmp_path / "splits.csv"
    lines = open(splits).read().splitlines()
    other.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(ValueError, match="crops have no split"):
        B.build_lmdbs(crops_dir, str(other), str(tmp_path / "o"), augment="none", size=SIZE)


def test_real_caffe_data_layer_reads_our_lmdb_and_mean(real_caffe, paper_build, tmp_path):
    out, _ = paper_build
    crop = 28
    proto = tmp_path / "train_val.prototxt"
    proto.write_text(f"""
name: "prep_check"
layer {{
  name: "data"  type: "Data"  top: "data"  top: "label"
  include {{ phase: TEST }}
  transform_param {{ crop_size: {crop} mean_file: "{out}/mean.binaryproto" }}
  data_param {{ source: "{out}/train_lmdb" batch_size: 6 backend: LMDB }}
}}
""")
    net = real_caffe.Net(str(proto), real_caffe.TEST)
    net.forward()
    recs = read_records(os.path.join(out, "train_lmdb"))[:6]
    mean = read_mean(os.path.join(out, "mean.binaryproto"))
    o = (SIZE - crop) // 2  # Caffe's TEST-phase centre crop
    expected = np.stack([(a.astype(np.float32) - mean)[:, o:o + crop, o:o + crop]
                         for _, _, a in recs])
    np.testing.assert_allclose(net.blobs["data"].data, expected, rtol=0, atol=1e-4)
    np.testing.assert_array_equal(net.blobs["label"].data, [lab for _, lab, _ in recs])
