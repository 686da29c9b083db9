"""Layers that route blobs: Concat, Eltwise (SUM with coeff, PROD, MAX), Flatten, Split,
Silence.

In place (a top that is its bottom): Caffe refuses it for Flatten and Split; for Eltwise, and
Concat of several bottoms, it runs but reads a bottom it has already zeroed, overwritten or
resized (an in-place Eltwise SUM drops its first bottom), so the engine refuses those too.
"""
import torch

from deepmammo.caffe.layers.base import Layer, canonical_axis, count, register
from deepmammo.caffe.proto import caffe_pb2 as pb


@register
class Concat(Layer):
    TYPE = "Concat"
    FIELDS = {"concat_param": {"axis", "concat_dim"}}
    MIN_BOTTOMS = 1
    EXACT_TOPS = 1

    def __init__(self, *args):
        super().__init__(*args)
        p = self.layer_param.concat_param
        if p.HasField("axis") and p.HasField("concat_dim"):
            raise self.error("either axis or concat_dim should be specified; not both")
        if len(self.layer_param.bottom) > 1:
            self.refuse_in_place("Caffe would resize the first bottom before reading it")
        self.raw_axis = p.concat_dim if p.HasField("concat_dim") else p.axis

    def _axis(self, shape):
        if self.layer_param.concat_param.HasField("concat_dim") and self.raw_axis >= len(shape):
            raise self.error(f"concat_dim {self.raw_axis} out of range for {shape}")
        return canonical_axis(self.raw_axis, len(shape), self.where)

    def reshape(self, bottom_shapes):
        first = bottom_shapes[0]
        axis = self._axis(first)
        total = 0
        for shape in bottom_shapes:
            if len(shape) != len(first) or any(
                    a != b for i, (a, b) in enumerate(zip(shape, first)) if i != axis):
                raise self.error(f"bottoms {first} and {shape} differ outside axis {axis}")
            total += shape[axis]
        return [tuple(first[:axis]) + (total,) + tuple(first[axis + 1:])]

    def forward(self, bottoms, params):
        if len(bottoms) == 1:
            return [bottoms[0].view_as(bottoms[0])]
        return [torch.cat(bottoms, dim=self._axis(tuple(bottoms[0].shape)))]


class _UnstableProd(torch.autograd.Function):
    """PROD with stable_prod_grad: false: d(bottom_i) = dtop * top / bottom_i, as Caffe."""

    @staticmethod
    def forward(ctx, *xs):
        top = xs[0]
        for x in xs[1:]:
            top = top * x
        ctx.save_for_backward(top, *xs)
        return top

    @staticmethod
    def backward(ctx, grad):
        top, *xs = ctx.saved_tensors
        return tuple(top / x * grad for x in xs)


@register
class Eltwise(Layer):
    TYPE = "Eltwise"
    FIELDS = {"eltwise_param": {"operation", "coeff", "stable_prod_grad"}}
    MIN_BOTTOMS = 2
    EXACT_TOPS = 1

    def __init__(self, *args):
        super().__init__(*args)
        p = self.layer_param.eltwise_param
        self.op = p.operation
        self.coeff = list(p.coeff)
        if self.coeff and len(self.coeff) != len(self.layer_param.bottom):
            raise self.error(f"needs one coeff per bottom ({len(self.layer_param.bottom)}), "
                             f"has {len(self.coeff)}")
        if self.coeff and self.op == pb.EltwiseParameter.PROD:
            raise self.error("Eltwise layer only takes coefficients for summation")
        # MAX with coeff: Caffe accepts and ignores them.
        if self.op != pb.EltwiseParameter.SUM:
            self.coeff = []
        self.stable = p.stable_prod_grad
        self.refuse_in_place("Caffe would overwrite the first bottom before reading it")

    def reshape(self, bottom_shapes):
        for shape in bottom_shapes[1:]:
            if shape != bottom_shapes[0]:
                raise self.error(f"bottom shapes differ: {bottom_shapes[0]} vs {shape}")
        return [bottom_shapes[0]]

    def forward(self, bottoms, params):
        if self.op == pb.EltwiseParameter.SUM:
            coeff = self.coeff or [1.0] * len(bottoms)
            top = bottoms[0] * coeff[0] if coeff[0] != 1 else bottoms[0].view_as(bottoms[0])
            for c, x in zip(coeff[1:], bottoms[1:]):
                top = top + (x * c if c != 1 else x)
            return [top]
        if self.op == pb.EltwiseParameter.PROD:
            if not self.stable:
                return [_UnstableProd.apply(*bottoms)]
            top = bottoms[0]
            for x in bottoms[1:]:
                top = top * x
            return [top]
        # MAX: Caffe takes bottom 1 on a tie between bottoms 0 and 1, then keeps the earlier
        # winner on later ties; torch.where sends the gradient to the branch it selected.
        a, b = bottoms[0], bottoms[1]
        top = torch.where(a > b, a, b)
        for x in bottoms[2:]:
            top = torch.where(x > top, x, top)
        return [top]


@register
class Flatten(Layer):
    TYPE = "Flatten"
    FIELDS = {"flatten_param": {"axis", "end_axis"}}
    EXACT_BOTTOMS = 1
    EXACT_TOPS = 1

    def __init__(self, *args):
        super().__init__(*args)
        self.refuse_in_place()

    def reshape(self, bottom_shapes):
        shape = bottom_shapes[0]
        p = self.layer_param.flatten_param
        start = canonical_axis(p.axis, len(shape), self.where)
        end = canonical_axis(p.end_axis, len(shape), self.where)
        # end_axis = axis - 1 is allowed (it inserts an axis of 1), as in Caffe.
        if end + 1 < start:
            raise self.error(f"end_axis {p.end_axis} is before axis {p.axis} for {shape}")
        return [tuple(shape[:start]) + (count(shape, start, end + 1),) + tuple(shape[end + 1:])]

    def forward(self, bottoms, params):
        x = bottoms[0]
        return [x.reshape(self.reshape([tuple(x.shape)])[0])]


@register
class Split(Layer):
    """Tops share the bottom's data; backward sums their diffs into the bottom's."""
    TYPE = "Split"
    AUTOGRAD = False
    EXACT_BOTTOMS = 1
    MIN_TOPS = 1

    def __init__(self, *args):
        super().__init__(*args)
        self.refuse_in_place()

    def reshape(self, bottom_shapes):
        return [bottom_shapes[0]] * len(self.layer_param.top)

    def forward(self, bottoms, params):
        return [bottoms[0]] * len(self.layer_param.top)

    def backward(self, tops, top_diffs, bottoms, params, need_bottom, need_param):
        if not need_bottom[0]:
            return [None], []
        total = top_diffs[0].clone()
        for d in top_diffs[1:]:
            total += d
        return [total], []


@register
class Silence(Layer):
    """Consumes its bottoms; their diffs are zeroed in backward."""
    TYPE = "Silence"
    AUTOGRAD = False
    MIN_BOTTOMS = 1
    EXACT_TOPS = 0

    def reshape(self, bottom_shapes):
        return []

    def forward(self, bottoms, params):
        return []

    def backward(self, tops, top_diffs, bottoms, params, need_bottom, need_param):
        return [torch.zeros_like(b) if n else None for b, n in zip(bottoms, need_bottom)], []
