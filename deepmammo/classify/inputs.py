"""What `classify` is given, turned into records by the functions `crops` and `lmdb` use.

Three forms:
  - one mammogram (DDSM .LJPEG with its .ics, DICOM, TIFF, PNG, PGM) with its mass as a mask
    file, a DDSM .OVERLAY (every outline in it, or --abnormality N) or a bounding box; a DDSM
    .LJPEG without either takes the .OVERLAY beside it;
  - a cases CSV in the project's own format (deepmammo.sources.cases), one mass per row;
  - a folder of crops: a `deepmammo crops` output (its crops.csv gives each crop's bit depth,
    scanner and label) or any folder of PNG/TIFF/DICOM crops.

Each is split into tasks (one per image: a mammogram is decoded once for all its masses) that
worker processes turn into Mass records; a task that fails marks its masses with the error,
one line naming the file, and the others go on.
"""
import os
import re
import warnings
from dataclasses import dataclass, field

import numpy as np

from deepmammo.sources import cases as case_table
from deepmammo.sources import images

CROP_EXTENSIONS = (".png", ".tif", ".tiff", ".dcm", ".dicom", ".pgm")
CONTAINER = "container"   # bits: the sample size of the decoded array (16 or 8)


class InputError(ValueError):
    """An input `classify` cannot use; the message names the file."""


@dataclass
class Mass:
    """One mass: its name in the output, the file it came from, what is known about it, and
    its record (3, size, size) uint8, or the error that kept it from one."""
    index: int
    name: str
    file: str
    label: object = None
    info: dict = field(default_factory=dict)
    record: object = None
    error: str = None
    p: float = None            # p(malignant), once classified


@dataclass
class ImageTask:
    """A mammogram and the masses on it. region: ("mask", path) | ("box", bbox) |
    ("outline", (N, 2) array, overlay path)."""
    path: str
    image_format: str
    shape: tuple = None        # needed for LJPEG (from the .ics)
    bits: object = None        # None: DICOM's BitsStored, else the container depth
    scanner: str = ""
    masses: list = field(default_factory=list)   # [(index, name, region, label, info)]


@dataclass
class CropTask:
    index: int
    name: str
    path: str
    bits: object = None
    scanner: str = ""
    label: object = None
    info: dict = field(default_factory=dict)


# ------------------------------------------------------------------------- the image forms
def parse_box(text):
    """'r0,c0,r1,c1' (half-open rows and columns, as cases.csv writes bbox)."""
    try:
        box = case_table.parse_bbox(text)
    except ValueError:
        raise InputError(f"--box {text!r}: expected r0,c0,r1,c1 (top row, left column, bottom "
                         "row + 1, right column + 1)") from None
    return box


_LJPEG_NAME = re.compile(r"^(?P<case>.+?)\.(?P<view>(?:LEFT|RIGHT)_(?:CC|MLO))\.LJPEG$",
                         re.IGNORECASE)


def ddsm_view(ljpeg_path, ics_path=None):
    """(ICSCase, ICSView, .ics path) of a DDSM .LJPEG: its view from the file name, its size,
    bit depth and scanner from the case's .ics (beside it unless named)."""
    from deepmammo.sources import ddsm
    name = os.path.basename(ljpeg_path)
    m = _LJPEG_NAME.match(name)
    if not m:
        raise InputError(f"{ljpeg_path}: not named as DDSM names its images "
                         "(CASE.LEFT_CC.LJPEG ...): its view cannot be told")
    if ics_path is None:
        folder = os.path.dirname(os.path.abspath(ljpeg_path))
        key = ddsm._case_key(m["case"])
        found = [os.path.join(folder, f) for f in sorted(os.listdir(folder))
                 if f.lower().endswith(".ics")]
        same = [p for p in found
                if ddsm._case_key(os.path.splitext(os.path.basename(p))[0]) == key]
        if not same and len(found) != 1:
            raise InputError(f"{ljpeg_path}: no .ics file of case {m['case']} beside it (the "
                             "DDSM case header gives the image's size and bit depth); pass "
                             "--ics")
        ics_path = (same or found)[0]
    ics = ddsm.read_ics(ics_path)
    view = ics.views.get(m["view"].upper())
    if view is None:
        raise InputError(f"{ics_path}: lists no {m['view'].upper()} view for {ljpeg_path}")
    return ics, view, ics_path


def image_task(image, mask=None, overlay=None, box=None, abnormality=None, ics=None,
               bits=None, scanner=None, label=None):
    """The task of one mammogram and its mass (one of mask, overlay, box; a DDSM .LJPEG
    without any takes its .OVERLAY). Checks what can be checked without decoding."""
    image = os.fspath(image)
    if not os.path.isfile(image):
        raise FileNotFoundError(f"{image}: image file not found")
    given = [x for x in (mask, overlay, box) if x is not None]
    if len(given) > 1:
        raise InputError("give the mass one way: --mask, --overlay or --box")
    try:
        fmt = images.format_of(image)
    except images.ImageError as exc:
        raise InputError(str(exc)) from None
    stem = os.path.splitext(os.path.basename(image))[0]
    task = ImageTask(os.path.abspath(image), fmt, bits=bits, scanner=scanner or "")
    base_name = stem
    if fmt == "LJPEG":
        case, view, _ = ddsm_view(image, ics)
        task.shape = view.shape
        task.bits = bits if bits is not None else view.bits_per_pixel
        task.scanner = scanner if scanner is not None else case.scanner
        base_name = f"{case.name}_{view.name}"   # as `ingest ddsm` names its cases
        if not given:
            beside = os.path.join(os.path.dirname(task.path),
                                  os.path.basename(image)[:-len(".LJPEG")] + ".OVERLAY")
            if not os.path.isfile(beside):
                raise InputError(f"{image}: no mass given (--mask, --overlay or --box) and no "
                                 f".OVERLAY beside it ({beside})")
            overlay = beside
    elif not given:
        raise InputError(f"{image}: no mass given: pass --mask FILE, --overlay FILE or "
                         "--box r0,c0,r1,c1")
    info = {"image": task.path}
    if overlay is not None:
        from deepmammo.sources import ddsm
        overlay = os.fspath(overlay)
        abns = ddsm.read_overlay(overlay)
        if abnormality is not None:
            abns = [a for a in abns if a.number == int(abnormality)]
            if not abns:
                raise InputError(f"{overlay}: no abnormality {abnormality}")
        for i, abn in enumerate(abns):
            task.masses.append((i, f"{base_name}_{abn.number}",
                                ("outline", abn.boundary, overlay), label,
                                dict(info, mass_file=os.path.abspath(overlay),
                                     abnormality=abn.number, pathology=abn.pathology,
                                     lesion_type=abn.lesion_type)))
    elif mask is not None:
        mask = os.fspath(mask)
        if not os.path.isfile(mask):
            raise FileNotFoundError(f"{mask}: mask file not found")
        task.masses.append((0, base_name, ("mask", os.path.abspath(mask)), label,
                            dict(info, mass_file=os.path.abspath(mask))))
    else:
        bbox = parse_box(box) if isinstance(box, str) else tuple(box)
        task.masses.append((0, base_name, ("box", bbox), label,
                            dict(info, box=case_table.format_bbox(bbox))))
    return task


def cases_tasks(path):
    """One task per mammogram of a cases CSV (the project's own format)."""
    rows = case_table.read_cases(path)
    if not rows:
        raise InputError(f"{path}: no case rows")
    by_image = {}
    for i, row in enumerate(rows):
        task = by_image.get(row["image"])
        if task is None:
            task = by_image[row["image"]] = ImageTask(
                row["image"], row["image_format"], shape=(int(row["rows"]), int(row["cols"])),
                bits=row.get("bits") or CONTAINER, scanner=row.get("scanner", ""))
        label = row.get("label")
        info = {k: row.get(k, "") for k in ("case_id", "patient_id", "side", "view",
                                            "abnormality_id", "pathology")}
        info["image"] = row["image"]
        task.masses.append((i, row["case_id"], ("mask", row["mask"]),
                            label if label in (0, 1) else None, info))
    return list(by_image.values())


def crops_tasks(folder, recipe=None, bits=None, scanner=None):
    """One task per crop of a folder: a `deepmammo crops` output (crops.csv) or image files."""
    folder = os.fspath(folder)
    table = os.path.join(folder, "crops.csv")
    if os.path.isfile(table):
        from deepmammo.prep.crops import read_crops
        _check_crops_recipe(folder, recipe)
        tasks = []
        for i, row in enumerate(read_crops(folder)):
            info = {k: row.get(k, "") for k in ("crop_id", "case_id", "patient_id")}
            tasks.append(CropTask(i, row["crop_id"], row["path"],
                                  bits if bits is not None else (row.get("bits") or None),
                                  scanner if scanner is not None else row.get("scanner", ""),
                                  row["label"], info))
        return tasks
    files = images.find_files(folder, lambda n: n.lower().endswith(CROP_EXTENSIONS))
    if not files:
        raise InputError(f"{folder}: no crops in it (no crops.csv and no "
                         f"{', '.join(CROP_EXTENSIONS)} files)")
    return [CropTask(i, os.path.splitext(os.path.relpath(p, folder))[0].replace(os.sep, "/"),
                     p, bits, scanner or "", None, {}) for i, p in enumerate(files)]


def _check_crops_recipe(folder, recipe):
    """A crops folder cut with another padding would give the net other context."""
    import json
    meta = os.path.join(folder, "crops.json")
    if recipe is None or not os.path.isfile(meta):
        return
    with open(meta) as f:
        try:
            config = json.load(f).get("config") or {}
        except (ValueError, AttributeError):
            return
    padding, edge = config.get("padding"), config.get("edge", "clip")
    if padding and (padding != str(recipe.padding) or edge != recipe.edge):
        raise InputError(f"{meta}: these crops were padded {padding} (edge {edge}), the run "
                         f"trained on {recipe.padding} (edge {recipe.edge}, {recipe.source})")


# ------------------------------------------------------------------------- tasks -> records
def _image_bits(task, image):
    if task.bits == CONTAINER:   # as `crops` takes a cases row without bits
        return 16 if image.dtype == np.uint16 else 8
    if task.bits not in (None, ""):
        return int(task.bits)
    if task.image_format == "DICOM":
        return images.dicom_bits(images.read_dicom(task.path, pixels=False), image, task.path)
    return 8 * image.dtype.itemsize


def _mass_box(region, shape, image_path):
    kind = region[0]
    if kind == "mask":
        mask = images.read_mask(region[1], shape)
        box = case_table.bbox_of(mask)
        if box is None:
            raise InputError(f"{region[1]}: no mass in the mask (every pixel is 0)")
        return box
    if kind == "box":
        r0, c0, r1, c1 = region[1]
        rows, cols = shape
        if not (0 <= r0 < r1 <= rows and 0 <= c0 < c1 <= cols):
            raise InputError(f"{image_path}: box {r0},{c0},{r1},{c1} is not inside the "
                             f"{rows}x{cols} image (r0,c0,r1,c1, half-open)")
        return region[1]
    from deepmammo.sources import ddsm
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ddsm.OutlineClippedWarning)
        mask = ddsm.outline_mask(region[1], shape)
    box = case_table.bbox_of(mask)
    if box is None:
        raise InputError(f"{region[2]}: the outline lies outside the {shape[0]}x{shape[1]} "
                         "image")
    return box


def _one_line(exc):
    from deepmammo.sources.ingestion import describe_error
    text = describe_error(exc) if isinstance(exc, (OSError, ValueError)) else \
        f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())


def prepare(task, recipe):
    """The Mass records of one task (errors kept per mass)."""
    if isinstance(task, CropTask):
        mass = Mass(task.index, task.name, task.path, task.label, dict(task.info))
        try:
            crop = images.read_image(task.path)
            bits = int(task.bits) if task.bits not in (None, "") else (
                images.dicom_bits(images.read_dicom(task.path, pixels=False), crop, task.path)
                if images.format_of(task.path) == "DICOM" else 8 * crop.dtype.itemsize)
            mass.record = recipe.record(crop, bits, task.scanner)
        except Exception as exc:  # noqa: BLE001  (one bad crop is reported, the rest go on)
            mass.error = _with_file(_one_line(exc), task.path)
        return [mass]
    masses = [Mass(i, name, task.path, label, dict(info))
              for i, name, _, label, info in task.masses]
    try:
        image = np.asarray(images.read_image(task.path, task.image_format, shape=task.shape))
        if task.shape is not None and image.shape != tuple(task.shape):
            raise InputError(f"{task.path}: image shape {image.shape} differs from the "
                             f"recorded {tuple(task.shape)}")
        bits = _image_bits(task, image)
    except Exception as exc:  # noqa: BLE001  (every mass of the image gets the reason)
        reason = _with_file(_one_line(exc), task.path)
        for mass in masses:
            mass.error = reason
        return masses
    for mass, (_, _, region, _, _) in zip(masses, task.masses):
        try:
            box = _mass_box(region, image.shape, task.path)
            mass.info["bbox"] = case_table.format_bbox(box)
            mass.record = recipe.record(recipe.crop(image, box, bits), bits, task.scanner)
        except Exception as exc:  # noqa: BLE001
            mass.error = _with_file(_one_line(exc), region[1] if region[0] == "mask"
                                    else task.path)
    return masses


def _with_file(text, path):
    """Messages name the file; readers that do not get it prefixed."""
    return text if str(path) in text else f"{path}: {text}"
