"""Train/validation/test split of the crops (paper section 3).

`paper` (default): by patient, seeded. Validation and test each get exactly k benign and k
malignant crops, k = round(0.1 * N) / 2 (the paper: 91 + 91 = 182 of 1,820), made of whole
patients drawn in a seeded random order (validation first, then test from the patients left);
every other patient goes to training. No patient is in two splits. When no set of whole
patients gives the exact balance, it is an error, not an approximate split.

`code`: the authors' script instead: crops sorted by file name (their `listdir` order was the
file system's), split by class, the first k benign and k malignant to validation, the next k of
each to test, the rest to training: by file, not by patient, and without a seed, so one
patient's CC and MLO views can land in different splits. Offered for comparison; the table
says how many patients end up in two splits.
"""
import collections
import csv
import json
import logging
import os

import numpy as np

from deepmammo.atomic import write_csv, write_text
from deepmammo.provenance import provenance

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
SPLIT_COLUMNS = ("crop_id", "patient_id", "label", "split")


def per_class_count(n, fraction):
    """Crops of each class in a balanced split holding `fraction` of n (the authors' rounding)."""
    return int(0.5 * round(fraction * n))


def _balanced_patients(patients, k, rng):
    """Pick whole patients totalling exactly k benign and k malignant crops, or None.

    patients: list of (patient_id, n_benign, n_malignant). The patients are put in a random
    order; a table of the (benign, malignant) totals reachable with the first i of them (a 2-D
    subset sum, (k+1)^2 cells per patient) then yields a subset hitting (k, k) whenever one
    exists, walking back from the last patient and leaving out every patient that is not
    needed. Exact and seeded, with no retry loop that could give up on a small archive.
    """
    if k == 0:
        return []
    order = [patients[i] for i in rng.permutation(len(patients))]
    reach = np.zeros((len(order) + 1, k + 1, k + 1), dtype=bool)
    reach[0, 0, 0] = True
    for i, (_, nb, nm) in enumerate(order):
        reach[i + 1] = reach[i]
        if nb <= k and nm <= k:
            reach[i + 1, nb:, nm:] |= reach[i, :k + 1 - nb, :k + 1 - nm]
    if not reach[-1, k, k]:
        return None
    chosen, b, m = [], k, k
    for i in range(len(order), 0, -1):
        if reach[i - 1, b, m]:
            continue  # reachable without patient i-1
        pid, nb, nm = order[i - 1]
        chosen.append(pid)
        b, m = b - nb, m - nm
    assert b == 0 and m == 0
    return chosen


def split_by_patient(crops, seed, val_fraction=0.1, test_fraction=0.1, attempts=50):
    """{crop_id: split} for the paper's split."""
    counts = collections.OrderedDict()
    for c in sorted(crops, key=lambda c: c["crop_id"]):
        nb, nm = counts.get(c["patient_id"], (0, 0))
        counts[c["patient_id"]] = (nb + (c["label"] == 0), nm + (c["label"] == 1))
    patients = [(pid, nb, nm) for pid, (nb, nm) in sorted(counts.items())]
    n = len(crops)
    rng = np.random.default_rng(seed)
    k_val, k_test = per_class_count(n, val_fraction), per_class_count(n, test_fraction)
    # Validation first, then test from the patients left. A validation set that leaves no exact
    # test set is drawn again (a new random order), a bounded number of times.
    for _ in range(attempts):
        val, k_val_used = _nearest_balanced(patients, k_val, rng, "val")
        rest = [p for p in patients if p[0] not in set(val)]
        test, k_test_used = _nearest_balanced(rest, k_test, rng, "test", must=False)
        if test is not None:
            break
    else:
        raise _no_split("test", k_test, rest)
    assigned = {**{pid: "val" for pid in val}, **{pid: "test" for pid in test}}
    return {c["crop_id"]: assigned.get(c["patient_id"], "train") for c in crops}


def _nearest_balanced(patients, k, rng, split, must=True):
    """Whole patients with exactly j benign and j malignant crops, j as close to k as possible.

    Balance is the paper's hard constraint; the 10% size is approximate. When patients carry
    even numbers of crops (a mass seen in both views), an odd k cannot be met exactly, so the
    nearest reachable j is taken (k, k+1, k-1, k+2, ...) and logged."""
    if k == 0:
        return [], 0
    for j in sorted(range(1, 2 * k + 1), key=lambda j: (abs(j - k), -j)):
        chosen = _balanced_patients(patients, j, rng)
        if chosen is not None:
            if j != k:
                log.warning("%s split: %d benign + %d malignant crops (the nearest balanced size "
                            "of whole patients to %d + %d)", split, j, j, k, k)
            return chosen, j
    if must:
        raise _no_split(split, k, patients)
    return None, None


def _no_split(split, k, patients):
    nb = sum(p[1] for p in patients)
    nm = sum(p[2] for p in patients)
    return ValueError(
        f"cannot make a {split} split of whole patients with exactly {k} benign and {k} "
        f"malignant crops ({nb} benign and {nm} malignant crops over {len(patients)} "
        "patients); try other fractions or another seed")


def split_like_code(crops, val_fraction=0.1, test_fraction=0.1):
    """{crop_id: split} for the authors' file-level first-N-per-class split."""
    n = len(crops)
    by_class = {0: [], 1: []}
    for c in sorted(crops, key=lambda c: c["file"] if c.get("file") else c["crop_id"]):
        by_class[c["label"]].append(c["crop_id"])
    k_val, k_test = per_class_count(n, val_fraction), per_class_count(n, test_fraction)
    out = {}
    for ids in by_class.values():
        if len(ids) < k_val + k_test:
            raise ValueError(f"too few crops of one class ({len(ids)}) for {k_val} validation "
                             f"and {k_test} test crops")
        for i, cid in enumerate(ids):
            out[cid] = "val" if i < k_val else "test" if i < k_val + k_test else "train"
    return out


def make_split(crops, mode="paper", seed=0, val_fraction=0.1, test_fraction=0.1):
    if not crops:
        raise ValueError("no crops to split")
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1
            and val_fraction + test_fraction < 1):
        raise ValueError(f"fractions val={val_fraction} test={test_fraction}: need 0 <= each "
                         "and val + test < 1")
    if mode == "paper":
        return split_by_patient(crops, seed, val_fraction, test_fraction)
    if mode == "code":
        return split_like_code(crops, val_fraction, test_fraction)
    raise ValueError(f"split mode {mode!r}: expected paper or code")


def split_table(crops, assignment):
    """Per split: crops, patients, benign, malignant; plus patients found in several splits."""
    stats = {s: {"images": 0, "patients": set(), "benign": 0, "malignant": 0} for s in SPLITS}
    where = collections.defaultdict(set)
    for c in crops:
        s = assignment[c["crop_id"]]
        st = stats[s]
        st["images"] += 1
        st["patients"].add(c["patient_id"])
        st["benign" if c["label"] == 0 else "malignant"] += 1
        where[c["patient_id"]].add(s)
    table = {s: {**v, "patients": len(v["patients"])} for s, v in stats.items()}
    table["total"] = {"images": len(crops), "patients": len(where),
                      "benign": sum(c["label"] == 0 for c in crops),
                      "malignant": sum(c["label"] == 1 for c in crops)}
    shared = sorted(p for p, ss in where.items() if len(ss) > 1)
    return table, shared


def format_table(table, shared):
    lines = [f"{'split':<6} {'images':>7} {'patients':>9} {'benign':>7} {'malignant':>10}"]
    for s in SPLITS + ("total",):
        row = table[s]
        lines.append(f"{s:<6} {row['images']:>7} {row['patients']:>9} {row['benign']:>7} "
                     f"{row['malignant']:>10}")
    lines.append(f"patients in more than one split: {len(shared)}")
    return "\n".join(lines)


def write_split(crops, assignment, out_csv, config, inputs=()):
    write_csv(out_csv, SPLIT_COLUMNS, (
        {"crop_id": c["crop_id"], "patient_id": c["patient_id"], "label": c["label"],
         "split": assignment[c["crop_id"]]} for c in sorted(crops, key=lambda c: c["crop_id"])))
    table, shared = split_table(crops, assignment)
    meta = provenance(config=config, seed=config.get("seed"), inputs=inputs)
    meta.update(table=table, patients_in_several_splits=shared)
    write_text(os.path.splitext(out_csv)[0] + ".json", json.dumps(meta, indent=2, sort_keys=True))
    return table, shared


def read_split(path):
    """{crop_id: split} from splits.csv."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: split file not found (run `deepmammo split` first)")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not {"crop_id", "split"} <= set(reader.fieldnames or ()):
            raise ValueError(f"{path}: needs columns crop_id and split")
        out = {}
        for i, row in enumerate(reader, start=2):
            if row["split"] not in SPLITS:
                raise ValueError(f"{path}, line {i}: split {row['split']!r} is not one of "
                                 f"{', '.join(SPLITS)}")
            out[row["crop_id"]] = row["split"]
    return out
