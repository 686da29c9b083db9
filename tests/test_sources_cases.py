"""The cases table reader and the format-independent image loaders."""
import numpy as np
import pytest

from deepmammo.sources import cases, images


def _row(tmp_path, **over):
    row = {"case_id": "P_1_LEFT_CC_1", "patient_id": "P_1", "side": "LEFT", "view": "CC",
           "abnormality_id": 1, "source": "manifest", "image": str(tmp_path / "a.png"),
           "image_format": "PNG", "mask": str(tmp_path / "m.png"), "pathology": "BENIGN",
           "label": 0, "bits": 16, "rows": 6, "cols": 5, "bbox": (1, 2, 3, 4)}
    row.update(over)
    return row


def test_write_then_read_round_trips_with_relative_paths(tmp_path):
    images.write_png(tmp_path / "a.png", np.arange(30, dtype=np.uint16).reshape(6, 5) * 1000)
    mask = np.zeros((6, 5), bool)
    mask[1:3, 2:4] = True
    images.write_png(tmp_path / "m.png", mask)
    out = tmp_path / "sub" / "cases.csv"
    cases.write_cases([_row(tmp_path)], out)
    text = out.read_text()
    assert "../a.png" in text and ",\"1,2,3,4\"" in text  # relative path; bbox half-open
    (row,) = cases.read_cases(out)
    assert row["image"] == str(tmp_path / "a.png") and row["bbox"] == (1, 2, 3, 4)
    assert row["label"] == 0 and row["rows"] == 6 and row["abnormality_id"] == 1
    assert cases.load_image(row).dtype == np.uint16
    np.testing.assert_array_equal(cases.load_mask(row), mask)
    box = cases.bbox_of(mask)
    assert mask[box[0]:box[2], box[1]:box[3]].sum() == mask.sum()


def test_label_policy():
    assert cases.label_for("MALIGNANT") == 1 and cases.label_for(" benign ") == 0
    assert cases.label_for("BENIGN_WITHOUT_CALLBACK") == 0
    assert cases.label_for("BENIGN_WITHOUT_CALLBACK", bwc="exclude") is None
    assert cases.label_for("UNPROVEN") is None


def test_bad_tables_name_file_and_line(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("case_id,image\nx,y\n")
    with pytest.raises(cases.CasesError, match="c.csv: missing columns"):
        cases.read_cases(path)
    cases.write_cases([_row(tmp_path, bbox="1,2,3")], path)
    with pytest.raises(cases.CasesError, match="c.csv: line 2: bbox"):
        cases.read_cases(path)
    with pytest.raises(FileNotFoundError, match="none.csv"):
        cases.read_cases(tmp_path / "none.csv")


def test_loaders_reject_what_does_not_match(tmp_path):
    images.write_png(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(images.ImageError, match="a.png: image shape"):
        cases.load_image(_row(tmp_path))
    from PIL import Image
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0] = 9
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    with pytest.raises(images.ImageError, match="rgb.png: colour image"):
        images.read_image(tmp_path / "rgb.png")
    (tmp_path / "x.jpg2").write_bytes(b"")
    with pytest.raises(images.ImageError, match="unknown image format"):
        images.read_image(tmp_path / "x.jpg2")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(images.ImageError, match="bad.png: cannot read"):
        images.read_image(tmp_path / "bad.png")
    (tmp_path / "bad.dcm").write_bytes(b"not dicom")
    with pytest.raises(images.ImageError, match="bad.dcm: not a readable DICOM"):
        images.read_image(tmp_path / "bad.dcm")
    with pytest.raises(images.ImageError, match="needs the image shape"):
        (tmp_path / "y.LJPEG").write_bytes(b"")
        images.read_image(tmp_path / "y.LJPEG")
