"""The LMDBs, mean image, manifest and build record from crops + a split (`deepmammo lmdb`).

OUT/train_lmdb, OUT/val_lmdb, OUT/test_lmdb: Caffe Datum records, 3 identical uint8 channels
(the grey crop replicated, paper section 3.1), label 1 malignant / 0 benign, keys `%08d_<name>`.
The record order is shuffled by the seed once, at write time, because Caffe's Data layer reads
in key order and never reshuffles. Mirroring stays online (`mirror: true` in the Data layer).

OUT/mean.binaryproto: the mean of the training records, float, 1 x 3 x size x size, as Caffe's
compute_image_mean makes it from train_lmdb.
OUT/manifest.csv: every record: key, split, crop, label, rotation, angle, fill, resize, offset.
OUT/build.json: config, seed, counts, a content hash of each LMDB, input hashes, provenance.

Reproducibility: every crop draws its augmentation from its own generator, seeded by (seed,
crop id), and every record's key index is fixed before any work starts; LMDB keeps records in
key order whatever the insertion order, so the databases are identical record for record for
any number of workers.

Nothing is written under OUT's final name until the whole build is complete: a crash leaves the
previous OUT (if any) untouched, and a rerun starts clean.
"""
import contextlib
import hashlib
import json
import logging
import os
import time

import numpy as np
from tqdm import tqdm

from deepmammo.atomic import atomic_path, check_output_folder, output_lock, write_csv, write_text
from deepmammo.caffe.formats.binaryproto import write_mean
from deepmammo.caffe.formats.datum import array_to_datum, datum_to_bytes
from deepmammo.caffe.formats.lmdb_io import LMDBReader, LMDBWriter, lmdb_key
from deepmammo.prep import augment as aug
from deepmammo.prep.crops import read_crops
from deepmammo.prep.greylevel import GreyMapping
from deepmammo.prep.images import read_grey
from deepmammo.prep.parallel import run_tasks
from deepmammo.prep.recipe import grey_levels
from deepmammo.prep.split import SPLITS, read_split
from deepmammo.provenance import file_sha1, provenance

log = logging.getLogger(__name__)

AUGMENTS = ("paper", "code", "none")
MANIFEST_COLUMNS = ("key", "split", "crop_id", "label", "rotation", "crop", "angle", "fill",
                    "window_h", "window_w", "resized_h", "resized_w", "offset_row",
                    "offset_col")


def crop_rng(seed, crop_id):
    """The crop's own generator: depends on the seed and the crop only, not on the order."""
    tag = int.from_bytes(hashlib.sha256(crop_id.encode("utf-8")).digest()[:8], "little")
    return np.random.default_rng(np.random.SeedSequence([int(seed), tag]))


def key_order(seed, split, total):
    """Key index of each record (records numbered crop by crop, in crop-id order)."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), SPLITS.index(split), 7919]))
    return rng.permutation(total)


def load_grey(crop, mapping):
    """A crop's PNG read and mapped to float 0-255 (recipe.grey_levels, as classify maps)."""
    return grey_levels(read_grey(crop["path"]), mapping, crop.get("bits"),
                       crop.get("scanner", ""))


def _pixel_sum_task(task):
    crop, mapping = task
    grey = load_grey(crop, mapping)
    return crop["crop_id"], float(grey.sum(dtype=np.float64)), int(grey.size)


def mean_pixel(train_crops, mapping, workers=None):
    """The training set's mean grey level (pixel-weighted over the mapped crops): the paper's
    fill for rotation corners. Summed in crop-id order so it does not depend on the workers."""
    with contextlib.closing(run_tasks(_pixel_sum_task, [(c, mapping) for c in train_crops],
                                      workers)) as results:
        parts = sorted(results)
    total = sum(p[1] for p in parts)
    count = sum(p[2] for p in parts)
    return total / count if count else 0.0


def _records_task(task):
    """All records of one crop: [(key, value bytes, sha256 of value)], manifest rows, pixel sum."""
    crop, split, augment, size, fill, mapping, seed, indices, eval_resize = task
    grey = load_grey(crop, mapping)
    specs = aug.plan(augment, split, grey.shape[0], grey.shape[1], size,
                     crop_rng(seed, crop["crop_id"]), fill, eval_resize)
    if len(specs) != len(indices):
        raise AssertionError(f"{crop['crop_id']}: {len(specs)} records planned, "
                             f"{len(indices)} keys")
    images = aug.realise(grey, specs, size)
    records, rows = [], []
    total = np.zeros((size, size), np.int64)
    for spec, img, index in zip(specs, images, indices):
        name = crop["crop_id"] if len(specs) == 1 else \
            f"{crop['crop_id']}_r{spec['rotation']}_c{spec['crop']}"
        key = lmdb_key(int(index), name)
        value = datum_to_bytes(array_to_datum(np.broadcast_to(img, (3, size, size)),
                                              crop["label"]))
        records.append((key, value, hashlib.sha256(value).digest()))
        rows.append({"key": key, "split": split, "crop_id": crop["crop_id"],
                     "label": crop["label"], **{k: spec[k] for k in MANIFEST_COLUMNS[4:]}})
        total += img
    return records, rows, total


def content_hash(digests):
    """SHA-256 over the records in key order: key, NUL, sha256(value) per record."""
    h = hashlib.sha256()
    for key in sorted(digests):
        h.update(key.encode("utf-8") + b"\0" + digests[key])
    return h.hexdigest()


def lmdb_content_hash(path):
    """The content hash of an existing LMDB (to check a build against its build.json)."""
    with LMDBReader(path) as db:
        return content_hash({k.decode("utf-8"): hashlib.sha256(v).digest() for k, v in db})


def _write_split(path, split, crops, augment, size, fill, mapping, seed, workers,
                 eval_resize="crop"):
    crops = sorted(crops, key=lambda c: c["crop_id"])
    counts = [aug.records_per_crop(augment, split) for c in crops]
    order = key_order(seed, split, sum(counts))
    tasks, start = [], 0
    for crop, n in zip(crops, counts):
        tasks.append((crop, split, augment, size, fill, mapping, seed, order[start:start + n],
                      eval_resize))
        start += n
    digests, manifest, nbytes = {}, [], 0
    total = np.zeros((size, size), np.int64)
    record_bytes = 3 * size * size + 64
    map_size = int(max(1 << 26, 1.15 * sum(counts) * (record_bytes + 64)))
    t0 = time.time()
    with LMDBWriter(path, map_size=map_size) as db, \
            tqdm(total=sum(counts), desc=f"{split} records", unit="rec", disable=None) as bar, \
            contextlib.closing(run_tasks(_records_task, tasks, workers)) as results:
        for records, rows, part in results:
            for key, value, digest in records:
                db.put(key, value)
                digests[key] = digest
                nbytes += len(value)
            manifest.extend(rows)
            total += part
            bar.update(len(records))
    seconds = time.time() - t0
    n = len(digests)
    return {
        "crops": len(crops), "records": n,
        "benign_crops": sum(c["label"] == 0 for c in crops),
        "malignant_crops": sum(c["label"] == 1 for c in crops),
        "benign": sum(r["label"] == 0 for r in manifest),
        "malignant": sum(r["label"] == 1 for r in manifest),
        "patients": len({c["patient_id"] for c in crops}),
        "content_sha256": content_hash(digests),
        "seconds": round(seconds, 3),
        "bytes": nbytes,
    }, manifest, total


def _write_manifest(path, rows):
    def formatted(row):
        return dict(row, **{k: f"{float(row[k]):.6g}"
                            for k in ("angle", "fill", "window_h", "window_w")})

    write_csv(path, MANIFEST_COLUMNS, (
        formatted(r) for r in sorted(rows, key=lambda r: (SPLITS.index(r["split"]), r["key"]))))


def build_lmdbs(crops_dir, splits_csv, out, augment="paper", seed=0, grey="full-range",
                size=224, workers=None, eval_resize="crop"):
    """Build OUT from `crops_dir` and `splits_csv`; return the build record (build.json)."""
    if augment not in AUGMENTS:
        raise ValueError(f"augment {augment!r}: expected one of {', '.join(AUGMENTS)}")
    if eval_resize not in ("crop", "squash"):
        raise ValueError(f"eval resize {eval_resize!r}: expected crop or squash")
    if int(size) < 1:
        raise ValueError(f"size {size}: must be positive")
    size = int(size)
    mapping = grey if isinstance(grey, GreyMapping) else GreyMapping.parse(grey)
    crops = read_crops(crops_dir)
    assignment = read_split(splits_csv)
    ids = {c["crop_id"] for c in crops}
    unknown = sorted(set(assignment) - ids)
    unassigned = sorted(ids - set(assignment))
    if unknown or unassigned:
        raise ValueError(
            f"{splits_csv} does not match {crops_dir}/crops.csv: "
            f"{len(unknown)} split rows name no crop (e.g. {unknown[:3]}), "
            f"{len(unassigned)} crops have no split (e.g. {unassigned[:3]}); "
            "make the split from these crops")
    for c in crops:
        if not os.path.isfile(c["path"]):
            raise FileNotFoundError(f"{c['path']}: crop image listed in crops.csv is missing")
    by_split = {s: [c for c in crops if assignment[c["crop_id"]] == s] for s in SPLITS}
    if not by_split["train"]:
        raise ValueError(f"{splits_csv}: no training crops")

    crops_meta_path = os.path.join(crops_dir, "crops.json")
    crops_config = {}
    if os.path.isfile(crops_meta_path):
        with open(crops_meta_path) as f:
            crops_config = json.load(f).get("config", {})

    check_output_folder(out)
    with output_lock(out):
        return _build(crops_dir, splits_csv, out, augment, seed, size, workers, eval_resize,
                      mapping, by_split, crops_config)


@contextlib.contextmanager
def _named_as(tmp, out):
    """Errors about files in the temporary build folder name them as the user will see them."""
    try:
        yield
    except OSError as exc:
        name = os.fspath(exc.filename) if exc.filename is not None else ""
        if exc.strerror and name.startswith(tmp):
            raise type(exc)(exc.errno, exc.strerror, os.fspath(out) + name[len(tmp):]) from exc
        raise


def _build(crops_dir, splits_csv, out, augment, seed, size, workers, eval_resize, mapping,
           by_split, crops_config):
    t0 = time.time()
    if augment == "paper":
        fill = mean_pixel(by_split["train"], mapping, workers)
        log.info("training mean pixel %.4f (rotation corner fill)", fill)
    elif augment == "code":
        fill = aug.CODE_FILL
    else:
        fill = 0.0
    config = {
        "augment": augment, "size": size, "grey": mapping.to_config(), "grey_spec": str(mapping),
        "fill": fill, "fill_rule": {"paper": "training-set mean pixel (mapped grey levels)",
                                    "code": "fixed grey 132 (authors' code)",
                                    "none": "no rotation"}[augment],
        "crops_dir": os.path.abspath(crops_dir), "splits": os.path.abspath(splits_csv),
        "crops_config": crops_config, "channels": 3, "record_dtype": "uint8",
        "eval_resize": eval_resize,
        "val_test": {"crop": "shorter side resized to size, centre crop",
                     "squash": "resized to size x size, aspect ignored"}[eval_resize],
    }
    counts, manifest = {}, []
    with atomic_path(out, is_dir=True) as tmp, _named_as(tmp, out):
        for split in SPLITS:
            stats, rows, total = _write_split(
                os.path.join(tmp, f"{split}_lmdb"), split, by_split[split], augment, size, fill,
                mapping, seed, workers, eval_resize)
            counts[split] = stats
            manifest.extend(rows)
            if split == "train":
                mean = (total / max(stats["records"], 1)).astype(np.float32)
                write_mean(np.broadcast_to(mean, (3, size, size)),
                           os.path.join(tmp, "mean.binaryproto"))
            log.info("%s: %d crops -> %d records in %.1f s", split, stats["crops"],
                     stats["records"], stats["seconds"])
        _write_manifest(os.path.join(tmp, "manifest.csv"), manifest)
        record = provenance(config=config, seed=int(seed), inputs=[
            os.path.join(crops_dir, "crops.csv"), splits_csv, os.path.join(crops_dir, "images")])
        record["counts"] = counts
        record["mean_file_sha1"] = file_sha1(os.path.join(tmp, "mean.binaryproto"))
        record["seconds"] = round(time.time() - t0, 3)
        write_text(os.path.join(tmp, "build.json"),
                   json.dumps(record, indent=2, sort_keys=True))
    return record
