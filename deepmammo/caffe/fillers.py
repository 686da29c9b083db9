"""Caffe's weight fillers (FillerParameter), drawing Caffe's numbers from the calling thread's
Caffe stream (deepmammo.caffe.rng), so a seeded net starts from the weights real Caffe gives it.

An unset filler is `constant` with value 0, unlike PyTorch's default initialisation. Fan-in is
count / shape[0] and fan-out count / shape[1] (count for 1-D blobs), so a grouped convolution's
fan-in is C/g * kh * kw, as in Caffe. Scales are computed in float, as Caffe's float fillers do.
"""
import math

import numpy as np
import torch

from deepmammo.caffe import rng
from deepmammo.caffe.proto import caffe_pb2 as pb


class FillerError(ValueError):
    pass


def _fan(shape, variance_norm):
    """Caffe's n for xavier and msra, a float: fan_in, fan_out or their average."""
    count = math.prod(shape)
    fan_in = count // shape[0]
    fan_out = count // shape[1] if len(shape) > 1 else count
    if variance_norm == pb.FillerParameter.AVERAGE:
        return np.float32(fan_in + fan_out) / np.float32(2)
    if variance_norm == pb.FillerParameter.FAN_OUT:
        return np.float32(fan_out)
    return np.float32(fan_in)


def _values(param, shape, where):
    """The filler's values as a flat float32 array (draws from the thread's stream)."""
    kind, count = param.type, math.prod(shape)
    stream = rng.stream()
    f32 = np.float32
    if kind == "constant":
        return np.full(count, param.value, dtype=f32)
    if kind == "uniform":
        if param.min > param.max:
            raise FillerError(f"{where}: uniform filler min {param.min} exceeds max {param.max}")
        return stream.uniform(count, param.min, param.max)
    if kind == "gaussian":
        if not param.std > 0:
            raise FillerError(f"{where}: gaussian filler needs std > 0, got {param.std}")
        out = stream.gaussian(count, param.mean, param.std)
        if param.sparse >= 0:
            if len(shape) < 1:
                raise FillerError(f"{where}: sparse gaussian needs a blob with axes")
            p = f32(param.sparse) / f32(shape[0])
            if p > 1:
                raise FillerError(f"{where}: sparse {param.sparse} exceeds the blob's "
                                  f"{shape[0]} outputs")
            # Caffe's mask comes after all of the blob's values, one draw per element.
            out *= stream.bernoulli(count, p, dtype=f32).astype(f32)
        return out
    if kind == "xavier":
        scale = np.sqrt(f32(3) / _fan(shape, param.variance_norm), dtype=f32)
        return stream.uniform(count, -scale, scale)
    if kind == "msra":
        std = np.sqrt(f32(2) / _fan(shape, param.variance_norm), dtype=f32)
        return stream.gaussian(count, 0.0, std)
    if kind == "positive_unitball":
        out = stream.uniform(count, 0.0, 1.0).reshape(shape[0], -1)
        total = np.zeros(shape[0], dtype=f32)
        for j in range(out.shape[1]):       # each row's float sum, added in order as Caffe does
            total += out[:, j]
        return (out / total[:, None]).ravel()
    if kind == "bilinear":
        if len(shape) != 4 or shape[2] != shape[3]:
            raise FillerError(f"{where}: bilinear filler needs a 4-D square kernel, got {shape}")
        k = shape[3]
        f = math.ceil(k / 2.0)
        c = f32((k - 1) / (2.0 * f))
        w1 = f32(1) - np.abs(np.arange(k, dtype=f32) / f32(f) - c)     # in float, as Caffe
        return np.broadcast_to(w1[None, :] * w1[:, None], shape).ravel()
    raise FillerError(f"{where}: unknown filler type {kind!r}")


def fill(param, shape, where="filler"):
    """A float32 CPU tensor of `shape` filled as FillerParameter `param` says."""
    shape = tuple(int(d) for d in shape)
    if param.sparse != -1 and param.type != "gaussian":
        raise FillerError(f"{where}: `sparse` is only supported by the gaussian filler")
    if param.sparse < -1:
        raise FillerError(f"{where}: sparse must be >= -1, got {param.sparse}")
    if math.prod(shape) == 0:
        return torch.zeros(shape)
    return torch.from_numpy(np.ascontiguousarray(_values(param, shape, where)).reshape(shape))
