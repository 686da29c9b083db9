"""DDSM text formats (.ics, .OVERLAY), outlines, optical density and walking a tree."""
import numpy as np
import pytest

from deepmammo.sources import ddsm

REAL_LOOKING_ICS = (
    " \n"
    "ics_version 1.0 \n"
    "filename B-3024-1 \n"
    "DATE_OF_STUDY 2 7 1995 \n"
    "PATIENT_AGE 42 \n"
    "FILM \n"
    "FILM_TYPE REGULAR \n"
    "DENSITY 3 \n"
    "DATE_DIGITIZED 7 22 1997 \n"
    "DIGITIZER LUMISYS LASER \n"
    "SELECTED \n"
    "LEFT_CC LINES 4696 PIXELS_PER_LINE 3024 BITS_PER_PIXEL 12 RESOLUTION 50 OVERLAY \n"
    "LEFT_MLO LINES 4688 PIXELS_PER_LINE 3048 BITS_PER_PIXEL 12 RESOLUTION 50 OVERLAY \n"
    "RIGHT_CC LINES 4624 PIXELS_PER_LINE 3056 BITS_PER_PIXEL 12 RESOLUTION 50 NON_OVERLAY \n"
    "RIGHT_MLO LINES 4664 PIXELS_PER_LINE 3072 BITS_PER_PIXEL 12 RESOLUTION 50 NON_OVERLAY \n"
)


def test_read_ics_real_looking_file(tmp_path):
    path = tmp_path / "B-3024-1.ics"
    path.write_text(REAL_LOOKING_ICS)
    ics = ddsm.read_ics(path)
    assert set(ics.views) == {"LEFT_CC", "LEFT_MLO", "RIGHT_CC", "RIGHT_MLO"}
    v = ics.views["LEFT_CC"]
    assert (v.lines, v.pixels_per_line, v.bits_per_pixel, v.resolution) == (4696, 3024, 12, 50)
    assert v.has_overlay and ics.views["LEFT_MLO"].has_overlay
    # NON_OVERLAY contains OVERLAY: only a whole-word match is right.
    assert not ics.views["RIGHT_CC"].has_overlay and not ics.views["RIGHT_MLO"].has_overlay
    assert ics.digitizer == "LUMISYS LASER"
    assert ics.patient_age == 42 and ics.density == 3
    assert ics.date_of_study == (2, 7, 1995)
    assert ics.name == "B-3024-1" and ics.site == "B" and ics.scanner == "LUMISYS"


@pytest.mark.parametrize("digitizer,site,key", [
    ("DBA M2100 ImageClear", "A", "DBA"), ("HOWTEK", "A", "HOWTEK-MGH"),
    ("HOWTEK MultiRAD850", "D", "HOWTEK-ISMD"), ("LUMISYS LASER_DENSOTOMETER", "C", "LUMISYS"),
    ("LUMISYS", "B", "LUMISYS"), ("", "B", "")])
def test_multi_word_digitizers_map_to_calibrations(tmp_path, digitizer, site, key):
    text = REAL_LOOKING_ICS.replace("LUMISYS LASER", digitizer).replace("B-3024-1", f"{site}-1-1")
    text = text.replace("SELECTED", "SEQUENCE")
    ics = ddsm.parse_ics(text, "x.ics")
    assert ics.digitizer == digitizer and ics.scanner == key


def test_missing_age_and_no_leading_blank_line():
    ics = ddsm.parse_ics(REAL_LOOKING_ICS.replace("PATIENT_AGE 42", "PATIENT_AGE").lstrip(), "a.ics")
    assert ics.patient_age is None
    assert ics.density == 3


@pytest.mark.parametrize("text,match", [
    ("ics_version 1.0\nfilename A-1-1\n", "no view lines"),
    (REAL_LOOKING_ICS.replace("LINES 4696 ", ""), "LEFT_CC lacks LINES"),
    (REAL_LOOKING_ICS.replace("LINES 4696", "LINES many"), "non-numeric"),
    (REAL_LOOKING_ICS.replace("DENSITY 3", "DENSITY high"), "DENSITY value"),
])
def test_broken_ics_names_file_and_problem(tmp_path, text, match):
    path = tmp_path / "C-0001-1.ics"
    path.write_text(text)
    with pytest.raises(ddsm.ICSError, match=match) as info:
        ddsm.read_ics(path)
    assert "C-0001-1.ics" in str(info.value)


OVERLAY = """TOTAL_ABNORMALITIES 2
ABNORMALITY 1
LESION_TYPE MASS SHAPE IRREGULAR-ARCHITECTURAL_DISTORTION MARGINS SPICULATED
LESION_TYPE CALCIFICATION TYPE PLEOMORPHIC DISTRIBUTION CLUSTERED
ASSESSMENT 5
SUBTLETY 4
PATHOLOGY MALIGNANT
TOTAL_OUTLINES 3
BOUNDARY
10 20 2 2 4 4 6 6 0 0 #
CORE
\t12 21 4 2 0 #
ABNORMALITY 2
LESION_TYPE CALCIFICATION TYPE PUNCTATE DISTRIBUTION SEGMENTAL
ASSESSMENT 3
SUBTLETY 2
PATHOLOGY BENIGN_WITHOUT_CALLBACK
TOTAL_OUTLINES 1
BOUNDARY
\t5 6 3 3 #
"""


def test_read_overlay_descriptors_outlines_and_chain_direction(tmp_path):
    path = tmp_path / "A_1_1.LEFT_CC.OVERLAY"
    path.write_text(OVERLAY)
    abns = ddsm.read_overlay(path)
    assert [a.number for a in abns] == [1, 2]
    a = abns[0]
    assert a.lesion_type == "MASS" and a.kinds == ["MASS", "CALCIFICATION"]
    assert a.is_mass and a.is_calcification
    assert a.shape == "IRREGULAR-ARCHITECTURAL_DISTORTION" and a.margins == "SPICULATED"
    assert a.calc_type == "PLEOMORPHIC" and a.distribution == "CLUSTERED"
    assert (a.assessment, a.subtlety, a.pathology) == (5, 4, "MALIGNANT")
    # TOTAL_OUTLINES says 3, two are there: trust what is there.
    assert a.declared_outlines == 3 and len(a.outlines) == 2
    assert a.outline_names == ["BOUNDARY", "CORE"]
    # Start point: column 10 then row 20; 2 = right, 4 = down, 6 = left, 0 = up.
    np.testing.assert_array_equal(a.boundary[:4], [[20, 10], [20, 11], [20, 12], [21, 12]])
    np.testing.assert_array_equal(a.boundary[-1], a.boundary[0])
    b = abns[1]
    assert b.lesion_type == "CALCIFICATION" and not b.is_mass
    assert b.pathology == "BENIGN_WITHOUT_CALLBACK" and b.shape == ""
    # Tab-indented chain; 3 = down-right.
    np.testing.assert_array_equal(b.boundary, [[6, 5], [7, 6], [8, 7]])


def test_every_chain_direction():
    outline = ddsm.chain_to_outline([5, 5, 0, 1, 2, 3, 4, 5, 6, 7])
    steps = np.diff(outline, axis=0)
    np.testing.assert_array_equal(steps, [(-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1),
                                          (0, -1), (-1, -1)])
    assert ddsm.outline_to_chain(outline) == [5, 5, 0, 1, 2, 3, 4, 5, 6, 7]


@pytest.mark.parametrize("text,match", [
    (OVERLAY.replace("10 20 2 2 4 4 6 6 0 0 #", "10 20 2 2 9 #"), "direction 9"),
    (OVERLAY.replace("10 20 2 2 4 4 6 6 0 0 #", "10 20 2 x #"), "non-numeric"),
    (OVERLAY.rsplit("#", 1)[0], "not terminated"),
    ("TOTAL_ABNORMALITIES 0\n", "no ABNORMALITY"),
    ("LESION_TYPE MASS\n", "before the first ABNORMALITY"),
    (OVERLAY.replace("ASSESSMENT 5", "ASSESSMENT five"), "ASSESSMENT needs an integer"),
])
def test_broken_overlay_names_file_and_line(tmp_path, text, match):
    path = tmp_path / "B_2_1.RIGHT_MLO.OVERLAY"
    path.write_text(text)
    with pytest.raises(ddsm.OverlayError, match=match) as info:
        ddsm.read_overlay(path)
    assert "B_2_1.RIGHT_MLO.OVERLAY" in str(info.value)


def test_outline_mask_fills_the_polygon_including_its_boundary():
    square = ddsm.chain_to_outline([2, 3] + [2] * 4 + [4] * 4 + [6] * 4 + [0] * 4)
    mask = ddsm.outline_mask(square, (10, 10))
    assert mask.dtype == bool and mask.shape == (10, 10)
    expected = np.zeros((10, 10), bool)
    expected[3:8, 2:7] = True
    np.testing.assert_array_equal(mask, expected)


def test_outline_outside_the_image_is_clipped_and_the_caller_told():
    square = ddsm.chain_to_outline([6, 6] + [2] * 8 + [4] * 8 + [6] * 8 + [0] * 8)
    with pytest.warns(ddsm.OutlineClippedWarning, match="outside the 10x10 image"):
        mask = ddsm.outline_mask(square, (10, 10))
    expected = np.zeros((10, 10), bool)
    expected[6:, 6:] = True
    np.testing.assert_array_equal(mask, expected)


def test_outline_mask_rejects_empty_outline():
    with pytest.raises(ValueError, match="non-empty"):
        ddsm.outline_mask(np.zeros((0, 2)), (5, 5))


@pytest.mark.parametrize("scanner,gl,od", [
    ("LUMISYS", 4096.99 - 1009.01, 1.0), ("HOWTEK-MGH", (3.789 - 1.5) / 0.00094568, 1.5),
    ("HOWTEK-ISMD", (3.96604095240593 - 2.0) / 0.00099055807612, 2.0),
    ("DBA", 10 ** (4.80662 - 1.07553 * 1.2), 1.2)])
def test_optical_density_per_scanner(scanner, gl, od):
    out = ddsm.optical_density(np.array([gl]), scanner)
    assert out.dtype == np.float32
    assert abs(float(out[0]) - od) < 1e-3


def test_optical_density_clips_and_rejects_unknown_scanner():
    out = ddsm.optical_density(np.array([0, 70000]), "DBA")
    assert out.min() >= 0.05 and out.max() <= 3.0
    with pytest.raises(ValueError, match="no optical-density calibration"):
        ddsm.optical_density(np.array([1]), "XRAY9000")


def test_walk_finds_views_and_a_misplaced_overlay(tmp_path):
    a = tmp_path / "cases" / "benigns" / "benign_01" / "B-3001-1"
    b = tmp_path / "cases" / "benigns" / "benign_01" / "B-3002-1"
    a.mkdir(parents=True)
    b.mkdir(parents=True)
    (a / "B-3001-1.ics").write_text(REAL_LOOKING_ICS)
    (b / "B-3002-1.ics").write_text(REAL_LOOKING_ICS)
    for view in ddsm.VIEWS:
        (a / f"B_3001_1.{view}.LJPEG").write_bytes(b"")
    (a / "B_3001_1.LEFT_CC.OVERLAY").write_text(OVERLAY)
    (b / "B_3001_1.LEFT_MLO.OVERLAY").write_text(OVERLAY)  # in the wrong folder
    (a / "TAPE_B_3001_1.COMB.16_PGM").write_text("P2\n")
    cases = {c.ics_path.split("/")[-1]: c for c in ddsm.walk_ddsm(tmp_path)}
    first = cases["B-3001-1.ics"]
    assert set(first.ljpegs) == set(ddsm.VIEWS)
    assert set(first.overlays) == {"LEFT_CC", "LEFT_MLO"}
    assert str(b) in first.overlays["LEFT_MLO"]
    assert any("outside its case folder" in n for n in first.notes)
    assert cases["B-3002-1.ics"].overlays == {} and cases["B-3002-1.ics"].ljpegs == {}
