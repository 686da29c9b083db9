"""Mass crops from the cases table: the mask's bounding box plus padding (paper section 3.1).

Two paddings, as in the paper:
- `fixed:50`: 50 px on every side of the mask's bounding box (the same context for every mass);
- `proportional:2`: a box twice the size of the mask's box in each dimension, around its
  centre (half the box added on each side). For an odd extent the extra pixel goes below/right,
  so the crop is exactly 2x; the authors' code added (extent-1)//2 on both sides, one or two
  pixels less.

At the image border the box is clipped, as the authors did (no padding pixels are invented);
crops.csv records by how much on each side. `edge=code` additionally repeats the authors' trim of
saturated (white, 2**bits-1) scanner-border columns when the crop touches the left or right
image edge, judged on the crop's first row as their code did.

Crops keep the source bit depth (16-bit PNG for 12/16-bit sources); the 8-bit mapping happens
when the LMDBs are built (greylevel.py).

Output folder: images/<crop_id>.png, crops.csv (one row per crop), skipped.csv (every case row
that could not be cropped and why), crops.json (config, counts, provenance).
"""
import contextlib
import csv
import json
import logging
import os
import re
import shutil

import numpy as np
from tqdm import tqdm

from deepmammo.atomic import check_output_folder, output_lock, write_csv, write_text
from deepmammo.prep.parallel import run_tasks
from deepmammo.provenance import file_sha1, provenance
from deepmammo.sources import cases as case_table
from deepmammo.sources.images import write_png

log = logging.getLogger(__name__)

CROP_COLUMNS = (
    "crop_id", "case_id", "patient_id", "side", "view", "abnormality_id", "label", "pathology",
    "file", "bits", "scanner", "dtype", "image_rows", "image_cols", "mask_bbox", "padding",
    "wanted_box", "crop_box", "clip_top", "clip_left", "clip_bottom", "clip_right",
    "trim_left", "trim_right", "height", "width",
)
SKIP_COLUMNS = ("case_id", "patient_id", "abnormality_id", "image", "mask", "reason")


class Padding:
    """`fixed:N` (pixels per side) or `proportional:K` (crop = K times the mask box)."""

    def __init__(self, kind, amount):
        if kind not in ("fixed", "proportional"):
            raise ValueError(f"padding {kind}:{amount:g}: expected fixed:N or proportional:K")
        if kind == "fixed" and (amount < 0 or amount != int(amount)):
            raise ValueError(f"padding fixed:{amount}: need a whole number of pixels >= 0")
        if kind == "proportional" and amount < 1:
            raise ValueError(f"padding proportional:{amount}: need a factor >= 1")
        self.kind, self.amount = kind, (int(amount) if kind == "fixed" else float(amount))

    @classmethod
    def parse(cls, text):
        kind, _, arg = str(text).partition(":")
        try:
            amount = float(arg)
        except ValueError:
            raise ValueError(f"padding {text!r}: expected fixed:N or proportional:K, "
                             "e.g. fixed:50 or proportional:2") from None
        return cls(kind, amount)

    def __str__(self):
        return f"{self.kind}:{self.amount:g}"

    def pads(self, extent):
        """(before, after) pixels added to a mask extent along one axis."""
        if self.kind == "fixed":
            return self.amount, self.amount
        extra = int(round((self.amount - 1.0) * extent))
        return extra // 2, extra - extra // 2


mask_bbox = case_table.bbox_of  # half-open (r0, c0, r1, c1) of a mask, as cases.csv writes it


def wanted_box(bbox, padding):
    """The padded box before clipping (may extend beyond the image)."""
    r0, c0, r1, c1 = bbox
    pt, pb = padding.pads(r1 - r0)
    pl, pr = padding.pads(c1 - c0)
    return r0 - pt, c0 - pl, r1 + pb, c1 + pr


def clip_box(box, shape):
    """Clip a box to the image; return (clipped box, (top, left, bottom, right) cut off)."""
    r0, c0, r1, c1 = box
    rows, cols = shape
    clipped = max(r0, 0), max(c0, 0), min(r1, rows), min(c1, cols)
    cut = (clipped[0] - r0, clipped[1] - c0, r1 - clipped[2], c1 - clipped[3])
    return clipped, cut


def trim_saturated_edges(image, box, pad_left, pad_right, bits):
    """The authors' extra border rule (`edge=code`).

    When the crop touches the left (right) image edge, the columns up to the last (from the
    first) saturated pixel among the first `pad_left` (last `pad_right`) columns, judged on the
    crop's first row, are dropped: scanner borders are white. Returns (box, (trim_l, trim_r)).
    """
    r0, c0, r1, c1 = box
    saturated = 2 ** int(bits) - 1
    trim_l = trim_r = 0
    if c0 == 0 and pad_left > 0:
        hits = np.flatnonzero(image[r0, 0:pad_left] == saturated)
        if hits.size:
            trim_l = int(hits[-1]) + 1
    if c1 == image.shape[1] and pad_right > 0:
        lo = max(c1 - pad_right, 0)
        hits = np.flatnonzero(image[r0, lo:c1] == saturated)
        if hits.size:
            trim_r = c1 - (lo + int(hits[0]))
    if c0 + trim_l >= c1 - trim_r:
        return box, (0, 0)  # the rule would remove everything: keep the clipped box
    return (r0, c0 + trim_l, r1, c1 - trim_r), (trim_l, trim_r)


def cut_crop(image, bbox, padding, edge="clip", bits=16):
    """The crop of the mass whose mask has bounding box `bbox` (half-open r0, c0, r1, c1):
    padded, clipped at the border (and with edge="code" trimmed of saturated scanner columns).
    The one cut of the pipeline: `crops` writes it, `classify` feeds it to a net.
    Returns (crop array, (wanted box, clipped box, (top, left, bottom, right) cut off,
    (left, right) trimmed))."""
    padding = padding if isinstance(padding, Padding) else Padding.parse(padding)
    if edge not in ("clip", "code"):
        raise ValueError(f"edge {edge!r}: expected clip or code")
    wanted = wanted_box(bbox, padding)
    box, cut = clip_box(wanted, image.shape)
    trims = (0, 0)
    if edge == "code":
        pad_l, pad_r = padding.pads(bbox[3] - bbox[1])
        box, trims = trim_saturated_edges(image, box, pad_l, pad_r, bits)
    r0, c0, r1, c1 = box
    return np.ascontiguousarray(image[r0:r1, c0:c1]), (wanted, box, cut, trims)


def make_crop_id(row):
    """The crop's name: the case id (unique per abnormality in cases.csv), made file-safe."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(row.get("case_id", ""))).strip("_")


def _parse_label(row):
    text = str(row.get("label", "")).strip()
    if text not in ("0", "1"):
        raise ValueError(f"label {text!r} is not 0 (benign) or 1 (malignant)")
    return int(text)


def _crop_one(image, mask, row, padding, edge, crop_id, images_dir):
    """Crop one abnormality; return its crops.csv row (raises ValueError on a bad input)."""
    label = _parse_label(row)
    if not row.get("patient_id"):
        raise ValueError("patient_id is empty")
    if mask.ndim != 2:
        raise ValueError(f"mask is not 2-D (shape {mask.shape})")
    if mask.shape[0] > image.shape[0] or mask.shape[1] > image.shape[1]:
        raise ValueError(f"mask shape {mask.shape} is bigger than the image {image.shape}")
    bbox = mask_bbox(mask)
    if bbox is None:
        raise ValueError("mask is empty")
    bits = int(row.get("bits") or (16 if image.dtype == np.uint16 else 8))
    crop, (wanted, box, cut, trims) = cut_crop(image, bbox, padding, edge, bits)
    name = f"{crop_id}.png"
    final = os.path.join(images_dir, name)
    try:
        # level 1: crops are written once and read often; a few times faster than the default
        write_png(final, crop, compress_level=1)
    except OSError as exc:
        raise CropWriteError(exc.errno, exc.strerror, exc.filename or final) from None
    record = {
        "crop_id": crop_id, "case_id": row.get("case_id", ""), "patient_id": row["patient_id"],
        "side": row.get("side", ""), "view": row.get("view", ""),
        "abnormality_id": row.get("abnormality_id", ""), "label": label,
        "pathology": row.get("pathology", ""), "file": f"images/{name}", "bits": bits,
        "scanner": row.get("scanner", ""), "dtype": str(crop.dtype),
        "image_rows": image.shape[0], "image_cols": image.shape[1],
        "mask_bbox": case_table.format_bbox(bbox), "padding": str(padding), "wanted_box": case_table.format_bbox(wanted),
        "crop_box": case_table.format_bbox(box), "clip_top": cut[0], "clip_left": cut[1],
        "clip_bottom": cut[2], "clip_right": cut[3], "trim_left": trims[0],
        "trim_right": trims[1], "height": crop.shape[0], "width": crop.shape[1],
    }
    try:
        write_text(os.path.join(images_dir, f"{crop_id}.json"), json.dumps(record))
    except OSError as exc:
        raise CropWriteError(exc.errno, exc.strerror, exc.filename or final) from None
    return record


class CropWriteError(OSError):
    """Writing a crop failed (no space, no permission): the build stops; it is not a problem
    of the case, which a skip would wrongly blame."""


def _skip(row, reason):
    return {"case_id": row.get("case_id", ""), "patient_id": row.get("patient_id", ""),
            "abnormality_id": row.get("abnormality_id", ""), "image": row.get("image", ""),
            "mask": row.get("mask", ""), "reason": reason}


def _crop_image_task(task):
    """All abnormalities of one image: the image is decoded once. Returns (records, skips)."""
    rows, crop_ids, padding, edge, images_dir = task
    done = []
    for crop_id in crop_ids:
        path = os.path.join(images_dir, f"{crop_id}.json")
        if os.path.isfile(path) and os.path.isfile(os.path.join(images_dir, f"{crop_id}.png")):
            with open(path) as f:
                done.append(json.load(f))
        else:
            break
    if len(done) == len(rows):
        return done, []  # resumed: every crop of this image is already on disk
    records, skips = [], []
    try:
        image = np.asarray(case_table.load_image(rows[0]))
        if image.ndim != 2:
            raise ValueError(f"image is not 2-D grey (shape {image.shape})")
    except Exception as exc:  # noqa: BLE001  (any loader failure: report the rows, go on)
        reason = f"image {rows[0].get('image', '')}: {type(exc).__name__}: {exc}"
        return [], [_skip(r, reason) for r in rows]
    for row, crop_id in zip(rows, crop_ids):
        try:
            mask = np.asarray(case_table.load_mask(row)).astype(bool)
            records.append(_crop_one(image, mask, row, padding, edge, crop_id, images_dir))
        except CropWriteError:
            raise
        except Exception as exc:  # noqa: BLE001
            skips.append(_skip(row, f"{type(exc).__name__}: {exc}"))
    return records, skips


def _swap_in(partial, final):
    """Replace `final` by the finished folder `partial` (old one moved aside, then removed)."""
    old = final + ".old"
    if os.path.isdir(old):
        shutil.rmtree(old)
    if os.path.isdir(final):
        os.replace(final, old)
    os.replace(partial, final)
    shutil.rmtree(old, ignore_errors=True)


def build_crops(cases_csv, out_dir, padding="fixed:50", edge="clip", workers=None):
    """Crop every abnormality of `cases_csv` into `out_dir`. Returns a summary dict.

    The folder is built as `<out_dir>.partial` and renamed when complete; a rerun with the same
    cases table and settings resumes from the crops already written there, otherwise it starts
    clean.
    """
    padding = padding if isinstance(padding, Padding) else Padding.parse(padding)
    if edge not in ("clip", "code"):
        raise ValueError(f"edge {edge!r}: expected clip or code")
    out_dir = os.path.abspath(out_dir)
    rows = case_table.read_cases(cases_csv)
    if not rows:
        raise ValueError(f"{cases_csv}: no case rows")
    config = {"padding": str(padding), "edge": edge, "cases_sha1": file_sha1(cases_csv)}
    check_output_folder(out_dir)
    partial = out_dir + ".partial"
    with output_lock(out_dir):
        try:
            return _build(cases_csv, out_dir, partial, rows, config, padding, edge, workers)
        except Exception:
            # An error (bad input, no space, no permission) leaves nothing behind; a kill or
            # Ctrl-C leaves the partial folder, which the next run with these settings resumes.
            shutil.rmtree(partial, ignore_errors=True)
            raise


def _build(cases_csv, out_dir, partial, rows, config, padding, edge, workers):
    images_dir = os.path.join(partial, "images")
    cfg_path = os.path.join(partial, "config.json")
    if os.path.isdir(partial):
        try:
            with open(cfg_path) as f:
                same = json.load(f) == config
        except (OSError, ValueError):
            same = False
        if same:
            log.info("resuming the unfinished crops in %s", partial)
        else:
            log.info("removing an unfinished build with other settings: %s", partial)
            shutil.rmtree(partial)
    os.makedirs(images_dir, exist_ok=True)
    for name in os.listdir(images_dir):  # files a killed run was still writing
        if name.startswith(".") and name.endswith(".tmp"):
            os.unlink(os.path.join(images_dir, name))
    write_text(cfg_path, json.dumps(config))

    # One task per image (several abnormalities share one decode); ids unique per row.
    by_image, seen, skips = {}, {}, []
    for row in rows:
        crop_id = make_crop_id(row)
        if not crop_id:
            skips.append(_skip(row, "no case_id to name the crop"))
            continue
        if crop_id in seen:
            skips.append(_skip(row, f"duplicate of an earlier row (crop id {crop_id})"))
            continue
        seen[crop_id] = True
        by_image.setdefault(row.get("image", ""), []).append((row, crop_id))
    tasks = [([r for r, _ in group], [c for _, c in group], padding, edge, images_dir)
             for _, group in sorted(by_image.items())]

    records = []
    with tqdm(total=len(seen), desc="crops", unit="crop", disable=None) as bar, \
            contextlib.closing(run_tasks(_crop_image_task, tasks, workers)) as results:
        for recs, bad in results:
            records.extend(recs)
            skips.extend(bad)
            bar.update(len(recs) + len(bad))
    for s in skips:
        log.warning("skipped case %s abnormality %s: %s", s["case_id"], s["abnormality_id"],
                    s["reason"])
    if not records:
        raise ValueError(f"{cases_csv}: no usable case rows ({len(skips)} skipped; "
                         f"first reason: {skips[0]['reason'] if skips else 'none'})")
    records.sort(key=lambda r: r["crop_id"])
    # Workers finish in any order: sort so that skipped.csv is the same for any worker count.
    skips.sort(key=lambda s: (str(s["case_id"]), str(s["abnormality_id"])))
    for r in records:  # the per-crop sidecars only serve resuming
        os.unlink(os.path.join(images_dir, f"{r['crop_id']}.json"))
    write_csv(os.path.join(partial, "crops.csv"), CROP_COLUMNS, records)
    write_csv(os.path.join(partial, "skipped.csv"), SKIP_COLUMNS, skips)
    summary = {
        "crops": len(records), "skipped": len(skips),
        "benign": sum(r["label"] == 0 for r in records),
        "malignant": sum(r["label"] == 1 for r in records),
        "patients": len({r["patient_id"] for r in records}),
        "clipped": sum(any(r[k] for k in ("clip_top", "clip_left", "clip_bottom", "clip_right"))
                       for r in records),
    }
    meta = provenance(config={**config, "cases": os.path.abspath(cases_csv)}, seed=None,
                      inputs=[cases_csv])
    meta["summary"] = summary
    write_text(os.path.join(partial, "crops.json"), json.dumps(meta, indent=2, sort_keys=True))
    os.unlink(cfg_path)
    _swap_in(partial, out_dir)
    log.info("%d crops (%d clipped at the border), %d case rows skipped -> %s",
             summary["crops"], summary["clipped"], summary["skipped"], out_dir)
    return summary


def read_crops(crops_dir):
    """Rows of crops.csv (label and sizes as ints, `path` the absolute PNG path)."""
    path = os.path.join(crops_dir, "crops.csv")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: not found (run `deepmammo crops` first)")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ("crop_id", "patient_id", "label", "file")
                   if c not in (reader.fieldnames or ())]
        if missing:
            raise ValueError(f"{path}: missing columns {', '.join(missing)}")
        rows = list(reader)
    for i, row in enumerate(rows, start=2):
        try:
            row["label"] = int(row["label"])
            if row["label"] not in (0, 1):
                raise ValueError
        except ValueError:
            raise ValueError(f"{path}, line {i}: label {row['label']!r} is not 0 or 1") from None
        for key in ("bits", "height", "width"):
            if row.get(key):
                row[key] = int(row[key])
        row["path"] = os.path.join(crops_dir, row["file"])
    return rows
