"""The paper's own layout (pre-release CBIS): 16-bit TIFF mammograms named
P_xxxxx_SIDE_VIEW_n.tif (or P_xxxxx_SIDE_VIEW.tif, one image shared by its masses), a
P_xxxxx_SIDE_VIEW_n_mask.tif per mass, and mass_case_description.csv. Files are found by
name anywhere below the archive folder."""
import os
import re

from tqdm import tqdm

from deepmammo.sources import images
from deepmammo.sources.cases import Case
from deepmammo.sources.cbis import CBISError, read_case_csv
from deepmammo.sources.ingestion import describe_error

CSV_NAME = re.compile(r"^mass_case_description.*\.csv$", re.IGNORECASE)


def _index_tiffs(root):
    """Upper-case file stem -> path of every TIFF below `root` (the first one wins)."""
    index = {}
    for path in images.find_files(root, lambda f: f.lower().endswith((".tif", ".tiff"))):
        index.setdefault(os.path.splitext(os.path.basename(path))[0].upper(), path)
    return index


def find_csvs(root):
    if os.path.isfile(root):
        return [root]  # a case-description CSV named on the command line, whatever its name
    return images.find_files(root, CSV_NAME.match)


def collect(root, ctx):
    csvs = find_csvs(root)
    if not csvs:
        raise FileNotFoundError(f"{root}: no mass_case_description*.csv found")
    root_dir = root if os.path.isdir(root) else os.path.dirname(root)
    index = _index_tiffs(root_dir)
    for csv_path in csvs:
        try:
            rows = read_case_csv(csv_path)
        except CBISError as exc:
            ctx.skip(os.path.basename(csv_path), csv_path, f"unreadable CSV: {exc}", "unreadable CSV")
            continue
        for row in tqdm(rows, desc=os.path.basename(csv_path), unit="row", disable=None):
            with ctx.guard(f"{csv_path}:{row['_line']}", f"{csv_path}:{row['_line']}"):
                _collect_row(csv_path, row, index, ctx)


def _collect_row(csv_path, row, index, ctx):
    pid, side, view = row["patient_id"], row["side"].upper(), row["view"].upper()
    abn = row["abnormality_id"]
    base = f"{pid}_{side}_{view}"
    case_id = f"{base}_{abn}"
    where = f"{csv_path}:{row['_line']}"
    if not ctx.wants_lesion(case_id, where, row.get("abnormality_type") or "MASS"):
        return
    label = ctx.label_or_exclude(case_id, where, row["pathology"])
    if label is None:
        return
    image_path = index.get(case_id.upper()) or index.get(base.upper())
    mask_path = index.get(f"{case_id}_MASK".upper())
    if image_path is None:
        ctx.skip(case_id, where, f"image {case_id}.tif (or {base}.tif) not found", "missing image")
        return
    if mask_path is None:
        ctx.skip(case_id, where, f"mask {case_id}_mask.tif not found", "missing mask")
        return
    try:
        image = images.read_image(image_path, "TIFF")
    except (images.ImageError, OSError) as exc:
        ctx.skip(case_id, image_path, describe_error(exc), "unreadable image")
        return
    case = Case(
        case_id=case_id, patient_id=pid, side=side, view=view, abnormality_id=abn,
        source="tiff", image=os.path.abspath(image_path), image_format="TIFF",
        pathology=row["pathology"].upper(), label=label, shape=row.get("shape", ""),
        margins=row.get("margins", ""), assessment=row.get("assessment", ""),
        subtlety=row.get("subtlety", ""), density=row.get("density", ""),
        bits=16 if image.dtype.itemsize == 2 else 8, rows=image.shape[0], cols=image.shape[1])
    ctx.add_case(case, mask_path=mask_path)
