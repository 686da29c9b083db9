"""Local response normalisation, both of Caffe's regions.

ACROSS_CHANNELS: y = x * (k + alpha/n * sum of x^2 over n neighbouring channels)^-beta, zero
padded. WITHIN_CHANNEL: y = x * (1 + alpha/n^2 * sum of x^2 over an n x n window)^-beta, the
window average-pooled with pad (n-1)/2 (Caffe builds it from Power and Pooling layers; k is not
used). ACROSS_CHANNELS has its own forward and backward (shifted adds over channels, and
Caffe's gradient formula); WITHIN_CHANNEL is an average pool, differentiated by autograd.

In place (top is bottom): Caffe's CPU ACROSS_CHANNELS writes scale^-beta over the input and
then multiplies by it, giving scale^(-2 beta), and its backward overwrites the top diff before
reading it; its GPU kernel gives the LRN. With no one answer, in-place ACROSS_CHANNELS is
refused. WITHIN_CHANNEL in place is the LRN forward on both, and its backward is Caffe's: its
inner Eltwise and Power layers read the shared, overwritten blob, so the output y stands where
the input x belongs: dx = dy * p + 2y * avgpool(dy * y * dp/dpool), p the power term.
"""
import numpy as np
import torch
import torch.nn.functional as F

from deepmammo.caffe.layers.base import Layer, register
from deepmammo.caffe.proto import caffe_pb2 as pb


def _channel_window_sum(t, size):
    """sum over the `size` channels centred on each channel (zero outside), by shifted adds:
    memory-bound and exact per window (PyTorch's pooling over a 1-channel view is slow)."""
    half = (size - 1) // 2
    out = t.clone()
    for d in range(1, half + 1):
        out[:, d:] += t[:, :-d]
        out[:, :-d] += t[:, d:]
    return out


class _AcrossChannelsLRN(torch.autograd.Function):
    """y = x * scale^-beta, scale = k + alpha/n * window_sum(x^2). Backward as Caffe writes
    it: dx = dy * scale^-beta - 2*alpha*beta/n * x * window_sum(dy * y / scale)."""

    @staticmethod
    def forward(ctx, x, size, alpha, beta, k):
        scale = _channel_window_sum(x * x, size).mul_(alpha / size).add_(k)
        scale_pow = scale.pow(-beta)
        y = x * scale_pow
        ctx.save_for_backward(x, y, scale, scale_pow)
        ctx.hyper = (size, alpha, beta)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, y, scale, scale_pow = ctx.saved_tensors
        size, alpha, beta = ctx.hyper
        ratio = _channel_window_sum((dy * y).div_(scale), size)
        dx = torch.addcmul(dy * scale_pow, ratio, x, value=-2.0 * alpha * beta / size)
        return dx, None, None, None, None


@register
class LRN(Layer):
    TYPE = "LRN"
    FIELDS = {"lrn_param": {"local_size", "alpha", "beta", "norm_region", "k"}}
    EXACT_BOTTOMS = 1
    EXACT_TOPS = 1

    def __init__(self, *args):
        super().__init__(*args)
        p = self.layer_param.lrn_param
        self.size, self.alpha, self.beta, self.k = p.local_size, p.alpha, p.beta, p.k
        if self.size % 2 == 0 or self.size <= 0:
            raise self.error(f"local_size must be odd and positive, got {self.size}")
        self.across = p.norm_region == pb.LRNParameter.ACROSS_CHANNELS
        if self.across:
            self.refuse_in_place("Caffe's in-place ACROSS_CHANNELS LRN gives scale^(-2 beta) "
                                 "on the CPU (and a backward that ignores the top diff) but "
                                 "the LRN on the GPU; give the top its own name")
        self.overwrites_input = self.in_place()

    def reshape(self, bottom_shapes):
        if len(bottom_shapes[0]) != 4:
            raise self.error(f"bottom must be 4-D (N, C, H, W), got {bottom_shapes[0]}")
        return [bottom_shapes[0]]

    def forward(self, bottoms, params):
        x = bottoms[0]
        n, c, h, w = x.shape
        half = (self.size - 1) // 2
        if self.across:
            return [_AcrossChannelsLRN.apply(x, self.size, self.alpha, self.beta, self.k)]
        else:
            mean = F.avg_pool2d(x * x, self.size, 1, half, count_include_pad=True)
            scale = mean * self.alpha + 1.0
        return [x * scale.pow(-self.beta)]

    def backward(self, tops, top_diffs, bottoms, params, need_bottom, need_param):
        if not self.overwrites_input or not need_bottom[0]:
            return super().backward(tops, top_diffs, bottoms, params, need_bottom, need_param)
        with torch.no_grad():
            x, y, dy = bottoms[0], tops[0], top_diffs[0]
            half = (self.size - 1) // 2
            pooled = F.avg_pool2d(x * x, self.size, 1, half, count_include_pad=True)
            base = pooled * self.alpha + 1.0
            power = base.pow(-self.beta)
            # Power layer's backward: diff_scale * p / (1 + alpha * pooled), diff_scale in float.
            diff_scale = float(np.float32(-self.beta) * np.float32(self.alpha))
            dpooled = (dy * y) * (power / base * diff_scale)
            # Average pooling with stride 1 and a centred odd window is its own adjoint.
            dsquare = F.avg_pool2d(dpooled, self.size, 1, half, count_include_pad=True)
            return [dy * power + (2 * y) * dsquare], []
