"""`scripts/bench_paper.py` (make bench-paper) on the CPU, as a user runs it: a small synthetic
dataset written once and reused, each experiment resolved as `deepmammo experiment` resolves
it, and projections that follow from the measured rates."""
import json
import math
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "bench_paper.py")


def _run(tmp_path, *extra):
    args = [sys.executable, SCRIPT, "--data", str(tmp_path / "bench"), "--aug-records", "96",
            "--noaug-records", "40", "--eval-records", "30", "--iters", "1", "--warmup", "0",
            "--eval-batches", "1", *extra]
    return subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env=dict(os.environ, PYTHONPATH=ROOT))


def test_bench_paper_times_and_projects_on_cpu(tmp_path):
    out = tmp_path / "bench.json"
    proc = _run(tmp_path, "--experiments", "levynet", "--out", str(out), "--baseline")
    assert proc.returncode == 0, proc.stderr
    assert "| levynet | 64 | 96 | 35 |" in proc.stdout
    assert "| **total** |" in proc.stdout
    report = json.loads(out.read_text())
    assert report["precision"] == "fp32" and report["provenance"]["config"]["iters"] == 1
    assert report["baseline"] and "(baseline: per-blob update" in proc.stdout
    (row,) = report["rows"]
    # 35 epochs of 96 records at batch 64, rounded up to a multiple of the 4 snapshots.
    assert row["max_iter"] == 4 * math.ceil(math.ceil(35 * 96 / 64) / 4) == 56
    assert row["train_s"] == row["max_iter"] * 64 / row["train_img_s"]
    assert row["eval_s"] == 4 * 2 * (row["eval_load_s"] + 30 / row["eval_img_s"])
    assert row["total_s"] == row["train_s"] + row["tests_s"] + row["eval_s"]
    assert row["tests"] >= 1 and row["tests_s"] > 0 and row["gpu_peak_bytes"] is None
    assert report["total_minutes"] == row["total_s"] / 60
    # The dataset is kept and reused; another size is written anew.
    folder = tmp_path / "bench" / "aug"
    assert sorted(os.listdir(folder)) == [
        "bench.json", "mean.binaryproto", "test_lmdb", "train_lmdb", "val_lmdb"]
    bench = _load_script()
    stamp = (folder / "bench.json").stat().st_mtime_ns
    assert bench.ensure_dataset(str(tmp_path / "bench"), "aug", 96, 30) == str(folder)
    assert (folder / "bench.json").stat().st_mtime_ns == stamp
    bench.ensure_dataset(str(tmp_path / "bench"), "aug", 50, 30)
    from deepmammo.caffe.formats.lmdb_io import count_records as count
    assert count(str(folder / "train_lmdb")) == 50
    assert count(str(folder / "val_lmdb")) == 30


def _load_script():
    import importlib.util
    spec = importlib.util.spec_from_file_location("bench_paper", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_paper_refuses_what_it_cannot_run(tmp_path):
    proc = _run(tmp_path, "--experiments", "nosuch")
    assert proc.returncode == 2 and "no config for nosuch" in proc.stderr
    proc = _run(tmp_path, "--experiments", "levynet", "--precision", "tf32")
    assert proc.returncode != 0 and "precision tf32 needs a CUDA GPU" in proc.stderr
    assert not (tmp_path / "bench").exists()
