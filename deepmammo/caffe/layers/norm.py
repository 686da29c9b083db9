"""BatchNorm (Caffe's three statistic blobs, no affine part) and Scale (gamma, optional beta).

BatchNorm blob0 = running sum of means, blob1 = running sum of unbiased variances
(x m/(m-1), m = N*H*W), blob2 = the scale factor s (s = lambda*s + 1; blobs 0 and 1 are
lambda*old + new). Global statistics are blob/s (0 when s = 0). The batch variance used to
normalise is the biased one; eps sits inside the sqrt. use_global_stats defaults to
phase == TEST. Its blobs are statistics: lr_mult 0, and backward leaves their diffs alone.
"""
import torch

from deepmammo.caffe.layers.base import Layer, count, default_filler, register
from deepmammo.caffe.layers.bias import broadcast_axis, broadcast_view, param_shape_from
from deepmammo.caffe.netstate import NetError
from deepmammo.caffe.proto import caffe_pb2 as pb


@register
class BatchNorm(Layer):
    REPLAYABLE = False      # TRAIN forwards update the statistics
    TYPE = "BatchNorm"
    FIELDS = {"batch_norm_param": {"use_global_stats", "moving_average_fraction", "eps"}}
    EXACT_BOTTOMS = 1
    EXACT_TOPS = 1
    PARAM_GRADS = False

    def __init__(self, *args):
        super().__init__(*args)
        p = self.layer_param.batch_norm_param
        self.use_global = (p.use_global_stats if p.HasField("use_global_stats")
                           else self.phase == pb.TEST)
        self.fraction = p.moving_average_fraction
        self.eps = p.eps
        for i, spec in enumerate(self.layer_param.param):
            if spec.lr_mult != 0:
                raise self.error("its statistics cannot be learned parameters (lr_mult must "
                                 f"be 0, param {i} has {spec.lr_mult})")

    def setup(self, bottom_shapes):
        channels = bottom_shapes[0][1] if len(bottom_shapes[0]) > 1 else 1
        zero = default_filler()
        self.blobs = [self.make_blob((channels,), zero, 0), self.make_blob((channels,), zero, 1),
                      self.make_blob((1,), zero, 2)]
        for blob in self.blobs:
            blob.lr_mult = 0.0

    def reshape(self, bottom_shapes):
        shape = bottom_shapes[0]
        if len(shape) < 2:
            raise self.error(f"bottom needs a channel axis, got {shape}")
        if shape[1] != self.blobs[0].shape[0]:
            raise self.error(f"bottom has {shape[1]} channels, blobs {self.blobs[0].shape[0]}")
        return [shape]

    def forward(self, bottoms, params):
        x = bottoms[0]
        n, c = x.shape[0], x.shape[1]
        xs = x.reshape(n, c, -1)
        bshape = (1, c, 1)
        if self.use_global:
            s = params[2].detach()[0]
            factor = torch.where(s == 0, torch.zeros_like(s), 1.0 / s)
            mean = (params[0].detach() * factor).view(bshape)
            var = (params[1].detach() * factor).view(bshape)
        else:
            mean = xs.mean(dim=(0, 2), keepdim=True)
            var = ((xs - mean) ** 2).mean(dim=(0, 2), keepdim=True)
            self._update_statistics(mean.detach().view(c), var.detach().view(c), xs.shape)
        y = (xs - mean) / torch.sqrt(var + self.eps)
        return [y.view(x.shape)]

    def _update_statistics(self, mean, var, shape):
        m = shape[0] * shape[2]
        correction = m / (m - 1.0) if m > 1 else 1.0
        with torch.no_grad():
            b0, b1, b2 = (b.tdata for b in self.blobs)
            b2.mul_(self.fraction).add_(1.0)
            b0.mul_(self.fraction).add_(mean)
            b1.mul_(self.fraction).add_(var * correction)


@register
class Scale(Layer):
    """y = x * gamma (+ beta), gamma shaped like bottom[0].shape[axis:axis+num_axes] (num_axes
    -1: to the end; 0: a scalar), or taken from a second bottom (which then gets its diff).
    gamma's filler defaults to constant 1, beta's (bias_term) to constant 0; with a second
    bottom beta is shaped like it.

    Caffe writes a learnable gamma's diff instead of adding to it when gamma starts at axis 0
    of the bottom and has more than one value (or matches the bottom element for element):
    the gradient is then assigned, as there (it shows only when diffs accumulate, iter_size).
    """
    TYPE = "Scale"
    FIELDS = {"scale_param": {"axis", "num_axes", "filler", "bias_term", "bias_filler"}}
    MIN_BOTTOMS = 1
    MAX_BOTTOMS = 2
    EXACT_TOPS = 1

    def setup(self, bottom_shapes):
        p = self.layer_param.scale_param
        shape = bottom_shapes[0]
        self.blobs = []
        if len(bottom_shapes) == 1:
            sshape = param_shape_from(self, shape, p.axis, p.num_axes, "scale")
            f = p.filler if p.HasField("filler") else default_filler("constant", 1.0)
            self.blobs.append(self.make_blob(sshape, f, 0))
        if p.bias_term:
            # Caffe's inner Bias layer: same axis, as many axes as gamma has.
            num_axes = len(bottom_shapes[1]) if len(bottom_shapes) == 2 else p.num_axes
            bshape = param_shape_from(self, shape, p.axis, num_axes, "bias")
            self.blobs.append(self.make_blob(bshape, p.bias_filler, len(self.blobs)))

    def _gamma_shape(self, bottom_shapes):
        return tuple(bottom_shapes[1]) if len(bottom_shapes) == 2 else self.blobs[0].shape

    def reshape(self, bottom_shapes):
        shape = bottom_shapes[0]
        axis = self.layer_param.scale_param.axis
        broadcast_axis(self, axis, shape, self._gamma_shape(bottom_shapes), "scale")
        if self.layer_param.scale_param.bias_term:
            broadcast_axis(self, axis, shape, self.blobs[-1].shape, "bias")
        return [shape]

    def _split(self, bottoms, params):
        if len(bottoms) == 2:
            return bottoms[1], (params[0] if params else None)
        return params[0], (params[1] if len(params) > 1 else None)

    def forward(self, bottoms, params):
        x = bottoms[0]
        gamma, beta = self._split(bottoms, params)
        axis = self.layer_param.scale_param.axis
        y = x * broadcast_view(gamma, broadcast_axis(self, axis, tuple(x.shape),
                                                     tuple(gamma.shape), "scale"), x.dim())
        if beta is not None:
            y = y + broadcast_view(beta, broadcast_axis(self, axis, tuple(x.shape),
                                                        tuple(beta.shape), "bias"), x.dim())
        return [y]

    def _assigns_gamma_diff(self, shape):
        gshape = self.blobs[0].shape
        axis = broadcast_axis(self, self.layer_param.scale_param.axis, shape, gshape, "scale")
        outer, inner = count(shape, 0, axis), count(shape, axis + len(gshape))
        return outer == 1 and (count(gshape) > 1 or inner == 1)

    def backward(self, tops, top_diffs, bottoms, params, need_bottom, need_param):
        bottom_grads, param_grads = super().backward(tops, top_diffs, bottoms, params,
                                                     need_bottom, need_param)
        if (len(bottoms) == 1 and param_grads[0] is not None
                and self._assigns_gamma_diff(tuple(bottoms[0].shape))):
            with torch.no_grad():
                self.blobs[0].tdiff.copy_(param_grads[0].reshape(self.blobs[0].shape))
            param_grads[0] = None
        return bottom_grads, param_grads


__all__ = ["BatchNorm", "Scale", "NetError"]
