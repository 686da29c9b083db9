"""Data-stage benchmark: crops/s, LMDB records/s and MB/s, and the time to build the paper-scale
augmented training set (1,456 training crops -> 36,400 records of 3x224x224 uint8).

    python scripts/bench_data.py                 # paper scale (about 5.5 GB written, removed after)
    python scripts/bench_data.py --quick         # a small run to check the script

All inputs are synthetic and generated first (not timed): full 16-bit images with masks for the
crop figure, and 16-bit crops of DDSM-like sizes for the LMDB figure. The last line printed is a
JSON summary.
"""
import argparse
import csv
import json
import os
import resource
import shutil
import sys
import tempfile
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from deepmammo.prep.build import build_lmdbs  # noqa: E402
from deepmammo.prep.crops import CROP_COLUMNS, build_crops  # noqa: E402
from deepmammo.prep.parallel import default_workers  # noqa: E402

CASE_COLUMNS = ("case_id", "patient_id", "side", "view", "abnormality_id", "source", "image",
                "image_format", "mask", "pathology", "label", "lesion_type", "shape", "margins",
                "assessment", "subtlety", "density", "scanner", "bits", "rows", "cols", "bbox")


def _png16(path, arr):
    Image.fromarray(arr.astype(np.uint16)).save(path, compress_level=1)


def make_cases(root, n_images, shape, rng):
    """Full images (12-bit in 16-bit PNG) with one or two elliptical masses each."""
    os.makedirs(os.path.join(root, "img"), exist_ok=True)
    rows = []
    rr, cc = np.mgrid[:shape[0], :shape[1]]
    for i in range(n_images):
        img = (rng.rand(*shape) * 2000 + 500).astype(np.uint16)
        name = f"P_{i:05d}_LEFT_CC"
        _png16(os.path.join(root, "img", name + ".png"), img)
        for abn in (1, 2)[: 1 + (i % 3 == 0)]:
            cy, cx = rng.randint(100, shape[0] - 100), rng.randint(100, shape[1] - 100)
            ry, rx = rng.randint(30, 250), rng.randint(30, 250)
            m = ((rr - cy) / ry) ** 2 + ((cc - cx) / rx) ** 2 <= 1
            Image.fromarray(m.astype(np.uint8) * 255).save(
                os.path.join(root, "img", f"{name}_{abn}_mask.png"))
            r, c = np.nonzero(m)
            rows.append({
                "case_id": f"{name}_{abn}", "patient_id": f"P_{i:05d}", "side": "LEFT",
                "view": "CC", "abnormality_id": abn, "source": "synthetic",
                "image": f"img/{name}.png", "image_format": "PNG",
                "mask": f"img/{name}_{abn}_mask.png", "pathology": "BENIGN", "label": i % 2,
                "bits": 12, "rows": shape[0], "cols": shape[1], "scanner": "LUMISYS",
                "bbox": f"{r.min()},{c.min()},{r.max() + 1},{c.max() + 1}"})
    path = os.path.join(root, "cases.csv")
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CASE_COLUMNS, lineterminator="\n")
        w.writeheader()
        for row in rows:
            w.writerow({k: row.get(k, "") for k in CASE_COLUMNS})
    return path, len(rows)


def make_crops(root, n_train, n_eval, rng):
    """A crops folder + splits.csv at DDSM-like crop sizes (proportional padding, 50 um)."""
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    rows, splits = [], []
    n = n_train + 2 * n_eval
    for i in range(n):
        h = int(rng.uniform(200, 800))
        w = int(np.clip(h * rng.uniform(0.7, 1.4), 120, 1100))
        yy, xx = np.mgrid[:h, :w]
        img = 1500 + 600 * np.exp(-(((yy - h / 2) / (h / 4)) ** 2 + ((xx - w / 2) / (w / 4)) ** 2))
        img = (img + rng.normal(0, 80, (h, w))).clip(0, 4095).astype(np.uint16)
        cid = f"C{i:05d}"
        _png16(os.path.join(root, "images", cid + ".png"), img)
        label = i % 2
        rows.append({"crop_id": cid, "case_id": cid, "patient_id": f"P{i:05d}", "label": label,
                     "file": f"images/{cid}.png", "bits": 12, "dtype": "uint16",
                     "height": h, "width": w, "padding": "proportional:2"})
        split = "train" if i < n_train else "val" if i < n_train + n_eval else "test"
        splits.append({"crop_id": cid, "patient_id": f"P{i:05d}", "label": label,
                       "split": split})
    with open(os.path.join(root, "crops.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CROP_COLUMNS, lineterminator="\n")
        w.writeheader()
        for row in rows:
            w.writerow({k: row.get(k, "") for k in CROP_COLUMNS})
    splits_csv = os.path.join(root, "splits.csv")
    with open(splits_csv, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=("crop_id", "patient_id", "label", "split"),
                           lineterminator="\n")
        w.writeheader()
        w.writerows(splits)
    return splits_csv


def cpu_seconds():
    """User + system time of this process and its finished children (the pool workers)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        r = resource.getrusage(who)
        total += r.ru_utime + r.ru_stime
    return total


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes, to check the script")
    p.add_argument("--work", help="work folder (default: a temporary one, removed after)")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--train-crops", type=int, default=1456)
    p.add_argument("--eval-crops", type=int, default=182)
    p.add_argument("--images", type=int, default=60, help="full images for the crop figure")
    args = p.parse_args(argv)
    if args.quick:
        args.train_crops, args.eval_crops, args.images = 40, 6, 8
    workers = args.workers or default_workers()
    work = args.work or tempfile.mkdtemp(prefix="bench_data.")
    os.makedirs(work, exist_ok=True)
    rng = np.random.RandomState(0)
    result = {"workers": workers, "train_crops": args.train_crops}
    try:
        # 1. crops/s from full images (decode + mask + crop + 16-bit PNG write)
        cases, n_cases = make_cases(os.path.join(work, "cases"), args.images, (2000, 1500), rng)
        t = time.time()
        build_crops(cases, os.path.join(work, "crops_out"), "proportional:2", workers=workers)
        dt = time.time() - t
        result.update(crops=n_cases, crops_seconds=round(dt, 2),
                      crops_per_s=round(n_cases / dt, 1))
        print(f"crops: {n_cases} from {args.images} images of 2000x1500 in {dt:.2f} s "
              f"= {n_cases / dt:.1f} crops/s")

        # 2. the paper-scale augmented build
        crops_dir = os.path.join(work, "crops_paper")
        if not os.path.isfile(os.path.join(crops_dir, "splits.csv")):
            print(f"generating {args.train_crops + 2 * args.eval_crops} synthetic crops ...")
            splits = make_crops(crops_dir, args.train_crops, args.eval_crops, rng)
        splits = os.path.join(crops_dir, "splits.csv")
        out = os.path.join(work, "lmdb_paper")
        t, cpu0, load0 = time.time(), cpu_seconds(), os.getloadavg()[0]
        record = build_lmdbs(crops_dir, splits, out, augment="paper", seed=0, size=224,
                             workers=workers)
        total = time.time() - t
        cpu = cpu_seconds() - cpu0
        load1 = os.getloadavg()[0]
        train = record["counts"]["train"]
        mb = train["bytes"] / 1e6  # serialized Datum records written
        result.update(
            train_records=train["records"], build_seconds=round(total, 1),
            train_lmdb_seconds=train["seconds"],
            records_per_s=round(train["records"] / train["seconds"], 1),
            mb_per_s=round(mb / train["seconds"], 1), train_mb=round(mb, 1),
            goal_seconds=180, goal_met=total < 180, build_cpu_seconds=round(cpu, 1),
            load_average=[round(load0, 2), round(load1, 2)])
        print(f"lmdb: {train['records']} training records ({mb:.0f} MB of Datum records) in "
              f"{train['seconds']:.1f} s = {result['records_per_s']} records/s, "
              f"{result['mb_per_s']} MB/s")
        print(f"paper-scale augmented build (mean pixel pass + train + val + test, mean file, "
              f"manifest): {total:.1f} s (goal < 180 s: {'met' if total < 180 else 'MISSED'}); "
              f"{cpu:.0f} CPU-seconds over {workers} workers + the writer; load average "
              f"{load0:.1f} -> {load1:.1f} (other work on the machine slows the wall time)")
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({"bench": "data", **result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
