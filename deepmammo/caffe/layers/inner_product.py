"""InnerProduct: flattens from `axis` (default 1); weight (N, K), or (K, N) with transpose."""
import torch
import torch.nn.functional as F

from deepmammo.caffe.layers.base import Layer, canonical_axis, count, register


@register
class InnerProduct(Layer):
    TYPE = "InnerProduct"
    AUTOGRAD = False
    FIELDS = {"inner_product_param": {"num_output", "bias_term", "weight_filler", "bias_filler",
                                      "axis", "transpose"}}
    EXACT_BOTTOMS = 1
    EXACT_TOPS = 1

    def __init__(self, *args):
        super().__init__(*args)
        p = self.layer_param.inner_product_param
        if not p.HasField("num_output") or p.num_output <= 0:
            raise self.error("num_output must be set and positive")
        self.num_output = p.num_output
        self.transpose = p.transpose

    def _axis(self, shape):
        return canonical_axis(self.layer_param.inner_product_param.axis, len(shape), self.where)

    def setup(self, bottom_shapes):
        p = self.layer_param.inner_product_param
        k = count(bottom_shapes[0], self._axis(bottom_shapes[0]))
        shape = (k, self.num_output) if self.transpose else (self.num_output, k)
        self.make_weight_and_bias(p, shape)

    def reshape(self, bottom_shapes):
        shape = bottom_shapes[0]
        axis = self._axis(shape)
        k = count(shape, axis)
        expected = self.blobs[0].shape[0 if self.transpose else 1]
        if k != expected:
            raise self.error(f"input size {k} (bottom {shape} from axis {axis}) does not match "
                             f"the weight's {expected}")
        return [tuple(shape[:axis]) + (self.num_output,)]

    def forward(self, bottoms, params):
        x = bottoms[0]
        axis = self._axis(tuple(x.shape))
        flat = x.reshape(count(tuple(x.shape), 0, axis), -1)
        weight = params[0].t() if self.transpose else params[0]
        bias = params[1] if len(params) > 1 else None
        y = F.linear(flat, weight, bias)
        return [y.view(tuple(x.shape[:axis]) + (self.num_output,))]

    def backward(self, tops, top_diffs, bottoms, params, need_bottom, need_param):
        """Caffe's three GEMMs; the weight and bias gradients are added straight into the
        diffs (beta = 1), sparing a pass over fc6-sized blobs."""
        x = bottoms[0].detach()
        axis = self._axis(tuple(x.shape))
        flat = x.reshape(count(tuple(x.shape), 0, axis), -1)
        dy = top_diffs[0].reshape(flat.shape[0], self.num_output)
        weight = params[0].detach()
        with torch.no_grad():
            if need_param[0]:
                if self.transpose:
                    self.blobs[0].tdiff.addmm_(flat.t(), dy)
                else:
                    self.blobs[0].tdiff.addmm_(dy.t(), flat)
            if len(params) > 1 and need_param[1]:
                self.blobs[1].tdiff.add_(dy.sum(dim=0))
            dx = None
            if need_bottom[0]:
                dx = (dy @ weight.t() if self.transpose else dy @ weight).view(x.shape)
        return [dx], [None] * len(params)

    def flops(self, bottom_shapes, top_shapes):
        return 2 * self.blobs[0].count * count(top_shapes[0], 0, -1)

