"""The DDSM lossless-JPEG codec against files from the real PVRG encoder."""
import json
import os

import imagecodecs
import numpy as np
import pytest

from deepmammo.sources import ddsm, ljpeg

PVRG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "ljpeg-pvrg")


def _fixtures():
    with open(os.path.join(PVRG, "index.json")) as f:
        return json.load(f)


def _load(entry):
    with open(os.path.join(PVRG, entry["file"]), "rb") as f:
        data = f.read()
    return data, np.load(os.path.join(PVRG, entry["expected"]))


ENTRIES = _fixtures()


def test_fixtures_cover_every_predictor_at_12_and_16_bits():
    seen = {(e["bits_per_pixel"], e["predictor"]) for e in ENTRIES}
    assert seen == {(b, k) for b in (12, 16) for k in range(1, 8)}


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["file"] for e in ENTRIES])
def test_read_ljpeg_is_exact_on_pvrg_files(entry):
    _, expected = _load(entry)
    image = ddsm.read_ljpeg(os.path.join(PVRG, entry["file"]),
                            (entry["lines"], entry["pixels_per_line"]))
    assert image.dtype == np.uint16
    assert image.shape == (entry["lines"], entry["pixels_per_line"])
    np.testing.assert_array_equal(image, expected)


def test_header_is_swapped_and_a_transpose_would_be_wrong():
    entry = next(e for e in ENTRIES if e["file"].startswith("synthetic_37x53_p12_k1"))
    data, expected = _load(entry)
    header, _ = ljpeg.parse_header(data)
    assert (header.width, header.height) == (37, 53)  # width = LINES, height = PIXELS_PER_LINE
    transposed = ljpeg.decode_header_geometry(data).T
    assert transposed.shape == expected.shape
    assert not np.array_equal(transposed, expected)


@pytest.mark.parametrize("predictor", [2, 3, 6, 7])
def test_standard_decoders_are_wrong_for_pvrg_first_row_predictors(predictor):
    # The trap this module exists for: a standard decoder gives plausible but wrong pixels.
    entry = next(e for e in ENTRIES if e["predictor"] == predictor
                 and e["bits_per_pixel"] == 12 and e["lines"] == 96)
    data, expected = _load(entry)
    standard = np.asarray(imagecodecs.ljpeg_decode(data)).reshape(expected.shape)
    assert not np.array_equal(standard, expected)


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["file"] for e in ENTRIES])
def test_general_wavefront_reconstruction_matches_pvrg(entry):
    # The anti-diagonal reconstruction handles every predictor; check it on 4-7 directly.
    if entry["predictor"] < 4:
        return
    data, expected = _load(entry)
    header, _ = ljpeg.parse_header(data)
    patched = bytearray(data)
    patched[header.sos_predictor_offset] = 1
    x1 = np.asarray(imagecodecs.ljpeg_decode(bytes(patched)))
    d = ljpeg._standard_predictor1_differences(x1, header.precision)
    out = ljpeg._undo_wavefront(d, entry["predictor"], 1 << (header.precision - 1),
                                header.precision)
    np.testing.assert_array_equal(out.reshape(expected.shape), expected)


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["file"] for e in ENTRIES])
def test_encoder_round_trips_the_pvrg_pixels(entry):
    data, expected = _load(entry)
    encoded = ljpeg.encode(expected, entry["predictor"], entry["bits_per_pixel"])
    header, _ = ljpeg.parse_header(encoded)
    assert (header.width, header.height) == (entry["lines"], entry["pixels_per_line"])
    assert header.predictor == entry["predictor"]
    np.testing.assert_array_equal(ljpeg.decode(encoded, expected.shape), expected)


def test_encoder_reproduces_pvrg_bytes_for_predictor_1():
    for entry in (e for e in ENTRIES if e["predictor"] == 1):
        data, expected = _load(entry)
        assert ljpeg.encode(expected, 1, entry["bits_per_pixel"]) == data, entry["file"]


@pytest.mark.parametrize("predictor", range(1, 8))
@pytest.mark.parametrize("bits", [12, 16])
def test_round_trip_random_images_with_extreme_values(predictor, bits):
    rng = np.random.RandomState(predictor * 100 + bits)
    top = (1 << bits) - 1
    image = rng.randint(0, top + 1, size=(23, 31)).astype(np.uint16)
    image[0, :5] = [0, top, 0, top, 0]  # large jumps: difference category 16 at 16 bits
    encoded = ljpeg.encode(image, predictor, bits)
    np.testing.assert_array_equal(ljpeg.decode(encoded, image.shape), image)


def test_round_trip_without_header_swap_is_standard_for_predictor_1():
    image = np.random.RandomState(0).randint(0, 4096, (17, 29)).astype(np.uint16)
    encoded = ljpeg.encode(image, 1, 12, swap_header=False)
    np.testing.assert_array_equal(np.asarray(imagecodecs.ljpeg_decode(encoded)), image)


def _a_fixture_file():
    entry = next(e for e in ENTRIES if e["predictor"] == 7 and e["bits_per_pixel"] == 12)
    return entry, _load(entry)[0]


def test_truncated_stream_is_an_error_naming_the_file(tmp_path):
    entry, data = _a_fixture_file()
    path = tmp_path / "CUT.LJPEG"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ljpeg.LJPEGError, match="CUT.LJPEG.*truncated"):
        ddsm.read_ljpeg(path, (entry["lines"], entry["pixels_per_line"]))
    with pytest.raises(ljpeg.LJPEGError, match="CUT.LJPEG.*truncated"):
        ljpeg.check_file(str(path), (entry["lines"], entry["pixels_per_line"]), 12)


def test_header_only_file_is_truncated(tmp_path):
    entry, data = _a_fixture_file()
    path = tmp_path / "HEAD.LJPEG"
    path.write_bytes(data[:20])
    with pytest.raises(ljpeg.LJPEGError, match="HEAD.LJPEG"):
        ddsm.read_ljpeg(path, (entry["lines"], entry["pixels_per_line"]))


def test_empty_sos_segment_is_an_error_naming_the_file(tmp_path):
    entry, data = _a_fixture_file()
    sos = data.index(b"\xff\xda")
    path = tmp_path / "SOS.LJPEG"
    path.write_bytes(data[:sos] + b"\xff\xda\x00\x02" + data[sos + 2 + int.from_bytes(
        data[sos + 2:sos + 4], "big"):])
    with pytest.raises(ljpeg.LJPEGError, match="SOS.LJPEG: SOS segment too short"):
        ddsm.read_ljpeg(path, (entry["lines"], entry["pixels_per_line"]))


def test_wrong_shape_and_wrong_depth_are_errors(tmp_path):
    entry, data = _a_fixture_file()
    path = tmp_path / "X.LJPEG"
    path.write_bytes(data)
    with pytest.raises(ljpeg.LJPEGError, match="expected 10 lines"):
        ddsm.read_ljpeg(path, (10, 10))
    with pytest.raises(ljpeg.LJPEGError, match="12-bit samples, the .ics says 16"):
        ljpeg.check_file(str(path), (entry["lines"], entry["pixels_per_line"]), 16)


def test_not_a_jpeg_and_missing_file(tmp_path):
    path = tmp_path / "junk.LJPEG"
    path.write_bytes(b"hello world, not a jpeg")
    with pytest.raises(ljpeg.LJPEGError, match="junk.LJPEG: not a JPEG"):
        ddsm.read_ljpeg(path, (2, 2))
    with pytest.raises(FileNotFoundError, match="nothere.LJPEG"):
        ddsm.read_ljpeg(tmp_path / "nothere.LJPEG", (2, 2))


def test_corrupt_entropy_data_is_reported_not_returned(tmp_path):
    entry, data = _a_fixture_file()
    header, scan_start = ljpeg.parse_header(data)
    bad = bytearray(data)
    for i in range(scan_start + 10, len(bad) - 10, 7):
        bad[i] = 0x00  # zeros decode as the shortest code; the image comes out wrong
    path = tmp_path / "BAD.LJPEG"
    path.write_bytes(bytes(bad))
    shape = (entry["lines"], entry["pixels_per_line"])
    try:
        out = ddsm.read_ljpeg(path, shape)
    except ljpeg.LJPEGError as exc:
        assert "BAD.LJPEG" in str(exc)
    else:  # if it decodes at all, it must not pass for the true image
        assert not np.array_equal(out, _load(entry)[1])
