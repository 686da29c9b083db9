"""Synthetic archives ingest back to the masks and labels that made them; every quirk and
bad input lands in the report, and the rest of the archive still ingests."""
import csv
import json
import os
import shutil

import numpy as np
import pytest

from deepmammo.cli import main as cli_main
from deepmammo.sources import (
    cases,
    cbis,
    ddsm,
    images,
    ingest,
    ingestion,
    load_image,
    load_mask,
    make_archive,
    read_cases,
    synth,
)

SIZE = (160, 112)
PATIENTS = 5


@pytest.fixture(scope="module")
def ddsm_archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "ddsm"
    truth = make_archive("ddsm", root, patients=PATIENTS, seed=0, size=SIZE)
    return root, truth


@pytest.fixture(scope="module")
def cbis_archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "cbis"
    truth = make_archive("cbis", root, patients=PATIENTS, seed=2, size=SIZE)
    return root, truth


def _report(out_csv):
    skipped, report_json = cases.report_paths(out_csv)
    with open(skipped, newline="") as f:
        entries = list(csv.DictReader(f))
    with open(report_json) as f:
        return entries, json.load(f)


def _check_against_truth(out_csv, truth, wanted):
    """Every wanted truth lesion is a row with the same label, bbox and mask; nothing else."""
    rows = {r["case_id"]: r for r in read_cases(out_csv)}
    expected = {t["case_id"]: t for t in truth if wanted(t)}
    assert set(rows) == set(expected)
    for case_id, t in expected.items():
        row = rows[case_id]
        assert row["label"] == t["label"]
        assert row["patient_id"] == t["patient_id"]
        assert list(row["bbox"]) == t["bbox"]
        mask = load_mask(row)
        assert synth.mask_digest(mask) == t["mask_sha1"], case_id
        image = load_image(row)
        assert image.shape == (row["rows"], row["cols"]) == SIZE
        assert image.dtype == np.uint16
        assert os.path.isabs(row["image"]) and os.path.isabs(row["mask"])
    return rows


def _is_mass_with_label(t):
    return t["lesion_type"] == "MASS" and t["label"] is not None


def test_synth_ddsm_has_every_case_kind(ddsm_archive):
    _, truth = ddsm_archive
    paths = {t["pathology"] for t in truth}
    assert {"MALIGNANT", "BENIGN", "BENIGN_WITHOUT_CALLBACK", "UNPROVEN"} <= paths
    assert any(t["lesion_type"] == "CALCIFICATION" for t in truth)
    # A mass appears in both views of its breast.
    per_breast = {}
    for t in truth:
        per_breast.setdefault((t["patient_id"], t["side"], t["abnormality_id"]), set()).add(t["view"])
    assert all(views == {"CC", "MLO"} for views in per_breast.values())


def test_ddsm_ingests_back_to_its_masks_and_labels(ddsm_archive, tmp_path):
    root, truth = ddsm_archive
    out = tmp_path / "cases.csv"
    report = ingest("ddsm", root, out)
    rows = _check_against_truth(out, truth, _is_mass_with_label)
    assert all(r["image_format"] == "LJPEG" and r["source"] == "ddsm" for r in rows.values())
    assert all(r["mask"].endswith(".png") for r in rows.values())
    assert {r["scanner"] for r in rows.values()} <= {"DBA", "HOWTEK-MGH", "HOWTEK-ISMD", "LUMISYS"}
    entries, rep = _report(out)
    excluded = {e["case"]: e["reason"] for e in entries if e["status"] == "excluded"}
    for t in truth:
        if t["pathology"] == "UNPROVEN":
            assert "UNPROVEN" in excluded[t["case_id"]]
        elif t["lesion_type"] == "CALCIFICATION":
            assert "calcification" in excluded[t["case_id"]]
    assert rep["counts"]["ingested"] == len(rows) and rep["counts"]["skipped"] == 0
    assert report["cases_per_second"] > 0
    # Paths in the CSV are relative to its folder.
    with open(out) as f:
        first = next(csv.DictReader(f))
    assert not os.path.isabs(first["image"]) and not os.path.isabs(first["mask"])


def test_ddsm_include_calc_and_bwc_exclude(ddsm_archive, tmp_path):
    root, truth = ddsm_archive
    out = tmp_path / "all.csv"
    ingest("ddsm", root, out, include_calc=True, bwc="exclude")
    _check_against_truth(out, truth, lambda t: t["pathology"] in ("MALIGNANT", "BENIGN"))
    entries, _ = _report(out)
    assert any("BENIGN_WITHOUT_CALLBACK excluded" in e["reason"] for e in entries)


def test_ddsm_full_decode_check_agrees(ddsm_archive, tmp_path):
    root, truth = ddsm_archive
    out = tmp_path / "decoded.csv"
    report = ingest("ddsm", root, out, decode_check=True)
    assert report["counts"]["ingested"] == sum(map(_is_mass_with_label, truth))


def _damage_ddsm(src, dst):
    """Copy the archive and break one thing of each kind; return what was broken."""
    shutil.copytree(src, dst)
    ics_files = sorted(str(p) for p in dst.rglob("*.ics"))
    overlays = sorted(str(p) for p in dst.rglob("*.OVERLAY"))
    # Pick the images and overlays of different cases so every problem is separate.
    broken_ics = ics_files[0]
    case_dir = os.path.dirname
    others = [o for o in overlays if case_dir(o) != case_dir(broken_ics)]
    broken_overlay = others[0]
    rest = [o for o in others if case_dir(o) != case_dir(broken_overlay)]
    truncated = rest[0].replace(".OVERLAY", ".LJPEG")
    missing = [o for o in rest if case_dir(o) != case_dir(truncated)][0].replace(".OVERLAY", ".LJPEG")
    with open(broken_ics, "w") as f:
        f.write(" \nfilename broken\nDIGITIZER LUMISYS\nLEFT_CC LINES x\n")
    with open(broken_overlay, "a") as f:
        f.write("ABNORMALITY 9\nLESION_TYPE MASS SHAPE ROUND MARGINS CIRCUMSCRIBED\n"
                "PATHOLOGY BENIGN\nBOUNDARY\n3 3 2 2 8 #\n")
    with open(truncated, "rb") as f:
        data = f.read()
    with open(truncated, "wb") as f:
        f.write(data[: len(data) // 3])
    os.remove(missing)
    return broken_ics, broken_overlay, truncated, missing


def test_ddsm_bad_inputs_land_in_the_report_and_the_rest_ingests(ddsm_archive, tmp_path):
    root, truth = ddsm_archive
    damaged = tmp_path / "damaged"
    broken_ics, broken_overlay, truncated, missing = _damage_ddsm(root, damaged)
    out = tmp_path / "cases.csv"
    ingest("ddsm", damaged, out)
    entries, rep = _report(out)
    skipped = [e for e in entries if e["status"] == "skipped"]
    by_file = {}
    for e in skipped:
        by_file.setdefault(e["file"], []).append(e["reason"])
    assert any("broken .ics" in r for r in by_file[broken_ics])
    assert any("broken .OVERLAY" in r and "direction 8" in r for r in by_file[broken_overlay])
    assert any("truncated" in r for r in by_file[truncated])
    assert any("image (.LJPEG) not found" in r for r in by_file[missing])
    assert {e["problem"] for e in skipped} == {"broken .ics", "broken .OVERLAY",
                                                "bad or missing .LJPEG"}
    # Everything not touched by the damage still ingests, exactly.
    bad_views = set()
    bad_patient = os.path.basename(broken_ics)[:-4]
    for path in (broken_overlay, truncated, missing):
        stem, view = os.path.basename(path).split(".")[:2]
        bad_views.add((stem.replace("_", "-"), view))

    def untouched(t):
        return (_is_mass_with_label(t) and t["patient_id"] != bad_patient
                and (t["patient_id"], f"{t['side']}_{t['view']}") not in bad_views)

    rows = {r["case_id"] for r in read_cases(out)}
    assert rows == {t["case_id"] for t in truth if untouched(t)}
    assert rep["counts"]["skipped"] == len(skipped) > 0
    assert rep["counts"]["by_problem"]["skipped: broken .ics"] == 1


def test_strict_stops_at_the_first_problem(ddsm_archive, tmp_path, capsys):
    root, _ = ddsm_archive
    damaged = tmp_path / "damaged"
    _damage_ddsm(root, damaged)
    with pytest.raises(ingestion.IngestError):
        ingest("ddsm", damaged, tmp_path / "strict.csv", strict=True)
    assert not (tmp_path / "strict.csv").exists()
    code = cli_main(["ingest", "ddsm", str(damaged), "--out", str(tmp_path / "s.csv"), "--strict"])
    assert code == 2
    assert "--strict" in capsys.readouterr().err


def test_ddsm_clipped_outline_is_ingested_and_reported(tmp_path):
    folder = tmp_path / "cases" / "cancers" / "cancer_01" / "C-0001-1"
    folder.mkdir(parents=True)
    (folder / "C-0001-1.ics").write_text(
        " \nfilename C-0001-1\nDIGITIZER LUMISYS\nSEQUENCE\n"
        "LEFT_CC LINES 40 PIXELS_PER_LINE 30 BITS_PER_PIXEL 12 RESOLUTION 50 OVERLAY \n")
    image = np.random.RandomState(0).randint(0, 4096, (40, 30)).astype(np.uint16)
    ddsm.write_ljpeg(folder / "C_0001_1.LEFT_CC.LJPEG", image, predictor=6)
    (folder / "C_0001_1.LEFT_CC.OVERLAY").write_text(
        "TOTAL_ABNORMALITIES 1\nABNORMALITY 1\nLESION_TYPE MASS SHAPE OVAL MARGINS CIRCUMSCRIBED\n"
        "ASSESSMENT 4\nSUBTLETY 3\nPATHOLOGY MALIGNANT\nTOTAL_OUTLINES 1\nBOUNDARY\n"
        "25 30 " + "2 " * 10 + "4 " * 15 + "6 " * 10 + "0 " * 15 + "#\n")
    out = tmp_path / "cases.csv"
    ingest("ddsm", tmp_path, out)
    (row,) = read_cases(out)
    np.testing.assert_array_equal(load_image(row), image)
    mask = load_mask(row)
    assert row["bbox"] == (30, 25, 40, 30) and mask[30:, 25:].all() and mask.sum() == 50
    entries, _ = _report(out)
    assert any(e["status"] == "fixed" and "outline clipped" in e["reason"] for e in entries)


# ----------------------------------------------------------------------------- CBIS


def test_cbis_ingests_back_with_every_quirk(cbis_archive, tmp_path):
    root, truth = cbis_archive
    out = tmp_path / "cases.csv"
    ingest("cbis", root, out, include_calc=True)
    rows = _check_against_truth(out, truth, lambda t: t["label"] is not None)
    assert {r["source_split"] for r in rows.values()} == {"train", "test"}
    assert {r["image_format"] for r in rows.values()} == {"DICOM"}
    entries, _ = _report(out)
    fixed = [e for e in entries if e["status"] == "fixed"]
    assert any("swapped in the CSV" in e["reason"] for e in fixed)
    assert any("mask shape" in e["reason"] and "padded/cut" in e["reason"] for e in fixed)
    # Both density spellings and newline-ended quoted path cells are in the synthetic CSVs.
    texts = {p: open(os.path.join(root, p)).read() for p in os.listdir(root) if p.endswith(".csv")}
    assert "breast_density" in texts["mass_case_description_train_set.csv"]
    assert "breast density" in texts["calc_case_description_train_set.csv"]
    assert any('.dcm\n"' in t for t in texts.values())
    # The ingested densities came through both spellings.
    assert all(r["density"] for r in rows.values())


def test_cbis_tcia_download_tree(tmp_path):
    root = tmp_path / "tcia"
    truth = make_archive("cbis", root, patients=3, seed=2, size=SIZE, layout="tcia")
    assert (root / "CBIS-DDSM").is_dir()
    assert any(p.name == "1-2.dcm" for p in root.rglob("*.dcm"))
    out = tmp_path / "cases.csv"
    ingest("cbis", root, out)
    _check_against_truth(out, truth, _is_mass_with_label)


def test_cbis_compressed_dicoms_read_back_exactly(tmp_path):
    image = np.random.RandomState(1).randint(0, 65536, (37, 29)).astype(np.uint16)
    for compression in (None, "rle", "jpeg-lossless"):
        path = tmp_path / f"{compression}.dcm"
        cbis.write_dicom(path, image, patient_id="Mass-Test_P_00001_LEFT_CC",
                         series_description="full mammogram images", laterality="L", view="CC",
                         compression=compression)
        np.testing.assert_array_equal(images.read_image(path), image)
    ds = images.read_dicom(tmp_path / "jpeg-lossless.dcm")
    assert ds.file_meta.TransferSyntaxUID.is_compressed and ds.Modality == "MG"


def test_cbis_csv_cells_are_stripped_and_density_spellings_merge(tmp_path):
    path = tmp_path / "calc_case_description_test_set.csv"
    path.write_text('patient_id,breast density,left or right breast,image view,abnormality id,'
                    'abnormality type,calc type,calc distribution,assessment,pathology,subtlety,'
                    'image file path,cropped image file path,ROI mask file path\n'
                    'P_00038, 2 ,LEFT,CC,1,calcification,N/A,CLUSTERED,4,BENIGN,3,'
                    '"Calc-Test_P_00038_LEFT_CC/1/2/000000.dcm\n","a\n","b\n"\n')
    (row,) = cbis.read_case_csv(path)
    assert row["density"] == "2"
    assert row["image_path"] == "Calc-Test_P_00038_LEFT_CC/1/2/000000.dcm"
    assert row["crop_path"] == "a" and row["mask_path"] == "b"


def test_cbis_bad_dicoms_are_reported_and_the_rest_ingests(cbis_archive, tmp_path):
    root, truth = cbis_archive
    damaged = tmp_path / "damaged"
    shutil.copytree(root, damaged)
    full = sorted(p for p in damaged.rglob("Mass-*/**/*.dcm")
                  if images.read_dicom(p, pixels=False).SeriesDescription == "full mammogram images")
    no_pixels, missing_mask_subject = full[0], None
    ds = images.read_dicom(no_pixels)
    del ds.PixelData
    ds.save_as(no_pixels)
    # Remove every ROI file of one abnormality of another image.
    roi_dirs = sorted(p for p in damaged.iterdir() if p.is_dir() and p.name.endswith("_1")
                      and not p.name.startswith(no_pixels.relative_to(damaged).parts[0]))
    missing_mask_subject = roi_dirs[0]
    shutil.rmtree(missing_mask_subject)
    out = tmp_path / "cases.csv"
    ingest("cbis", damaged, out)
    entries, _ = _report(out)
    skipped = [e for e in entries if e["status"] == "skipped"]
    assert any(e["file"] == str(no_pixels) and "no pixel data" in e["reason"] for e in skipped)
    assert any("ROI mask DICOM not found" in e["reason"] and missing_mask_subject.name in e["file"]
               for e in skipped)
    rows = read_cases(out)
    expected = sum(map(_is_mass_with_label, truth))
    assert 0 < len(rows) == expected - len(skipped)


# ----------------------------------------------------------------------------- TIFF, manifest


def test_tiff_layout_ingests_back(tmp_path):
    root = tmp_path / "tiff"
    truth = make_archive("tiff", root, patients=4, seed=2, size=SIZE)
    assert (root / "mass_case_description.csv").is_file()
    out = tmp_path / "cases.csv"
    ingest("tiff", root, out)
    rows = _check_against_truth(out, truth, _is_mass_with_label)
    assert all(r["mask"].endswith("_mask.tif") for r in rows.values())
    os.remove(next(iter(rows.values()))["mask"])
    ingest("tiff", root, tmp_path / "again.csv")
    entries, _ = _report(tmp_path / "again.csv")
    assert any("_mask.tif not found" in e["reason"] for e in entries)


def _write_manifest_set(folder):
    folder.mkdir()
    rng = np.random.RandomState(3)
    img16 = rng.randint(0, 65536, (50, 40)).astype(np.uint16)
    img8 = rng.randint(0, 256, (50, 40)).astype(np.uint8)
    mask = np.zeros((50, 40), bool)
    mask[10:20, 5:15] = True
    images.write_png(folder / "a.png", img16)
    images.write_tiff(folder / "b.tif", img16)
    images.write_png(folder / "c.png", img8)
    from PIL import Image
    Image.fromarray(img8).save(folder / "d.pgm")
    cbis.write_dicom(folder / "e.dcm", img16, patient_id="X", series_description="full")
    images.write_png(folder / "m.png", mask)
    images.write_png(folder / "empty.png", np.zeros((50, 40), bool))
    images.write_png(folder / "small.png", mask[:30])
    (folder / "manifest.csv").write_text(
        "patient_id,image,mask,pathology,side,view\n"
        "p1,a.png,m.png,MALIGNANT,LEFT,CC\n"
        "p1,b.tif,m.png,BENIGN,LEFT,MLO\n"
        "p2,c.png,m.png,BENIGN_WITHOUT_CALLBACK,RIGHT,CC\n"
        "p3,d.pgm,m.png,malignant,,\n"
        "p4,e.dcm,m.png,BENIGN,RIGHT,MLO\n"
        "p5,a.png,empty.png,BENIGN,LEFT,CC\n"
        "p6,missing.png,m.png,BENIGN,LEFT,CC\n"
        "p7,a.png,small.png,MALIGNANT,LEFT,CC\n"
        "p8,a.png,m.png,UNPROVEN,LEFT,CC\n"
        "p9,a.png,m.png,BENIGN,LEFT,CC,extra\n")
    return img16, img8, mask


def test_manifest_reads_every_format_and_reports_bad_rows(tmp_path):
    img16, img8, mask = _write_manifest_set(tmp_path / "set")
    out = tmp_path / "out" / "cases.csv"
    ingest("manifest", tmp_path / "set" / "manifest.csv", out)
    rows = {r["patient_id"]: r for r in read_cases(out)}
    assert set(rows) == {"p1", "p2", "p3", "p4"}  # p1 has two rows
    assert [r["image_format"] for r in read_cases(out)] == ["PNG", "TIFF", "PNG", "PGM", "DICOM"]
    for r in read_cases(out):
        expected = img8 if r["image_format"] in ("PGM",) or r["patient_id"] == "p2" else img16
        np.testing.assert_array_equal(load_image(r), expected)
        np.testing.assert_array_equal(load_mask(r), mask)
        assert r["bbox"] == (10, 5, 20, 15)
    assert rows["p2"]["label"] == 0 and rows["p3"]["label"] == 1 and rows["p3"]["bits"] == 8
    entries, rep = _report(out)
    reasons = {e["case"]: (e["status"], e["file"], e["reason"]) for e in entries}
    assert reasons["p5_LEFT_CC_1"][0] == "skipped" and "empty mask" in reasons["p5_LEFT_CC_1"][2]
    assert reasons["p5_LEFT_CC_1"][1].endswith("empty.png")
    assert "missing.png" in reasons["p6_LEFT_CC_1"][1] and "not found" in reasons["p6_LEFT_CC_1"][2]
    assert "small.png" in reasons["p7_LEFT_CC_1"][1] and "differs" in reasons["p7_LEFT_CC_1"][2]
    assert reasons["p8_LEFT_CC_1"][0] == "excluded"
    extra = [e for e in entries if "more cell(s) than the header" in e["reason"]]
    assert len(extra) == 1 and extra[0]["file"].endswith("manifest.csv:11")
    assert rep["counts"]["skipped"] == 4 and rep["counts"]["excluded"] == 1


def test_manifest_without_required_columns_is_a_clear_error(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("image,mask\na.png,b.png\n")
    with pytest.raises(ValueError, match="m.csv: manifest lacks column.*patient_id"):
        ingest("manifest", path, tmp_path / "cases.csv")


def test_missing_archive_and_unknown_kind(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ingest("ddsm", tmp_path / "nowhere", tmp_path / "c.csv")
    with pytest.raises(ValueError, match="unknown source kind"):
        ingest("inbreast", tmp_path, tmp_path / "c.csv")


# ----------------------------------------------------------------------------- synth, CLI


def test_synth_is_deterministic_per_seed(tmp_path):
    a = make_archive("tiff", tmp_path / "a", patients=2, seed=7, size=(96, 64))
    b = make_archive("tiff", tmp_path / "b", patients=2, seed=7, size=(96, 64))
    c = make_archive("tiff", tmp_path / "c", patients=2, seed=8, size=(96, 64))
    assert a == b and a != c
    for name in os.listdir(tmp_path / "a" / "images"):
        assert (tmp_path / "a" / "images" / name).read_bytes() == \
            (tmp_path / "b" / "images" / name).read_bytes()
    # Patient i depends only on (seed, i): a larger archive extends a smaller one.
    d = make_archive("tiff", tmp_path / "d", patients=3, seed=7, size=(96, 64))
    assert d[: len(a)] == a


@pytest.mark.parametrize("kind", ["ddsm", "cbis"])
def test_synth_archives_are_byte_identical_per_seed(tmp_path, kind):
    from deepmammo.provenance import tree_sha1
    for name in ("a", "b"):
        make_archive(kind, tmp_path / name, patients=2, seed=3, size=(96, 64))
    assert tree_sha1(tmp_path / "a") == tree_sha1(tmp_path / "b")


def test_synth_classes_differ_in_shape_but_overlap():
    """The class signal is real (outline irregularity) but not a perfect separator."""
    from sklearn.metrics import roc_auc_score
    irregularity, labels = [], []
    for i in range(120):
        spec = synth.render.draw_mass(np.random.default_rng([5, i]), malignant=i % 2 == 1)
        outline = synth.render.outline_points(spec, (100, 100), 30, 0.0)
        mask = ddsm.outline_mask(outline, (200, 200))
        # Perimeter^2 / area, normalised by the ellipse of the same aspect ratio.
        irregularity.append(len(outline) ** 2 / mask.sum() / (1 + 0.3 * (spec.aspect - 1))
                            + 3 * spec.edge_blur + spec.spicules)
        labels.append(int(spec.malignant))
    auc = roc_auc_score(labels, irregularity)
    assert 0.75 < auc < 0.99


def test_cli_synth_then_ingest(tmp_path, capsys):
    archive = tmp_path / "arch"
    assert cli_main(["synth", "tiff", "--out", str(archive), "--patients", "2", "--seed", "1",
                     "--size", "96x64"]) == 0
    assert "tiff archive with 2 patients" in capsys.readouterr().out
    out = tmp_path / "cases.csv"
    assert cli_main(["ingest", "tiff", str(archive), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "cases (" in printed and "cases/s" in printed
    assert out.is_file() and (tmp_path / "cases.skipped.csv").is_file()
    assert (tmp_path / "cases.report.json").is_file()
    assert cli_main(["synth", "tiff", "--out", str(archive), "--size", "big"]) == 2


def test_benchmark_runs_on_a_small_image(tmp_path):
    from deepmammo.sources import benchmark
    result = benchmark.bench_decode(predictors=(1, 7), repeats=1, workdir=tmp_path, shape=(96, 64))
    assert set(result) == {"predictor_1", "predictor_7"}
    assert all(r["decode_s"] >= 0 and r["megabytes"] >= 0 for r in result.values())


def test_manifest_dicom_monochrome1_is_flipped_and_bits_stored_is_kept(tmp_path):
    import pydicom
    folder = tmp_path / "set"
    folder.mkdir()
    img = np.random.RandomState(4).randint(0, 4096, (30, 20)).astype(np.uint16)
    mask = np.zeros((30, 20), bool)
    mask[5:15, 5:10] = True
    cbis.write_dicom(folder / "x.dcm", img, patient_id="X", series_description="full")
    ds = pydicom.dcmread(folder / "x.dcm")
    ds.PhotometricInterpretation, ds.BitsStored, ds.HighBit = "MONOCHROME1", 12, 11
    ds.save_as(folder / "x.dcm")
    images.write_png(folder / "m.png", mask)
    (folder / "manifest.csv").write_text("patient_id,image,mask,pathology\np1,x.dcm,m.png,BENIGN\n")
    out = tmp_path / "cases.csv"
    ingest("manifest", folder / "manifest.csv", out)
    (row,) = read_cases(out)
    assert row["bits"] == 12
    np.testing.assert_array_equal(load_image(row), 4095 - img)


def test_ddsm_overlay_of_a_view_the_ics_lacks_is_reported(ddsm_archive, tmp_path):
    root, _ = ddsm_archive
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    overlay = sorted(copy.rglob("*.OVERLAY"))[0]
    view = overlay.name.split(".")[1]
    ics = next(overlay.parent.glob("*.ics"))
    lines = ics.read_text(encoding="latin-1").splitlines(keepends=True)
    ics.write_text("".join(l for l in lines if not l.startswith(view + " ")), encoding="latin-1")
    out = tmp_path / "cases.csv"
    ingest("ddsm", copy, out)
    entries, _ = _report(out)
    hits = [e for e in entries if f"lists no {view} view" in e["reason"]]
    assert len(hits) == 1 and hits[0]["file"] == str(overlay) and hits[0]["status"] == "skipped"
