"""Synthetic archives in the exact on-disk formats of DDSM, CBIS-DDSM and the paper's TIFF
layout, with their quirks, so every ingest path (and the whole pipeline) runs without the real
data. Deterministic per seed; patient i depends only on (seed, i), so a larger archive extends a
smaller one.

    make_archive(kind, out_dir, patients=20, seed=0, size=(600, 400), layout="csv")
        -> list of truth dicts (one per lesion and view: the case_id ingest will give it, its
           label, pathology, lesion type and a digest of its mask), also written to
           out_dir/synth_truth.json (not part of the source formats; ingest ignores it).
"""
import csv
import hashlib
import io
import json
import os
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from deepmammo.atomic import atomic_path, write_text
from deepmammo.sources import ddsm, images
from deepmammo.sources import synth_render as render

KINDS = ("ddsm", "cbis", "tiff")
SIDES = ("LEFT", "RIGHT")
VIEW_NAMES = ("CC", "MLO")
DEFAULT_SIZE = (600, 400)


def mask_digest(mask):
    """A short content hash of a bool mask (shape included)."""
    mask = np.asarray(mask, bool)
    h = hashlib.sha1(np.packbits(mask).tobytes())
    h.update(repr(mask.shape).encode())
    return h.hexdigest()[:16]


@dataclass
class Lesion:
    spec: render.MassSpec
    side: str


@dataclass
class RenderedView:
    side: str
    view: str
    image: np.ndarray               # uint8/uint16
    bits: int
    lesions: list                   # [(number, spec, outline, mask)]


def _plan_patient(seed, index, allow_calc, allow_unproven):
    """Which breasts have which lesions, and where they sit in each view."""
    rng = np.random.default_rng([seed, index, 1])
    u = rng.random()
    breasts = ["LEFT"] if u < 0.45 else ["RIGHT"] if u < 0.9 else ["LEFT", "RIGHT"]
    lesions = []
    for side in breasts:
        n = 1 if rng.random() < 0.8 else 2
        placed = []
        for _ in range(n):
            spec = render.draw_mass(rng, malignant=bool(rng.random() < 0.5))
            if allow_unproven and rng.random() < 0.04:
                spec.pathology = "UNPROVEN"
            _position(rng, spec, placed)
            placed.append(spec)
            lesions.append(Lesion(spec, side))
        if allow_calc and rng.random() < 0.12:
            spec = render.draw_mass(rng, malignant=bool(rng.random() < 0.5), with_calc=True)
            _position(rng, spec, placed)
            placed.append(spec)
            lesions.append(Lesion(spec, side))
    return lesions


def _position(rng, spec, others):
    """Row and depth fractions per view, apart from the breast's other lesions."""
    for _ in range(50):
        cc = (rng.uniform(0.28, 0.72), rng.uniform(0.18, 0.55))
        mlo = (float(np.clip(cc[0] + rng.uniform(-0.15, 0.15), 0.3, 0.75)),
               float(np.clip(cc[1] + rng.uniform(-0.08, 0.08), 0.25, 0.6)))
        ok = all(abs(cc[0] - o.position["CC"][0]) + abs(cc[1] - o.position["CC"][1]) > 0.25
                 and abs(mlo[0] - o.position["MLO"][0]) + abs(mlo[1] - o.position["MLO"][1]) > 0.25
                 for o in others)
        if ok:
            break
    spec.position = {"CC": cc, "MLO": mlo}
    spec.angle = {"CC": float(rng.uniform(0, 2 * np.pi)), "MLO": float(rng.uniform(0, 2 * np.pi))}


def _render_patient(seed, index, lesions, size, bits, lesion_views_only=False):
    """The four views of a patient (every view exists in DDSM); CBIS and the TIFF layout list
    only views with a lesion, so they can skip the others (each view has its own random
    stream, so skipping one changes no other)."""
    rows, cols = size
    scale = rows / 600.0
    out = []
    for vi, (side, view) in enumerate((s, v) for s in SIDES for v in VIEW_NAMES):
        if lesion_views_only and not any(les.side == side for les in lesions):
            continue
        rng = np.random.default_rng([seed, index, 2, vi])
        image, _ = render.breast_background(rng, rows, cols, side, view, scale)
        rendered = []
        number = 0
        for lesion in lesions:
            if lesion.side != side:
                continue
            number += 1
            spec = lesion.spec
            centre = render.place(spec, view, side, rows, cols)
            outline = render.outline_points(spec, centre, spec.radius_frac * rows,
                                            spec.angle[view])
            mask = render.render_lesion(rng, image, spec, outline, (rows, cols), scale)
            rendered.append((number, spec, outline, mask))
        out.append(RenderedView(side, view, render.to_bits(image, bits, rng), bits, rendered))
    return out


def _truth(case_id, patient_id, view, number, spec, mask):
    from deepmammo.sources.cases import bbox_of, label_for
    return {
        "case_id": case_id, "patient_id": patient_id, "side": view.side, "view": view.view,
        "abnormality_id": number, "pathology": spec.pathology,
        "label": label_for(spec.pathology), "lesion_type": spec.lesion_type,
        "shape": spec.shape, "margins": spec.margins, "mask_sha1": mask_digest(mask),
        "bbox": list(bbox_of(mask)), "area": int(mask.sum()),
    }


def make_archive(kind, out_dir, patients=20, seed=0, size=DEFAULT_SIZE, layout="csv",
                 quirks=True):
    """Write a synthetic archive of `kind` (ddsm, cbis, tiff) into `out_dir` (made atomically:
    built under a temporary name, then renamed). Returns the truth list (see module doc)."""
    if kind not in KINDS:
        raise ValueError(f"unknown synthetic archive kind {kind!r}; choose from {', '.join(KINDS)}")
    if patients < 1:
        raise ValueError(f"--patients must be at least 1, not {patients}")
    rows, cols = (int(v) for v in size)
    if rows < 64 or cols < 48:
        raise ValueError(f"image size {rows}x{cols} too small (at least 64x48)")
    if layout not in ("csv", "tcia"):
        raise ValueError(f"layout must be 'csv' or 'tcia', not {layout!r}")
    writer = {"ddsm": _DDSMWriter, "cbis": _CBISWriter, "tiff": _TIFFWriter}[kind]
    with atomic_path(out_dir, is_dir=True) as tmp:
        w = writer(tmp, seed, (rows, cols), layout, quirks)
        for i in tqdm(range(patients), desc=f"synth {kind}", unit="patient", disable=None):
            w.add_patient(i)
        w.finish()
        write_text(os.path.join(tmp, "synth_truth.json"), json.dumps(
            {"kind": kind, "patients": patients, "seed": seed, "size": [rows, cols],
             "layout": layout, "lesions": w.truth}, indent=1) + "\n")
    return w.truth


# ----------------------------------------------------------------------------- DDSM

DDSM_DIGITIZERS = {"A": ["DBA M2100 ImageClear", "HOWTEK"], "B": ["LUMISYS LASER"],
                   "C": ["LUMISYS"], "D": ["HOWTEK MultiRAD850"]}
DDSM_RESOLUTION = {"DBA": 42, "HOWTEK": 43.5, "LUMISYS": 50}


class _DDSMWriter:
    def __init__(self, root, seed, size, layout, quirks):
        self.root, self.seed, self.size, self.quirks = root, seed, size, quirks
        self.truth = []

    def add_patient(self, i):
        rng = np.random.default_rng([self.seed, i, 3])
        site = "ABCD"[int(rng.integers(0, 4))]
        digitizer = DDSM_DIGITIZERS[site][int(rng.integers(0, len(DDSM_DIGITIZERS[site])))]
        bits = 16 if digitizer.startswith("DBA") else 12
        name = f"{site}-{3000 + i:04d}-1"
        stem = name.replace("-", "_")
        lesions = _plan_patient(self.seed, i, allow_calc=True, allow_unproven=True)
        views = _render_patient(self.seed, i, lesions, self.size, bits)
        malignant = any(les.spec.pathology == "MALIGNANT" for les in lesions)
        group = "cancers" if malignant else "benigns"
        folder = os.path.join(self.root, "cases", group, f"{group[:-1]}_{i // 50 + 1:02d}", name)
        os.makedirs(folder, exist_ok=True)
        age = None if (self.quirks and rng.random() < 0.08) else int(rng.integers(38, 85))
        density = int(rng.integers(1, 5))
        write_text(os.path.join(folder, name + ".ics"),
                   self._ics_text(name, digitizer, bits, age, density, views, rng))
        for vi, v in enumerate(views):
            view_name = f"{v.side}_{v.view}"
            predictor = 1 + (i * 4 + vi) % 7
            ddsm.write_ljpeg(os.path.join(folder, f"{stem}.{view_name}.LJPEG"), v.image,
                             predictor=predictor, bits=bits)
            if v.lesions:
                write_text(os.path.join(folder, f"{stem}.{view_name}.OVERLAY"),
                           self._overlay_text(v.lesions, tab=(i % 2 == 1)))
            for number, spec, _, mask in v.lesions:
                self.truth.append(_truth(f"{name}_{view_name}_{number}", name, v, number,
                                         spec, mask))
        # The thumbnail every DDSM case folder has; ingest must ignore it.
        write_text(os.path.join(folder, f"TAPE_{stem}.COMB.16_PGM"), "P2\n1 1\n255\n0\n")

    def _ics_text(self, name, digitizer, bits, age, density, views, rng):
        res = next(v for k, v in DDSM_RESOLUTION.items() if digitizer.startswith(k))
        lines = [" ", "ics_version 1.0 ", f"filename {name} ",
                 f"DATE_OF_STUDY {int(rng.integers(1, 13))} {int(rng.integers(1, 29))} "
                 f"{int(rng.integers(1988, 1999))} ",
                 "PATIENT_AGE " + ("" if age is None else str(age)) + " ",
                 "FILM ", "FILM_TYPE REGULAR ", f"DENSITY {density} ",
                 f"DATE_DIGITIZED {int(rng.integers(1, 29))} {int(rng.integers(1, 13))} 1997 ",
                 f"DIGITIZER {digitizer} ", "SELECTED " if rng.random() < 0.5 else "SEQUENCE "]
        for v in views:
            rows, cols = v.image.shape
            lines.append(f"{v.side}_{v.view} LINES {rows} PIXELS_PER_LINE {cols} BITS_PER_PIXEL "
                         f"{bits} RESOLUTION {res:g} {'OVERLAY' if v.lesions else 'NON_OVERLAY'} ")
        return "\n".join(lines) + "\n"

    def _overlay_text(self, lesions, tab):
        out = [f"TOTAL_ABNORMALITIES {len(lesions)}"]
        for number, spec, outline, _ in lesions:
            out.append(f"ABNORMALITY {number}")
            if spec.lesion_type == "MASS":
                out.append(f"LESION_TYPE MASS SHAPE {spec.shape} MARGINS {spec.margins}")
            else:
                out.append(f"LESION_TYPE CALCIFICATION TYPE {spec.calc_type} "
                           f"DISTRIBUTION {spec.calc_distribution}")
            out += [f"ASSESSMENT {spec.assessment}", f"SUBTLETY {spec.subtlety}",
                    f"PATHOLOGY {spec.pathology}", "TOTAL_OUTLINES 1", "BOUNDARY"]
            chain = ddsm.outline_to_chain(outline)
            out.append(("\t" if tab else "") + " ".join(map(str, chain)) + " #")
        return "\n".join(out) + "\n"

    def finish(self):
        pass


# ----------------------------------------------------------------------------- CBIS-DDSM

CBIS_MASS_COLUMNS = ["patient_id", "breast_density", "left or right breast", "image view",
                     "abnormality id", "abnormality type", "mass shape", "mass margins",
                     "assessment", "pathology", "subtlety", "image file path",
                     "cropped image file path", "ROI mask file path"]
CBIS_CALC_COLUMNS = ["patient_id", "breast density", "left or right breast", "image view",
                     "abnormality id", "abnormality type", "calc type", "calc distribution",
                     "assessment", "pathology", "subtlety", "image file path",
                     "cropped image file path", "ROI mask file path"]


class _CBISWriter:
    """CBIS-DDSM quirks reproduced: crop and mask swapped in the CSV for some rows, path cells
    ending in a newline (so quoted), one mask a few pixels short, compressed DICOMs (RLE and
    JPEG Lossless), both density spellings; `layout='tcia'` writes the TCIA download tree
    (which does not match the CSV paths) instead of the CSV-path layout."""

    def __init__(self, root, seed, size, layout, quirks):
        self.root, self.seed, self.size, self.layout, self.quirks = root, seed, size, layout, quirks
        self.truth = []
        self.rows = {("mass", "train"): [], ("mass", "test"): [], ("calc", "train"): [],
                     ("calc", "test"): []}
        self.n_written = 0
        self.short_mask_done = False

    def add_patient(self, i):
        from deepmammo.sources import cbis
        pid = f"P_{i + 1:05d}"
        split = "test" if i % 4 == 3 else "train"
        lesions = _plan_patient(self.seed, i, allow_calc=True, allow_unproven=False)
        views = _render_patient(self.seed, i, lesions, self.size, 16, lesion_views_only=True)
        rng = np.random.default_rng([self.seed, i, 4])
        density = int(rng.integers(1, 5))
        for v in views:
            if not v.lesions:
                continue  # CBIS lists only images with an abnormality
            written_full = {}
            for number, spec, _, mask in v.lesions:
                lesion = "mass" if spec.lesion_type == "MASS" else "calc"
                prefix = f"{'Mass' if lesion == 'mass' else 'Calc'}-" \
                         f"{'Training' if split == 'train' else 'Test'}"
                subject = f"{prefix}_{pid}_{v.side}_{v.view}"
                if subject not in written_full:
                    written_full[subject] = self._write_full(cbis, subject, pid, v)
                full_csv_path = written_full[subject]
                roi_subject = f"{subject}_{number}"
                crop_csv, mask_csv = self._write_roi(cbis, roi_subject, pid, v, mask)
                self.rows[(lesion, split)].append(self._csv_row(
                    lesion, pid, density, v, number, spec, full_csv_path, crop_csv, mask_csv))
                suffix = "" if lesion == "mass" else "_CALC"
                self.truth.append(_truth(f"{pid}_{v.side}_{v.view}_{number}{suffix}", pid, v,
                                         number, spec, mask))

    def _uid(self, *parts):
        from pydicom.uid import generate_uid
        return generate_uid(prefix="1.3.6.1.4.1.9590.100.1.2.",
                            entropy_srcs=[str(self.seed)] + [str(p) for p in parts])

    def _write_full(self, cbis, subject, pid, v):
        study, series = self._uid(subject, "study"), self._uid(subject, "full")
        csv_path = f"{subject}/{study}/{series}/000000.dcm"
        self.n_written += 1
        # The first full mammogram is RLE-compressed, the second JPEG Lossless.
        compression = {1: "rle", 2: "jpeg-lossless"}.get(self.n_written) if self.quirks else None
        disk = self._disk_path(subject, "full mammogram images", "1-1.dcm", csv_path)
        cbis.write_dicom(disk, v.image, patient_id=subject, series_description="full mammogram images",
                         laterality=v.side[0], view=v.view, study_uid=study, series_uid=series,
                         sop_uid=self._uid(subject, "full", "sop"), compression=compression)
        return csv_path

    def _write_roi(self, cbis, roi_subject, pid, v, mask):
        study = self._uid(roi_subject, "study")
        series_crop, series_mask = self._uid(roi_subject, "crop"), self._uid(roi_subject, "mask")
        from deepmammo.sources.cases import bbox_of
        r0, c0, r1, c1 = bbox_of(mask)
        crop = v.image[max(r0 - 8, 0):r1 + 8, max(c0 - 8, 0):c1 + 8]
        mask_img = mask.astype(np.uint8) * 255
        if self.quirks and not self.short_mask_done and r1 < mask.shape[0] - 4:
            mask_img = mask_img[:-3]  # like Mass-Test_P_00145_LEFT_CC: a few rows short
            self.short_mask_done = True
        k = len(self.truth)
        swapped_files = self.quirks and k % 5 == 2    # mask stored as 000000.dcm
        wrong_csv = self.quirks and k % 3 == 1        # CSV points ROI path at the crop
        crop_name, mask_name = ("000001.dcm", "000000.dcm") if swapped_files else \
            ("000000.dcm", "000001.dcm")
        # Real CBIS keeps the crop and the mask of an abnormality in one series folder.
        folder = f"{roi_subject}/{study}/{series_mask}"
        crop_csv, mask_csv = f"{folder}/{crop_name}", f"{folder}/{mask_name}"
        same_folder = self.layout == "tcia" and k % 2 == 0  # 1-1.dcm and 1-2.dcm together
        crop_disk = self._disk_path(roi_subject, "ROI mask images" if same_folder else
                                    "cropped images", "1-1.dcm", crop_csv)
        mask_disk = self._disk_path(roi_subject, "ROI mask images",
                                    "1-2.dcm" if same_folder else "1-1.dcm", mask_csv)
        cbis.write_dicom(crop_disk, crop, patient_id=roi_subject,
                         series_description="cropped images", laterality=v.side[0], view=v.view,
                         study_uid=study, series_uid=series_crop,
                         sop_uid=self._uid(roi_subject, "crop", "sop"))
        cbis.write_dicom(mask_disk, mask_img, patient_id=roi_subject,
                         series_description="ROI mask images", laterality=v.side[0], view=v.view,
                         study_uid=study, series_uid=series_mask,
                         sop_uid=self._uid(roi_subject, "mask", "sop"))
        if wrong_csv:
            crop_csv, mask_csv = mask_csv, crop_csv
        return crop_csv, mask_csv

    def _disk_path(self, subject, series_desc, tcia_name, csv_path):
        if self.layout == "csv":
            return os.path.join(self.root, *csv_path.split("/"))
        n = int(hashlib.sha1(subject.encode()).hexdigest()[:4], 16) % 90000 + 10000
        return os.path.join(self.root, "CBIS-DDSM", subject, f"07-20-2016-DDSM-NA-{n}",
                            f"1.000000-{series_desc}-{n % 100:02d}", tcia_name)

    def _csv_row(self, lesion, pid, density, v, number, spec, full, crop, mask):
        k = len(self.truth)
        if self.quirks and k % 3 == 0:
            full, crop, mask = full + "\n", crop + "\n", mask + "\n"  # quoted cells
        common = [pid, density, v.side, v.view, number, "mass" if lesion == "mass" else
                  "calcification"]
        if lesion == "mass":
            desc = [spec.shape or "N/A", spec.margins or "N/A"]
        else:
            desc = [spec.calc_type or "N/A", spec.calc_distribution or "N/A"]
        return common + desc + [spec.assessment, spec.pathology, spec.subtlety, full, crop, mask]

    def finish(self):
        for (lesion, split), rows in self.rows.items():
            columns = CBIS_MASS_COLUMNS if lesion == "mass" else CBIS_CALC_COLUMNS
            buf = io.StringIO()
            w = csv.writer(buf, lineterminator="\n")
            w.writerow(columns)
            w.writerows(rows)
            write_text(os.path.join(self.root, f"{lesion}_case_description_{split}_set.csv"),
                       buf.getvalue())


# ----------------------------------------------------------------------------- TIFF layout

TIFF_COLUMNS = ["patient_id", "breast_density", "left or right breast", "image view",
                "abnormality id", "abnormality type", "mass shape", "mass margins",
                "assessment", "pathology", "subtlety"]


class _TIFFWriter:
    """The paper's layout: 16-bit TIFF mammograms P_xxxxx_SIDE_VIEW_n.tif, one
    P_xxxxx_SIDE_VIEW_n_mask.tif per mass, and mass_case_description.csv (masses only)."""

    def __init__(self, root, seed, size, layout, quirks):
        self.root, self.seed, self.size = root, seed, size
        self.truth, self.rows = [], []
        os.makedirs(os.path.join(root, "images"), exist_ok=True)

    def add_patient(self, i):
        pid = f"P_{i + 1:05d}"
        lesions = _plan_patient(self.seed, i, allow_calc=False, allow_unproven=False)
        views = _render_patient(self.seed, i, lesions, self.size, 16, lesion_views_only=True)
        rng = np.random.default_rng([self.seed, i, 5])
        density = int(rng.integers(1, 5))
        for v in views:
            for number, spec, _, mask in v.lesions:
                name = f"{pid}_{v.side}_{v.view}_{number}"
                images.write_tiff(os.path.join(self.root, "images", name + ".tif"), v.image)
                images.write_tiff(os.path.join(self.root, "images", name + "_mask.tif"),
                                  mask.astype(np.uint8) * 255)
                self.rows.append([pid, density, v.side, v.view, number, "mass", spec.shape,
                                  spec.margins, spec.assessment, spec.pathology, spec.subtlety])
                self.truth.append(_truth(name, pid, v, number, spec, mask))

    def finish(self):
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(TIFF_COLUMNS)
        w.writerows(self.rows)
        write_text(os.path.join(self.root, "mass_case_description.csv"), buf.getvalue())
