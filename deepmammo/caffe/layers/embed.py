"""Embed: a lookup table. Each bottom value is an index into input_dim rows of a learnable
(input_dim, num_output) weight; the top is the bottom's shape plus num_output, plus a bias
(bias_term, default true). Unset fillers are constant 0.

Caffe checks (in debug builds) that every index is an integer in [0, input_dim); here any other
value is refused. The indices get no gradient: Caffe refuses to backpropagate to them, so
force_backward leaves them alone and a backward that needs their diff is refused.
"""
import torch
import torch.nn.functional as F

from deepmammo.caffe.layers.base import Layer, register


@register
class Embed(Layer):
    TYPE = "Embed"
    FIELDS = {"embed_param": {"num_output", "input_dim", "bias_term", "weight_filler",
                              "bias_filler"}}
    EXACT_BOTTOMS = 1
    EXACT_TOPS = 1
    AUTOGRAD = False

    def __init__(self, *args):
        super().__init__(*args)
        p = self.layer_param.embed_param
        if p.num_output <= 0:
            raise self.error("embed_param.num_output must be set and positive")
        if p.input_dim <= 0:
            raise self.error("embed_param.input_dim must be set and positive")
        self.num_output, self.input_dim = p.num_output, p.input_dim

    def setup(self, bottom_shapes):
        self.make_weight_and_bias(self.layer_param.embed_param,
                                  (self.input_dim, self.num_output))

    def allow_force_backward(self, bottom_index):
        return False

    def reshape(self, bottom_shapes):
        return [tuple(bottom_shapes[0]) + (self.num_output,)]

    def _indices(self, x):
        index = x.long()
        bad = (index.to(x.dtype) != x) | (index < 0) | (index >= self.input_dim)
        if bool(bad.any()):
            value = x[bad].flatten()[0].item()
            raise self.error(f"input value {value} is not an integer index in "
                             f"[0, {self.input_dim})")
        return index

    def forward(self, bottoms, params):
        x = bottoms[0]
        self.index = self._indices(x)
        y = F.embedding(self.index, params[0])
        if len(params) > 1:
            y = y + params[1]
        return [y]

    def backward(self, tops, top_diffs, bottoms, params, need_bottom, need_param):
        if need_bottom[0]:
            raise self.error("cannot backpropagate to the Embed layer's input (its indices)")
        dy = top_diffs[0].reshape(-1, self.num_output)
        grads = [None] * len(params)
        with torch.no_grad():
            if need_param[0]:
                grads[0] = torch.zeros_like(params[0]).index_add_(0, self.index.reshape(-1), dy)
            if len(params) > 1 and need_param[1]:
                grads[1] = dy.sum(dim=0)
        return [None], grads
