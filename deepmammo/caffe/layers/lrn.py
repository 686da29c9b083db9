"""Local response normalisation, both of Caffe's regions.

ACROSS_CHANNELS: y = x * (k + alpha/n * sum of x^2 over n neighbouring channels)^-beta, zero
padded. WITHIN_CHANNEL: y = x * (1 + alpha/n^2 * sum of x^2 over an n x n window)^-beta, the
window average-pooled with pad (n-1)/2 (Caffe builds it from Power and Pooling layers; k is not
used). ACROSS_CHANNELS has its own forward and backward (shifted adds over channels, and
Caffe's gradient formula); WITHIN_CHANNEL is an average pool, differentiated by autograd.
"""
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
