"""A tiny synthetic archive for the dataset-stage tests: cases.csv + 16-bit PNG images and PNG
masks, several masses and views per patient. Other test_prep_* files import `make_archive`."""
import csv
import os

import numpy as np
from PIL import Image

CASE_COLUMNS = ("case_id", "patient_id", "side", "view", "abnormality_id", "source", "image",
                "image_format", "mask", "pathology", "label", "lesion_type", "shape",
                "margins", "assessment", "subtlety", "density", "scanner", "bits", "rows",
                "cols", "bbox")


def write_png16(path, arr):
    Image.fromarray(np.asarray(arr, dtype=np.uint16)).save(path)


def write_mask(path, mask):
    Image.fromarray((np.asarray(mask, bool) * 255).astype(np.uint8)).save(path)


def ellipse(shape, centre, radii):
    rr, cc = np.mgrid[:shape[0], :shape[1]]
    return ((rr - centre[0]) / radii[0]) ** 2 + ((cc - centre[1]) / radii[1]) ** 2 <= 1.0


def case_row(case_id, patient, side, view, abn, image, mask, label, bits, shape, bbox):
    return {"case_id": case_id, "patient_id": patient, "side": side, "view": view,
            "abnormality_id": str(abn), "source": "synthetic", "image": image,
            "image_format": "png", "mask": mask,
            "pathology": "MALIGNANT" if label else "BENIGN", "label": str(label),
            "lesion_type": "MASS", "shape": "OVAL", "margins": "CIRCUMSCRIBED",
            "assessment": "4", "subtlety": "3", "density": "2", "scanner": "LUMISYS",
            "bits": str(bits), "rows": str(shape[0]), "cols": str(shape[1]),
            "bbox": ",".join(map(str, bbox))}


def write_cases(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CASE_COLUMNS, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow(r)


def make_archive(root, n_patients=24, seed=0, shape=(120, 96), bits=12):
    """Patients with 1-2 breasts x CC/MLO views, one or two masses per image; labels per
    patient. Returns the cases.csv path."""
    rng = np.random.RandomState(seed)
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    rows = []
    top = 2 ** bits - 1
    for p in range(n_patients):
        patient = f"P_{p:05d}"
        label = int(rng.rand() < 0.5)
        sides = ["LEFT"] if rng.rand() < 0.6 else ["LEFT", "RIGHT"]
        views = ["CC", "MLO"] if rng.rand() < 0.7 else ["CC"]
        for side in sides:
            for view in views:
                case = f"{patient}_{side}_{view}"
                img = (rng.rand(*shape) * top * 0.5).astype(np.uint16)
                n_masses = 1 if rng.rand() < 0.8 else 2
                image_path = os.path.join("images", f"{case}.png")
                for abn in range(1, n_masses + 1):
                    centre = (rng.randint(8, shape[0] - 8), rng.randint(8, shape[1] - 8))
                    radii = (rng.randint(4, 14), rng.randint(4, 14))
                    m = ellipse(shape, centre, radii)
                    img[m] = np.minimum(img[m] + top // 3, top)
                    mask_path = os.path.join("images", f"{case}_{abn}_mask.png")
                    write_mask(os.path.join(root, mask_path), m)
                    r, c = np.nonzero(m)
                    bbox = (r.min(), c.min(), r.max() + 1, c.max() + 1)
                    rows.append(case_row(f"{case}_{abn}", patient, side, view, abn, image_path,
                                         mask_path, label, bits, shape, bbox))
                write_png16(os.path.join(root, image_path), img)
    path = os.path.join(root, "cases.csv")
    write_cases(path, rows)
    return path


def test_archive_has_several_views_and_masses_per_patient(tmp_path):
    path = make_archive(str(tmp_path), n_patients=12)
    with open(path) as f:
        rows = list(csv.DictReader(f))
    per_patient = {}
    for r in rows:
        per_patient.setdefault(r["patient_id"], []).append(r)
    assert len(per_patient) == 12
    assert max(len(v) for v in per_patient.values()) >= 2
    img = np.asarray(Image.open(tmp_path / rows[0]["image"]))
    assert img.dtype == np.uint16 and img.max() <= 4095
