"""`deepmammo export`: a snapshot and its deploy net out of the project, as ONNX and TorchScript.

    deepmammo export runs/levynet/latest                 # -> runs/levynet/latest/export/...
    deepmammo export --model deploy.prototxt --weights snap.caffemodel --out model

The net is built by the engine (CPU, fp32) and wrapped as a plain torch.nn.Module
(module.to_module); ONNX (torch's TorchScript-based exporter, a dynamic batch axis) and
TorchScript (a trace) are made from that module. Before a file is written, it is run (ONNX
through onnxruntime, TorchScript as loaded back) on the run's test records, preprocessed as
evaluation preprocesses them, beside the engine: the largest difference in p(malignant) is
printed, and above TOLERANCE the file is refused. Without a run there are no records: random
inputs at the scale of preprocessed records stand in.

Each file carries its preprocessing (the record recipe, mean image, crop, scale, channel
order, input size) as metadata (ONNX metadata_props; TorchScript's extra file
deepmammo.json), and a model card is written beside it (report/model_card.py).
"""
import base64
import io
import json
import logging
import os

import numpy as np

log = logging.getLogger(__name__)

# Largest |p_exported - p_engine| on a probability: float32 kernels that add in another order
# (oneDNN's convolutions against ONNX Runtime's MLAS) differ by some 1e-7 per layer, a few
# 1e-6 after GoogLeNet's 60 layers; 1e-4 leaves a wide margin and still catches a wrong layer.
TOLERANCE = 1e-4
FORMATS = ("onnx", "torchscript")
OPSET = 17
CHANNEL_ORDER = "BGR (Caffe's order); the three channels carry the same grey"


class ExportError(ValueError):
    """An export refused (the file would not compute what the engine computes)."""


def _net_output(net, output=None):
    from deepmammo.evaluate.predict import output_blob
    return output_blob(net, output)


def _engine_forward(net, batch, output):
    if tuple(net.blobs["data"].data.shape) != batch.shape:
        net.blobs["data"].reshape(*batch.shape)
        net.reshape()
    net.blobs["data"].data[...] = batch
    net.forward()
    return np.array(net.blobs[output].data, dtype=np.float32, copy=True)


def check_inputs(run, input_shape, max_records=None, seed=0):
    """(batch (N, C, H, W) float32, description): the run's test records preprocessed as
    evaluation does; without a run, random inputs."""
    c, h, w = input_shape
    if run is None:
        rng = np.random.RandomState(seed)
        return (rng.normal(0, 1, (8, c, h, w)).astype(np.float32),
                "8 random inputs (no run: no test records)")
    from deepmammo.evaluate.predict import preprocess, read_records
    lmdb = os.path.join(run.dataset, "test_lmdb")
    _, records, _ = read_records(lmdb)
    if max_records:
        records = records[:max_records]
    mean = run.mean()
    batch = np.stack([preprocess(r, (h, w), mean, run.scale) for r in records])
    return batch, f"{len(batch)} test records of {lmdb}"


def preprocessing(run, net, output, checked):
    """The metadata a user needs to feed the exported net."""
    shape = list(net.blobs["data"].data.shape)
    meta = {
        "format": "deepmammo-export/1",
        "input": {"name": "data", "shape": ["batch"] + shape[1:], "layout": "NCHW",
                  "dtype": "float32", "channel_order": CHANNEL_ORDER},
        "output": {"name": output, "classes": ["benign", "malignant"],
                   "meaning": "softmax probabilities; p(malignant) is column 1"},
        "net": net.name,
        "check": checked,
    }
    if run is None:
        meta["transform"] = "unknown (exported without a run): feed what the net was trained on"
        return meta, None
    mean = run.mean()
    meta["transform"] = ("x = (record - mean) cut to the input size at the centre, times "
                         "scale; record: the mass crop grey-mapped and resized as `record` "
                         "says, 8-bit, replicated into 3 channels")
    meta["record"] = run.recipe.to_dict()
    meta["crop"] = {"size": shape[2:], "where": "centre (Caffe's TEST crop)"}
    meta["scale"] = run.scale
    meta["threshold"] = run.threshold
    meta["snapshot"] = os.path.basename(run.snapshot)
    meta["run"] = run.run_dir
    if mean is None:
        meta["mean"] = None
    elif mean.ndim == 3:
        meta["mean"] = {"kind": "image", "shape": list(mean.shape),
                        "file": run.mean_path,
                        "per_channel": [float(v) for v in mean.reshape(mean.shape[0], -1)
                                        .mean(axis=1)],
                        "values": "deepmammo.mean: base64 of float32 little-endian, C order"}
    else:
        meta["mean"] = {"kind": "per_channel", "values": [float(v) for v in mean.ravel()]}
    return meta, (None if mean is None or mean.ndim != 3 else
                  base64.b64encode(np.ascontiguousarray(mean, "<f4").tobytes()).decode())


def onnx_bytes(module, example, output):
    """The module as an ONNX model (bytes), batch axis dynamic."""
    import warnings

    import torch
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")   # the exporter's deprecation and tracer notes
        torch.onnx.export(module, (torch.from_numpy(example),), buf, dynamo=False,
                          input_names=["data"], output_names=[output], opset_version=OPSET,
                          dynamic_axes={"data": {0: "batch"}, output: {0: "batch"}})
    return buf.getvalue()


def run_onnx(data, batch):
    import onnxruntime as ort
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: batch})[0]


def with_metadata(data, meta, mean_b64, card_text):
    import onnx
    model = onnx.load_from_string(data)
    props = {"deepmammo.preprocessing": json.dumps(meta), "deepmammo.model_card": card_text}
    if mean_b64:
        props["deepmammo.mean"] = mean_b64
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name = "deepmammo"
    model.doc_string = "Caffe net %s exported by deepmammo; see metadata deepmammo.*" % \
        meta.get("net")
    return model.SerializeToString()


def torchscript_bytes(module, example, extra):
    import torch
    with torch.no_grad():
        traced = torch.jit.trace(module, (torch.from_numpy(example),), check_trace=False)
    buf = io.BytesIO()
    torch.jit.save(traced, buf, _extra_files=extra)
    return buf.getvalue()


def run_torchscript(data, batch):
    import torch
    loaded = torch.jit.load(io.BytesIO(data))
    with torch.no_grad():
        return loaded(torch.from_numpy(batch)).numpy()


def export(run=None, model=None, weights=None, out=None, formats=FORMATS,
           tolerance=TOLERANCE, max_records=None, output=None):
    """Export; returns [{format, path, max_abs_diff, checked}]. `run`: a TrainedRun (model
    and weights then come from it), else model + weights."""
    import deepmammo.caffe as caffe
    from deepmammo.atomic import write_bytes, write_text
    from deepmammo.export.module import to_module
    from deepmammo.report.model_card import card_facts, render
    for f in formats:
        if f not in FORMATS:
            raise ValueError(f"export format {f!r}: expected one of {', '.join(FORMATS)}")
    if run is not None:
        model, weights = run.deploy, run.snapshot
    if not model or not weights:
        raise ValueError("export needs a run folder, or --model and --weights")
    caffe.set_mode_cpu()
    from deepmammo.caffe import mode
    mode.set_precision("fp32")
    net = caffe.Net(model, weights, caffe.TEST)
    output = _net_output(net, output)
    module = to_module(net, [output])
    input_shape = tuple(net.blobs["data"].data.shape[1:])
    batch, described = check_inputs(run, input_shape, max_records)
    reference = _engine_forward(net, batch, output)
    example = batch[:1]
    if out is None:
        stem = os.path.splitext(os.path.basename(weights))[0]
        folder = os.path.join(run.run_dir, "export") if run else os.path.dirname(
            os.path.abspath(weights))
        out = os.path.join(folder, stem)
    out = os.path.splitext(out)[0] if out.endswith((".onnx", ".pt")) else out
    card = None
    if run is not None:
        facts = card_facts(run.run_dir, run.snapshot)
        card = render(facts)
    done = []
    for fmt in formats:
        if fmt == "onnx":
            data = onnx_bytes(module, example, output)
            got = run_onnx(data, batch)
        else:
            data = None
            got = None
        checked = {"inputs": described, "tolerance": tolerance}
        if fmt == "torchscript":
            meta, mean_b64 = preprocessing(run, net, output, checked)
            extra = {"deepmammo.json": json.dumps(meta)}
            if mean_b64:
                extra["deepmammo_mean.b64"] = mean_b64
            if card:
                extra["model-card.md"] = card
            data = torchscript_bytes(module, example, extra)
            got = run_torchscript(data, batch)
        diff = float(np.abs(np.asarray(got, np.float64) - reference).max())
        checked["max_abs_diff"] = diff
        log.info("%s: largest difference from the engine on %s: %.3g (tolerance %.3g)",
                 fmt, described, diff, tolerance)
        if not np.isfinite(diff) or diff > tolerance:
            raise ExportError(f"{weights}: the {fmt} export differs from the engine by {diff:.3g} "
                              f"on {described} (tolerance {tolerance:g}); nothing written")
        if fmt == "onnx":
            meta, mean_b64 = preprocessing(run, net, output, checked)
            data = with_metadata(data, meta, mean_b64, card or "")
            path = out + ".onnx"
        else:
            path = out + ".pt"
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        write_bytes(path, data)
        done.append({"format": fmt, "path": path, "max_abs_diff": diff, "checked": described})
    if card is not None:
        write_text(out + ".model-card.md", card)
        write_text(out + ".model-card.json", json.dumps(facts, indent=1) + "\n")
    return done
