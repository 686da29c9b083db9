"""The cases table: one row per mass (or calcification), whatever archive it came from.

`cases.csv` columns (COLUMNS, in this order; a `Case` holds one row):

    case_id          unique id, e.g. P_00001_LEFT_CC_1 or B-3024-1_LEFT_CC_1
    patient_id       the patient (splits are made by patient)
    side, view       LEFT/RIGHT, CC/MLO
    abnormality_id   the abnormality's number within its image
    source           ddsm | cbis | tiff | manifest
    source_split     the source's own split (CBIS: train/test), else empty
    image            path of the full mammogram
    image_format     LJPEG | DICOM | TIFF | PNG | PGM
    mask             path of an image file, nonzero = lesion, same size as the image (the
                     source's own mask, or a PNG written by ingest, e.g. for DDSM outlines)
    pathology        MALIGNANT | BENIGN | BENIGN_WITHOUT_CALLBACK (as in the source)
    label            1 malignant, 0 benign
    lesion_type      MASS | CALCIFICATION
    shape, margins   mass descriptors; calc_type, calc_distribution for calcifications
    assessment, subtlety, density
    scanner          DDSM calibration key (DBA, HOWTEK-MGH, HOWTEK-ISMD, LUMISYS) or empty
    bits             bits per pixel of the image (8, 12, 16)
    rows, cols       image size
    bbox             the mask's bounding box "r0,c0,r1,c1", half-open: rows r0..r1-1 and
                     columns c0..c1-1 hold every lesion pixel

Paths are written relative to the folder holding cases.csv (absolute when on another drive);
`read_cases` resolves them to absolute paths.

Beside `X.csv` ingest writes `X.skipped.csv` (every case not ingested, or ingested after a fix:
status skipped / excluded / fixed, case, the file concerned, a short problem name and the full
reason) and `X.report.json` (counts by status and problem, options, provenance, timing).
"""
import csv
import dataclasses
import io
import os

import numpy as np

from deepmammo.atomic import write_csv, write_text
from deepmammo.sources import images
from deepmammo.textfile import read_text


@dataclasses.dataclass(kw_only=True)
class Case:
    """One row of cases.csv as a source ingests it. A source sets what its archive says; every
    descriptor it lacks stays empty. `mask` and `bbox` are set by ingest (ingestion.py), once the
    mask is read or drawn."""
    case_id: str
    patient_id: str
    side: str = ""
    view: str = ""
    abnormality_id: object = ""
    source: str
    source_split: str = ""
    image: str
    image_format: str
    mask: str = ""
    pathology: str
    label: int
    lesion_type: str = "MASS"
    shape: str = ""
    margins: str = ""
    calc_type: str = ""
    calc_distribution: str = ""
    assessment: str = ""
    subtlety: str = ""
    density: str = ""
    scanner: str = ""
    bits: int
    rows: int
    cols: int
    bbox: tuple | None = None

    def row(self):
        """The case as a cases.csv row (a dict in COLUMNS order)."""
        return dataclasses.asdict(self)


COLUMNS = tuple(f.name for f in dataclasses.fields(Case))
INT_COLUMNS = ("label", "bits", "rows", "cols")
REPORT_COLUMNS = ("status", "case", "file", "problem", "reason")
PATH_COLUMNS = ("image", "mask")
MAX_SIDE = 65535   # image sides are 16-bit numbers in every format read here


class CasesError(ValueError):
    """A cases.csv that cannot be used; the message names the file and row."""


def label_for(pathology, bwc="benign"):
    """1 malignant, 0 benign, None excluded (UNPROVEN; BENIGN_WITHOUT_CALLBACK with bwc='exclude')."""
    p = (pathology or "").strip().upper()
    if p == "MALIGNANT":
        return 1
    if p == "BENIGN":
        return 0
    if p == "BENIGN_WITHOUT_CALLBACK":
        return 0 if bwc == "benign" else None
    return None


def bbox_of(mask):
    """Half-open bounding box (r0, c0, r1, c1) of a bool mask; None when empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if not len(rows):
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def format_bbox(box):
    return ",".join(str(int(v)) for v in box)


def parse_bbox(text):
    parts = [int(v) for v in str(text).split(",")]
    if len(parts) != 4:
        raise ValueError(f"bbox {text!r} is not r0,c0,r1,c1")
    return tuple(parts)


def _relative(path, base):
    try:
        return os.path.relpath(path, base)
    except ValueError:  # another drive on Windows
        return os.path.abspath(path)


def cases_to_csv_text(rows, csv_path):
    """CSV text of `rows` (dicts) with paths made relative to csv_path's folder."""
    base = os.path.dirname(os.path.abspath(csv_path))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        out = {k: ("" if row.get(k) is None else row.get(k)) for k in COLUMNS}
        for k in PATH_COLUMNS:
            if out[k]:
                out[k] = _relative(out[k], base)
        if isinstance(out["bbox"], (tuple, list)):
            out["bbox"] = format_bbox(out["bbox"])
        writer.writerow(out)
    return buf.getvalue()


def write_cases(rows, csv_path):
    """Write cases.csv atomically."""
    write_text(csv_path, cases_to_csv_text(rows, csv_path))


def write_report_csv(entries, path):
    write_csv(path, REPORT_COLUMNS, entries)


def report_paths(csv_path):
    """(skipped.csv, report.json) paths beside a cases.csv."""
    stem = os.path.splitext(os.fspath(csv_path))[0]
    return stem + ".skipped.csv", stem + ".report.json"


def read_cases(path):
    """Read cases.csv into a list of dicts: paths absolute, ints parsed, bbox a 4-tuple."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: cases table not found")
    # relative to where the table really is: a linked cases folder keeps its paths
    base = os.path.dirname(os.path.realpath(path))
    reader = csv.DictReader(io.StringIO(read_text(path, "cases table"), newline=""))
    try:
        return _rows(reader, path, base)
    except csv.Error as exc:   # NUL bytes, an unterminated quote, a huge field
        raise CasesError(f"{path}: line {reader.line_num}: not a CSV row ({exc})") from None


def _rows(reader, path, base):
    missing = [c for c in ("case_id", "patient_id", "image", "image_format", "mask", "label",
                           "rows", "cols", "bbox") if c not in (reader.fieldnames or [])]
    if missing:
        raise CasesError(f"{path}: missing columns {', '.join(missing)}")
    rows = []
    for raw in reader:
        i = reader.line_num
        if None in raw:
            raise CasesError(f"{path}: line {i}: {len(raw[None])} more cell(s) than the "
                             f"header's {len(reader.fieldnames)} columns")
        short = [k for k, v in raw.items() if v is None]
        if short:
            raise CasesError(f"{path}: line {i}: the row ends before column {short[0]!r} "
                             f"({len(reader.fieldnames) - len(short)} of "
                             f"{len(reader.fieldnames)} cells)")
        row = dict(raw)
        try:
            for k in INT_COLUMNS:
                if row.get(k, "") != "":
                    row[k] = int(row[k])
            row["bbox"] = parse_bbox(row["bbox"])
            if str(row.get("abnormality_id", "")).isdigit():
                row["abnormality_id"] = int(row["abnormality_id"])
        except ValueError as exc:
            raise CasesError(f"{path}: line {i}: {exc}") from None
        for k in ("rows", "cols"):
            if not isinstance(row[k], int) or not 0 < row[k] <= MAX_SIDE:
                raise CasesError(f"{path}: line {i}: {k} {row[k]!r} is not an image side "
                                 f"(1..{MAX_SIDE})")
        for k in PATH_COLUMNS:
            if row.get(k):
                row[k] = os.path.normpath(os.path.join(base, row[k]))
        rows.append(row)
    return rows


def load_image(row):
    """The full mammogram of a cases row as a 2-D uint8/uint16 array (rows, cols)."""
    image = images.read_image(row["image"], row["image_format"],
                              shape=(int(row["rows"]), int(row["cols"])))
    if image.shape != (int(row["rows"]), int(row["cols"])):
        raise images.ImageError(f"{row['image']}: image shape {image.shape} differs from the "
                                f"table's {(row['rows'], row['cols'])} (case {row['case_id']})")
    return image


def load_mask(row):
    """The mask of a cases row as a bool array of the image's shape."""
    return images.read_mask(row["mask"], shape=(int(row["rows"]), int(row["cols"])))
