"""Run one prototxt through our Net and through real pycaffe with the same weights and inputs,
and measure how far every blob's data and diff and every parameter diff differ.

Used by the cross-check tests (tests/test_engine_*.py) and by hand when a model looks off:

    from deepmammo.caffe.real import import_caffe
    report = crosscheck(import_caffe(), prototxt_text, phase=1)
    assert report.worst() < 1e-5, report
"""
import os
import tempfile

import numpy as np

from deepmammo.caffe.net import Net


def relative_error(ours, theirs):
    """max |a - b| / max(max |b|, 1e-6): float rounding shows as ~1e-7..1e-6. NaNs and infs
    must sit in the same places."""
    a = np.asarray(ours, dtype=np.float64)
    b = np.asarray(theirs, dtype=np.float64)
    if a.shape != b.shape:
        return float("inf")
    special = ~np.isfinite(b)
    if not np.array_equal(special, ~np.isfinite(a)):
        return float("inf")
    if special.any():
        if not np.array_equal(a[special], b[special], equal_nan=True):
            return float("inf")
        a, b = a[~special], b[~special]
    if a.size == 0:
        return 0.0
    scale = max(float(np.abs(b).max()), 1e-6)
    return float(np.abs(a - b).max()) / scale


class Report:
    def __init__(self):
        self.errors = {}      # "data:<blob>" / "diff:<blob>" / "param:<layer>/<k>" -> error
        self.ours = None
        self.real = None

    def add(self, key, ours, theirs):
        self.errors[key] = relative_error(ours, theirs)

    def worst(self):
        return max(self.errors.values()) if self.errors else 0.0

    def __repr__(self):
        rows = sorted(self.errors.items(), key=lambda kv: -kv[1])[:8]
        return "Report(worst=%.3g: %s)" % (self.worst(), ", ".join(
            f"{k}={v:.2g}" for k, v in rows))


def _random_params(net, rs, scale):
    for name, blobs in net.params.items():
        layer_type = net.layer_dict[name].type if hasattr(net, "layer_dict") else None
        for k, blob in enumerate(blobs):
            shape = blob.data.shape
            if layer_type == "BatchNorm":
                if k == 2:
                    values = np.array([rs.uniform(0.5, 2.0)], dtype=np.float32)
                elif k == 1:
                    values = rs.uniform(0.5, 2.0, shape)
                else:
                    values = rs.randn(*shape)
            else:
                values = rs.randn(*shape) * scale
            blob.data[...] = np.asarray(values, dtype=np.float32).reshape(shape)


def crosscheck(real, text, phase, inputs=None, seed=0, param_scale=0.3, backward=True,
               output_diffs=True, net_kwargs=None):
    """Build `text` in both engines (phase TRAIN 0 / TEST 1), give both the same random
    parameters (real's, copied) and inputs (`inputs` name -> array, others random normal),
    run forward (and backward: random diffs on outputs that are not losses) and compare."""
    rs = np.random.RandomState(seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "net.prototxt")
        with open(path, "w") as f:
            f.write(text)
        rnet = real.Net(path, phase, **(net_kwargs or {}))
        onet = Net(path, phase, **(net_kwargs or {}))
    report = Report()
    report.ours, report.real = onet, rnet
    if list(rnet.blobs) != list(onet.blobs):
        raise AssertionError(f"blob lists differ: real {list(rnet.blobs)} ours {list(onet.blobs)}")
    if list(rnet._layer_names) != list(onet._layer_names):
        raise AssertionError(f"layer lists differ: real {list(rnet._layer_names)} "
                             f"ours {onet._layer_names}")
    if list(rnet.outputs) != onet.outputs or list(rnet.inputs) != onet.inputs:
        raise AssertionError(f"inputs/outputs differ: real {rnet.inputs}/{rnet.outputs} "
                             f"ours {onet.inputs}/{onet.outputs}")
    for name in rnet.blobs:
        if tuple(rnet.blobs[name].data.shape) != tuple(onet.blobs[name].shape):
            raise AssertionError(f"blob {name}: shape real {rnet.blobs[name].data.shape} "
                                 f"ours {onet.blobs[name].shape}")
    _random_params(rnet, rs, param_scale)
    for name, blobs in rnet.params.items():
        for k, blob in enumerate(blobs):
            onet.params[name][k].data[...] = blob.data
    inputs = dict(inputs or {})
    for name in rnet.inputs:
        if name not in inputs:
            inputs[name] = np.asarray(rs.randn(*rnet.blobs[name].data.shape), dtype=np.float32)
        rnet.blobs[name].data[...] = inputs[name]
        onet.blobs[name].data[...] = inputs[name]
    rnet.forward()
    onet.forward()
    for name in rnet.blobs:
        report.add("data:" + name, onet.blobs[name].data, rnet.blobs[name].data)
    for name, blobs in rnet.params.items():   # BatchNorm updates its statistics in forward
        for k, blob in enumerate(blobs):
            report.add(f"param_data:{name}/{k}", onet.params[name][k].data, blob.data)
    if not backward:
        return report
    if output_diffs:
        weights = dict(zip(rnet.blobs.keys(), rnet._blob_loss_weights))
        for name in rnet.outputs:
            if not weights.get(name):
                diff = np.asarray(rs.randn(*rnet.blobs[name].data.shape), dtype=np.float32)
                rnet.blobs[name].diff[...] = diff
                onet.blobs[name].diff[...] = diff
    rnet.backward()
    onet.backward()
    for name in rnet.blobs:
        report.add("diff:" + name, onet.blobs[name].diff, rnet.blobs[name].diff)
    for name, blobs in rnet.params.items():
        if onet.layer_dict[name].type == "BatchNorm":
            continue
        for k, blob in enumerate(blobs):
            report.add(f"param:{name}/{k}", onet.params[name][k].diff, blob.diff)
    return report
