"""SPP (spatial pyramid pooling), built as Caffe builds it: for pyramid level l (bins = 2^l)
a Pooling layer with kernel ceil(H / bins), stride = kernel, pad (kernel * bins - H + 1) // 2
(the same for W), Caffe's CEIL rounding; each level's output flattened and the levels
concatenated along axis 1. With pyramid_height 1 the one level's 4-D output is the top.

The inner Pooling layers are the engine's own, so their numbers (and their refusals, e.g.
pad >= kernel for an image too small for a level) are Pooling's. They run in the TRAIN phase
whatever the net's phase, as Caffe's inner layers do (their LayerParameter has the default
phase): STOCHASTIC levels draw at TEST too.
"""
import math

import torch

from deepmammo.caffe.layers.base import Layer, register
from deepmammo.caffe.layers.pooling import Pooling
from deepmammo.caffe.proto import caffe_pb2 as pb

_METHODS = {pb.SPPParameter.MAX: pb.PoolingParameter.MAX,
            pb.SPPParameter.AVE: pb.PoolingParameter.AVE,
            pb.SPPParameter.STOCHASTIC: pb.PoolingParameter.STOCHASTIC}


def level_geometry(level, height, width):
    """(kernel_h, kernel_w, pad_h, pad_w) of pyramid level `level` for an H x W input."""
    bins = 2 ** level
    kernel_h = math.ceil(height / bins)
    kernel_w = math.ceil(width / bins)
    pad_h = (kernel_h * bins - height + 1) // 2
    pad_w = (kernel_w * bins - width + 1) // 2
    return kernel_h, kernel_w, pad_h, pad_w


@register
class SPP(Layer):
    TYPE = "SPP"
    FIELDS = {"spp_param": {"pyramid_height", "pool"}}
    EXACT_BOTTOMS = 1
    EXACT_TOPS = 1

    def __init__(self, *args):
        super().__init__(*args)
        self.refuse_in_place("Caffe would resize the bottom before reading it")
        p = self.layer_param.spp_param
        if p.pyramid_height < 1:
            raise self.error("pyramid_height must be at least 1")
        self.height = p.pyramid_height
        self.REPLAYABLE = p.pool != pb.SPPParameter.STOCHASTIC   # draws in forward
        self._levels = {}        # (H, W) -> the inner Pooling layers

    def _pools(self, shape):
        if len(shape) != 4:
            raise self.error(f"input must have 4 axes (num, channels, height, width), got "
                             f"{shape}")
        if shape[2] <= 0 or shape[3] <= 0:
            raise self.error(f"input dimensions cannot be zero: {shape}")
        key = (shape[2], shape[3])
        if key not in self._levels:
            pools = []
            for level in range(self.height):
                kh, kw, ph, pw = level_geometry(level, shape[2], shape[3])
                name = f"{self.name}/level{level}"
                param = pb.LayerParameter(name=name, type="Pooling", top=[name],
                                          bottom=list(self.layer_param.bottom))
                pp = param.pooling_param
                pp.pool = _METHODS[self.layer_param.spp_param.pool]
                pp.kernel_h, pp.kernel_w, pp.pad_h, pp.pad_w = kh, kw, ph, pw
                pp.stride_h, pp.stride_w = kh, kw
                where = f"{self.where} pyramid level {level}"
                pools.append(Pooling(param, pb.TRAIN, self.device, where))
            self._levels[key] = pools
        return self._levels[key]

    def reshape(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        tops = [pool.reshape([shape])[0] for pool in self._pools(shape)]
        if self.height == 1:
            return [tops[0]]
        return [(shape[0], sum(t[1] * t[2] * t[3] for t in tops))]

    def forward(self, bottoms, params):
        x = bottoms[0]
        outs = [pool.forward([x], [])[0] for pool in self._pools(tuple(x.shape))]
        if self.height == 1:
            return outs
        return [torch.cat([o.reshape(o.shape[0], -1) for o in outs], dim=1)]
