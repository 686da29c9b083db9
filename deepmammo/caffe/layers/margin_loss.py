"""ContrastiveLoss and HingeLoss with Caffe's numbers, gradients written out as Caffe's Backward
computes them (its choices at the kinks included).

ContrastiveLoss (bottoms a, b of shape (N, C, 1, 1), similarity y of shape (N, 1, 1, 1)):
d^2 = |a - b|^2 per pair; a pair is similar when int(y) != 0 (truncated, as Caffe casts).
loss = sum(similar: d^2; dissimilar: max(margin - d, 0)^2) / (2 N), or with legacy_version
max(margin - d^2, 0) in place of the squared hinge. Gradient to a (minus it to b), per pair:
similar w/N (a - b); dissimilar, when the hinge is active (margin - d > 0, or margin - d^2 > 0
legacy): -w/N (margin - d) / (d + 1e-4) (a - b), legacy -w/N (a - b); else 0. y takes no
gradient and force_backward does not reach it.

HingeLoss (scores (N, ...), one label per sample): t_j = max(0, 1 + x_j) for j != label,
t_label = max(0, 1 - x_label); L1: sum t / N, L2: sum t^2 / N. Gradient: the sign of t (0 where
t is 0) with the label's negated, times w/N (L1), or t with the label's negated times 2w/N (L2).
"""
import torch

from deepmammo.caffe.layers.base import register
from deepmammo.caffe.layers.loss import LossLayer
from deepmammo.caffe.proto import caffe_pb2 as pb


def legacy_nchw(shape, where_error):
    """Caffe's num/channels/height/width of a blob: missing trailing axes read as 1; more
    than four axes are refused, as Caffe's legacy accessors refuse them."""
    shape = tuple(shape)
    if len(shape) > 4:
        raise where_error(f"a blob of shape {shape} has more than 4 axes (this layer reads "
                          "num, channels, height and width)")
    return shape + (1,) * (4 - len(shape))


@register
class ContrastiveLoss(LossLayer):
    TYPE = "ContrastiveLoss"
    FIELDS = {"contrastive_loss_param": {"margin", "legacy_version"}}
    EXACT_BOTTOMS = 3
    EXACT_TOPS = 1
    AUTOGRAD = False
    REFUSED_BOTTOMS = {}

    def allow_force_backward(self, bottom_index):
        return bottom_index != 2

    def reshape(self, bottom_shapes):
        self.check_first_axis(bottom_shapes)
        a, b, y = (legacy_nchw(s, self.error) for s in bottom_shapes)
        if a[1] != b[1]:
            raise self.error(f"the two bottoms must have the same channels ({a[1]} vs {b[1]})")
        for name, dims in (("bottom 0", a), ("bottom 1", b)):
            if dims[2] != 1 or dims[3] != 1:
                raise self.error(f"{name} must have height and width 1, has shape "
                                 f"{tuple(bottom_shapes[0 if name == 'bottom 0' else 1])}")
        if y[1:] != (1, 1, 1):
            raise self.error(f"the similarity bottom must have channels, height and width 1, "
                             f"has shape {tuple(bottom_shapes[2])}")
        return [()]

    def _terms(self, a, b, y):
        n = a.shape[0]
        diff = (a - b).reshape(n, -1)
        dist_sq = (diff * diff).sum(dim=1)
        if y.numel() < n:
            raise self.error(f"{y.numel()} similarity values for {n} pairs")
        similar = y.reshape(-1)[:n].to(torch.int64) != 0
        return diff, dist_sq, similar

    def forward(self, bottoms, params):
        p = self.layer_param.contrastive_loss_param
        a, b, y = bottoms
        diff, dist_sq, similar = self._terms(a, b, y)
        margin = torch.tensor(p.margin, dtype=a.dtype, device=a.device)
        if p.legacy_version:
            apart = torch.clamp(margin - dist_sq, min=0)
        else:
            apart = torch.clamp(margin - torch.sqrt(dist_sq), min=0)
            apart = apart * apart
        loss = torch.where(similar, dist_sq, apart).sum() / a.shape[0] / 2
        return [loss.reshape(())]

    def backward(self, tops, top_diffs, bottoms, params, need_bottom, need_param):
        p = self.layer_param.contrastive_loss_param
        a, b, y = bottoms
        grads = [None, None, None]
        if not (need_bottom[0] or need_bottom[1]):
            return grads, []
        n = a.shape[0]
        diff, dist_sq, similar = self._terms(a, b, y)
        margin = torch.tensor(p.margin, dtype=a.dtype, device=a.device)
        zero = torch.zeros_like(dist_sq)
        for i, sign in ((0, 1.0), (1, -1.0)):
            if not need_bottom[i]:
                continue
            # Per pair, the factor of (a - b) in Caffe's order of operations.
            alpha = sign * top_diffs[0].reshape(()).to(a.dtype) / n
            if p.legacy_version:
                apart = torch.where(margin - dist_sq > 0, -alpha.expand_as(dist_sq), zero)
            else:
                dist = torch.sqrt(dist_sq)
                mdist = margin - dist
                apart = torch.where(mdist > 0, -alpha * mdist / (dist + 1e-4), zero)
            coef = torch.where(similar, alpha.expand_as(dist_sq), apart)
            grads[i] = (coef[:, None] * diff).reshape(bottoms[i].shape)
        return grads, []


@register
class HingeLoss(LossLayer):
    TYPE = "HingeLoss"
    FIELDS = {"hinge_loss_param": {"norm"}}
    EXACT_BOTTOMS = 2
    EXACT_TOPS = 1
    AUTOGRAD = False

    def reshape(self, bottom_shapes):
        self.check_first_axis(bottom_shapes)
        return [()]

    def _margins(self, x, label):
        """t as in the module's docstring (N, dim), and the one-hot of the labels."""
        n = x.shape[0]
        if label.numel() < n:
            raise self.error(f"{label.numel()} labels for {n} samples")
        flat = x.reshape(n, -1)
        labels = label.reshape(-1)[:n].to(torch.int64)
        dim = flat.shape[1]
        bad = (labels < 0) | (labels >= dim)
        if bool(bad.any()):
            raise self.error(f"label out of range [0, {dim}) (e.g. {int(labels[bad][0])})")
        onehot = torch.zeros_like(flat, dtype=torch.bool)
        onehot.scatter_(1, labels[:, None], True)
        signed = torch.where(onehot, -flat, flat)
        return torch.clamp(1 + signed, min=0), onehot

    def forward(self, bottoms, params):
        x, label = bottoms
        t, _ = self._margins(x, label)
        n = x.shape[0]
        if self.layer_param.hinge_loss_param.norm == pb.HingeLossParameter.L2:
            loss = (t * t).sum() / n
        else:
            loss = t.sum() / n
        return [loss.reshape(())]

    def backward(self, tops, top_diffs, bottoms, params, need_bottom, need_param):
        self.refuse_backward(need_bottom)
        if not need_bottom[0]:
            return [None, None], []
        x, label = bottoms
        t, onehot = self._margins(x, label)
        n = x.shape[0]
        w = top_diffs[0].reshape(()).to(x.dtype)
        signed = torch.where(onehot, -t, t)
        if self.layer_param.hinge_loss_param.norm == pb.HingeLossParameter.L2:
            g = signed * (w * 2 / n)
        else:
            g = torch.sign(signed) * (w / n)
        return [g.reshape(x.shape), None], []

