"""Layers that reduce a blob: Reduction (SUM, ASUM, SUMSQ, MEAN over the tail axes from
`axis`, times `coeff`) and ArgMax (the top_k largest entries, their indices or values).

Reduction's coefficient is Caffe's float: `coeff`, divided by the reduced count in float for
MEAN; its backward is Caffe's (top diff times that coefficient, times sign(x) for ASUM with
sign(0) = 0, times 2x for SUMSQ).

ArgMax orders entries as Caffe's partial_sort with std::greater on (value, index) pairs does:
by value, and among equal values the higher index first. NaN inputs have no defined order in
Caffe. Caffe has no ArgMax backward: force_backward does not reach its bottom here (Caffe
would abort), and a loss that needs a gradient through it is refused when backward runs.
"""
import numpy as np
import torch

from deepmammo.caffe.layers.base import Layer, canonical_axis, count, register
from deepmammo.caffe.proto import caffe_pb2 as pb

_OPS = pb.ReductionParameter


@register
class Reduction(Layer):
    TYPE = "Reduction"
    FIELDS = {"reduction_param": {"operation", "axis", "coeff"}}
    EXACT_BOTTOMS = 1
    EXACT_TOPS = 1
    AUTOGRAD = False

    def __init__(self, *args):
        super().__init__(*args)
        self.refuse_in_place("Caffe would resize the bottom before reading it")
        self.op = self.layer_param.reduction_param.operation

    def _split(self, shape):
        axis = canonical_axis(self.layer_param.reduction_param.axis, len(shape), self.where)
        return axis, count(shape, 0, axis), count(shape, axis)

    def _coeff(self, dim):
        coeff = np.float32(self.layer_param.reduction_param.coeff)
        if self.op == _OPS.MEAN:
            coeff = np.float32(coeff / np.float32(dim))
        return float(coeff)

    def reshape(self, bottom_shapes):
        axis, _, _ = self._split(tuple(bottom_shapes[0]))
        return [tuple(bottom_shapes[0][:axis])]

    def forward(self, bottoms, params):
        x = bottoms[0]
        axis, num, dim = self._split(tuple(x.shape))
        flat = x.reshape(num, dim)
        if self.op in (_OPS.SUM, _OPS.MEAN):
            top = flat.sum(dim=1)
        elif self.op == _OPS.ASUM:
            top = flat.abs().sum(dim=1)
        else:
            top = (flat * flat).sum(dim=1)
        coeff = self._coeff(dim)
        if coeff != 1.0:
            top = top * coeff
        return [top.reshape(tuple(x.shape[:axis]))]

    def backward(self, tops, top_diffs, bottoms, params, need_bottom, need_param):
        if not need_bottom[0]:
            return [None], []
        x = bottoms[0]
        _, num, dim = self._split(tuple(x.shape))
        scale = (top_diffs[0].reshape(num, 1) * self._coeff(dim))
        if self.op in (_OPS.SUM, _OPS.MEAN):
            grad = scale.expand(num, dim)
        elif self.op == _OPS.ASUM:
            grad = torch.sign(x.reshape(num, dim)) * scale
        else:
            grad = x.reshape(num, dim) * (2 * scale)
        return [grad.reshape(x.shape).contiguous()], []


@register
class ArgMax(Layer):
    TYPE = "ArgMax"
    FIELDS = {"argmax_param": {"out_max_val", "top_k", "axis"}}
    EXACT_BOTTOMS = 1
    EXACT_TOPS = 1
    AUTOGRAD = False

    def __init__(self, *args):
        super().__init__(*args)
        self.refuse_in_place("Caffe would resize the bottom before reading it")
        p = self.layer_param.argmax_param
        if p.top_k < 1:
            raise self.error("top k must not be less than 1")

    def allow_force_backward(self, bottom_index):
        return False

    def _layout(self, shape):
        """(outer, dim, inner) of the searched axis, and the top shape."""
        p = self.layer_param.argmax_param
        if p.HasField("axis"):
            axis = canonical_axis(p.axis, len(shape), self.where)
            if p.top_k > shape[axis]:
                raise self.error(f"top_k ({p.top_k}) must be less than or equal to the "
                                 f"dimension of the axis ({shape[axis]})")
            top = shape[:axis] + (p.top_k,) + shape[axis + 1:]
            return (count(shape, 0, axis), shape[axis], count(shape, axis + 1)), top
        dim = count(shape, 1)
        if p.top_k > dim:
            raise self.error(f"top_k ({p.top_k}) must be less than or equal to the dimension "
                             f"of the flattened bottom blob per instance ({dim})")
        top = [1] * max(len(shape), 3)
        top[0], top[1], top[2] = shape[0], 2 if p.out_max_val else 1, p.top_k
        return (shape[0], dim, 1), tuple(top)

    def reshape(self, bottom_shapes):
        return [self._layout(tuple(bottom_shapes[0]))[1]]

    def forward(self, bottoms, params):
        p = self.layer_param.argmax_param
        x = bottoms[0].detach()
        (outer, dim, inner), top_shape = self._layout(tuple(x.shape))
        scores = x.reshape(outer, dim, inner).transpose(1, 2)
        # A stable descending sort keeps equal values in their order: reversed first, so
        # the higher index of a tie comes first, as std::greater on (value, index) orders.
        values, order = torch.sort(scores.flip(-1), dim=-1, descending=True, stable=True)
        values = values[..., :p.top_k]
        index = (dim - 1 - order[..., :p.top_k]).to(x.dtype)
        if p.HasField("axis"):
            out = values if p.out_max_val else index
            return [out.transpose(1, 2).reshape(top_shape)]
        out = torch.stack([index[:, 0], values[:, 0]], 1) if p.out_max_val else index
        return [out.reshape(top_shape)]

    def backward(self, tops, top_diffs, bottoms, params, need_bottom, need_param):
        if any(need_bottom):
            raise self.error("ArgMax has no backward (Caffe: not implemented); no loss may "
                             "need a gradient through it")
        return [None], []
