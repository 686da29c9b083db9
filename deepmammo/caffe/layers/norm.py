"""BatchNorm (Caffe's three statistic blobs, no affine part) and Scale (gamma, optional beta).

BatchNorm blob0 = running sum of means, blob1 = running sum of unbiased variances
(x m/(m-1), m = N*H*W), blob2 = the scale factor s (s = lambda*s + 1; blobs 0 and 1 are
lambda*old + new). Global statistics are blob/s (0 when s = 0). The batch variance used to
normalise is the biased one; eps sits inside the sqrt. use_global_stats defaults to
phase == TEST. Its blobs are statistics: lr_mult 0, and backward leaves their diffs alone.
"""
import torch

from deepmammo.caffe.layers.base import Layer, canonical_axis, default_filler, register
from deepmammo.caffe.netstate import NetError
from deepmammo.caffe.proto import caffe_pb2 as pb


@register
class BatchNorm(Layer):
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
    """y = x * gamma (+ beta), gamma shaped like bottom[0].shape[axis:axis+num_axes], or taken
    from a second bottom. gamma's filler defaults to constant 1, beta's to constant 0."""
    TYPE = "Scale"
    FIELDS = {"scale_param": {"axis", "num_axes", "filler", "bias_term", "bias_filler"}}
    MIN_BOTTOMS = 1
    MAX_BOTTOMS = 2
    EXACT_TOPS = 1

    def _scale_shape(self, shape):
        p = self.layer_param.scale_param
        if len(self.layer_param.bottom) == 2:
            return None
        axis = canonical_axis(p.axis, len(shape), self.where)
        if p.num_axes < -1:
            raise self.error("num_axes must be -1 or non-negative")
        end = len(shape) if p.num_axes == -1 else axis + p.num_axes
        if end > len(shape):
            raise self.error(f"axis {axis} + num_axes {p.num_axes} exceeds bottom {shape}")
        return tuple(shape[axis:end])

    def setup(self, bottom_shapes):
        p = self.layer_param.scale_param
        shape = self._scale_shape(bottom_shapes[0])
        self.blobs = []
        if shape is not None:
            f = p.filler if p.HasField("filler") else default_filler("constant", 1.0)
            self.blobs.append(self.make_blob(shape, f, 0))
        if p.bias_term:
            bshape = shape if shape is not None else tuple(bottom_shapes[1])
            f = p.bias_filler if p.HasField("bias_filler") else default_filler()
            self.blobs.append(self.make_blob(bshape, f, len(self.blobs)))

    def _axis(self, shape):
        return canonical_axis(self.layer_param.scale_param.axis, len(shape), self.where)

    def reshape(self, bottom_shapes):
        shape = bottom_shapes[0]
        axis = self._axis(shape)
        sshape = (tuple(bottom_shapes[1]) if len(bottom_shapes) == 2
                  else self.blobs[0].shape)
        if tuple(shape[axis:axis + len(sshape)]) != tuple(sshape):
            raise self.error(f"scale shape {sshape} does not match bottom {shape} at axis {axis}")
        return [shape]

    def forward(self, bottoms, params):
        x = bottoms[0]
        axis = self._axis(tuple(x.shape))
        if len(bottoms) == 2:
            gamma = bottoms[1]
            beta = params[0] if params else None
        else:
            gamma = params[0]
            beta = params[1] if len(params) > 1 else None
        view = (1,) * axis + tuple(gamma.shape) + (1,) * (x.dim() - axis - gamma.dim())
        y = x * gamma.reshape(view)
        if beta is not None:
            y = y + beta.reshape(view)
        return [y]


__all__ = ["BatchNorm", "Scale", "NetError"]
