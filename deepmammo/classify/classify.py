"""Classifying prepared masses with a trained run, and writing what came out.

The forward pass is evaluation's (deepmammo.evaluate.predict.forward_probs: Caffe's TEST
transform with the run's mean, crop and scale, then the deploy net), so a mass gets the
probability `eval` gives its record. `oversample` averages the ten crops of pycaffe's
Classifier (four corners, centre, and their mirrors) cut from the mean-subtracted record.
"""
import contextlib
import csv
import io
import json
import logging
import os
import queue
import threading
import time

import numpy as np

from deepmammo.classify import inputs as inp
from deepmammo.engine import pycaffe
from deepmammo.evaluate import predict

log = logging.getLogger(__name__)

COLUMNS = ("mass", "p_malignant", "decision", "threshold", "label", "case_id", "patient_id",
           "file", "bbox", "snapshot", "error")


def oversampled(records, crop, mean=None, scale=1.0):
    """(10 N, C, crop, crop) float32: each record minus the mean (at the record's size, as
    Caffe's transformer subtracts it), cut as pycaffe's Classifier(oversample=True) cuts:
    corners, centre, then their mirrors; times scale."""
    from deepmammo.caffe.io import oversample
    x = np.asarray(records, dtype=np.float32)
    if mean is not None:
        m = np.asarray(mean, dtype=np.float32)
        x = x - (m if m.ndim == 3 else m.reshape(1, -1, 1, 1))
    crops = oversample(list(x.transpose(0, 2, 3, 1)), (crop, crop))
    out = crops.transpose(0, 3, 1, 2)
    if scale != 1:
        out = out * np.float32(scale)
    return np.ascontiguousarray(out, dtype=np.float32)


class Classifier:
    """A run's net, built once; `probabilities(records)` -> p(malignant) per record."""

    def __init__(self, run, engine="torch", gpu=None, precision="fp32", batch_size=32,
                 oversample=False):
        self.run = run
        self.engine = engine
        self.caffe = pycaffe(engine, gpu, precision)
        self.net = self.caffe.Net(run.deploy, run.snapshot, self.caffe.TEST)
        self.input_size = tuple(self.net.blobs["data"].data.shape[2:4])
        crop = run.crop_size
        if crop and self.input_size != (crop, crop):
            raise ValueError(f"{run.train_val} crops {crop} but the deploy net {run.deploy} "
                             f"takes {self.input_size}")
        self.mean = run.mean()
        self.batch_size = batch_size
        self.oversample = oversample

    def probabilities(self, records):
        records = np.asarray(records)
        if self.engine == "torch":
            import torch
            with torch.no_grad():   # the same numbers; no autograd graph for force_backward
                return self._probabilities(records)
        return self._probabilities(records)

    def _probabilities(self, records):
        if not self.oversample:
            probs = predict.forward_probs(self.net, records, mean=self.mean,
                                          scale=self.run.scale, batch_size=self.batch_size)
        else:
            batch = oversampled(records, self.input_size[0], self.mean, self.run.scale)
            probs = predict.forward_probs(self.net, batch, batch_size=self.batch_size * 10)
            probs = probs.reshape(len(records), 10, -1).mean(axis=1)
        return probs[:, 1] if probs.shape[1] > 1 else probs[:, -1]


def classify(run, tasks, engine="torch", gpu=None, precision="fp32", batch_size=32,
             oversample=False, workers=None, save_inputs=None, saliency=None):
    """Rows (one per mass, in input order) and the seconds it took to classify `tasks`.

    The inputs are prepared in the background (worker processes for mammograms, whose decoding
    is the cost; one thread for crops) while the net runs on the batches already made."""
    from deepmammo.prep.parallel import default_workers
    started = time.perf_counter()
    if workers is None:
        crops_only = all(isinstance(t, inp.CropTask) for t in tasks)
        workers = 1 if crops_only else default_workers()
    workers = max(1, min(int(workers), len(tasks)))
    classifier = Classifier(run, engine, gpu, precision, batch_size, oversample)
    masses, pending = [], []
    # up to two batches prepared ahead: the next is made while the net runs on this one
    for prepared in _in_background([(task, run.recipe) for task in tasks], workers,
                                   depth=2 * batch_size):
        masses.extend(prepared)
        pending.extend(m for m in prepared if m.record is not None)
        if len(pending) >= batch_size:
            _score(classifier, pending)
            pending = []
    if pending:
        _score(classifier, pending)
    masses.sort(key=lambda m: m.index)
    seconds = time.perf_counter() - started
    if save_inputs:
        _save_inputs(masses, save_inputs)
    if saliency:
        _saliency(run, classifier, masses, saliency)
    return [_row(run, m) for m in masses], seconds


_DONE = object()


def _in_background(jobs, workers, depth=4):
    """inp.prepare of every job, made by a thread (through run_tasks' worker processes when
    workers > 1) so that preparing overlaps the forward pass; yields as they come."""
    from deepmammo.prep.parallel import run_tasks
    out = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce():
        try:
            with contextlib.closing(run_tasks(_prepare_job, jobs, workers)) as results:
                for item in results:
                    while not stop.is_set():
                        try:
                            out.put(item, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
        except BaseException as exc:  # noqa: BLE001  (handed to the consumer, raised there)
            out.put(exc)
        finally:
            out.put(_DONE)

    thread = threading.Thread(target=produce, name="classify-prepare", daemon=True)
    thread.start()
    try:
        while True:
            item = out.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                out.get(timeout=0.1)
            except queue.Empty:
                pass


def _prepare_job(job):
    task, recipe = job
    return inp.prepare(task, recipe)


def _score(classifier, masses):
    probs = classifier.probabilities(np.stack([m.record for m in masses]))
    for m, p in zip(masses, probs):
        m.p = float(p)


def _row(run, m):
    row = {"mass": m.name, "file": m.file, "label": "" if m.label is None else int(m.label),
           "case_id": m.info.get("case_id", ""), "patient_id": m.info.get("patient_id", ""),
           "bbox": m.info.get("bbox", ""), "snapshot": os.path.basename(run.snapshot),
           "threshold": run.threshold["value"] if run.threshold else "argmax",
           "p_malignant": "", "decision": "", "error": m.error or ""}
    if m.error is None:
        row["p_malignant"] = m.p
        row["decision"] = "malignant" if run.decision(m.p) else "benign"
    return row


def _safe(name):
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _save_inputs(masses, folder):
    """Each record as an 8-bit PNG (one channel: the three are the same grey)."""
    from deepmammo.sources.images import write_png
    os.makedirs(folder, exist_ok=True)
    for m in masses:
        if m.record is not None:
            write_png(os.path.join(folder, _safe(m.name) + ".png"), m.record[0])


def _saliency(run, classifier, masses, folder):
    """The report's Figure 5 panel for each mass: the input the net saw, and |d score/d input|
    for the class decided."""
    from deepmammo.report import figures
    from deepmammo.report.saliency import compute_saliency
    good = [m for m in masses if m.record is not None]
    if not good:
        return
    classes = [run.decision(m.p) for m in good]
    maps, batch = compute_saliency(classifier.caffe, run.deploy, run.snapshot,
                                   np.stack([m.record for m in good]), classes,
                                   classifier.mean, run.scale)
    os.makedirs(folder, exist_ok=True)
    h, w = batch.shape[2:4]
    for m, smap, cls in zip(good, maps, classes):
        top, left = (m.record.shape[1] - h) // 2, (m.record.shape[2] - w) // 2
        shown = m.record[:, top:top + h, left:left + w]
        caption = f"p(malignant) {m.p:.3f}: {'malignant' if cls else 'benign'}"
        figures.figure5_saliency([(m.name, [shown], [smap], [caption])],
                                 os.path.join(folder, _safe(m.name)))


# ------------------------------------------------------------------------- output
def _cell(value):
    return f"{value:.6f}" if isinstance(value, float) else str(value)


def table(rows, run):
    """The text table a user reads: one mass a line, then the model and any failures."""
    shown = [r for r in rows if not r["error"]]
    width = max([4] + [len(r["mass"]) for r in shown])
    has_label = any(r["label"] != "" for r in shown)
    head = f"{'mass':<{width}}  p(malignant)  decision" + ("   label" if has_label else "")
    lines = [head]
    for r in shown:
        line = f"{r['mass']:<{width}}  {r['p_malignant']:12.4f}  {r['decision']:<9}"
        if has_label:
            line += "  " + {0: "benign", 1: "malignant"}.get(r["label"], "")
        lines.append(line.rstrip())
    lines.append(run.describe())
    return "\n".join(lines)


def write_results(rows, path, run, seconds):
    """--out: CSV (one row per mass) or JSON (the model's facts and the rows)."""
    from deepmammo.atomic import write_text
    if path.lower().endswith(".json"):
        doc = {"format": "deepmammo-classify/1", "model": run.summary(),
               "seconds": round(seconds, 3),
               "masses": [{k: r[k] for k in COLUMNS if r[k] != "" or k == "error"}
                          for r in rows]}
        write_text(path, json.dumps(doc, indent=1) + "\n")
        return
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: _cell(r[k]) for k in COLUMNS})
    write_text(path, buf.getvalue())
