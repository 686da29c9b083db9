"""The synthetic worlds the tests build, shared by several test files:

- an archive (`make_archive`): cases.csv with 16-bit PNG images and masks, several masses and
  views per patient, for the dataset stages (crops, split, LMDB);
- a report world (`build_world`, `evaluate_world`): a dataset (val/test LMDBs, manifest,
  mean, crops table), a small deploy net and two run folders shaped as the experiment runner
  writes them (config, resolved solver, logs, snapshots, provenance), for evaluation and
  reports;
- a user's workspace (`make_workspace`, `build_tiny_data`): a folder that looks like a
  checkout to make and the CLI, and a tiny dataset built by the CLI itself."""
import csv
import json
import os
import shutil

import numpy as np
import yaml
from helpers import ROOT, VENV_BIN, dm
from PIL import Image

from deepmammo.caffe.formats.binaryproto import write_mean
from deepmammo.caffe.formats.blobproto import array_to_blob
from deepmammo.caffe.formats.caffemodel import write_caffemodel
from deepmammo.caffe.formats.datum import array_to_datum
from deepmammo.caffe.formats.lmdb_io import LMDBWriter, lmdb_key
from deepmammo.caffe.proto import caffe_pb2 as pb

# ----------------------------------------------------------------------------- an archive

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


# ----------------------------------------------------------------------------- a report world

SIZE, CROP = 14, 12

DEPLOY = """name: "TinyMammo"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 4 dim: 3 dim: %d dim: %d } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 2 kernel_size: 3 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "pool1" top: "fc"
        inner_product_param { num_output: 2 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
""" % (CROP, CROP)


def _crop_image(rng, label):
    """A 3-channel crop: a disc brighter for malignant masses, with overlap between classes."""
    yy, xx = np.mgrid[:SIZE, :SIZE] - (SIZE - 1) / 2.0
    r = rng.uniform(2.5, 4.0)
    level = rng.normal(150 if label else 120, 18)
    img = 90 + rng.normal(0, 8, (SIZE, SIZE))
    img[yy ** 2 + xx ** 2 <= r * r] = level
    img = np.clip(img, 0, 255).astype(np.uint8)
    return np.stack([img] * 3)


def snapshot_weights(k, bias, seed):
    """conv1: a mean filter and its negative (plus a little noise, so snapshots rank records
    differently); fc: malignant score ~ k * centre brightness."""
    conv = np.zeros((2, 3, 3, 3), np.float32)
    conv[0], conv[1] = 1.0 / 27, -1.0 / 27
    conv += np.random.RandomState(seed).normal(0, 0.02, conv.shape).astype(np.float32)
    fc = np.zeros((2, 2, 5, 5), np.float32)
    fc[1, 0, 1:4, 1:4], fc[1, 1, 1:4, 1:4] = k, -k
    fc[0] = -fc[1]
    net = pb.NetParameter(name="TinyMammo")
    for name, blobs in (("conv1", [conv, np.zeros(2, np.float32)]),
                        ("fc", [fc.reshape(2, 50), np.array([0.0, bias], np.float32)])):
        layer = net.layer.add(name=name, type="Convolution" if name == "conv1" else
                              "InnerProduct")
        for b in blobs:
            layer.blobs.append(array_to_blob(b))
    return net


def _write_dataset(root, seed):
    rng = np.random.RandomState(seed)
    data = os.path.join(root, "data", "large-aug")
    os.makedirs(data, exist_ok=True)
    manifest, crops, train_images = [], [], []
    for split, patients in (("val", 16), ("test", 16)):
        records = []
        for p in range(patients):
            pid = "%s-P%02d" % (split, p)
            label = p % 2
            for view in ("CC", "MLO"):
                crop_id = "%s_RIGHT_%s_1" % (pid, view)
                records.append((crop_id, pid, label, _crop_image(rng, label)))
                crops.append({"crop_id": crop_id, "patient_id": pid, "case_id": pid + "_1",
                              "side": "RIGHT", "view": view, "abnormality_id": "1",
                              "label": label,
                              "shape": "OVAL" if label == 0 else "IRREGULAR",
                              "margins": ["CIRCUMSCRIBED", "SPICULATED"][label]
                              if p % 4 < 2 else "OBSCURED"})
        order = rng.permutation(len(records))  # keys shuffled at write, as the builder does
        with LMDBWriter(os.path.join(data, "%s_lmdb" % split)) as db:
            for i, j in enumerate(order):
                crop_id, pid, label, img = records[j]
                key = lmdb_key(i, crop_id)
                db.put_datum(key, array_to_datum(img, label))
                # As `deepmammo lmdb` writes it: no patient ids (crops.csv has them).
                manifest.append({"key": key, "split": split, "crop_id": crop_id,
                                 "label": label, "rotation": 0, "crop": 0})
                train_images.append(img)
    write_mean(np.mean(train_images, axis=0).astype(np.float32), os.path.join(data,
                                                                             "mean.binaryproto"))
    for name, rows in (("manifest.csv", manifest), ("crops.csv", crops)):
        with open(os.path.join(data, name), "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    with open(os.path.join(data, "build.json"), "w") as f:
        json.dump({"inputs": {os.path.join(data, "crops.csv"): "0" * 40}}, f)
    return data


GLOG = "I1126 01:30:%02d.000000 12345 solver.cpp:%d] %s\n"


def write_logs(run, max_iter, csv_log):
    lines, rows = [GLOG % (0, 10, "Solving TinyMammo")], []
    for it in range(0, max_iter + 1, 25):
        loss = 0.7 * np.exp(-it / 60.0) + 0.1
        acc = 0.55 + 0.4 * (1 - np.exp(-it / 50.0))
        lines += [GLOG % (1, 347, "Iteration %d, Testing net (#0)" % it),
                  GLOG % (1, 414, "    Test net output #0: accuracy = %g" % (acc - 0.05)),
                  GLOG % (1, 414, "    Test net output #1: loss = %g (* 1 = %g loss)"
                          % (loss + 0.1, loss + 0.1)),
                  GLOG % (2, 243, "Iteration %d (12.5 iter/s, 2s/25 iters), loss = %g"
                          % (it, loss)),
                  GLOG % (2, 259, "    Train net output #0: accuracy = %g" % acc),
                  GLOG % (2, 259, "    Train net output #1: loss = %g (* 1 = %g loss)"
                          % (loss, loss)),
                  GLOG % (2, 106, "Iteration %d, lr = 0.001" % it)]
        rows.append({"iteration": it, "lr": 0.001, "loss": loss, "train_accuracy": acc,
                     "train_loss": loss, "test0_accuracy": acc - 0.05, "test0_loss": loss + 0.1})
    with open(os.path.join(run, "train.log"), "w") as f:
        f.writelines(lines)
    if csv_log:
        with open(os.path.join(run, "train_log.csv"), "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)


def build_world(root, seed=0):
    """Write the dataset, the deploy net and two runs; return a dict of their paths."""
    data = _write_dataset(root, seed)
    model = os.path.join(root, "deploy.prototxt")
    with open(model, "w") as f:
        f.write(DEPLOY)
    runs = {}
    for experiment, ks, biases, csv_log in (
            ("levynet", (0.002, 0.004, 0.006, 0.008), (-1.5, -0.8, -0.3, 0.6), False),
            ("googlenet-deeper", (0.004, 0.008, 0.012, 0.016), (-0.8, 0.0, 0.2, 1.5), True)):
        run = os.path.join(root, "runs", experiment, "20261126-013000")
        os.makedirs(run)
        max_iter = 100
        with open(os.path.join(run, "config.yaml"), "w") as f:
            yaml.safe_dump({"experiment": experiment, "seed": 7, "epochs": 40,
                            "dataset": "large-aug", "net": "tiny"}, f)
        with open(os.path.join(run, "solver.prototxt"), "w") as f:
            f.write('net: "train_val.prototxt"\nbase_lr: 0.001\nmax_iter: %d\n'
                    'snapshot: 25\nsnapshot_prefix: "%s"\n' % (max_iter, experiment))
        with open(os.path.join(run, "provenance.json"), "w") as f:
            json.dump({"git_commit": "abc123", "seed": 7}, f)
        write_logs(run, max_iter, csv_log)
        for it, k, b in zip((25, 50, 75, 100), ks, biases):
            write_caffemodel(snapshot_weights(k, b, it), os.path.join(run, "%s_iter_%d.caffemodel"
                                                          % (experiment, it)))
        runs[experiment] = run
    return {"root": root, "data": data, "model": model, "runs": runs,
            "mean": os.path.join(data, "mean.binaryproto"),
            "crops": os.path.join(data, "crops.csv")}


def evaluate_world(world, engine="torch", n_boot=200, threshold="val"):
    """`deepmammo eval` of every snapshot of both runs on val, then on test (selection and
    thresholds from val). Returns {experiment: (val results, test results)}. Our engine by
    default: it runs in this process (real Caffe runs in a child per call), and that both
    engines give eval the same numbers is test_evaluate_run's to check."""
    from deepmammo.evaluate.snapshots import evaluate
    out = {}
    for experiment, run in world["runs"].items():
        snaps = os.path.join(run, "*_iter_*.caffemodel")
        val_json = os.path.join(run, "eval", "val.json")
        val = evaluate(world["model"], snaps, os.path.join(world["data"], "val_lmdb"), val_json,
                       mean_path=world["mean"], engine=engine, n_boot=n_boot, seed=0)
        test = evaluate(world["model"], snaps, os.path.join(world["data"], "test_lmdb"),
                        os.path.join(run, "eval", "test.json"), mean_path=world["mean"],
                        engine=engine, n_boot=n_boot, seed=0, val_results=val_json,
                        threshold=threshold)
        out[experiment] = (val, test)
    return out


# ----------------------------------------------------------------------------- a user's workspace

# A net small enough that hundreds of iterations take seconds: an 8x8 crop of the mass crop,
# one InnerProduct. Data layers read data/datasets/<variant>/... as the committed nets do.
TINY_NET = """name: "Tiny"
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TRAIN }
  transform_param { crop_size: 8 mirror: true mean_file: "ds/mean.binaryproto" scale: 0.00390625 }
  data_param { source: "ds/train_lmdb" batch_size: 4 backend: LMDB } }
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TEST }
  transform_param { crop_size: 8 mean_file: "ds/mean.binaryproto" scale: 0.00390625 }
  data_param { source: "ds/val_lmdb" batch_size: 4 backend: LMDB } }
layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc"
  inner_product_param { num_output: 2 weight_filler { type: "xavier" } } }
layer { name: "accuracy" type: "Accuracy" bottom: "fc" bottom: "label" top: "accuracy"
  include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }
"""
TINY_DEPLOY = """name: "Tiny"
layer { name: "data" type: "Input" top: "data"
  input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc"
  inner_product_param { num_output: 2 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""
TINY_SOLVER = """net: "prototxt/tiny/train_val.prototxt"
type: "Adam"
base_lr: 0.001
momentum: 0.9
momentum2: 0.999
lr_policy: "fixed"
display: 1
max_iter: 300
snapshot: 100
test_iter: 1
test_interval: 100
random_seed: 1
"""
TINY_CONFIG = """# A tiny experiment for the user-path tests.
description: tiny test net
train_val: prototxt/tiny/train_val.prototxt
deploy: prototxt/tiny/deploy.prototxt
solver: solvers/tiny.prototxt
padding: proportional:2
augment: none
"""


def build_tiny_data(folder, patients=10):
    """synth -> ingest -> crops -> split -> lmdb (no augmentation) through the CLI, laid out as
    the Makefile lays out DATASETS: crops/proportional2, splits-proportional2.csv,
    proportional2-none. Returns (cases.csv, DATASETS folder)."""
    os.makedirs(folder, exist_ok=True)
    cases = os.path.join(folder, "cases", "cases.csv")
    datasets = os.path.join(folder, "datasets")
    crops = os.path.join(datasets, "crops", "proportional2")
    splits = os.path.join(datasets, "splits-proportional2.csv")
    dm("synth", "ddsm", "--out", "synth", "--patients", patients, "--seed", 0, cwd=folder)
    dm("ingest", "ddsm", "synth", "--out", cases, cwd=folder)
    dm("crops", cases, "--padding", "proportional:2", "--out", crops, cwd=folder)
    dm("split", crops, "--seed", 0, "--out", splits, cwd=folder)
    dm("lmdb", crops, "--splits", splits, "--augment", "none", "--seed", 0, "--out",
       os.path.join(datasets, "proportional2-none"), cwd=folder)
    return cases, datasets


def make_workspace(folder):
    """A folder that looks like a checkout to make and the CLI: the repository's Makefile,
    configs, prototxt and solvers copied (tests edit them), the venv linked (make sees the
    install done), plus the tiny net, solver and config."""
    os.makedirs(folder, exist_ok=True)
    for name in ("configs", "prototxt", "solvers"):
        shutil.copytree(os.path.join(ROOT, name), os.path.join(folder, name))
    for name in ("Makefile", "ruff.toml"):
        shutil.copy2(os.path.join(ROOT, name), os.path.join(folder, name))
    # setup.py dated long ago, so make sees the shared install as up to date and never
    # reinstalls the venv from this folder (which holds no package)
    shutil.copy2(os.path.join(ROOT, "setup.py"), os.path.join(folder, "setup.py"))
    os.utime(os.path.join(folder, "setup.py"), (0, 0))
    os.symlink(os.path.dirname(VENV_BIN), os.path.join(folder, ".venv"))
    os.makedirs(os.path.join(folder, "prototxt", "tiny"))
    for path, text in (("prototxt/tiny/train_val.prototxt", TINY_NET),
                       ("prototxt/tiny/deploy.prototxt", TINY_DEPLOY),
                       ("solvers/tiny.prototxt", TINY_SOLVER), ("configs/tiny.yaml", TINY_CONFIG)):
        with open(os.path.join(folder, path), "w") as f:
            f.write(text)
    return folder
