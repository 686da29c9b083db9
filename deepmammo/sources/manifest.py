"""Any other image set (MIAS, INbreast exports, ...) through a manifest CSV:

    patient_id,image,mask,pathology[,side,view,abnormality_id]

Paths are relative to the CSV's folder; images are TIFF, PNG, PGM or DICOM at 8 or 16 bits;
masks are image files of the same size, nonzero = lesion."""
import csv
import io
import os

from tqdm import tqdm

from deepmammo.sources import images
from deepmammo.sources.cases import Case
from deepmammo.sources.ingestion import describe_error
from deepmammo.textfile import decode_text

REQUIRED = ("patient_id", "image", "mask", "pathology")


def collect(path, ctx):
    if os.path.isdir(path):
        raise ValueError(f"{path}: a manifest ingest takes the manifest CSV file, not a folder")
    base = os.path.dirname(os.path.abspath(path))
    with open(path, "rb") as f:
        data = f.read()
    # Bytes that are not UTF-8 spoil their row only: decode with surrogate escapes and report
    # each such row. In the header they spoil everything: decode_text says where.
    text = data.decode("utf-8-sig", errors="surrogateescape")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        header = [(h or "").strip().lower() for h in (reader.fieldnames or [])]
    except csv.Error as exc:
        raise ValueError(f"{path}:1: not a CSV header ({exc})") from None
    if any(_has_bad_bytes(h) for h in header):
        decode_text(data, path, "manifest")   # raises, naming the line and byte
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise ValueError(f"{path}: manifest lacks column(s) {', '.join(missing)} "
                         f"(needs {', '.join(REQUIRED)})")
    rows = []
    try:
        for raw in reader:
            where = f"{path}:{reader.line_num}"
            if None in raw:  # csv puts cells beyond the header under the key None, as a list
                ctx.skip(where, where, f"{len(raw[None])} more cell(s) than the header's "
                         "columns", "bad manifest row")
                continue
            if any(v is None for v in raw.values()):
                ctx.skip(where, where, f"fewer cells than the header's {len(header)} columns",
                         "bad manifest row")
                continue
            if any(_has_bad_bytes(v) for v in raw.values()):
                ctx.skip(where, where, "bytes that are not UTF-8 text in this row",
                         "bad manifest row")
                continue
            rows.append(({(k or "").strip().lower(): (v or "").strip() for k, v in raw.items()},
                         reader.line_num))
    except csv.Error as exc:   # NUL bytes, an unterminated quote: the rest is unreadable
        ctx.skip(f"{path}:{reader.line_num}", f"{path}:{reader.line_num}",
                 f"not a CSV row ({exc}); the rest of the manifest is not read",
                 "bad manifest row")
    counters = {}
    for row, line in tqdm(rows, desc="manifest", unit="row", disable=None):
        with ctx.guard(f"{path}:{line}", f"{path}:{line}"):
            _collect_row(path, base, row, line, counters, ctx)


def _has_bad_bytes(text):
    """True when `text` holds bytes that were not UTF-8 (escaped as lone surrogates)."""
    return any("\udc80" <= c <= "\udcff" for c in text)


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
        bits = _bits(image_path, fmt, image)
    except Exception as exc:  # noqa: BLE001  (any reader failure: name the case and the file)
        reason = describe_error(exc) if isinstance(exc, (ValueError, OSError)) else \
            f"{type(exc).__name__}: {exc}"
        if image_path not in reason:
            reason = f"{image_path}: {reason}"
        ctx.skip(case_id, image_path, f"{reason} ({where})", "unreadable image")
        return
    case = Case(
        case_id=case_id, patient_id=pid, side=side, view=view, abnormality_id=abn,
        source="manifest", image=image_path, image_format=fmt,
        pathology=row["pathology"].upper(), label=label,
        lesion_type=row.get("lesion_type", "").upper() or "MASS", shape=row.get("shape", ""),
        margins=row.get("margins", ""), assessment=row.get("assessment", ""),
        subtlety=row.get("subtlety", ""), density=row.get("density", ""),
        scanner=row.get("scanner", ""), bits=bits, rows=image.shape[0], cols=image.shape[1])
    ctx.add_case(case, mask_path=mask_path)


def _bits(path, fmt, image):
    """Bits per pixel: a DICOM's BitsStored (a 12- or 14-bit image in 16-bit words must not be
    mapped as if it used all 16), else the container depth (the manifest does not say)."""
    if fmt == "DICOM":
        return images.dicom_bits(images.read_dicom(path, pixels=False), image, path)
    return 8 * image.dtype.itemsize
