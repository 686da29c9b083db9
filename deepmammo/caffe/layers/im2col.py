"""Im2col: the columns Caffe's convolution multiplies, as a blob.

For a bottom (..., C, *spatial) with the channel axis at `axis`, the top is
(..., C * prod(kernel), *out): channel c * prod(kernel) + (kernel offset in row-major order)
holds the input at (out position * stride - pad + offset * dilation), zero outside the image.
Output size floors: (in + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1. Any number of
spatial axes (Caffe's im2col_nd; force_nd_im2col gives the same numbers). Backward sums each
column entry back into its input (Caffe's col2im) through autograd of the same indexing.
Fields of convolution_param that Im2col has no use for (num_output, bias, fillers, group) are
accepted and ignored, as Caffe does.
"""
import math

import torch.nn.functional as F

from deepmammo.caffe.layers.base import Layer, canonical_axis, count, register
from deepmammo.caffe.layers.conv import _CONV_FIELDS


@register
class Im2col(Layer):
    TYPE = "Im2col"
    FIELDS = {"convolution_param": _CONV_FIELDS}
    EXACT_BOTTOMS = 1
    EXACT_TOPS = 1

    def __init__(self, *args):
        super().__init__(*args)
        self.refuse_in_place("Caffe would resize the bottom before reading it")

    def _spec(self, name, n, default):
        """Caffe's per-axis value: `name` once or once per axis, or `name`_h/_w (2-D)."""
        p = self.layer_param.convolution_param
        stem = name.replace("_size", "")
        values = list(getattr(p, name))
        if p.HasField(stem + "_h") or p.HasField(stem + "_w"):
            if n != 2:
                raise self.error(f"{stem}_h & {stem}_w can only be used for 2D convolution")
            if values:
                raise self.error(f"either {name} or {stem}_h/w should be specified; not both")
            return [getattr(p, stem + "_h"), getattr(p, stem + "_w")]
        if not values and default is not None:
            return [default] * n
        if len(values) not in (1, n):
            raise self.error(f"{name} must be specified once, or once per spatial dimension "
                             f"({name} specified {len(values)} times; {n} spatial dims)")
        return [values[0]] * n if len(values) == 1 else values

    def _geometry(self, shape):
        axis = canonical_axis(self.layer_param.convolution_param.axis, len(shape), self.where)
        n = len(shape) - axis - 1
        if n < 1:
            raise self.error(f"no spatial axes after channel axis {axis} in {shape}")
        kernel = self._spec("kernel_size", n, None)
        stride = self._spec("stride", n, 1)
        pad = self._spec("pad", n, 0)
        dil = list(self.layer_param.convolution_param.dilation)
        if len(dil) not in (0, 1, n):
            raise self.error(f"dilation must be specified once, or once per spatial "
                             f"dimension (dilation specified {len(dil)} times; {n} spatial "
                             f"dims)")
        dilation = [1] * n if not dil else dil * n if len(dil) == 1 else dil
        if min(kernel) <= 0:
            raise self.error("filter dimensions must be nonzero")
        if min(stride) <= 0:
            raise self.error("stride dimensions must be nonzero")
        out = []
        for i in range(n):
            extent = dilation[i] * (kernel[i] - 1) + 1
            size = shape[axis + 1 + i] + 2 * pad[i] - extent
            if size < 0:
                raise self.error(f"kernel extent {extent} exceeds the padded input {shape}")
            out.append(size // stride[i] + 1)
        return axis, kernel, stride, pad, dilation, out

    def reshape(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        axis, kernel, _, _, _, out = self._geometry(shape)
        return [shape[:axis] + (shape[axis] * math.prod(kernel),) + tuple(out)]

    def forward(self, bottoms, params):
        x = bottoms[0]
        shape = tuple(x.shape)
        axis, kernel, stride, pad, dilation, out = self._geometry(shape)
        n = len(kernel)
        cols = x.reshape((count(shape, 0, axis), shape[axis]) + shape[axis + 1:])
        widths = []
        for p in reversed(pad):
            widths += [p, p]
        cols = F.pad(cols, widths)
        for i in range(n):
            extent = dilation[i] * (kernel[i] - 1) + 1
            # Windows along spatial axis i become a trailing axis, every dilation-th kept.
            cols = cols.unfold(2 + i, extent, stride[i])[..., ::dilation[i]]
            cols = cols.narrow(2 + i, 0, out[i])
        # (num, C, *out, *kernel) -> (num, C, *kernel, *out): Caffe's column order.
        order = [0, 1] + [2 + n + i for i in range(n)] + [2 + i for i in range(n)]
        cols = cols.permute(order)
        return [cols.reshape(self.reshape([shape])[0])]
