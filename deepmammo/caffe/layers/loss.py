"""Softmax, SoftmaxWithLoss, Accuracy, EuclideanLoss, and what Caffe's loss layers share.

LossLayer (Caffe's): loss_weight 1 on the first top unless given, bottoms 0 and 1 must agree on
their first axis, force_backward never reaches the label (bottom 1), and a backward that must
reach it (propagate_down, or a label computed by layers that learn) is refused, as Caffe's
Backward aborts. `normaliser` is Caffe's get_normalizer: FULL (outer x inner), VALID (the
labels not ignored), BATCH_SIZE (outer), NONE (1), never below 1.

SoftmaxWithLoss: loss = -sum log(max(p_label, FLT_MIN)) / normaliser, normalization VALID by
default (FULL, BATCH_SIZE, NONE; legacy `normalize: false` = BATCH_SIZE), normaliser at least 1;
its gradient is (p - onehot) * top_diff / normaliser, zero at ignore_label (written out rather
than autograd's, which would differ where the FLT_MIN clamp bites). Accuracy: a sample is
correct when fewer than top_k classes score >= the true class (ties count against).
EuclideanLoss: sum((a - b)^2) / (2 N); both bottoms may be forced into backward.
"""
import numpy as np
import torch

from deepmammo.caffe.layers.base import Layer, canonical_axis, count, register
from deepmammo.caffe.proto import caffe_pb2 as pb

FLT_MIN = float(np.finfo(np.float32).tiny)
_LOSS_FIELDS = {"ignore_label", "normalization", "normalize"}


class LossLayer(Layer):
    """Caffe's LossLayer conventions (see the module's docstring)."""
    IS_LOSS = True
    # Bottoms whose backward Caffe's Backward refuses, and what it calls them.
    REFUSED_BOTTOMS = {1: "label"}

    def allow_force_backward(self, bottom_index):
        return bottom_index != 1

    def check_first_axis(self, bottom_shapes):
        a, b = bottom_shapes[0], bottom_shapes[1]
        if not a or not b or a[0] != b[0]:
            raise self.error(f"the data and label should have the same first dimension "
                             f"(bottoms {a} and {b})")

    def refuse_backward(self, need_bottom):
        for j, what in self.REFUSED_BOTTOMS.items():
            if j < len(need_bottom) and need_bottom[j]:
                raise self.error(f"{self.type} Layer cannot backpropagate to {what} inputs "
                                 f"(bottom {j}: set its propagate_down to false)")


def normalization_mode(loss_param, default):
    """The normalization a loss uses: `normalization` if set, else the legacy `normalize`
    (true: VALID, false: BATCH_SIZE), else `default` (the layer's own)."""
    if loss_param.HasField("normalization"):
        return loss_param.normalization
    if loss_param.HasField("normalize"):
        return pb.LossParameter.VALID if loss_param.normalize else pb.LossParameter.BATCH_SIZE
    return default


def normaliser(mode, outer, inner, valid_count):
    """Caffe's get_normalizer, as a float of at least 1."""
    if mode == pb.LossParameter.FULL:
        n = outer * inner
    elif mode == pb.LossParameter.VALID:
        n = valid_count
    elif mode == pb.LossParameter.BATCH_SIZE:
        n = outer
    else:
        n = 1
    return max(1.0, float(n))


def _labels(label, outer, inner, where_error):
    if label.numel() != outer * inner:
        raise where_error(f"label count {label.numel()} must equal outer x inner "
                          f"= {outer} x {inner}")
    return label.reshape(outer, inner).to(torch.int64)


@register
class Softmax(Layer):
    TYPE = "Softmax"
    FIELDS = {"softmax_param": {"axis"}}
    EXACT_BOTTOMS = 1
    EXACT_TOPS = 1

    def reshape(self, bottom_shapes):
        canonical_axis(self.layer_param.softmax_param.axis, len(bottom_shapes[0]), self.where)
        return [bottom_shapes[0]]

    def forward(self, bottoms, params):
        x = bottoms[0]
        axis = canonical_axis(self.layer_param.softmax_param.axis, x.dim(), self.where)
        return [torch.softmax(x, dim=axis)]


class _SoftmaxLoss(torch.autograd.Function):
    """Loss from logits (outer, C, inner); the gradient is Caffe's (p - onehot) / normaliser."""

    @staticmethod
    def forward(ctx, logits, labels, valid, norm):
        # labels, valid: (outer, inner)
        prob = torch.softmax(logits, dim=1)
        safe = torch.where(valid, labels, torch.zeros_like(labels))
        picked = prob.gather(1, safe.unsqueeze(1)).squeeze(1)
        logs = torch.log(torch.clamp(picked, min=FLT_MIN))
        loss = -(logs * valid.to(prob.dtype)).sum() / norm
        ctx.save_for_backward(prob, safe, valid)
        ctx.norm = norm
        return loss

    @staticmethod
    def backward(ctx, grad):
        prob, safe, valid = ctx.saved_tensors
        g = prob.clone()
        g.scatter_add_(1, safe.unsqueeze(1), -torch.ones_like(safe, dtype=g.dtype).unsqueeze(1))
        g *= valid.unsqueeze(1).to(g.dtype)
        g *= grad / ctx.norm
        return g, None, None, None


@register
class SoftmaxWithLoss(LossLayer):
    TYPE = "SoftmaxWithLoss"
    FIELDS = {"softmax_param": {"axis"}, "loss_param": _LOSS_FIELDS}
    EXACT_BOTTOMS = 2
    MIN_TOPS = 1
    MAX_TOPS = 2

    def __init__(self, *args):
        super().__init__(*args)
        lp = self.layer_param.loss_param
        self.ignore = lp.ignore_label if lp.HasField("ignore_label") else None
        self.norm = normalization_mode(lp, pb.LossParameter.VALID)

    def _dims(self, shape):
        axis = canonical_axis(self.layer_param.softmax_param.axis, len(shape), self.where)
        return axis, count(shape, 0, axis), shape[axis], count(shape, axis + 1)

    def reshape(self, bottom_shapes):
        self.check_first_axis(bottom_shapes)
        _, outer, _, inner = self._dims(bottom_shapes[0])
        if count(bottom_shapes[1]) != outer * inner:
            raise self.error(f"label count {count(bottom_shapes[1])} must equal outer x inner "
                             f"= {outer} x {inner} (bottoms {bottom_shapes[0]}, "
                             f"{bottom_shapes[1]})")
        tops = [()]
        if len(self.layer_param.top) == 2:
            tops.append(bottom_shapes[0])
        return tops

    def forward(self, bottoms, params):
        x, label = bottoms
        axis, outer, channels, inner = self._dims(tuple(x.shape))
        logits = x.reshape(outer, channels, inner)
        labels = _labels(label.detach(), outer, inner, self.error)
        valid = (labels != self.ignore) if self.ignore is not None else torch.ones_like(
            labels, dtype=torch.bool)
        bad = valid & ((labels < 0) | (labels >= channels))
        if bool(bad.any()):
            raise self.error(f"label out of range [0, {channels}) "
                             f"(e.g. {int(labels[bad][0])})")
        valid_count = int(valid.sum()) if self.ignore is not None else outer * inner
        loss = _SoftmaxLoss.apply(logits, labels, valid,
                                  normaliser(self.norm, outer, inner, valid_count))
        tops = [loss.reshape(())]
        if len(self.layer_param.top) == 2:
            tops.append(torch.softmax(logits.detach(), dim=1).reshape(x.shape))
        return tops

    def backward(self, tops, top_diffs, bottoms, params, need_bottom, need_param):
        self.refuse_backward(need_bottom)
        return super().backward(tops, top_diffs, bottoms, params, need_bottom, need_param)


@register
class Accuracy(Layer):
    TYPE = "Accuracy"
    FIELDS = {"accuracy_param": {"top_k", "axis", "ignore_label"}}
    EXACT_BOTTOMS = 2
    MIN_TOPS = 1
    MAX_TOPS = 2

    def allow_force_backward(self, bottom_index):
        return False

    def _dims(self, shape):
        axis = canonical_axis(self.layer_param.accuracy_param.axis, len(shape), self.where)
        return count(shape, 0, axis), shape[axis], count(shape, axis + 1)

    def reshape(self, bottom_shapes):
        outer, channels, inner = self._dims(bottom_shapes[0])
        if self.layer_param.accuracy_param.top_k > channels:
            raise self.error(f"top_k {self.layer_param.accuracy_param.top_k} exceeds the "
                             f"{channels} classes")
        if count(bottom_shapes[1]) != outer * inner:
            raise self.error(f"label count {count(bottom_shapes[1])} must equal outer x inner "
                             f"= {outer} x {inner}")
        tops = [()]
        if len(self.layer_param.top) == 2:
            tops.append((channels,))
        return tops

    def forward(self, bottoms, params):
        p = self.layer_param.accuracy_param
        x = bottoms[0].detach()
        outer, channels, inner = self._dims(tuple(x.shape))
        scores = x.reshape(outer, channels, inner)
        labels = _labels(bottoms[1].detach(), outer, inner, self.error)
        valid = (labels != p.ignore_label) if p.HasField("ignore_label") else \
            torch.ones_like(labels, dtype=torch.bool)
        bad = valid & ((labels < 0) | (labels >= channels))
        if bool(bad.any()):
            raise self.error(f"label out of range [0, {channels})")
        safe = torch.where(valid, labels, torch.zeros_like(labels))
        true_score = scores.gather(1, safe.unsqueeze(1))
        better = (scores >= true_score).sum(dim=1) - 1
        correct = (better < p.top_k) & valid
        n = int(valid.sum())
        acc = correct.sum().to(torch.float32) / n if n else torch.zeros((), device=x.device)
        tops = [acc.reshape(())]
        if len(self.layer_param.top) == 2:
            per_seen = torch.zeros(channels, device=x.device).index_add_(
                0, safe[valid], torch.ones(n, device=x.device))
            per_right = torch.zeros(channels, device=x.device).index_add_(
                0, safe[correct], torch.ones(int(correct.sum()), device=x.device))
            tops.append(torch.where(per_seen > 0, per_right / per_seen.clamp(min=1),
                                    torch.zeros_like(per_seen)))
        return tops


@register
class EuclideanLoss(LossLayer):
    """loss = sum((a - b)^2) / (2 N), N = a.shape[0]; both bottoms take gradients."""
    TYPE = "EuclideanLoss"
    EXACT_BOTTOMS = 2
    EXACT_TOPS = 1
    REFUSED_BOTTOMS = {}

    def allow_force_backward(self, bottom_index):
        return True

    def reshape(self, bottom_shapes):
        self.check_first_axis(bottom_shapes)
        a, b = bottom_shapes
        if count(a, 1) != count(b, 1):
            raise self.error(f"bottoms must have equal dimensions: {a} vs {b}")
        return [()]

    def forward(self, bottoms, params):
        a, b = bottoms
        d = a - b.reshape(a.shape)
        return [((d * d).sum() / (2.0 * a.shape[0])).reshape(())]
