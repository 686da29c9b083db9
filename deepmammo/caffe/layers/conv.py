"""Convolution (2-D, grouped, dilated), as Caffe's ConvolutionLayer: weight
(num_output, C/group, kh, kw), bias (num_output); output size floors; unset fillers are
constant 0. Several bottom/top pairs share the one set of weights, as in Caffe."""
import torch
import torch.nn.functional as F

from deepmammo.caffe.layers.base import Layer, register

_CONV_FIELDS = {"num_output", "bias_term", "pad", "kernel_size", "stride", "dilation", "pad_h",
                "pad_w", "kernel_h", "kernel_w", "stride_h", "stride_w", "group",
                "weight_filler", "bias_filler", "axis", "force_nd_im2col"}


def _pair(param, name, default, where_error):
    """Caffe's repeated spatial field (one value or one per axis) or its _h/_w pair."""
    values = list(getattr(param, name))
    stem = name.replace("_size", "")
    has_hw = param.HasField(stem + "_h") or param.HasField(stem + "_w")
    if has_hw:
        if values:
            raise where_error(f"{name} is {name} OR {stem}_h and {stem}_w; not both")
        if not (param.HasField(stem + "_h") and param.HasField(stem + "_w")):
            raise where_error(f"both {stem}_h and {stem}_w are required")
        return getattr(param, stem + "_h"), getattr(param, stem + "_w")
    if not values:
        if default is None:
            raise where_error(f"{name} is required")
        return default, default
    if len(values) == 1:
        return values[0], values[0]
    if len(values) == 2:
        return values[0], values[1]
    raise where_error(f"{name} has {len(values)} values; 2-D convolution takes 1 or 2")


class _PointwiseConv(torch.autograd.Function):
    """A 1x1, stride-1, unpadded, ungrouped convolution as GEMMs on the (N, C, H*W) view
    (Caffe skips im2col for these too): on the CPU 1.5-3x faster than oneDNN's convolution,
    which reorders NCHW tensors into its blocked layout and back around every call."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        n, c, h, w = x.shape
        o = weight.shape[0]
        # Written into a fresh (N, O, H, W) tensor: returning a view would forbid the in-place
        # ReLU that usually follows.
        y = torch.empty((n, o, h, w), dtype=x.dtype, device=x.device)
        flat = y.view(n, o, h * w)
        torch.matmul(weight.reshape(o, c), x.reshape(n, c, h * w), out=flat)
        if bias is not None:
            flat += bias.view(1, o, 1)
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx, dy):
        # Detached: a saved input keeps requires_grad, and matmul then folds the batch into one
        # GEMM on transposed copies (two more passes over dy and dx); the batched GEMM gives
        # the same values.
        x, weight = (t.detach() for t in ctx.saved_tensors)
        n, c, h, w = x.shape
        o = weight.shape[0]
        dy = dy.reshape(n, o, h * w)
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dx = torch.matmul(weight.reshape(o, c).t(), dy).view(x.shape)
        if ctx.needs_input_grad[1]:
            dw = torch.bmm(dy, x.reshape(n, c, h * w).transpose(1, 2)).sum(0).view(weight.shape)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            db = dy.sum(dim=(0, 2))
        return dx, dw, db


@register
class Convolution(Layer):
    TYPE = "Convolution"
    FIELDS = {"convolution_param": _CONV_FIELDS}
    MIN_BOTTOMS = 1
    MIN_TOPS = 1

    def __init__(self, *args):
        super().__init__(*args)
        p = self.layer_param.convolution_param
        if p.axis != 1:
            raise self.error("only axis 1 (NCHW) is supported")
        if len(self.layer_param.bottom) != len(self.layer_param.top):
            raise self.error("needs as many tops as bottoms")
        if not p.HasField("num_output") or p.num_output <= 0:
            raise self.error("num_output must be set and positive")
        self.kernel = _pair(p, "kernel_size", None, self.error)
        self.stride = _pair(p, "stride", 1, self.error)
        self.pad = _pair(p, "pad", 0, self.error)
        dil = list(p.dilation)
        self.dilation = (dil[0], dil[0]) if len(dil) == 1 else tuple(dil) if dil else (1, 1)
        if len(self.dilation) != 2:
            raise self.error("dilation takes 1 or 2 values")
        if min(self.kernel) <= 0 or min(self.stride) <= 0 or min(self.dilation) <= 0:
            raise self.error("kernel, stride and dilation must be positive")
        self.group = p.group
        self.num_output = p.num_output
        if self.num_output % self.group:
            raise self.error(f"num_output {self.num_output} not divisible by group {self.group}")

    def setup(self, bottom_shapes):
        p = self.layer_param.convolution_param
        channels = bottom_shapes[0][1]
        if channels % self.group:
            raise self.error(f"{channels} input channels not divisible by group {self.group}")
        shape = (self.num_output, channels // self.group) + tuple(self.kernel)
        self.make_weight_and_bias(p, shape)

    def reshape(self, bottom_shapes):
        tops = []
        for shape in bottom_shapes:
            if len(shape) != 4:
                raise self.error(f"bottom must be 4-D (N, C, H, W), got {shape}")
            if shape != bottom_shapes[0]:
                raise self.error("all bottoms must have the same shape")
            if self.blobs and shape[1] != self.blobs[0].shape[1] * self.group:
                raise self.error(f"input size incompatible with convolution kernel: {shape[1]} "
                                 f"channels, the weights expect "
                                 f"{self.blobs[0].shape[1] * self.group}")
            out = [shape[0], self.num_output]
            for i in range(2):
                extent = self.dilation[i] * (self.kernel[i] - 1) + 1
                size = (shape[2 + i] + 2 * self.pad[i] - extent) // self.stride[i] + 1
                if size <= 0:
                    raise self.error(f"output would be empty for input {shape}")
                out.append(size)
            tops.append(tuple(out))
        return tops

    def forward(self, bottoms, params):
        weight = params[0]
        bias = params[1] if len(params) > 1 else None
        pointwise = (self.kernel == (1, 1) and self.stride == (1, 1) and self.pad == (0, 0)
                     and self.group == 1 and weight.device.type == "cpu")
        if pointwise:
            return [_PointwiseConv.apply(x, weight, bias) for x in bottoms]
        return [F.conv2d(x, weight, bias, self.stride, self.pad, self.dilation, self.group)
                for x in bottoms]

    def flops(self, bottom_shapes, top_shapes):
        """Multiply-adds x 2 of the forward pass (for GFLOP/s reports)."""
        w = self.blobs[0].shape
        per_out = w[1] * w[2] * w[3]
        return sum(2 * per_out * t[0] * t[1] * t[2] * t[3] for t in top_shapes)
