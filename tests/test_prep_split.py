import csv
import json

import numpy as np
import pytest
from worlds import make_archive

from deepmammo.cli import main as cli_main
from deepmammo.prep import split as S
from deepmammo.prep.crops import build_crops, read_crops


def synthetic_crops(n_patients, seed):
    """Crops of patients with 1-4 crops each, mostly one pathology per patient."""
    rng = np.random.RandomState(seed)
    crops = []
    for p in range(n_patients):
        label = int(rng.rand() < 0.45)
        for k in range(rng.choice([1, 1, 2, 2, 2, 3, 4])):
            lab = label if rng.rand() < 0.9 else 1 - label
            crops.append({"crop_id": f"P{p:04d}_{k}", "patient_id": f"P{p:04d}", "label": lab,
                          "file": f"images/P{p:04d}_{k}.png"})
    return crops


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_paper_split_is_by_patient_and_exactly_balanced(seed):
    crops = synthetic_crops(600, seed)
    a = S.make_split(crops, "paper", seed=seed)
    table, shared = S.split_table(crops, a)
    assert shared == []
    k = S.per_class_count(len(crops), 0.1)
    for s in ("val", "test"):
        assert table[s]["benign"] == table[s]["malignant"] == k
    assert table["train"]["images"] == len(crops) - 4 * k
    where = {}
    for c in crops:
        assert where.setdefault(c["patient_id"], a[c["crop_id"]]) == a[c["crop_id"]]


def test_paper_scale_counts():
    # 1,820 crops -> 91 + 91 in validation and in test, 1,456 in training (the paper's numbers)
    crops = synthetic_crops(1000, 5)[:1820]
    while len(crops) < 1820:
        crops.append({"crop_id": f"X{len(crops)}", "patient_id": f"X{len(crops)}", "label": 0,
                      "file": ""})
    table, shared = S.split_table(crops, S.make_split(crops, "paper", seed=3))
    assert [table[s]["images"] for s in ("train", "val", "test")] == [1456, 182, 182]
    assert shared == []


def test_same_seed_same_split_other_seed_other_split():
    crops = synthetic_crops(300, 9)
    assert S.make_split(crops, seed=4) == S.make_split(crops, seed=4)
    assert S.make_split(crops, seed=4) != S.make_split(crops, seed=5)


def test_impossible_balance_is_an_error():
    crops = [{"crop_id": f"c{i}", "patient_id": "P", "label": i % 2, "file": ""}
             for i in range(40)]
    with pytest.raises(ValueError, match="whole patients"):
        S.make_split(crops, seed=0)


def test_code_mode_takes_first_n_files_per_class_and_can_leak_patients():
    crops = synthetic_crops(300, 2)
    a = S.make_split(crops, "code")
    k = S.per_class_count(len(crops), 0.1)
    for label in (0, 1):
        files = sorted(c["file"] for c in crops if c["label"] == label)
        by_file = {c["file"]: a[c["crop_id"]] for c in crops}
        assert [by_file[f] for f in files[:k]] == ["val"] * k
        assert [by_file[f] for f in files[k:2 * k]] == ["test"] * k
        assert set(by_file[f] for f in files[2 * k:]) == {"train"}
    _, shared = S.split_table(crops, a)
    assert len(shared) > 0  # file-level splitting puts some patients in two splits


def test_split_cli_on_an_archive_prints_the_table(tmp_path, capsys):
    cases = make_archive(str(tmp_path / "arch"), n_patients=40, seed=3)
    crops_dir = str(tmp_path / "crops")
    build_crops(cases, crops_dir, "fixed:50", workers=1)
    out = tmp_path / "splits.csv"
    assert cli_main(["split", crops_dir, "--out", str(out), "--seed", "11"]) == 0
    printed = capsys.readouterr().out
    assert "patients in more than one split: 0" in printed and "train" in printed
    crops = read_crops(crops_dir)
    a = S.read_split(str(out))
    assert set(a) == {c["crop_id"] for c in crops}
    table, shared = S.split_table(crops, a)
    assert shared == [] and table["val"]["benign"] == table["val"]["malignant"] > 0
    meta = json.loads((tmp_path / "splits.json").read_text())
    assert meta["seed"] == 11 and meta["config"]["mode"] == "paper"
    with open(out) as f:
        assert next(csv.reader(f)) == list(S.SPLIT_COLUMNS)


def test_odd_class_count_takes_the_nearest_balanced_size(caplog):
    # Every patient has one mass seen in two views: 2 crops of one class each. 140 crops ask
    # for 7 + 7 per split, which whole patients cannot give; 8 + 8 (nearest) is taken.
    crops = [{"crop_id": f"p{p}_{v}", "patient_id": f"p{p}", "label": p % 2, "file": ""}
             for p in range(70) for v in ("CC", "MLO")]
    with caplog.at_level("WARNING"):
        assignment = S.make_split(crops, seed=0)
    table, shared = S.split_table(crops, assignment)
    for split in ("val", "test"):
        labels = [c["label"] for c in crops if assignment[c["crop_id"]] == split]
        assert labels.count(0) == labels.count(1) == 8
    assert shared == []
    assert "nearest balanced size" in caplog.text
