"""`deepmammo classify`, `export` and `model-card`, walked as a user runs them: in
subprocesses, on a tiny synthetic DDSM archive, its dataset and a tiny run trained and
evaluated by `deepmammo experiment --evaluate`."""
import csv
import glob
import json
import os
import shutil

import numpy as np
import pytest
from helpers import ROOT, dm, error_line
from worlds import make_workspace

from deepmammo.caffe.formats.datum import datum_to_array
from deepmammo.caffe.formats.lmdb_io import LMDBReader
from deepmammo.evaluate.predict import read_manifest, read_predictions
from deepmammo.sources.cases import read_cases
from deepmammo.sources.images import read_image, write_png

pytestmark = pytest.mark.subprocess


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_data):
    """{workspace, data (the tiny archive's folder), cases, dataset, run, records: {crop_id:
    record}, eval: {crop_id: p}}."""
    root = str(tmp_path_factory.mktemp("classify"))
    cases, datasets = tiny_data
    ws = make_workspace(os.path.join(root, "ws"))
    dataset = os.path.join(datasets, "proportional2-none")
    dm("experiment", "configs/tiny.yaml", f"dataset={dataset}", "max_iter=40", "--evaluate",
       cwd=ws)
    run = os.path.realpath(os.path.join(ws, "runs", "tiny", "latest"))
    manifest = read_manifest(os.path.join(dataset, "manifest.csv"))
    records = {}
    for split in ("train", "val", "test"):
        with LMDBReader(os.path.join(dataset, f"{split}_lmdb")) as db:
            for key, datum in db.datums():
                key = key.decode() if isinstance(key, bytes) else key
                records[manifest[key]["crop_id"]] = datum_to_array(datum)
    test = json.load(open(os.path.join(run, "eval", "test.json")))
    chosen = test["selected"]["snapshot"]
    entry = next(e for e in test["snapshots"] if os.path.basename(e["snapshot"]) == chosen)
    preds = read_predictions(os.path.join(run, "eval", entry["predictions"]))
    return {"ws": ws, "root": root, "data": os.path.dirname(os.path.dirname(cases)),
            "cases": cases, "dataset": dataset, "run": run,
            "records": records, "eval": {r["crop_id"]: r["prob_malignant"] for r in preds},
            "snapshot": chosen, "rows": {r["case_id"]: r for r in read_cases(cases)}}


def _classify(world, *args, **kwargs):
    return dm("classify", world["run"], *args, cwd=world["ws"], **kwargs)


def _results(path):
    with open(path, newline="") as f:
        return {r["mass"]: r for r in csv.DictReader(f)}


def _saved(folder, name):
    from PIL import Image
    return np.asarray(Image.open(os.path.join(folder, name + ".png")))


# ------------------------------------------------------------------ one mammogram
def test_a_test_mass_from_its_full_mammogram_is_its_lmdb_record_and_gets_evals_probability(
        world, tmp_path):
    case = sorted(world["eval"])[0]
    row = world["rows"][case]
    inputs, out = tmp_path / "inputs", tmp_path / "one.json"
    # the .LJPEG alone: its .ics and .OVERLAY beside it give size, bits, scanner and outline
    proc = _classify(world, row["image"], "--abnormality", row["abnormality_id"],
                     "--save-inputs", inputs, "--out", out)
    record = _saved(inputs, case)
    assert np.array_equal(record[None].repeat(3, 0), world["records"][case])
    doc = json.load(open(out))
    (mass,) = doc["masses"]
    assert mass["mass"] == case
    assert abs(mass["p_malignant"] - world["eval"][case]) < 1e-6
    assert doc["model"]["snapshot"].endswith(world["snapshot"])
    threshold = doc["model"]["threshold"]["value"]
    assert mass["decision"] == ("malignant" if mass["p_malignant"] >= threshold else "benign")
    assert case in proc.stdout and "chosen on validation" in proc.stdout
    # the same mass given by its mask file and by its bounding box
    for how in (["--mask", row["mask"]], ["--box", ",".join(map(str, row["bbox"]))]):
        got = _classify(world, row["image"], *how, "--save-inputs", tmp_path / how[0][2:],
                        "--out", tmp_path / f"{how[0][2:]}.csv")
        (res,) = _results(tmp_path / f"{how[0][2:]}.csv").values()
        assert abs(float(res["p_malignant"]) - world["eval"][case]) < 1e-6, got.stdout
        assert np.array_equal(_saved(tmp_path / how[0][2:], res["mass"]), record)


def test_dicom_tiff_and_png_mammograms_give_the_same_record(world, tmp_path):
    from deepmammo.sources.cbis import write_dicom
    from deepmammo.sources.images import write_tiff
    case = sorted(world["eval"])[-1]
    row = world["rows"][case]
    image = read_image(row["image"], "LJPEG", shape=(row["rows"], row["cols"]))
    write_dicom(str(tmp_path / "m.dcm"), image, row["patient_id"], "full")
    write_tiff(str(tmp_path / "m.tif"), image)
    write_png(str(tmp_path / "m.png"), image)
    for name in ("m.dcm", "m.tif", "m.png"):
        # 12-bit samples in 16-bit files: the bit depth is said, as the .ics says it
        _classify(world, tmp_path / name, "--mask", row["mask"], "--bits", row["bits"],
                  "--save-inputs", tmp_path / "in", "--out", tmp_path / "r.csv")
        (res,) = _results(tmp_path / "r.csv").values()
        assert abs(float(res["p_malignant"]) - world["eval"][case]) < 1e-6, name
        assert np.array_equal(_saved(tmp_path / "in", "m"), world["records"][case][0]), name


# ------------------------------------------------------------------ many masses
def test_a_cases_csv_classifies_every_row_as_eval_and_lmdb_did(world, tmp_path):
    out = tmp_path / "all.csv"
    proc = _classify(world, world["cases"], "--save-inputs", tmp_path / "in", "--out", out,
                     "--workers", 2)
    results = _results(out)
    assert set(results) == set(world["rows"]) == set(world["records"])
    for case, record in world["records"].items():
        assert np.array_equal(_saved(tmp_path / "in", case), record[0]), case
    for case, p in world["eval"].items():
        assert abs(float(results[case]["p_malignant"]) - p) < 1e-6, case
        assert results[case]["label"] == str(world["rows"][case]["label"])
    assert f"{len(results)} masses classified" in proc.stdout


def test_a_crops_folder_and_a_folder_of_pngs(world, tmp_path):
    crops = os.path.join(os.path.dirname(world["dataset"]), "crops", "proportional2")
    _classify(world, crops, "--out", tmp_path / "crops.csv")
    results = _results(tmp_path / "crops.csv")
    assert set(results) == set(world["records"])
    for case, p in world["eval"].items():
        assert abs(float(results[case]["p_malignant"]) - p) < 1e-6
    plain = tmp_path / "plain"
    plain.mkdir()
    for case in world["eval"]:
        shutil.copy(os.path.join(crops, "images", case + ".png"), plain / (case + ".png"))
    _classify(world, plain, "--bits", 12, "--out", tmp_path / "plain.csv")
    got = _results(tmp_path / "plain.csv")
    assert set(got) == set(world["eval"])
    for case, p in world["eval"].items():
        assert abs(float(got[case]["p_malignant"]) - p) < 1e-6


def test_one_bad_row_is_reported_and_the_rest_are_classified(world, tmp_path):
    rows = list(csv.DictReader(open(world["cases"], newline="")))
    base = os.path.dirname(world["cases"])
    empty = tmp_path / "empty.png"
    write_png(str(empty), np.zeros((int(rows[0]["rows"]), int(rows[0]["cols"])), bool))
    for r in rows:
        for k in ("image", "mask"):
            r[k] = os.path.join(base, r[k])
    rows[0]["mask"] = str(empty)
    rows[1]["image"] = str(tmp_path / "gone.LJPEG")
    path = tmp_path / "cases.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    proc = _classify(world, path, "--out", tmp_path / "r.csv")
    results = _results(tmp_path / "r.csv")
    assert str(empty) in results[rows[0]["case_id"]]["error"]
    assert "no mass in the mask" in results[rows[0]["case_id"]]["error"]
    assert "gone.LJPEG" in results[rows[1]["case_id"]]["error"]
    assert all(results[r["case_id"]]["p_malignant"] for r in rows[2:])
    assert f"{len(rows) - 2} masses classified" in proc.stdout
    assert "gone.LJPEG" in proc.stderr and "Traceback" not in proc.stderr


# ------------------------------------------------------------------ bad input: one line
def test_bad_inputs_are_one_line_naming_the_file(world, tmp_path):
    row = world["rows"][sorted(world["eval"])[0]]
    empty = tmp_path / "empty.png"
    write_png(str(empty), np.zeros((row["rows"], row["cols"]), bool))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    no_snaps = tmp_path / "nosnaps"
    shutil.copytree(world["run"], no_snaps)
    for f in glob.glob(str(no_snaps / "*.caffemodel")):
        os.unlink(f)
    checks = [
        ((row["image"], "--mask", empty), [empty, "no mass in the mask"]),
        ((row["image"], "--box", "10,10,900,50"), [row["image"], "not inside the 600x400"]),
        ((broken, "--box", "1,1,5,5"), [broken]),
        ((row["image"], "--grey", "od"), ["build.json", "full-range", "od"]),
    ]
    for args, needles in checks:
        proc = _classify(world, *args, check=False)
        error_line("classify", proc.returncode, proc.stderr, *needles)
    proc = dm("classify", no_snaps, row["image"], cwd=world["ws"], check=False)
    error_line("classify", proc.returncode, proc.stderr, no_snaps, "no snapshots")


# ------------------------------------------------------------------ options, engines
def test_oversample_saliency_and_real_caffe(world, tmp_path, real_caffe):
    case = sorted(world["eval"])[0]
    row = world["rows"][case]
    _classify(world, row["image"], "--mask", row["mask"], "--oversample", "--saliency",
              tmp_path / "sal", "--out", tmp_path / "o.csv")
    (res,) = _results(tmp_path / "o.csv").values()
    assert 0 <= float(res["p_malignant"]) <= 1
    assert os.path.isfile(tmp_path / "sal" / (res["mass"] + ".png"))
    # oversampling = pycaffe's ten crops of the mean-subtracted record, probabilities averaged
    from deepmammo.classify.classify import oversampled
    from deepmammo.classify.model import TrainedRun
    run = TrainedRun(world["run"])
    crops = oversampled(world["records"][case][None], 8, run.mean(), run.scale)
    assert crops.shape == (10, 3, 8, 8)
    assert np.array_equal(crops[5], crops[0][:, :, ::-1])
    _classify(world, row["image"], "--mask", row["mask"], "--engine", "caffe", "--out",
              tmp_path / "c.csv")
    (real,) = _results(tmp_path / "c.csv").values()
    assert abs(float(real["p_malignant"]) - world["eval"][case]) < 1e-5


# ------------------------------------------------------------------ model card, export
def test_the_model_card_figures_are_the_runs_results(world):
    card = json.load(open(os.path.join(world["run"], "model-card.json")))
    text = open(os.path.join(world["run"], "model-card.md")).read()
    val = json.load(open(os.path.join(world["run"], "eval", "val.json")))
    test = json.load(open(os.path.join(world["run"], "eval", "test.json")))
    assert card["model"]["snapshot"] == world["snapshot"] == val["selected"]["snapshot"]
    for split, results in (("validation", val), ("test", test)):
        entry = next(e for e in results["snapshots"]
                     if os.path.basename(e["snapshot"]) == world["snapshot"])
        for metric, value in entry["metrics"].items():
            if metric in card[split]["at_argmax"]:
                assert card[split]["at_argmax"][metric]["value"] == value
                assert card[split]["at_argmax"][metric]["ci95"] == entry["ci"][metric]
        assert card[split]["calibration"]["ece"] == entry["calibration"]["ece"]
        assert f"| accuracy | {entry['metrics']['accuracy']:.3f} |" in text
    assert card["model"]["threshold"]["value"] == next(
        e for e in val["snapshots"] if os.path.basename(e["snapshot"]) == world["snapshot"]
    )["fitted_threshold"]["value"]
    assert card["data"]["synthetic"] is True and "SYNTHETIC DATA" in text
    assert card["training"]["seed"] == 1 and card["training"]["engine"] == "torch"
    assert "not a medical device" in text


def test_a_run_exports_to_onnx_and_torchscript_checked_on_its_test_records(world, tmp_path):
    import onnx
    import onnxruntime as ort
    import torch
    proc = dm("export", world["run"], "--out", tmp_path / "tiny", cwd=world["ws"])
    assert "test records" in proc.stdout and "largest difference" in proc.stdout
    model = onnx.load(str(tmp_path / "tiny.onnx"))
    props = {p.key: p.value for p in model.metadata_props}
    meta = json.loads(props["deepmammo.preprocessing"])
    assert meta["record"]["grey"] == "full-range" and meta["scale"] == 0.00390625
    mean = np.frombuffer(__import__("base64").b64decode(props["deepmammo.mean"]), "<f4")
    assert mean.size == 3 * 224 * 224
    assert "Model card" in props["deepmammo.model_card"]
    assert os.path.isfile(tmp_path / "tiny.model-card.md")
    # a user's preprocessing from the metadata alone gives eval's probabilities
    case = sorted(world["eval"])[0]
    x = (world["records"][case].astype(np.float32) - mean.reshape(3, 224, 224))
    top = (224 - 8) // 2
    x = x[:, top:top + 8, top:top + 8] * np.float32(meta["scale"])
    session = ort.InferenceSession(str(tmp_path / "tiny.onnx"),
                                   providers=["CPUExecutionProvider"])
    p = session.run(None, {"data": x[None]})[0][0, 1]
    assert abs(p - world["eval"][case]) < 1e-5
    extra = {"deepmammo.json": ""}
    scripted = torch.jit.load(str(tmp_path / "tiny.pt"), _extra_files=extra)
    assert json.loads(extra["deepmammo.json"])["snapshot"] == world["snapshot"]
    with torch.no_grad():
        assert abs(float(scripted(torch.from_numpy(x[None]))[0, 1]) - world["eval"][case]) \
            < 1e-5


def test_an_export_beyond_the_tolerance_is_refused_and_nothing_written(world, tmp_path):
    # the tiny net's ONNX differs from the engine by some 1e-8 (ONNX Runtime's GEMM)
    proc = dm("export", world["run"], "--format", "onnx", "--tolerance", "1e-12", "--out",
              tmp_path / "strict", cwd=world["ws"], check=False)
    error_line("export", proc.returncode, proc.stderr, world["snapshot"],
               "differs from the engine", "tolerance 1e-12", "nothing written")
    assert not os.listdir(tmp_path)


def test_to_module_is_the_engines_forward(world):
    import torch

    import deepmammo.caffe as caffe
    from deepmammo.export.module import to_module
    run = world["run"]
    net = caffe.Net(os.path.join(run, "deploy.prototxt"),
                    os.path.join(run, world["snapshot"]), caffe.TEST)
    x = np.random.RandomState(0).normal(0, 1, (1, 3, 8, 8)).astype(np.float32)
    net.blobs["data"].data[...] = x
    ref = net.forward()["prob"].copy()
    module = to_module(net)
    assert isinstance(module, torch.nn.Module)
    assert [k for k, _ in module.named_parameters()] == ["layers.fc.blobs.0",
                                                         "layers.fc.blobs.1"]
    with torch.no_grad():
        assert np.array_equal(module(torch.from_numpy(x)).numpy(), ref)


PAPER_NETS = ("levynet", "levynet_code", "alexnet_finetune", "googlenet_shallow",
              "googlenet_deeper")


def _random_weights(net, seed=0):
    """Weights that keep activations finite: N(0, 1/fan_in), BatchNorm statistics valid."""
    rng = np.random.RandomState(seed)
    for name, blobs in net.params.items():
        if net.layer_dict[name].type == "BatchNorm":
            blobs[0].data[...] = rng.normal(0, 0.1, blobs[0].data.shape)
            blobs[1].data[...] = rng.uniform(0.5, 2.0, blobs[1].data.shape)
            blobs[2].data[...] = 1.0
            continue
        for b in blobs:
            fan = int(np.prod(b.data.shape[1:])) if b.data.ndim > 1 else 100
            b.data[...] = rng.normal(0, 1.0 / np.sqrt(fan), b.data.shape)


@pytest.mark.parametrize("name", PAPER_NETS)
def test_every_paper_net_exports_to_onnx_and_torchscript(name, tmp_path):
    import onnxruntime as ort
    import torch

    import deepmammo.caffe as caffe
    deploy = os.path.join(ROOT, "prototxt", name, "deploy.prototxt")
    net = caffe.Net(deploy, caffe.TEST)
    _random_weights(net)
    weights = tmp_path / "random.caffemodel"
    net.save(str(weights))
    proc = dm("export", "--model", deploy, "--weights", weights, "--out", tmp_path / name,
              cwd=tmp_path)
    assert proc.stdout.count("largest difference from the engine") == 2
    x = np.random.RandomState(1).normal(0, 1, (2, 3, 224, 224)).astype(np.float32)
    net.blobs["data"].reshape(*x.shape)
    net.reshape()
    net.blobs["data"].data[...] = x
    ref = net.forward()["prob"].copy()
    assert np.isfinite(ref).all() and ref.std() > 1e-4   # the weights do separate inputs
    session = ort.InferenceSession(str(tmp_path / f"{name}.onnx"),
                                   providers=["CPUExecutionProvider"])
    assert np.abs(session.run(None, {"data": x})[0] - ref).max() < 1e-5
    with torch.no_grad():
        got = torch.jit.load(str(tmp_path / f"{name}.pt"))(torch.from_numpy(x)).numpy()
    assert np.abs(got - ref).max() < 1e-5


def test_a_damaged_dicom_in_a_manifest_names_the_image_and_the_case(tmp_path):
    from deepmammo.sources.cbis import write_dicom
    image = (np.arange(40 * 30, dtype=np.uint16).reshape(40, 30) * 3) % 4096
    mask = np.zeros((40, 30), bool)
    mask[10:20, 5:15] = True
    write_dicom(str(tmp_path / "good.dcm"), image, "P1", "full")
    data = (tmp_path / "good.dcm").read_bytes()
    # the file meta's transfer syntax names a UID that is no transfer syntax
    (tmp_path / "bad.dcm").write_bytes(data.replace(b"1.2.840.10008.1.2.1\x00",
                                                    b"1.2.840.10008.5.1.4\x00"))
    write_png(str(tmp_path / "m.png"), mask)
    (tmp_path / "manifest.csv").write_text("patient_id,image,mask,pathology\n"
                                           "P1,good.dcm,m.png,BENIGN\nP2,bad.dcm,m.png,BENIGN\n")
    dm("ingest", "manifest", tmp_path / "manifest.csv", "--out", tmp_path / "cases.csv",
       cwd=tmp_path)
    (skip,) = list(csv.DictReader(open(tmp_path / "cases.skipped.csv")))
    assert skip["case"] == "P2_bad_1" and skip["file"] == str(tmp_path / "bad.dcm")
    assert str(tmp_path / "bad.dcm") in skip["reason"] and "transfer syntax" in skip["reason"]


def test_the_readmes_using_a_trained_run_block_runs_as_written(world, tmp_path):
    """The README's block, run by bash in a checkout where `make demo` has run (the tiny
    world's run, archive, cases and crops stand at the demo's paths)."""
    from helpers import env, run
    ws = world["ws"]
    data = world["data"]
    links = {"runs/demo-levynet/latest": world["run"],
             "data/synth/ddsm-60-s0": os.path.join(data, "synth"),
             "data/cases/synth-ddsm-60-s0": os.path.join(data, "cases"),
             "data/datasets/synth-ddsm-60-s0/seed0/crops": os.path.join(data, "datasets",
                                                                        "crops")}
    for link, target in links.items():
        os.makedirs(os.path.dirname(os.path.join(ws, link)), exist_ok=True)
        if not os.path.islink(os.path.join(ws, link)):
            os.symlink(target, os.path.join(ws, link))
    readme = open(os.path.join(ROOT, "README.md")).read()
    section = readme.split("## Using a trained run", 1)[1].split("\n## ", 1)[0]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    script = tmp_path / "block.sh"
    script.write_text("set -e\n" + block)
    proc = run(["bash", str(script)], ws, env=env())
    assert proc.stdout.count("chosen on validation") == 4, proc.stdout
    assert "A-3001-1_RIGHT_CC_1" in proc.stdout and "onnx" in proc.stdout
    assert os.path.isfile(os.path.join(ws, "predictions.csv"))
    assert os.path.isfile(os.path.join(world["run"], "model-card.md"))


def test_tables_and_report_of_synthetic_runs_say_so_and_the_report_holds_the_model_cards(world):
    ws = world["ws"]
    dm("tables", "--runs", "runs", "--alias", "tiny=levynet", "--out", "synth-tables", cwd=ws)
    title = open(os.path.join(ws, "synth-tables", "table2.md")).readline()
    assert "SYNTHETIC DATA" in title
    dm("report", "--runs", "runs", "--name", "synth", "--alias", "tiny=levynet", cwd=ws)
    page = open(os.path.join(ws, "reports", "synth", "index.html")).read()
    assert "SYNTHETIC DATA" in page.split("</title>")[0]
    cards = glob.glob(os.path.join(ws, "reports", "synth", "model-cards", "*.md"))
    assert len(cards) == 1 and "Model cards" in page
    assert open(cards[0]).read() == open(os.path.join(world["run"], "model-card.md")).read()
