"""Any other image set (MIAS, INbreast exports, ...) through a manifest CSV:

    patient_id,image,mask,pathology[,side,view,abnormality_id]

Paths are relative to the CSV's folder; images are TIFF, PNG, PGM or DICOM at 8 or 16 bits;
masks are image files of the same size, nonzero = lesion."""
import csv
import os

from tqdm import tqdm

from deepmammo.sources import images

REQUIRED = ("patient_id", "image", "mask", "pathology")


def collect(path, ctx):
    if os.path.isdir(path):
        raise ValueError(f"{path}: a manifest ingest takes the manifest CSV file, not a folder")
    base = os.path.dirname(os.path.abspath(path))
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [(h or "").strip().lower() for h in (reader.fieldnames or [])]
        missing = [c for c in REQUIRED if c not in header]
        if missing:
            raise ValueError(f"{path}: manifest lacks column(s) {', '.join(missing)} "
                             f"(needs {', '.join(REQUIRED)})")
        rows = []
        for raw in reader:
            if None in raw:  # csv puts cells beyond the header under the key None, as a list
                ctx.skip(f"{path}:{reader.line_num}", f"{path}:{reader.line_num}",
                         f"{len(raw[None])} more cell(s) than the header's columns",
                         "bad manifest row")
                continue
            rows.append(({(k or "").strip().lower(): (v or "").strip() for k, v in raw.items()},
                         reader.line_num))
    counters = {}
    for row, line in tqdm(rows, desc="manifest", unit="row", disable=None):
        _collect_row(path, base, row, line, counters, ctx)


def _collect_row(path, base, row, line, counters, ctx):
    where = f"{path}:{line}"
    pid = row["patient_id"]
    side, view = row.get("side", "").upper(), row.get("view", "").upper()
    image_rel = row["image"]
    stem = os.path.splitext(os.path.basename(image_rel))[0]
    key = "_".join(p for p in (pid, side, view) if p) if (side or view) else f"{pid}_{stem}"
    counters[key] = counters.get(key, 0) + 1
    abn = row.get("abnormality_id") or str(counters[key])
    case_id = f"{key}_{abn}"
    if not pid or not image_rel or not row["mask"]:
        ctx.skip(case_id, where, "empty patient_id, image or mask cell", "bad manifest row")
        return
    label = ctx.label_or_exclude(case_id, where, row["pathology"])
    if label is None:
        return
    image_path = os.path.normpath(os.path.join(base, image_rel))
    mask_path = os.path.normpath(os.path.join(base, row["mask"]))
    try:
        fmt = images.format_of(image_path)
        image = images.read_image(image_path, fmt)
    except (images.ImageError, OSError) as exc:
        ctx.skip(case_id, image_path, str(exc), "unreadable image")
        return
    out = {
        "case_id": case_id, "patient_id": pid, "side": side, "view": view,
        "abnormality_id": abn, "source": "manifest", "source_split": "",
        "image": image_path, "image_format": fmt, "pathology": row["pathology"].upper(),
        "label": label, "lesion_type": row.get("lesion_type", "").upper() or "MASS",
        "shape": row.get("shape", ""), "margins": row.get("margins", ""),
        "calc_type": "", "calc_distribution": "", "assessment": row.get("assessment", ""),
        "subtlety": row.get("subtlety", ""), "density": row.get("density", ""),
        "scanner": row.get("scanner", ""), "bits": _bits(image_path, fmt, image),
        "rows": image.shape[0], "cols": image.shape[1],
    }
    ctx.add_case(out, mask_path=mask_path)


def _bits(path, fmt, image):
    """Bits per pixel: a DICOM's BitsStored (a 12- or 14-bit image in 16-bit words must not be
    mapped as if it used all 16), else the container depth (the manifest does not say)."""
    if fmt == "DICOM":
        return images.dicom_bits(images.read_dicom(path, pixels=False), image)
    return 8 * image.dtype.itemsize
