"""Pooling as Caffe computes it.

Output size: ceil((H + 2p - k) / s) + 1 (round_mode CEIL, the default) or floor (FLOOR); when
pad > 0 a last window starting at or beyond H + p is dropped. MAX ignores padding (first
maximum wins); AVE divides by the window clipped to H + p. PyTorch's ceil_mode pooling agrees
whenever pad <= k/2 and its output size equals Caffe's; otherwise (pad > k/2, or pad 0 with
stride > kernel, where PyTorch drops a window Caffe keeps) a direct unfold implementation runs.

STOCHASTIC: BVLC Caffe has it on the GPU only (its CPU Forward aborts, NOT_IMPLEMENTED); the
engine runs the GPU kernels' rules with the CPU random stream. Windows start at multiples of
the stride, unpadded (Caffe refuses pad > 0 for it) and clipped to the image. TRAIN: one
uniform draw u per output (caffe_rng_uniform from the thread's stream, in top order); the
output is the first element of the window, in row-major order, whose running float sum
reaches u * (window sum); its gradient goes to that element. TEST: sum(x^2) / sum(x), or 0
where the sum is not positive; there is no TEST backward (Caffe's GPU kernel would route it
through a stale draw), so one is refused. The draws assume non-negative inputs (after a ReLU):
where the running sum never reaches the threshold (negative inputs) Caffe leaves the output
unwritten, here the window's first element is taken; a window wholly outside the image
(stride > kernel) gives 0 and no gradient (Caffe: an unwritten output).
"""
import math

import torch
import torch.nn.functional as F

from deepmammo.caffe import rng
from deepmammo.caffe.layers.base import Layer, register
from deepmammo.caffe.proto import caffe_pb2 as pb

_FLT_MAX = 3.4028234663852886e38


def _hw(p, name, default):
    stem = name.replace("_size", "")
    if p.HasField(stem + "_h") or p.HasField(stem + "_w"):
        return getattr(p, stem + "_h"), getattr(p, stem + "_w")
    value = getattr(p, name) if p.HasField(name) else default
    return value, value


def caffe_pooled_size(size, kernel, stride, pad, ceil):
    span = size + 2 * pad - kernel
    out = (math.ceil(span / stride) if ceil else span // stride) + 1
    if pad and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def torch_pooled_size(size, kernel, stride, pad):
    out = -(-(size + 2 * pad - kernel) // stride) + 1
    if (out - 1) * stride >= size + pad:
        out -= 1
    return out


class _MaxPool(torch.autograd.Function):
    """PyTorch's max pooling, forward through the channels-last CPU kernel (vectorised over
    channels: 2-5x faster than the NCHW one) and backward through the NCHW scatter (10x faster
    than the channels-last one). Both kernels take the first maximum of each window in
    row-major order, as Caffe: same values, indices and gradients as either alone."""

    @staticmethod
    def forward(ctx, x, kernel, stride, pad, ceil):
        xin = x.contiguous(memory_format=torch.channels_last) if x.device.type == "cpu" else x
        y, idx = F.max_pool2d(xin, kernel, stride, pad, ceil_mode=ceil, return_indices=True)
        y, idx = y.contiguous(), idx.contiguous()
        ctx.save_for_backward(x, idx)
        ctx.geometry = (kernel, stride, pad, ceil)
        ctx.mark_non_differentiable(idx)
        return y, idx

    @staticmethod
    def backward(ctx, dy, _didx):
        x, idx = ctx.saved_tensors
        kernel, stride, pad, ceil = ctx.geometry
        dx = torch.ops.aten.max_pool2d_with_indices_backward(
            dy.contiguous(), x, list(kernel), list(stride), list(pad), [1, 1], ceil, idx)
        return dx, None, None, None, None


@register
class Pooling(Layer):
    TYPE = "Pooling"
    FIELDS = {"pooling_param": {"pool", "pad", "pad_h", "pad_w", "kernel_size", "kernel_h",
                                "kernel_w", "stride", "stride_h", "stride_w", "global_pooling",
                                "round_mode"}}
    EXACT_BOTTOMS = 1
    MIN_TOPS = 1
    MAX_TOPS = 2

    def __init__(self, *args):
        super().__init__(*args)
        p = self.layer_param.pooling_param
        self.method = p.pool
        self.REPLAYABLE = self.method != pb.PoolingParameter.STOCHASTIC   # draws in forward
        if len(self.layer_param.top) == 2 and self.method != pb.PoolingParameter.MAX:
            raise self.error("a second (mask) top needs MAX pooling")
        self.global_pooling = p.global_pooling
        has_kernel = p.HasField("kernel_size") or p.HasField("kernel_h") or p.HasField("kernel_w")
        if self.global_pooling and has_kernel:
            raise self.error("with global_pooling the kernel size cannot be specified")
        if not self.global_pooling:
            if p.HasField("kernel_size") == (p.HasField("kernel_h") and p.HasField("kernel_w")):
                raise self.error("kernel is kernel_size OR kernel_h and kernel_w")
        for name in ("pad", "stride"):
            if p.HasField(name) and (p.HasField(name + "_h") or p.HasField(name + "_w")):
                raise self.error(f"{name} is {name} OR {name}_h and {name}_w")
            if p.HasField(name + "_h") != p.HasField(name + "_w"):
                raise self.error(f"both {name}_h and {name}_w are required")
        self.kernel = None if self.global_pooling else _hw(p, "kernel_size", 0)
        self.pad = _hw(p, "pad", 0)
        self.stride = _hw(p, "stride", 1)
        self.ceil = p.round_mode == pb.PoolingParameter.CEIL
        if self.global_pooling and (self.pad != (0, 0) or self.stride != (1, 1)):
            raise self.error("with global_pooling only pad 0 and stride 1")
        if self.method == pb.PoolingParameter.STOCHASTIC and self.pad != (0, 0):
            raise self.error("padding implemented only for average and max pooling")

    def _geometry(self, shape):
        if len(shape) != 4:
            raise self.error(f"bottom must be 4-D (N, C, H, W), got {shape}")
        kernel = shape[2:4] if self.global_pooling else self.kernel
        if min(kernel) <= 0 or min(self.stride) <= 0:
            raise self.error("kernel and stride must be positive")
        for k, p in zip(kernel, self.pad):
            if p >= k:
                raise self.error(f"pad {p} must be smaller than kernel {k}")
        out = tuple(caffe_pooled_size(shape[2 + i], kernel[i], self.stride[i], self.pad[i],
                                      self.ceil) for i in range(2))
        return tuple(kernel), out

    def reshape(self, bottom_shapes):
        shape = bottom_shapes[0]
        _, out = self._geometry(shape)
        top = (shape[0], shape[1]) + out
        return [top] * len(self.layer_param.top)

    def _fast(self, shape, kernel, out):
        for i in range(2):
            if 2 * self.pad[i] > kernel[i]:
                return None
        if not self.ceil:
            # Floor sizes never reach the dropped-window rule (pad < kernel): PyTorch agrees.
            return "floor"
        for i in range(2):
            if torch_pooled_size(shape[2 + i], kernel[i], self.stride[i], self.pad[i]) != out[i]:
                return None
        return "ceil"

    def forward(self, bottoms, params):
        x = bottoms[0]
        kernel, out = self._geometry(tuple(x.shape))
        if self.method == pb.PoolingParameter.STOCHASTIC:
            return [self._stochastic(x, kernel, out)]
        mode = self._fast(tuple(x.shape), kernel, out)
        want_mask = len(self.layer_param.top) == 2
        if mode is not None:
            ceil = mode == "ceil"
            if self.method == pb.PoolingParameter.MAX:
                y, idx = _MaxPool.apply(x, kernel, self.stride, self.pad, ceil)
                return [y, idx.to(torch.float32)] if want_mask else [y]
            return [F.avg_pool2d(x, kernel, self.stride, self.pad, ceil_mode=ceil,
                                 count_include_pad=True)]
        return self._direct(x, kernel, out, want_mask)

    def _direct(self, x, kernel, out, want_mask):
        """Caffe's loops as tensor ops: pad to cover every window, unfold, reduce."""
        n, c, h, w = x.shape
        (kh, kw), (sh, sw), (ph, pw), (oh, ow) = kernel, self.stride, self.pad, out
        need_h = (oh - 1) * sh + kh
        need_w = (ow - 1) * sw + kw
        right_h = max(0, need_h - ph - h)
        right_w = max(0, need_w - pw - w)
        is_max = self.method == pb.PoolingParameter.MAX
        fill = float("-inf") if is_max else 0.0
        xp = F.pad(x, (pw, right_w, ph, right_h), value=fill)
        win = xp.unfold(2, kh, sh).unfold(3, kw, sw)[:, :, :oh, :ow]
        win = win.reshape(n, c, oh, ow, kh * kw)
        hs = torch.arange(oh, device=x.device) * sh - ph
        ws = torch.arange(ow, device=x.device) * sw - pw
        if is_max:
            y, arg = win.max(dim=-1)
            # A window wholly outside the image: Caffe leaves -FLT_MAX and mask -1.
            empty_h = (torch.clamp(hs + kh, max=h) <= torch.clamp(hs, min=0))
            empty_w = (torch.clamp(ws + kw, max=w) <= torch.clamp(ws, min=0))
            empty = empty_h[:, None] | empty_w[None, :]
            y = torch.where(empty, torch.full_like(y, -_FLT_MAX), y)
            if not want_mask:
                return [y]
            row = hs[:, None] + torch.div(arg, kw, rounding_mode="floor")
            col = ws[None, :] + arg % kw
            mask = (row * w + col).to(torch.float32)
            mask = torch.where(empty, torch.full_like(mask, -1.0), mask)
            return [y, mask]
        he = torch.clamp(hs + kh, max=h + ph)
        we = torch.clamp(ws + kw, max=w + pw)
        size = ((he - hs)[:, None] * (we - ws)[None, :]).to(x.dtype)
        return [win.sum(dim=-1) / size]

    def _stochastic(self, x, kernel, out):
        """Caffe's GPU stochastic pooling: unpadded windows, running float sums in row-major
        order (a loop over the few window positions, each step over all windows at once)."""
        n, c, h, w = x.shape
        (kh, kw), (sh, sw), (oh, ow) = kernel, self.stride, out
        right_h = max(0, (oh - 1) * sh + kh - h)
        right_w = max(0, (ow - 1) * sw + kw - w)
        xp = F.pad(x, (0, right_w, 0, right_h))
        win = xp.unfold(2, kh, sh).unfold(3, kw, sw)[:, :, :oh, :ow].reshape(
            n, c, oh, ow, kh * kw)
        empty = ((torch.arange(oh, device=x.device) * sh >= h)[:, None]
                 | (torch.arange(ow, device=x.device) * sw >= w)[None, :])
        if self.phase == pb.TEST:
            total = torch.zeros((n, c, oh, ow), dtype=x.dtype, device=x.device)
            squares = torch.zeros_like(total)
            for k in range(kh * kw):
                v = win[..., k]
                total = total + v
                squares = squares + v * v
            return torch.where(total > 0, squares / total, torch.zeros_like(total))
        with torch.no_grad():
            running, sums = torch.zeros((n, c, oh, ow), dtype=x.dtype, device=x.device), []
            for k in range(kh * kw):
                running = running + win[..., k]
                sums.append(running)
            draws = rng.stream().uniform(n * c * oh * ow, 0.0, 1.0)
            u = torch.from_numpy(draws).to(x.device).view(n, c, oh, ow)
            threshold = u * running
            reached = torch.stack(sums, dim=-1) >= threshold[..., None]
            # The first position that reaches it (0, the first element, when none does).
            pick = reached.to(torch.uint8).argmax(dim=-1)
            row = torch.arange(oh, device=x.device)[:, None] * sh + torch.div(
                pick, kw, rounding_mode="floor")
            col = torch.arange(ow, device=x.device)[None, :] * sw + pick % kw
            where = torch.where(empty, torch.zeros_like(row), row * w + col)
        y = x.reshape(n, c, h * w).gather(2, where.reshape(n, c, oh * ow)).view(n, c, oh, ow)
        return torch.where(empty, torch.zeros_like(y), y)

    def backward(self, tops, top_diffs, bottoms, params, need_bottom, need_param):
        if (self.method == pb.PoolingParameter.STOCHASTIC and self.phase == pb.TEST
                and need_bottom[0]):
            raise self.error("STOCHASTIC pooling has no backward at TEST (Caffe's CPU code "
                             "aborts, its GPU kernel reuses a stale TRAIN draw)")
        return super().backward(tops, top_diffs, bottoms, params, need_bottom, need_param)
