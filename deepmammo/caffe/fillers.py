"""Caffe's weight fillers (FillerParameter). Distributions match Caffe's, not its bits.

An unset filler is `constant` with value 0, unlike PyTorch's default initialisation. Fan-in is
count / shape[0] and fan-out count / shape[1] (count for 1-D blobs), so a grouped convolution's
fan-in is C/g * kh * kw, as in Caffe.
"""
import math

import torch

from deepmammo.caffe import rng
from deepmammo.caffe.proto import caffe_pb2 as pb


class FillerError(ValueError):
    pass


def _fan(shape, variance_norm):
    count = math.prod(shape)
    fan_in = count // shape[0]
    fan_out = count // shape[1] if len(shape) > 1 else count
    if variance_norm == pb.FillerParameter.AVERAGE:
        return (fan_in + fan_out) / 2.0
    if variance_norm == pb.FillerParameter.FAN_OUT:
        return float(fan_out)
    return float(fan_in)


def fill(param, shape, where="filler"):
    """A float32 CPU tensor of `shape` filled as FillerParameter `param` says."""
    shape = tuple(int(d) for d in shape)
    kind = param.type
    if param.sparse != -1 and kind != "gaussian":
        raise FillerError(f"{where}: `sparse` is only supported by the gaussian filler")
    if math.prod(shape) == 0:
        return torch.zeros(shape)
    gen = rng.torch_generator("cpu")
    if kind == "constant":
        return torch.full(shape, float(param.value))
    if kind == "uniform":
        return torch.empty(shape).uniform_(param.min, param.max, generator=gen)
    if kind == "gaussian":
        out = torch.empty(shape).normal_(param.mean, param.std, generator=gen)
        if param.sparse >= 0:
            if len(shape) < 1:
                raise FillerError(f"{where}: sparse gaussian needs a blob with axes")
            p = param.sparse / float(shape[0])
            out *= torch.bernoulli(torch.full(shape, min(p, 1.0)), generator=gen)
        return out
    if kind == "xavier":
        scale = math.sqrt(3.0 / _fan(shape, param.variance_norm))
        return torch.empty(shape).uniform_(-scale, scale, generator=gen)
    if kind == "msra":
        std = math.sqrt(2.0 / _fan(shape, param.variance_norm))
        return torch.empty(shape).normal_(0.0, std, generator=gen)
    if kind == "positive_unitball":
        out = torch.empty(shape).uniform_(0, 1, generator=gen)
        flat = out.view(shape[0], -1)
        flat /= flat.sum(dim=1, keepdim=True)
        return out
    if kind == "bilinear":
        if len(shape) != 4 or shape[2] != shape[3]:
            raise FillerError(f"{where}: bilinear filler needs a 4-D square kernel, got {shape}")
        k = shape[3]
        f = math.ceil(k / 2.0)
        c = (k - 1) / (2.0 * f)
        x = torch.arange(k, dtype=torch.float64)
        w1 = 1 - torch.abs(x / f - c)
        return (w1[:, None] * w1[None, :]).float().expand(shape).contiguous()
    raise FillerError(f"{where}: unknown filler type {kind!r}")
