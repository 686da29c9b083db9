"""Evaluate every snapshot of a run on one LMDB and write results.json with predictions CSVs.

results.json (format "deepmammo-eval/1") is what tables and figures read:
  split, model, lmdb, mean, engine, tta, run (folder, experiment, seed, max_iter, epochs),
  bootstrap settings, provenance, and per snapshot: iteration, fraction of training, epoch,
  predictions CSV (relative to results.json), metrics at argmax, 95% patient-bootstrap CIs,
  the threshold a validation set would choose, the reliability diagram and expected calibration
  error of p(malignant) (calibration.py), and (test with validation results) the chosen
  snapshot and metrics at the validation threshold. Readers take it as a `Results` record
(records.py).
"""
import logging
import os

import numpy as np

from deepmammo.atomic import write_text
from deepmammo.caffe import real_child
from deepmammo.engine import check as check_engine
from deepmammo.engine import gpu_device, pycaffe
from deepmammo.evaluate import external, predict, runinfo
from deepmammo.evaluate.bootstrap import bootstrap_ci
from deepmammo.evaluate.calibration import rows_reliability
from deepmammo.evaluate.metrics import binary_metrics
from deepmammo.evaluate.records import FORMAT, Results
from deepmammo.evaluate.select import (
    DEFAULT_CRITERIA,
    choose_threshold,
    select_snapshot,
    snapshot_id,
)

log = logging.getLogger(__name__)


def score_rows(rows, threshold=None, n_boot=1000, seed=0, use_preds=True):
    """(metrics, CIs) of prediction rows. At argmax the network's own decisions are used."""
    labels = np.array([r["label"] for r in rows])
    probs = np.array([r["prob_malignant"] for r in rows])
    patients = [r["patient_id"] for r in rows]
    preds = None
    if threshold is None and use_preds and all(r.get("pred") not in (None, "") for r in rows):
        preds = np.array([int(r["pred"]) for r in rows])
    metrics = binary_metrics(labels, probs, threshold=threshold, preds=preds)
    ci = bootstrap_ci(labels, probs, patients, threshold=threshold, preds=preds,
                      n_boot=n_boot, seed=seed) if n_boot else None
    return metrics, ci


def infer_split(lmdb_path, manifest, keys):
    """'val', 'test' or 'train' from the manifest's split column, else from the folder name."""
    splits = {manifest[k].get("split") for k in keys if manifest and k in manifest} - {None, ""}
    if len(splits) == 1:
        return splits.pop()
    name = os.path.basename(os.path.abspath(lmdb_path.rstrip("/")))
    for split in ("val", "test", "train"):
        if name.startswith(split):
            return split
    return None


def evaluate(model, snapshots, lmdb_path, out, mean_path=None, mean_value=None, scale=None,
             engine="torch", tta=None, manifest_path=None, val_results=None, threshold=None,
             criteria=None, n_boot=1000, seed=0, batch_size=32, output=None,
             split=None, gpu=None, crops_path=None, train_val=None, precision="fp32"):
    """Evaluate each snapshot file on the LMDB; write `out` (results.json) and predictions.

    val_results: a validation results.json (for a test evaluation): its chosen snapshot is
    marked, and with threshold='val' each snapshot is also scored at the threshold fitted on its
    own validation predictions. train_val: a train_val prototxt whose TEST Data layer gives the
    mean, scale and crop when they are not passed (mean_path, mean_value, scale).
    criteria: the validation metrics that choose the snapshot; a test evaluation takes the ones
    its validation results recorded (asking for others is an error: one choice per run).
    precision: fp32 (Caffe's numbers), tf32 or bf16 for our engine (deepmammo.engine).
    engine caffe runs in a child process (deepmammo.caffe.real_child): a CHECK failing in
    real Caffe ends as an error naming the deploy prototxt or the snapshot it was reading.
    """
    arguments = dict(locals())  # this call's arguments, for the child process
    check_engine(engine, gpu_device(gpu), precision)
    if engine == "caffe" and not real_child.inside():
        return real_child.run(evaluate, source=model, **arguments)
    from deepmammo.provenance import provenance
    if not os.path.isfile(model):
        raise FileNotFoundError("deploy prototxt not found: %s" % model)
    files = runinfo.expand_snapshots(snapshots)
    info = runinfo.run_info(runinfo.find_run_dir(files[0]))
    crop, train_val_mean = None, None
    if train_val:
        transform = predict.test_transform(train_val)
        train_val_mean = transform["mean_file"]
        if mean_path is None and mean_value is None:
            mean_path, mean_value = transform["mean_file"], transform["mean_value"]
        scale = transform["scale"] if scale is None else scale
        crop = transform["crop_size"]
    external_info = external.external_record(lmdb_path, info, train_val_mean)
    if external_info:
        mean_path = external.external_mean(external_info, mean_path, mean_value,
                                            train_val_mean)
    scale = 1.0 if scale is None else scale
    caffe = pycaffe(engine, gpu, precision)
    mean = None
    if mean_path:
        from deepmammo.caffe.formats.binaryproto import read_mean
        mean = read_mean(mean_path)
    elif mean_value is not None:
        mean = np.asarray(mean_value, dtype=np.float32)
    keys, images, labels = predict.read_records(lmdb_path)
    manifest_path = manifest_path or predict.default_manifest(lmdb_path)
    manifest = (predict.read_dataset_index(manifest_path, crops_path)
                if os.path.isfile(manifest_path) else None)
    if manifest is None:
        log.warning("no manifest at %s: the bootstrap resamples records, not patients",
                    manifest_path)
    split = split or infer_split(lmdb_path, manifest, keys)
    val = Results.load(val_results) if val_results else None
    if threshold == "val" and val is None:
        raise ValueError("--threshold val needs --val-results (a validation results.json)")
    if val is not None and val.get("split") not in (None, "val"):
        raise ValueError("%s: selection must come from validation results, this file is split %r"
                         % (val_results, val.get("split")))
    criteria = selection_criteria(criteria, val, val_results)

    out_dir = os.path.dirname(os.path.abspath(out))
    pred_dir_name = os.path.splitext(os.path.basename(out))[0] + "_predictions"
    val_run = ((val or {}).get("run") or {}).get("run_dir")
    if val_run and info.get("run_dir") and os.path.realpath(val_run) != info["run_dir"]:
        # Every run of an experiment names its snapshots alike: matching by name alone would
        # take another run's choice and thresholds.
        raise ValueError(f"{val_results}: validation results of run {val_run}, but these "
                         f"snapshots are from run {info['run_dir']}")
    entries = []
    for path in files:
        log.info("evaluating %s on %s (%d records)", os.path.basename(path), lmdb_path, len(keys))
        net = real_child.open_net(caffe, model, path, caffe.TEST)
        if crop and tuple(net.blobs["data"].data.shape[2:4]) != (crop, crop):
            raise ValueError("%s crops %d but the deploy net %s takes %s"
                             % (train_val, crop, model, net.blobs["data"].data.shape[2:4]))
        probs = predict.forward_probs(net, images, mean=mean, scale=scale, batch_size=batch_size,
                                      tta=tta, output=output)
        del net
        rows = predict.prediction_rows(keys, labels, probs, manifest)
        rel = os.path.join(pred_dir_name, os.path.splitext(os.path.basename(path))[0] + ".csv")
        predict.write_predictions(rows, os.path.join(out_dir, rel))
        metrics, ci = score_rows(rows, n_boot=n_boot, seed=seed)
        iteration = runinfo.snapshot_iteration(path)
        fraction, epoch = runinfo.training_progress(iteration, info)
        entry = {"snapshot": os.path.realpath(path), "iteration": iteration,
                 "fraction": fraction, "epoch": epoch, "predictions": rel,
                 "metrics": metrics, "ci": ci, "calibration": rows_reliability(rows)}
        if split == "val":
            # Fitted here so a later test evaluation applies it unchanged.
            entry["fitted_threshold"] = {
                "criterion": "youden",
                "value": choose_threshold([r["label"] for r in rows],
                                          [r["prob_malignant"] for r in rows])}
        entries.append(entry)

    data = {
        "format": FORMAT, "split": split, "model": os.path.realpath(model),
        "lmdb": os.path.abspath(lmdb_path),
        "mean": os.path.abspath(mean_path) if mean_path else mean_value,
        "manifest": os.path.abspath(manifest_path) if manifest else None,
        "engine": engine, "precision": precision, "tta": tta or "none", "scale": scale,
        "train_val": os.path.realpath(train_val) if train_val else None,
        "decision": "argmax",
        "external": external_info,
        "run": {k: v for k, v in info.items() if k not in ("config", "provenance")},
        "run_config": info.get("config"),
        "run_provenance": info.get("provenance"),
        "bootstrap": {"unit": "patient", "n_boot": n_boot, "seed": seed, "level": 0.95},
        "snapshots": entries,
    }
    apply_selection(data, val if val is not None else (Results(data) if split == "val" else None),
                    threshold, criteria, n_boot, seed, out_dir)
    inputs = [model, lmdb_path] + ([mean_path] if mean_path else []) + \
        ([train_val] if train_val else []) + files
    data["provenance"] = provenance(
        config={"engine": engine, "precision": precision, "tta": tta, "scale": scale,
                "threshold": threshold,
                "criteria": list(criteria), "val_results": val_results},
        seed=seed, inputs=inputs)
    results = Results(data, out)
    write_text(out, results.to_json())
    log.info("wrote %s", out)
    return results


def selection_criteria(criteria, val, val_path=None):
    """The metrics that choose the snapshot: those the validation results recorded when there
    are some (a different request is refused), else `criteria`, else the default."""
    recorded = val.selected.get("criteria") if val is not None else None
    if recorded:
        if criteria and tuple(criteria) != tuple(recorded):
            raise ValueError(
                f"{val_path}: validation chose its snapshot by {', '.join(recorded)}; "
                f"--select-by {' '.join(criteria)} would choose another: evaluate validation "
                "again with that --select-by, or leave --select-by out here")
        return tuple(recorded)
    return tuple(criteria or DEFAULT_CRITERIA)


def apply_selection(data, val, threshold, criteria, n_boot, seed, out_dir):
    """Mark, in the results `data` being written, the snapshot chosen on validation (`val`:
    Results) and, on request, score each snapshot at its validation threshold."""
    if val is None:
        data["selected"] = None
        return
    chosen = select_snapshot(val.snapshots, criteria)
    data["selected"] = {"snapshot": chosen.name, "iteration": chosen.iteration,
                        "criteria": list(criteria),
                        "source": val.path or "this file"}
    if threshold != "val":
        return
    fitted = {e.name: e.fitted_threshold for e in val.snapshots}
    for entry in data["snapshots"]:
        name = snapshot_id(entry)
        fit = fitted.get(name)
        if not fit:
            raise ValueError("snapshot %s has no threshold in the validation results" % name)
        rows = predict.read_predictions(os.path.join(out_dir, entry["predictions"]))
        metrics, ci = score_rows(rows, threshold=fit["value"], n_boot=n_boot, seed=seed)
        entry["threshold_metrics"] = {"threshold": fit["value"], "criterion": fit["criterion"],
                                      "metrics": metrics, "ci": ci}
