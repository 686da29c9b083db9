"""The synthetic archive of tests/worlds.py (`make_archive`) is what the dataset-stage tests
assume: cases.csv + 16-bit PNG images and PNG masks, several masses and views per patient."""
import csv

import numpy as np
from PIL import Image
from worlds import make_archive


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
