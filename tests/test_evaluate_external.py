"""External validation: a run scored on another archive's dataset with its own training mean and
grey mapping, refused when the grey mappings differ, and shown beside the internal test."""
import json
import os
import shutil

import numpy as np
import pytest
from helpers import ROOT, run_cli
from worlds import CROP, build_world

from deepmammo.caffe.formats.binaryproto import write_mean
from deepmammo.evaluate import predict
from deepmammo.evaluate.snapshots import evaluate
from deepmammo.report.collect import collect_runs
from deepmammo.report.external import external_table

TRAIN_VAL = """name: "TinyMammo"
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TEST }
        transform_param { crop_size: %d mean_file: "%s" }
        data_param { source: "%s" batch_size: 4 backend: LMDB } }
"""


def _build_json(folder, cases, grey="full-range", size=14):
    with open(os.path.join(folder, "build.json"), "w") as f:
        json.dump({"config": {"grey_spec": grey, "size": size,
                              "crops_config": {"cases": cases, "cases_sha1": cases[-12:]}},
                   "inputs": {os.path.join(folder, "crops.csv"): "0" * 40}}, f)


def read_mean(path):
    """A mean file as real pycaffe reads it: (C, H, W)."""
    from deepmammo.caffe.real import import_caffe
    caffe = import_caffe()
    blob = caffe.proto.caffe_pb2.BlobProto()
    with open(path, "rb") as f:
        blob.ParseFromString(f.read())
    return caffe.io.blobproto_to_array(blob)[0]


@pytest.fixture
def world(tmp_path, real_caffe):
    w = build_world(str(tmp_path))
    own = w["data"]
    _build_json(own, str(tmp_path / "cases" / "cbis-ddsm" / "cases.csv"))
    # Another archive's dataset: same record layout, a clearly different mean.
    other = str(tmp_path / "other" / "mias" / "large-aug")
    shutil.copytree(own, other)
    _build_json(other, str(tmp_path / "cases" / "mias" / "cases.csv"))
    write_mean(read_mean(w["mean"]) + 40.0, os.path.join(other, "mean.binaryproto"))
    run = w["runs"]["levynet"]
    with open(os.path.join(run, "config.yaml"), "a") as f:
        f.write("dataset: %s\n" % own)  # the last key wins in YAML
    with open(os.path.join(run, "train_val.prototxt"), "w") as f:
        f.write(TRAIN_VAL % (CROP, w["mean"], os.path.join(own, "val_lmdb")))
    w.update(other=other, run=run, train_val=os.path.join(run, "train_val.prototxt"))
    return w


def _eval(w, lmdb, out, **kw):
    return evaluate(w["model"], os.path.join(w["run"], "*_iter_*.caffemodel"), lmdb, out,
                    engine="caffe", n_boot=0, train_val=w["train_val"], **kw)


def test_external_evaluation_subtracts_the_runs_training_mean(world, real_caffe):
    run = world["run"]
    val_json = os.path.join(run, "eval", "val.json")
    val = _eval(world, os.path.join(world["data"], "val_lmdb"), val_json)
    assert val["external"] is None
    _eval(world, os.path.join(world["data"], "test_lmdb"), os.path.join(run, "eval", "test.json"),
          val_results=val_json)
    out = os.path.join(run, "eval", "external-mias.json")
    ext = _eval(world, os.path.join(world["other"], "test_lmdb"), out, val_results=val_json)
    record = ext["external"]
    assert record["dataset"] == world["other"] and record["run_dataset"] == world["data"]
    assert record["name"] == "mias" and record["grey"] == "full-range"
    assert record["mean"] == os.path.abspath(world["mean"]) == ext["mean"]
    assert ext["snapshots"][0]["calibration"]["n_bins"] == 10

    # The predictions are those of the run's mean, not of the external dataset's own.
    entry = ext["snapshots"][-1]
    rows = predict.read_predictions(os.path.join(run, "eval", entry["predictions"]))
    keys, images, _ = predict.read_records(os.path.join(world["other"], "test_lmdb"))
    assert [r["key"] for r in rows] == keys
    net = real_caffe.Net(world["model"], entry["snapshot"], real_caffe.TEST)
    own = predict.forward_probs(net, images, mean=read_mean(world["mean"]))[:, 1]
    theirs = predict.forward_probs(
        net, images, mean=read_mean(os.path.join(world["other"], "mean.binaryproto")))[:, 1]
    got = np.array([r["prob_malignant"] for r in rows])
    assert np.allclose(got, own, atol=1e-6)
    assert not np.allclose(got, theirs, atol=1e-3)

    # Tables keep it apart from the internal test; the external table shows both.
    runs = collect_runs(os.path.join(world["root"], "runs"))
    levynet = runs["levynet"]
    assert levynet.test["_path"].endswith("test.json")
    assert [r["_path"] for r in levynet.external] == [out]
    table, rows = external_table(runs)
    markdown = table.markdown()
    assert [r["data"] for r in rows] == ["internal test", "external: mias (test)"]
    assert rows[1]["snapshot"] == ext["selected"]["snapshot"]
    assert "| levynet | s7 | external: mias (test) | mias | 32 |" in markdown


def test_another_mean_file_is_refused(world):
    with pytest.raises(ValueError, match="not the run's training mean"):
        _eval(world, os.path.join(world["other"], "test_lmdb"),
              os.path.join(world["root"], "x.json"),
              mean_path=os.path.join(world["other"], "mean.binaryproto"))


@pytest.mark.subprocess
def test_a_dataset_with_another_grey_mapping_is_refused_naming_both(world, tmp_path):
    _build_json(world["other"], str(tmp_path / "cases" / "mias" / "cases.csv"), grey="od")
    out = tmp_path / "ext.json"
    proc = run_cli("eval", "--model", world["model"],
                   "--snapshots", os.path.join(world["run"], "*_iter_*.caffemodel"),
                   "--lmdb", os.path.join(world["other"], "test_lmdb"), "--train-val",
                   world["train_val"], "--out", out, "--engine", "caffe", cwd=ROOT)
    assert proc.returncode == 2
    line = proc.stderr.strip().splitlines()[-1]
    assert os.path.join(world["other"], "build.json") in line
    assert os.path.join(world["data"], "build.json") in line
    assert "grey levels od" in line and "grey full-range" in line
    assert not out.exists()


def test_an_external_dataset_without_a_build_record_is_refused(world):
    os.remove(os.path.join(world["other"], "build.json"))
    with pytest.raises(ValueError, match="build.json is missing"):
        _eval(world, os.path.join(world["other"], "test_lmdb"),
              os.path.join(world["root"], "x.json"))
