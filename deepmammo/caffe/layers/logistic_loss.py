"""MultinomialLogisticLoss, InfogainLoss and SigmoidCrossEntropyLoss with Caffe's numbers;
gradients written out as Caffe's Backward computes them (the clamps make autograd's differ).

MultinomialLogisticLoss (probabilities (N, ...), one label per sample, label blob (N, 1, 1, 1)):
loss = -sum log(max(p_label, 1e-20)) / N (1e-20: Caffe's kLOG_THRESHOLD); gradient
-w / N / max(p_label, 1e-20) at each label, 0 elsewhere.

InfogainLoss (scores, labels, H from infogain_loss_param.source or a third bottom): this Caffe
applies its own softmax along `axis` first (the scores are logits, as for SoftmaxWithLoss).
loss = -sum over samples not ignored of sum_l H[label, l] log(max(p_l, 1e-20)) / normaliser,
normalization VALID by default (`normalize` is refused, as Caffe refuses it); gradient
(p_l * sum_k H[label, k] - H[label, l]) * w / normaliser, 0 at ignored samples. An optional
second top is the softmax. H takes no gradient: a backward that must reach it is refused.

SigmoidCrossEntropyLoss (scores x and targets t of the same count): Caffe's stable form
-(x (t - [x >= 0]) - log(1 + exp(x - 2 x [x >= 0]))) summed over targets whose int(t) is not
ignore_label, over the normaliser (BATCH_SIZE by default, legacy `normalize`); gradient
(sigmoid(x) - t) * w / normaliser, 0 at ignored targets, with Caffe's sigmoid
0.5 tanh(x / 2) + 0.5.
"""
import torch

from deepmammo.caffe.formats.binaryproto import read_blob
from deepmammo.caffe.formats.blobproto import BlobError, blob_to_array
from deepmammo.caffe.layers.base import canonical_axis, count, register
from deepmammo.caffe.layers.loss import LossLayer, normaliser, normalization_mode
from deepmammo.caffe.layers.margin_loss import legacy_nchw
from deepmammo.caffe.proto import caffe_pb2 as pb

LOG_THRESHOLD = 1e-20      # Caffe's kLOG_THRESHOLD (a float)
_LOSS_FIELDS = {"ignore_label", "normalization", "normalize"}


def _clamped_log(p):
    return torch.log(torch.clamp(p, min=LOG_THRESHOLD))     # the threshold as a float32


@register
class MultinomialLogisticLoss(LossLayer):
    TYPE = "MultinomialLogisticLoss"
    EXACT_BOTTOMS = 2
    EXACT_TOPS = 1
    AUTOGRAD = False

    def reshape(self, bottom_shapes):
        self.check_first_axis(bottom_shapes)
        if legacy_nchw(bottom_shapes[1], self.error)[1:] != (1, 1, 1):
            raise self.error(f"the label bottom must have channels, height and width 1, has "
                             f"shape {tuple(bottom_shapes[1])}")
        return [()]

    def _picked(self, p, label):
        n = p.shape[0]
        flat = p.reshape(n, -1)
        labels = label.reshape(-1).to(torch.int64)
        bad = (labels < 0) | (labels >= flat.shape[1])
        if bool(bad.any()):
            raise self.error(f"label out of range [0, {flat.shape[1]}) "
                             f"(e.g. {int(labels[bad][0])})")
        return flat, labels

    def forward(self, bottoms, params):
        p, label = bottoms
        flat, labels = self._picked(p, label)
        picked = flat.gather(1, labels[:, None])
        return [(-_clamped_log(picked).sum() / p.shape[0]).reshape(())]

    def backward(self, tops, top_diffs, bottoms, params, need_bottom, need_param):
        self.refuse_backward(need_bottom)
        if not need_bottom[0]:
            return [None, None], []
        p, label = bottoms
        flat, labels = self._picked(p, label)
        picked = flat.gather(1, labels[:, None])
        scale = -top_diffs[0].reshape(()).to(p.dtype) / p.shape[0]
        g = torch.zeros_like(flat).scatter_(1, labels[:, None],
                                            scale / torch.clamp(picked, min=LOG_THRESHOLD))
        return [g.reshape(p.shape), None], []


@register
class InfogainLoss(LossLayer):
    TYPE = "InfogainLoss"
    FIELDS = {"infogain_loss_param": {"source", "axis"}, "loss_param": _LOSS_FIELDS}
    MIN_BOTTOMS = 2
    MAX_BOTTOMS = 3
    MIN_TOPS = 1
    MAX_TOPS = 2
    AUTOGRAD = False
    REFUSED_BOTTOMS = {1: "label", 2: "infogain"}

    def __init__(self, *args):
        super().__init__(*args)
        lp = self.layer_param.loss_param
        if lp.HasField("normalize"):
            raise self.error('loss_param.normalize is deprecated for this layer: use '
                             '"normalization"')
        self.ignore = lp.ignore_label if lp.HasField("ignore_label") else None
        self.norm = normalization_mode(lp, pb.LossParameter.VALID)
        self.H = None
        if len(self.layer_param.bottom) < 3:
            source = self.layer_param.infogain_loss_param.source
            if not self.layer_param.infogain_loss_param.HasField("source"):
                raise self.error("the infogain matrix source must be specified "
                                 "(infogain_loss_param.source) when H is not a third bottom")
            try:
                self.H = torch.from_numpy(blob_to_array(read_blob(source), where=source)
                                          .astype("float32").ravel())
            except (OSError, BlobError, ValueError) as exc:
                raise self.error(f"reading the infogain matrix: {exc}") from None

    def _dims(self, shape):
        axis = canonical_axis(self.layer_param.infogain_loss_param.axis, len(shape), self.where)
        return count(shape, 0, axis), shape[axis], count(shape, axis + 1)

    def reshape(self, bottom_shapes):
        self.check_first_axis(bottom_shapes)
        outer, labels, inner = self._dims(bottom_shapes[0])
        if outer * inner != count(bottom_shapes[1]):
            raise self.error(f"number of labels must match number of predictions: label count "
                             f"{count(bottom_shapes[1])}, predictions {outer} x {inner} "
                             f"(bottom {tuple(bottom_shapes[0])}, label values in "
                             f"{{0, ..., {labels - 1}}})")
        h_count = count(bottom_shapes[2]) if len(bottom_shapes) > 2 else self.H.numel()
        if h_count != labels * labels:
            raise self.error(f"H must be {labels}x{labels} ({labels * labels} values), "
                             f"has {h_count}")
        tops = [()]
        if len(self.layer_param.top) == 2:
            tops.append(tuple(bottom_shapes[0]))
        return tops

    def _parts(self, bottoms):
        """Probabilities (outer, L, inner), labels (outer, inner), the kept mask, H (L, L)."""
        x, label = bottoms[0], bottoms[1]
        outer, n_labels, inner = self._dims(tuple(x.shape))
        prob = torch.softmax(x.reshape(outer, n_labels, inner), dim=1)
        labels = label.reshape(outer, inner).to(torch.int64)
        keep = labels != self.ignore if self.ignore is not None else torch.ones_like(
            labels, dtype=torch.bool)
        bad = keep & ((labels < 0) | (labels >= n_labels))
        if bool(bad.any()):
            raise self.error(f"label out of range [0, {n_labels}) (e.g. {int(labels[bad][0])})")
        H = bottoms[2] if len(bottoms) > 2 else self.H.to(x.device)
        H = H.reshape(n_labels, n_labels).to(x.dtype)
        safe = torch.where(keep, labels, torch.zeros_like(labels))
        return prob, safe, keep, H

    def forward(self, bottoms, params):
        prob, safe, keep, H = self._parts(bottoms)
        rows = H[safe].permute(0, 2, 1)                  # (outer, L, inner): H[label, l]
        terms = (rows * _clamped_log(prob)).sum(dim=1)   # (outer, inner)
        loss = -(terms * keep.to(prob.dtype)).sum()
        norm = normaliser(self.norm, prob.shape[0], prob.shape[2], int(keep.sum()))
        tops = [(loss / norm).reshape(())]
        if len(self.layer_param.top) == 2:
            tops.append(prob.reshape(bottoms[0].shape))
        return tops

    def backward(self, tops, top_diffs, bottoms, params, need_bottom, need_param):
        self.refuse_backward(need_bottom)
        if not need_bottom[0]:
            return [None] * len(bottoms), []
        prob, safe, keep, H = self._parts(bottoms)
        row_sums = H.sum(dim=1)
        g = prob * row_sums[safe][:, None, :] - H[safe].permute(0, 2, 1)
        g = g * keep[:, None, :].to(g.dtype)
        norm = normaliser(self.norm, prob.shape[0], prob.shape[2], int(keep.sum()))
        g = g * (top_diffs[0].reshape(()).to(g.dtype) / norm)
        return [g.reshape(bottoms[0].shape)] + [None] * (len(bottoms) - 1), []


@register
class SigmoidCrossEntropyLoss(LossLayer):
    TYPE = "SigmoidCrossEntropyLoss"
    FIELDS = {"loss_param": _LOSS_FIELDS}
    EXACT_BOTTOMS = 2
    EXACT_TOPS = 1
    AUTOGRAD = False

    def __init__(self, *args):
        super().__init__(*args)
        lp = self.layer_param.loss_param
        self.ignore = lp.ignore_label if lp.HasField("ignore_label") else None
        self.norm = normalization_mode(lp, pb.LossParameter.BATCH_SIZE)

    def reshape(self, bottom_shapes):
        self.check_first_axis(bottom_shapes)
        if count(bottom_shapes[0]) != count(bottom_shapes[1]):
            raise self.error(f"the scores and targets must have the same count "
                             f"({tuple(bottom_shapes[0])} vs {tuple(bottom_shapes[1])})")
        return [()]

    def _keep(self, x, t):
        if self.ignore is None:
            return torch.ones_like(x, dtype=torch.bool)
        return t.reshape(x.shape).to(torch.int64) != self.ignore

    def _normaliser(self, x, keep):
        outer = x.shape[0]
        return normaliser(self.norm, outer, x.numel() // max(outer, 1), int(keep.sum()))

    def forward(self, bottoms, params):
        x, t = bottoms
        t = t.reshape(x.shape)
        keep = self._keep(x, t)
        pos = (x >= 0).to(x.dtype)
        terms = x * (t - pos) - torch.log(1 + torch.exp(x - 2 * x * pos))
        loss = -(terms * keep.to(x.dtype)).sum()
        return [(loss / self._normaliser(x, keep)).reshape(())]

    def backward(self, tops, top_diffs, bottoms, params, need_bottom, need_param):
        self.refuse_backward(need_bottom)
        if not need_bottom[0]:
            return [None, None], []
        x, t = bottoms
        t = t.reshape(x.shape)
        keep = self._keep(x, t)
        sigmoid = (0.5 * torch.tanh(0.5 * x.double()) + 0.5).to(x.dtype)
        g = (sigmoid - t) * keep.to(x.dtype)
        g = g * (top_diffs[0].reshape(()).to(x.dtype) / self._normaliser(x, keep))
        return [g, None], []
