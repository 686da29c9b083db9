"""Reading the cases table and its images, and writing/reading crop PNGs at source bit depth.

The cases API belongs to `deepmammo.sources.cases` (read_cases, load_image, load_mask). When it
is importable it is used; otherwise a small fallback here reads a cases.csv whose images and
masks are PNG or TIFF files, which is enough for tests and synthetic archives.
"""
import csv
import os

import numpy as np
from PIL import Image

# Columns this stage needs from cases.csv (the full schema has more).
REQUIRED_COLUMNS = ("case_id", "patient_id", "image", "mask", "label")


def _sources():
    try:
        from deepmammo.sources import cases
    except ImportError:
        return None
    if all(hasattr(cases, f) for f in ("read_cases", "load_image", "load_mask")):
        return cases
    return None


def read_cases(path):
    """Rows of cases.csv as dicts, image/mask paths made absolute."""
    api = _sources()
    if api is not None:
        return list(api.read_cases(path))
    return _read_cases_fallback(path)


def _read_cases_fallback(path):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: cases table not found")
    base = os.path.dirname(os.path.abspath(path))
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise ValueError(f"{path}: missing columns {', '.join(missing)}")
        rows = []
        for row in reader:
            row = {k: (v or "").strip() for k, v in row.items() if k is not None}
            for key in ("image", "mask"):
                if row.get(key) and not os.path.isabs(row[key]):
                    row[key] = os.path.join(base, row[key])
            rows.append(row)
    return rows


def load_image(row):
    api = _sources()
    if api is not None:
        return api.load_image(row)
    return read_grey(row["image"])


def load_mask(row):
    api = _sources()
    if api is not None:
        return np.asarray(api.load_mask(row)).astype(bool)
    return read_grey(row["mask"]) > 0


def read_grey(path):
    """A 2-D uint8 or uint16 array from a PNG/TIFF file (16-bit kept as uint16)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: image file not found")
    try:
        return _read_grey(path)
    except (OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(f"{path}: cannot read the image ({exc})") from None


def _read_grey(path):
    with Image.open(path) as im:
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(im)
            if arr.dtype != np.uint16:
                if arr.min() < 0 or arr.max() > 65535:
                    raise ValueError(f"{path}: grey values outside 0..65535")
                arr = arr.astype(np.uint16)
            return arr
        if im.mode in ("1", "L", "P"):
            return np.asarray(im.convert("L"))
        if im.mode in ("RGB", "RGBA", "LA"):
            return np.asarray(im.convert("L"))
        raise ValueError(f"{path}: unsupported image mode {im.mode}")


def write_png(path, arr, compress_level=1):
    """Write a 2-D uint8 or uint16 array as an 8- or 16-bit greyscale PNG.

    Level 1 compression: crops are rewritten rarely and read often; it is a few times faster to
    write than the default and only slightly larger.
    """
    arr = np.ascontiguousarray(arr)
    if arr.ndim != 2 or arr.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"{path}: expected a 2-D uint8/uint16 array, got {arr.dtype} {arr.shape}")
    im = Image.fromarray(arr)  # uint16 -> mode I;16, uint8 -> L
    im.save(path, format="PNG", compress_level=compress_level)
