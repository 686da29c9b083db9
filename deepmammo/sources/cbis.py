"""CBIS-DDSM (the TCIA DICOM re-release): the four case-description CSVs, DICOM images, and
the release's quirks (see docs/formats.md):

* path cells quoted and ending in a newline: every cell is stripped;
* `breast_density` in the mass CSVs, `breast density` in the calc CSVs;
* crop and ROI mask often swapped: told apart by content (the mask has the full image's
  shape, give or take a few pixels, and at most two values), whatever the file names say;
* masks a few pixels off the image size: padded or cut at the bottom/right edge (the lesion
  pixels stay where they are), written as PNG, and reported;
* two on-disk layouts: the CSV paths (`<Subject>/<Study>/<Series>/00000x.dcm`) or the TCIA
  download tree (`CBIS-DDSM/<Subject>/<date>-DDSM-NA-<n>/1.000000-<series>-<n>/1-x.dcm`).
  Both are mapped by subject folder name (+ abnormality id), so either works.
"""
import csv
import io
import os
import re

import numpy as np
from tqdm import tqdm

from deepmammo.sources import images
from deepmammo.sources.cases import Case
from deepmammo.sources.ingestion import describe_error
from deepmammo.textfile import TextFileError, read_text

CSV_NAME = re.compile(r"^(mass|calc)_case_description_(train|test)_set\.csv$", re.IGNORECASE)
SUBJECT = re.compile(r"^(Mass|Calc)-(Training|Test)_P_\d+_(LEFT|RIGHT)_(CC|MLO)(_\d+)?$",
                     re.IGNORECASE)
MAX_MASK_SIZE_FIX = 16  # pixels: larger mismatches are not "a few pixels" and are skipped

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


class CBISError(ValueError):
    pass


# ----------------------------------------------------------------------------- CSVs

def _norm_key(key):
    key = " ".join((key or "").strip().lower().replace("_", " ").split())
    return {"breast density": "density", "left or right breast": "side", "image view": "view",
            "abnormality id": "abnormality_id", "abnormality type": "abnormality_type",
            "mass shape": "shape", "mass margins": "margins", "calc type": "calc_type",
            "calc distribution": "calc_distribution", "image file path": "image_path",
            "cropped image file path": "crop_path", "roi mask file path": "mask_path",
            "patient id": "patient_id"}.get(key, key.replace(" ", "_"))


def read_case_csv(path):
    """Rows of a CBIS case-description CSV as dicts with normalised keys (density, side, view,
    abnormality_id, shape, margins, calc_type, calc_distribution, image_path, crop_path,
    mask_path, ...) and every cell stripped."""
    try:
        text = read_text(path, "case-description CSV")
    except OSError as exc:
        raise CBISError(f"{path}: {exc.strerror}") from None
    except TextFileError as exc:
        raise CBISError(str(exc)) from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        return _case_rows(reader, path)
    except csv.Error as exc:   # NUL bytes, an unterminated quote, a huge field
        raise CBISError(f"{path}:{reader.line_num}: not a CSV row ({exc})") from None


def _case_rows(reader, path):
    try:
        header = next(reader)
    except StopIteration:
        raise CBISError(f"{path}: empty CSV") from None
    keys = [_norm_key(h) for h in header]
    for needed in ("patient_id", "side", "view", "abnormality_id", "pathology"):
        if needed not in keys:
            raise CBISError(f"{path}: no column for {needed} (header: {header})")
    rows = []
    for cells in reader:
        if not any(c.strip() for c in cells):
            continue
        row = {k: (cells[i].strip() if i < len(cells) else "") for i, k in enumerate(keys)}
        row["_line"] = reader.line_num
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- DICOM

def write_dicom(path, array, patient_id, series_description, laterality="", view="",
                study_uid=None, series_uid=None, sop_uid=None, compression=None):
    """Write a CBIS-style Secondary Capture DICOM (MONOCHROME2), atomically.
    compression: None, 'rle' (RLE Lossless) or 'jpeg-lossless' (Process 14, SV1)."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import (
        PYDICOM_IMPLEMENTATION_UID,
        ExplicitVRLittleEndian,
        JPEGLosslessSV1,
        RLELossless,
        generate_uid,
    )
    array = np.ascontiguousarray(array)
    bits = 16 if array.dtype == np.uint16 else 8
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SECONDARY_CAPTURE
    meta.MediaStorageSOPInstanceUID = sop_uid or generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SECONDARY_CAPTURE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.PatientID = patient_id
    ds.PatientName = patient_id
    ds.Modality = "MG"
    ds.SeriesDescription = series_description
    ds.Laterality = laterality
    ds.PatientOrientation = ["A", "R"] if laterality == "L" else ["P", "L"]
    ds.BodyPartExamined = "BREAST"
    ds.ViewPosition = view
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = array.shape
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    ds.PixelData = array.tobytes()
    if compression == "rle":
        ds.compress(RLELossless, generate_instance_uid=False)  # keep it deterministic
    elif compression == "jpeg-lossless":
        from pydicom.encaps import encapsulate

        from deepmammo.sources import ljpeg
        # Predictor 1 is coded the same by PVRG and the standard; no header swap here.
        ds.PixelData = encapsulate([ljpeg.encode(array, 1, bits, swap_header=False)])
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
        meta.TransferSyntaxUID = JPEGLosslessSV1
    elif compression is not None:
        raise ValueError(f"unknown DICOM compression {compression!r}")
    from deepmammo.atomic import atomic_path
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_path(path) as tmp:
        pydicom.dcmwrite(tmp, ds, enforce_file_format=True)


# ----------------------------------------------------------------------------- archive

def find_csvs(root):
    """The case-description CSVs below `root` (or `root` itself when it is one)."""
    return images.find_files(root, CSV_NAME.match)


def index_subjects(root):
    """Subject folder name (upper case) -> the .dcm files below it, for either layout."""
    index = {}
    for folder, dirs, _ in os.walk(root):
        dirs.sort()
        name = os.path.basename(folder)
        if SUBJECT.match(name):
            dcms = []
            for sub, subdirs, subfiles in os.walk(folder):
                subdirs.sort()
                dcms += [os.path.join(sub, f) for f in sorted(subfiles)
                         if f.lower().endswith(".dcm")]
            index.setdefault(name.upper(), []).extend(dcms)
            dirs[:] = []  # everything below is already listed
    return index


def _subject_of(csv_path):
    first = csv_path.replace("\\", "/").strip("/").split("/")[0]
    return first.upper()


def _resolve(root, csv_dir, rel):
    """The file a CSV path names, if it exists on disk under any usual base."""
    rel = rel.strip().replace("\\", "/")
    if not rel:
        return None
    for base in (root, os.path.join(root, "CBIS-DDSM"), csv_dir):
        p = os.path.join(base, *rel.split("/"))
        if os.path.isfile(p):
            return p
    return None


class _DicomCache:
    """Read each DICOM once per image (the full mammogram is shared by its abnormalities)."""

    def __init__(self):
        self.key, self.value = None, None

    def full_image(self, path):
        if self.key != path:
            ds = images.read_dicom(path)
            self.value = (ds, images.read_dicom_pixels(path, ds))
            self.key = path
        return self.value


def collect(root, ctx):
    csvs = find_csvs(root)
    if not csvs:
        raise FileNotFoundError(f"{root}: no mass_/calc_case_description_*_set.csv found")
    root_dir = root if os.path.isdir(root) else os.path.dirname(root)
    index = index_subjects(root_dir)
    cache = _DicomCache()
    for csv_path in csvs:
        lesion, split = CSV_NAME.match(os.path.basename(csv_path)).groups()
        try:
            rows = read_case_csv(csv_path)
        except CBISError as exc:
            ctx.skip(os.path.basename(csv_path), csv_path, f"unreadable CSV: {exc}", "unreadable CSV")
            continue
        for row in tqdm(rows, desc=os.path.basename(csv_path), unit="row", disable=None):
            with ctx.guard(f"{csv_path}:{row['_line']}", f"{csv_path}:{row['_line']}"):
                _collect_row(root_dir, csv_path, lesion.lower(), split.lower(), row, index,
                             cache, ctx)


def _collect_row(root, csv_path, lesion, split, row, index, cache, ctx):
    pid, side, view = row["patient_id"], row["side"].upper(), row["view"].upper()
    # Mass and calcification ids are numbered separately in CBIS: keep their case ids apart.
    case_id = f"{pid}_{side}_{view}_{row['abnormality_id']}" + ("" if lesion == "mass" else "_CALC")
    where = f"{csv_path}:{row['_line']}"
    if not ctx.wants_lesion(case_id, where, "MASS" if lesion == "mass" else "CALCIFICATION"):
        return
    label = ctx.label_or_exclude(case_id, where, row["pathology"])
    if label is None:
        return
    csv_dir = os.path.dirname(csv_path)
    image_path = _resolve(root, csv_dir, row.get("image_path", ""))
    if image_path is None:
        full = [p for p in index.get(_subject_of(row.get("image_path", "")), [])]
        image_path = full[0] if len(full) == 1 else None
        if len(full) > 1:
            ctx.skip(case_id, where, f"{len(full)} DICOM files for the full mammogram "
                                     f"{_subject_of(row.get('image_path', ''))}", "ambiguous image")
            return
    if image_path is None:
        ctx.skip(case_id, row.get("image_path") or where, "full mammogram DICOM not found", "missing image")
        return
    try:
        ds, image = cache.full_image(image_path)
    except (images.ImageError, OSError) as exc:
        ctx.skip(case_id, image_path, describe_error(exc), "unreadable image")
        return
    if image.ndim != 2:
        ctx.skip(case_id, image_path, f"expected one greyscale frame, got shape {image.shape}",
                 "unreadable image")
        return
    mask, mask_path = _find_mask(root, csv_dir, row, index, image.shape, case_id, where, ctx)
    if mask is None:
        return
    bits = images.dicom_bits(ds, image, image_path)
    case = Case(
        case_id=case_id, patient_id=pid, side=side, view=view,
        abnormality_id=row["abnormality_id"], source="cbis", source_split=split,
        image=os.path.abspath(image_path), image_format="DICOM",
        pathology=row["pathology"].upper(), label=label,
        lesion_type="MASS" if lesion == "mass" else "CALCIFICATION",
        shape=_na(row.get("shape")), margins=_na(row.get("margins")),
        calc_type=_na(row.get("calc_type")), calc_distribution=_na(row.get("calc_distribution")),
        assessment=row.get("assessment", ""), subtlety=row.get("subtlety", ""),
        density=row.get("density", ""), bits=bits, rows=image.shape[0], cols=image.shape[1])
    ctx.add_case(case, mask=mask, mask_path=mask_path)


def _na(value):
    value = (value or "").strip()
    return "" if value.upper() in ("N/A", "NA", "NAN") else value


def _two_valued(arr):
    """True for a 2-D array holding at most two distinct values (linear time, no sort)."""
    if arr.ndim != 2 or arr.size == 0:
        return False
    flat = arr.ravel()
    rest = flat[flat != flat[0]]
    return rest.size == 0 or bool((rest == rest[0]).all())


def _find_mask(root, csv_dir, row, index, shape, case_id, where, ctx):
    """(mask array or None, source mask path or None). Candidates: the CSV's crop and mask
    files when they exist, otherwise every DICOM in the ROI subject folder; the mask is the
    candidate with at most two values closest to the image's shape."""
    named_mask = _resolve(root, csv_dir, row.get("mask_path", ""))
    named_crop = _resolve(root, csv_dir, row.get("crop_path", ""))
    candidates = [p for p in (named_mask, named_crop) if p]
    if not candidates:
        subject = _subject_of(row.get("mask_path", "") or row.get("crop_path", ""))
        candidates = index.get(subject, [])
    if not candidates:
        ctx.skip(case_id, row.get("mask_path") or where, "ROI mask DICOM not found", "missing mask")
        return None, None
    best, problems = None, []
    for path in candidates:
        try:
            arr = images.read_dicom_pixels(path)
        except (images.ImageError, OSError) as exc:
            problems.append(str(exc))
            continue
        if not _two_valued(arr):
            continue  # a crop (grey levels), not a mask
        off = abs(arr.shape[0] - shape[0]) + abs(arr.shape[1] - shape[1])
        if best is None or off < best[0]:
            best = (off, path, arr)
    if best is None:
        why = "; ".join(problems) if problems else \
            f"no two-valued ROI mask among {len(candidates)} candidate DICOM file(s)"
        ctx.skip(case_id, candidates[0], why, "missing mask")
        return None, None
    _, path, arr = best
    if named_mask and path != named_mask:
        ctx.fixed(case_id, named_mask, "crop and ROI mask swapped in the CSV; "
                                       "told apart by content",
                  "crop/mask swapped")
    mask = arr != 0
    if mask.shape == tuple(shape):
        return mask, path  # the source's own mask file, already read
    dr, dc = shape[0] - mask.shape[0], shape[1] - mask.shape[1]
    if max(abs(dr), abs(dc)) > MAX_MASK_SIZE_FIX:
        ctx.skip(case_id, path, f"mask shape {mask.shape} far from image shape {tuple(shape)}",
                 "mask size")
        return None, None
    fixed = np.zeros(shape, bool)
    r, c = min(shape[0], mask.shape[0]), min(shape[1], mask.shape[1])
    fixed[:r, :c] = mask[:r, :c]
    lost = int(mask.sum() - fixed.sum())
    ctx.fixed(case_id, path, f"mask shape {mask.shape} differs from image shape {tuple(shape)}; "
                             f"padded/cut at the bottom-right edge ({lost} lesion pixels cut)",
              "mask size")
    return fixed, None
