"""MVN: mean-variance normalisation per sample and channel (or per sample across channels):
y = x - mean, divided by (std + eps) when normalize_variance. Caffe adds eps to the standard
deviation (biased, sqrt of the mean square), not to the variance.

Caffe shapes the top by its legacy accessors (num, channels, height, width): the top is 4-D
(a (N, C) bottom gives (N, C, 1, 1)) and a bottom of more than 4 axes is refused.

Backward is Caffe's formula, not the exact derivative (it ignores eps):
dx = (dy - mean(dy) - y mean(dy y)) / (std + eps), with y the top as the blob holds it when
backward runs (a later in-place layer may have changed it). In place, Caffe computes it in the
top diff's own memory; the same steps are replayed here so the result is Caffe's.
"""
import torch

from deepmammo.caffe.layers.base import Layer, register


@register
class MVN(Layer):
    TYPE = "MVN"
    FIELDS = {"mvn_param": {"normalize_variance", "across_channels", "eps"}}
    EXACT_BOTTOMS = 1
    EXACT_TOPS = 1
    AUTOGRAD = False
    BACKWARD_READS_BLOBS = True

    def __init__(self, *args):
        super().__init__(*args)
        lp = self.layer_param
        self.in_place = lp.top[0] == lp.bottom[0]
        p = lp.mvn_param
        self.normalize, self.across, self.eps = p.normalize_variance, p.across_channels, p.eps
        self.std = None

    def reshape(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        if len(shape) > 4:
            raise self.error(f"bottom has {len(shape)} axes; MVN reads it as (num, channels, "
                             "height, width), at most 4")
        return [shape + (1,) * (4 - len(shape))]

    def _rows(self, shape):
        return shape[0] if self.across else shape[0] * shape[1]

    def forward(self, bottoms, params):
        x = bottoms[0]
        shape = self.reshape([tuple(x.shape)])[0]
        rows = x.reshape(self._rows(shape), -1)
        y = rows - rows.mean(dim=1, keepdim=True)
        if self.normalize:
            self.std = torch.sqrt((y * y).mean(dim=1, keepdim=True)) + self.eps
            y = y / self.std
        return [y.reshape(shape)]

    def backward(self, tops, top_diffs, bottoms, params, need_bottom, need_param):
        if not need_bottom[0]:
            return [None], []
        shape = tuple(tops[0].shape)
        n = self._rows(shape)
        dy = top_diffs[0].reshape(n, -1)
        with torch.no_grad():
            if not self.normalize:
                dx = dy - dy.mean(dim=1, keepdim=True)
            else:
                dx = self._normalized_backward(tops[0].reshape(n, -1), dy)
        return [dx.reshape(bottoms[0].shape)], []

    def _normalized_backward(self, y, dy):
        """Caffe's steps; `alias` replays an in-place run, where the top diff is the bottom
        diff being written."""
        alias = self.in_place
        dim = y.shape[1]
        d = y * dy
        if alias:
            dy = d
        d = y * d.sum(dim=1, keepdim=True)
        if alias:
            dy = d
        d = d + dy.sum(dim=1, keepdim=True)
        # d := dy - d / dim (an axpby; in place its two operands are one buffer, scaled
        # first and then added to itself)
        d = 2.0 * (d * (-1.0 / dim)) if alias else dy + d * (-1.0 / dim)
        return d / self.std
