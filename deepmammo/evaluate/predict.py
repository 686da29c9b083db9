"""Run a deploy net over an LMDB: the preprocessing of Caffe's TEST-phase Data layer, batching,
and the malignant probability per record, joined to the dataset manifest for patient ids."""
import csv
import json
import logging
import os

import numpy as np
from tqdm import tqdm

from deepmammo.engine import pycaffe

log = logging.getLogger(__name__)

PREDICTION_COLUMNS = ("key", "crop_id", "case_id", "patient_id", "label",
                      "prob_benign", "prob_malignant", "pred")


def with_engine(engine, func, *args, source=None, **kwargs):
    """func(caffe, *args, **kwargs), `caffe` being pycaffe's API on `engine` (the CPU, fp32:
    deepmammo.engine.pycaffe). Real Caffe runs
    in a child process (deepmammo.caffe.real_child): a CHECK failing in it ends as an error
    naming the file it was reading (else `source`), not as the end of this process. `func`
    must be importable by name (a module's function)."""
    from deepmammo.caffe import real_child
    if engine == "caffe" and not real_child.inside():
        return real_child.run(with_engine, engine, func, *args, source=source, **kwargs)
    return func(pycaffe(engine), *args, **kwargs)


def preprocess(image, crop_size, mean=None, scale=1.0, mirror=False):
    """One record as Caffe's DataTransformer gives it at TEST: the engine's own transformer
    (deepmammo.caffe.transformer), so evaluation sees exactly what the net's TEST phase saw.

    image: (C, H, W) as stored in the Datum. crop_size: int, or the (h, w) of a square deploy
    input; 0/None keeps the full record. mean: None, a (C, H, W) mean image of the *uncropped*
    record size, or per-channel values. mirror: flip left-right (test-time augmentation).
    """
    from deepmammo.caffe.transformer import test_transform
    if crop_size is not None and not np.isscalar(crop_size):
        h, w = (int(v) for v in crop_size)
        if h != w:
            raise ValueError("Caffe crops squares: a %dx%d input needs records of that size "
                             "(crop_size 0)" % (h, w))
        crop_size = h
    out = test_transform(image, crop_size, mean, scale)
    if mirror:
        out = out[:, :, ::-1]
    return np.ascontiguousarray(out, dtype=np.float32)


def test_transform(train_val_path):
    """The transform_param of a train_val prototxt's TEST-phase Data layer, as a dict with
    crop_size, mean_file, mean_value (list or None) and scale, so evaluation preprocesses
    exactly as the net's own test phase did during training."""
    from deepmammo.caffe.formats.prototxt import read_net
    from deepmammo.caffe.netstate import data_layers
    from deepmammo.caffe.proto import caffe_pb2
    for layer in data_layers(read_net(train_val_path), caffe_pb2.TEST):
        tp = layer.transform_param
        return {"crop_size": int(tp.crop_size) or None,
                "mean_file": tp.mean_file or None,
                "mean_value": list(tp.mean_value) or None,
                "scale": float(tp.scale) if tp.HasField("scale") else 1.0}
    raise ValueError("%s: no Data layer for the TEST phase" % train_val_path)


def read_records(lmdb_path):
    """(keys, images (N, C, H, W) uint8/float, labels) of every record, in key order."""
    from deepmammo.caffe.formats.datum import datum_to_array
    from deepmammo.caffe.formats.lmdb_io import LMDBReader
    if not os.path.isdir(lmdb_path):
        raise FileNotFoundError("LMDB folder not found: %s" % lmdb_path)
    keys, images, labels = [], [], []
    with LMDBReader(lmdb_path) as reader:
        for key, datum in tqdm(reader.datums(), total=len(reader), desc="read %s"
                               % os.path.basename(lmdb_path.rstrip("/")), unit="rec",
                               leave=False):
            keys.append(key.decode() if isinstance(key, bytes) else str(key))
            images.append(datum_to_array(datum))
            labels.append(int(datum.label))
    if not keys:
        raise ValueError("LMDB %s holds no records" % lmdb_path)
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise ValueError("LMDB %s mixes record shapes %s" % (lmdb_path, sorted(shapes)))
    return keys, np.stack(images), np.asarray(labels, dtype=np.int64)


def output_blob(net, name=None):
    """The blob holding class probabilities: `name`, else 'prob', else the net's only output."""
    if name:
        if name not in net.blobs:
            raise ValueError("the net has no blob %r (blobs: %s)" % (name, ", ".join(net.blobs)))
        return name
    if "prob" in net.blobs:
        return "prob"
    outputs = list(net.outputs)
    if len(outputs) != 1:
        raise ValueError("cannot tell the probability output among %s; pass --output" % outputs)
    return outputs[0]


def _softmax_rows(x):
    x = x - x.max(axis=1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=1, keepdims=True)


def forward_probs(net, images, crop_size=None, mean=None, scale=1.0, batch_size=32,
                  tta=None, output=None, input_blob="data"):
    """Class probabilities (N, classes) for images (N, C, H, W), preprocessed as at TEST.

    The crop is the net's input size unless given. `tta='mirror'` averages the probabilities of
    each record and its mirror image. Outputs that are not probabilities (raw scores) pass
    through a softmax.
    """
    if input_blob not in net.blobs:
        raise ValueError("the net has no input blob %r" % input_blob)
    shape = tuple(net.blobs[input_blob].data.shape)
    if crop_size is None:
        crop_size = shape[2:4]
    out_name = output_blob(net, output)
    views = [False] + ([True] if tta == "mirror" else [])
    if tta not in (None, "none", "mirror"):
        raise ValueError("unknown test-time augmentation %r (mirror)" % tta)
    total = None
    for mirror in views:
        chunks = []
        for start in range(0, len(images), batch_size):
            batch = np.stack([preprocess(im, crop_size, mean, scale, mirror)
                              for im in images[start:start + batch_size]])
            if tuple(net.blobs[input_blob].data.shape) != batch.shape:
                net.blobs[input_blob].reshape(*batch.shape)
                net.reshape()
            net.blobs[input_blob].data[...] = batch
            out = net.forward()
            scores = np.array(out[out_name] if out_name in out else net.blobs[out_name].data,
                              dtype=np.float64).reshape(batch.shape[0], -1)
            if (scores.min() < 0 or scores.max() > 1
                    or not np.allclose(scores.sum(axis=1), 1.0, atol=1e-3)):
                scores = _softmax_rows(scores)
            chunks.append(scores)
        probs = np.concatenate(chunks)
        total = probs if total is None else total + probs
    return total / len(views)


def read_manifest(path):
    """{key: row} of the dataset builder's manifest.csv."""
    if not os.path.isfile(path):
        raise FileNotFoundError("manifest not found: %s" % path)
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or "key" not in reader.fieldnames:
            raise ValueError("%s: a manifest needs a 'key' column (has %s)"
                             % (path, reader.fieldnames))
        return {row["key"]: row for row in reader}


def find_named_input(record_path, suffix):
    """A file ending in `suffix` named anywhere in a JSON build record (e.g. the `inputs` of
    build.json or crops.json), resolved as given, beside the record, or one folder up (the
    paths are relative to wherever the command ran). None when absent."""
    if not os.path.isfile(record_path):
        return None
    folder = os.path.dirname(os.path.abspath(record_path))
    with open(record_path) as f:
        try:
            stack = [json.load(f)]
        except ValueError:
            return None
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str) and item.endswith(suffix):
            for cand in (item, os.path.join(folder, item),
                         os.path.join(os.path.dirname(folder), item)):
                if os.path.isfile(cand):
                    return os.path.abspath(cand)
    return None


def find_crops_table(manifest_path):
    """crops.csv of the dataset a manifest belongs to: named among the inputs of build.json
    beside the manifest (`deepmammo lmdb` records it there), else in the manifest's folder or
    the one above it. None when not found."""
    folder = os.path.dirname(os.path.abspath(manifest_path))
    found = find_named_input(os.path.join(folder, "build.json"), "crops.csv")
    if found:
        return found
    for cand in (os.path.join(folder, "crops.csv"),
                 os.path.join(os.path.dirname(folder), "crops.csv")):
        if os.path.isfile(cand):
            return cand
    return None


def read_dataset_index(manifest_path, crops_path=None):
    """{record key: {crop_id, case_id, patient_id, label, ...}}: the manifest, completed from
    crops.csv (by crop_id) where the manifest lacks patient or case ids."""
    manifest = read_manifest(manifest_path)
    sample = next(iter(manifest.values()), {})
    if sample.get("patient_id") and sample.get("case_id"):
        return manifest
    crops_path = crops_path or find_crops_table(manifest_path)
    if not crops_path:
        log.warning("%s has no patient ids and no crops.csv was found beside it: each record "
                    "counts as its own patient", manifest_path)
        return manifest
    with open(crops_path, newline="") as f:
        reader = csv.DictReader(f)
        if "crop_id" not in (reader.fieldnames or ()):
            raise ValueError("%s: a crops table needs a crop_id column" % crops_path)
        crops = {row["crop_id"]: row for row in reader}
    for key, row in manifest.items():
        crop = crops.get(row.get("crop_id", ""))
        if crop is None:
            raise ValueError("%s: record %s names crop %r, which %s does not list"
                             % (manifest_path, key, row.get("crop_id"), crops_path))
        for column in ("patient_id", "case_id", "side", "view", "abnormality_id"):
            if not row.get(column) and crop.get(column) not in (None, ""):
                row[column] = crop[column]
    return manifest


def default_manifest(lmdb_path):
    """manifest.csv beside the LMDB folder, as `deepmammo lmdb` writes it."""
    return os.path.join(os.path.dirname(os.path.abspath(lmdb_path.rstrip("/"))), "manifest.csv")


def prediction_rows(keys, labels, probs, manifest=None):
    """Prediction records joined to the manifest. Without a manifest entry the record is its own
    patient (a bootstrap by record), and the caller is told through the log."""
    rows, missing = [], 0
    probs = np.asarray(probs, dtype=np.float64)
    for i, key in enumerate(keys):
        info = (manifest or {}).get(key)
        if info is None:
            missing += 1
            info = {}
        p = probs[i]
        if info.get("label") not in (None, "") and int(info["label"]) != int(labels[i]):
            raise ValueError("record %s: label %s in the LMDB but %s in the manifest"
                             % (key, labels[i], info["label"]))
        rows.append({
            "key": key,
            "crop_id": info.get("crop_id", ""),
            "case_id": info.get("case_id", ""),
            "patient_id": info.get("patient_id") or key,
            "label": int(labels[i]),
            "prob_benign": float(p[0]) if p.size > 1 else 1.0 - float(p[-1]),
            "prob_malignant": float(p[1]) if p.size > 1 else float(p[-1]),
            "pred": int(np.argmax(p)) if p.size > 1 else int(p[-1] > 0.5),
        })
    if manifest is not None and missing:
        log.warning("%d of %d records are not in the manifest: each counts as its own patient",
                    missing, len(keys))
    return rows


def write_predictions(rows, path):
    from deepmammo.atomic import atomic_path
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=PREDICTION_COLUMNS)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: ("%.9g" % v if isinstance(v, float) else v)
                                 for k, v in row.items()})


def read_predictions(path):
    """Rows of a predictions CSV with numbers converted."""
    if not os.path.isfile(path):
        raise FileNotFoundError("predictions file not found: %s" % path)
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"key", "patient_id", "label", "prob_malignant"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError("%s: predictions lack columns %s" % (path, sorted(missing)))
        rows = []
        for row in reader:
            row["label"] = int(row["label"])
            row["prob_malignant"] = float(row["prob_malignant"])
            if row.get("prob_benign") not in (None, ""):
                row["prob_benign"] = float(row["prob_benign"])
            if row.get("pred") not in (None, ""):
                row["pred"] = int(row["pred"])
            rows.append(row)
    return rows
