"""Bad input as a user meets it: the `deepmammo` command in a subprocess prints one line that
names the file (and line or field) and what is wrong, exits non-zero, and shows no traceback;
ingest reports a bad case and goes on. See docs/errors.md."""
import csv
import glob
import os
import re
import shutil

import numpy as np
import pytest
from helpers import ROOT, error_line, run_cli

from deepmammo.caffe.formats.datum import array_to_datum
from deepmammo.caffe.formats.lmdb_io import LMDBWriter, lmdb_key
from deepmammo.caffe.proto import caffe_pb2 as pb
from deepmammo.sources import cases as cases_mod

pytestmark = pytest.mark.subprocess


def skipped_rows(cases_csv):
    with open(os.path.splitext(cases_csv)[0] + ".skipped.csv", newline="") as f:
        return list(csv.DictReader(f))


# ----------------------------------------------------------------------------- archives

@pytest.fixture(scope="module")
def ddsm(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddsm")
    proc = run_cli("synth", "ddsm", "--out", root / "arch", "--patients", 3,
                   "--size", "120x80", "--no-quirks")
    assert proc.returncode == 0, proc.stderr
    return root / "arch"


def copy_archive(ddsm, tmp_path):
    dst = tmp_path / "arch"
    shutil.copytree(ddsm, dst)
    return dst


@pytest.fixture(scope="module")
def cases(tmp_path_factory, ddsm):
    root = tmp_path_factory.mktemp("cases")
    out = root / "cases.csv"
    proc = run_cli("ingest", "ddsm", ddsm, "--out", out)
    assert proc.returncode == 0, proc.stderr
    return out


# ----------------------------------------------------------------------------- cases.csv

def test_a_cases_row_shorter_than_its_header_names_the_file_and_line(cases, tmp_path):
    lines = cases.read_text().splitlines()
    short = tmp_path / "short.csv"
    short.write_text("\n".join([lines[0], lines[1], ",".join(lines[2].split(",")[:5])]) + "\n")
    proc = run_cli("crops", short, "--out", tmp_path / "crops")
    line = error_line("crops", proc.returncode, proc.stderr, short, "line 3", "ends before column")
    assert not os.path.exists(tmp_path / "crops") and not os.path.exists(
        str(tmp_path / "crops") + ".partial"), line


def test_non_utf8_cases_table_names_file_line_and_byte(cases, tmp_path):
    data = cases.read_bytes().splitlines(keepends=True)
    data[2] = data[2].replace(b"MASS", b"MASS\xe9", 1)
    bad = tmp_path / "latin.csv"
    bad.write_bytes(b"".join(data))
    proc = run_cli("crops", bad, "--out", tmp_path / "crops")
    error_line("crops", proc.returncode, proc.stderr, f"{bad}:3", "0xe9", "not UTF-8")


def test_a_folder_given_as_the_cases_table(tmp_path):
    proc = run_cli("crops", tmp_path, "--out", tmp_path / "crops")
    error_line("crops", proc.returncode, proc.stderr, tmp_path, "folder")


# ----------------------------------------------------------------------------- DDSM ingest

def test_a_huge_chain_code_start_is_reported_and_the_ingest_goes_on(ddsm, tmp_path):
    arch = copy_archive(ddsm, tmp_path)
    overlays = sorted(glob.glob(str(arch / "**" / "*.OVERLAY"), recursive=True))
    bad = overlays[0]
    text = open(bad, encoding="latin-1").read()
    text = re.sub(r"BOUNDARY\s+\d+", "BOUNDARY\n\t99999999999999999999999", text, count=1)
    open(bad, "w", encoding="latin-1").write(text)
    out = tmp_path / "cases.csv"
    proc = run_cli("ingest", "ddsm", arch, "--out", out)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    rows = [r for r in skipped_rows(out) if r["file"] == bad]
    assert rows and "start point" in rows[0]["reason"], skipped_rows(out)
    assert len(cases_mod.read_cases(out)) >= 1    # the other cases are there
    proc = run_cli("ingest", "ddsm", arch, "--out", tmp_path / "strict.csv", "--strict")
    error_line("ingest", proc.returncode, proc.stderr, bad, "start point")


def test_a_case_without_ics_or_with_a_folder_for_one_is_reported(ddsm, tmp_path):
    arch = copy_archive(ddsm, tmp_path)
    ics = sorted(glob.glob(str(arch / "**" / "*.ics"), recursive=True))
    os.unlink(ics[0])
    os.unlink(ics[1])
    os.mkdir(ics[1])                                   # a folder where the .ics should be
    out = tmp_path / "cases.csv"
    proc = run_cli("ingest", "ddsm", arch, "--out", out)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    report = skipped_rows(out)
    missing = [r for r in report if r["problem"] == "missing .ics"]
    assert missing and all(os.path.dirname(r["file"]) == os.path.dirname(ics[0])
                           for r in missing), report
    folder = [r for r in report if r["file"] == ics[1]]
    assert folder and "folder" in folder[0]["reason"], report


def test_an_ljpeg_scan_cut_short_is_reported_with_its_row(ddsm, tmp_path):
    arch = copy_archive(ddsm, tmp_path)
    ljpeg = sorted(glob.glob(str(arch / "**" / "*.LJPEG"), recursive=True))
    out = tmp_path / "cases.csv"
    # Every LJPEG that has an outline: cut its scan in half but keep the end marker.
    for path in ljpeg:
        data = open(path, "rb").read()
        open(path, "wb").write(data[:len(data) // 2] + b"\xff\xd9")
    proc = run_cli("ingest", "ddsm", arch, "--out", out, "--decode-check")
    assert "Traceback" not in proc.stderr, proc.stderr
    reasons = [r["reason"] for r in skipped_rows(out) if r["problem"] == "bad or missing .LJPEG"]
    assert reasons and all(re.search(r"stream row \d+ of \d+|exceed", r) for r in reasons), reasons


# ----------------------------------------------------------------------------- manifest / DICOM

def _write_manifest(tmp_path, rows):
    path = tmp_path / "manifest.csv"
    with open(path, "wb") as f:
        f.write(b"patient_id,image,mask,pathology\n")
        for row in rows:
            f.write(row + b"\n")
    return path


def _png(path, array):
    from deepmammo.sources.images import write_png
    write_png(str(path), array)


def test_a_dicom_without_transfer_syntax_is_reported_and_the_manifest_goes_on(tmp_path):
    import pydicom

    from deepmammo.sources.cbis import write_dicom
    image = (np.arange(40 * 30, dtype=np.uint16).reshape(40, 30) * 3) % 4096
    mask = np.zeros((40, 30), bool)
    mask[10:20, 5:15] = True
    write_dicom(str(tmp_path / "good.dcm"), image, "P1", "full")
    ds = pydicom.dcmread(str(tmp_path / "good.dcm"))
    del ds.file_meta.TransferSyntaxUID
    ds.save_as(str(tmp_path / "nots.dcm"), enforce_file_format=False)
    _png(tmp_path / "m.png", mask)
    data = (tmp_path / "good.dcm").read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[:200])      # pydicom's own error, our file name
    manifest = _write_manifest(tmp_path, [b"P1,nots.dcm,m.png,MALIGNANT",
                                          b"P2,good.dcm,m.png,BENIGN",
                                          b"P3,good.dcm,m.png,BENIGN\xe9",
                                          b"P4,cut.dcm,m.png,BENIGN"])
    out = tmp_path / "cases.csv"
    proc = run_cli("ingest", "manifest", manifest, "--out", out)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    report = skipped_rows(out)
    assert any("nots.dcm" in r["file"] and "transfer syntax" in r["reason"] for r in report), report
    assert any(r["file"] == f"{manifest}:4" and "UTF-8" in r["reason"] for r in report), report
    cut = [r for r in report if r["file"].endswith("cut.dcm")]
    assert cut and cut[0]["reason"].startswith(str(tmp_path / "cut.dcm")), report
    assert [r["patient_id"] for r in cases_mod.read_cases(out)] == ["P2"]


def test_a_manifest_header_that_is_not_utf8_names_the_file(tmp_path):
    path = tmp_path / "manifest.csv"
    path.write_bytes(b"patient_id,image,mask,patholog\xe9\nP1,a.png,b.png,BENIGN\n")
    proc = run_cli("ingest", "manifest", path, "--out", tmp_path / "cases.csv")
    error_line("ingest", proc.returncode, proc.stderr, f"{path}:1", "0xe9")
    assert not os.path.exists(tmp_path / "cases_masks")


# ----------------------------------------------------------------------------- outputs

def test_out_naming_an_existing_file_or_folder(cases, tmp_path, ddsm):
    a_file = tmp_path / "taken"
    a_file.write_text("mine\n")
    proc = run_cli("crops", cases, "--out", a_file)
    error_line("crops", proc.returncode, proc.stderr, a_file, "not a folder")
    assert a_file.read_text() == "mine\n" and not os.path.exists(f"{a_file}.partial")
    proc = run_cli("ingest", "ddsm", ddsm, "--out", tmp_path)
    error_line("ingest", proc.returncode, proc.stderr, tmp_path, "is a folder")
    assert not glob.glob(str(tmp_path / "*_masks")) and not glob.glob(str(tmp_path / ".*.tmp"))


# ----------------------------------------------------------------------------- Caffe's files

NET = """name: "n"
layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ dim: 1 dim: 1 dim: 8
  dim: 8 }} }} }}
layer {{ name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param {{ num_output: 2 kernel_size: {kernel} }} }}
"""


def test_a_huge_kernel_size_is_refused_naming_the_field(tmp_path):
    model = tmp_path / "net.prototxt"
    model.write_text(NET.format(kernel=2147483648))
    proc = run_cli("time", "--model", model, "--iterations", 1)
    error_line("time", proc.returncode, proc.stderr, model, "kernel_size", "2147483648")


def test_a_net_too_large_for_memory_is_one_line(tmp_path):
    model = tmp_path / "net.prototxt"
    model.write_text(NET.format(kernel=200000))
    proc = run_cli("time", "--model", model, "--iterations", 1)
    error_line("time", proc.returncode, proc.stderr, model, "memory")


def test_non_utf8_prototxt_and_solver_name_the_file(tmp_path):
    model = tmp_path / "net.prototxt"
    model.write_bytes(NET.format(kernel=3).encode().replace(b'"n"', b'"n\xe9"'))
    proc = run_cli("time", "--model", model, "--iterations", 1)
    error_line("time", proc.returncode, proc.stderr, f"{model}:1", "0xe9")
    solver = tmp_path / "solver.prototxt"
    solver.write_bytes(b'net: "net.prototxt"\nbase_lr: 0.01\n# caf\xe9\n')
    proc = run_cli("train", "--solver", solver, cwd=tmp_path)
    error_line("train", proc.returncode, proc.stderr, f"{solver}:3", "0xe9")


def test_an_empty_datum_is_refused(tmp_path):
    db = tmp_path / "db"
    with LMDBWriter(db) as w:
        w.put_datum(lmdb_key(0, "ok"), array_to_datum(np.zeros((1, 4, 4), np.uint8), 0))
        w.put_datum(lmdb_key(1, "empty"), pb.Datum(label=1))
    model = tmp_path / "net.prototxt"
    model.write_text(f"""name: "d"
layer {{ name: "data" type: "Data" top: "data" top: "label"
  data_param {{ source: "{db}" batch_size: 2 backend: LMDB }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param {{ num_output: 2 }} }}
""")
    proc = run_cli("time", "--model", model, "--iterations", 1)
    error_line("time", proc.returncode, proc.stderr, db, "no pixels")


# ----------------------------------------------------------------------------- configs

@pytest.mark.parametrize("kind", ["wrong type", "folder", "not utf-8"])
def test_a_bad_experiment_config_is_one_line(tmp_path, kind):
    if kind == "folder":
        config = tmp_path / "configs"
        config.mkdir()
    else:
        config = tmp_path / "bad.yaml"
        config.write_bytes(b"dataset: true\n" if kind == "wrong type"
                           else b"model: googlenet\nnotes: caf\xe9\n")
    proc = run_cli("experiment", config, "--dry-run", cwd=ROOT)
    error_line("experiment", proc.returncode, proc.stderr, config)


# ----------------------------------------------------------------------------- -v

def test_verbose_shows_the_traceback_too(cases, tmp_path):
    lines = cases.read_text().splitlines()
    short = tmp_path / "short.csv"
    short.write_text("\n".join([lines[0], ",".join(lines[1].split(",")[:5])]) + "\n")
    proc = run_cli("-v", "crops", short, "--out", tmp_path / "crops")
    assert proc.returncode == 2 and "Traceback" in proc.stderr, proc.stderr
    assert "line 2" in proc.stderr.splitlines()[-1], proc.stderr
