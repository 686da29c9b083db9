"""A tiny synthetic world for the evaluation and report tests: a dataset (val/test LMDBs,
manifest, mean, crops table), a small deploy net, and run folders shaped as the experiment
runner writes them (config, resolved solver, logs, snapshots, provenance). Other test files
import `build_world` / `evaluate_world` from here."""
import csv
import json
import os

import numpy as np
import yaml

from deepmammo.caffe.formats.binaryproto import write_mean
from deepmammo.caffe.formats.blobproto import array_to_blob
from deepmammo.caffe.formats.caffemodel import write_caffemodel
from deepmammo.caffe.formats.datum import array_to_datum
from deepmammo.caffe.formats.lmdb_io import LMDBWriter, lmdb_key
from deepmammo.caffe.proto import caffe_pb2 as pb

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


def _image(rng, label):
    """A 3-channel crop: a disc brighter for malignant masses, with overlap between classes."""
    yy, xx = np.mgrid[:SIZE, :SIZE] - (SIZE - 1) / 2.0
    r = rng.uniform(2.5, 4.0)
    level = rng.normal(150 if label else 120, 18)
    img = 90 + rng.normal(0, 8, (SIZE, SIZE))
    img[yy ** 2 + xx ** 2 <= r * r] = level
    img = np.clip(img, 0, 255).astype(np.uint8)
    return np.stack([img] * 3)


def _weights(k, bias, seed):
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
                records.append((crop_id, pid, label, _image(rng, label)))
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


def _write_logs(run, max_iter, csv_log):
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
        _write_logs(run, max_iter, csv_log)
        for it, k, b in zip((25, 50, 75, 100), ks, biases):
            write_caffemodel(_weights(k, b, it), os.path.join(run, "%s_iter_%d.caffemodel"
                                                          % (experiment, it)))
        runs[experiment] = run
    return {"root": root, "data": data, "model": model, "runs": runs,
            "mean": os.path.join(data, "mean.binaryproto"),
            "crops": os.path.join(data, "crops.csv")}


def evaluate_world(world, engine="caffe", n_boot=200, threshold="val"):
    """`deepmammo eval` of every snapshot of both runs on val, then on test (selection and
    thresholds from val). Returns {experiment: (val results, test results)}."""
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


def test_world_is_consistent(tmp_path):
    from deepmammo.caffe.formats.lmdb_io import LMDBReader
    world = build_world(str(tmp_path))
    assert len(LMDBReader(os.path.join(world["data"], "val_lmdb"))) == 32
    assert len(os.listdir(world["runs"]["levynet"])) == 8
