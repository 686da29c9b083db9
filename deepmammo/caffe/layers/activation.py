"""ReLU (negative_slope) and Dropout (TRAIN: x * mask * scale with Caffe's mask and scale;
TEST: identity)."""
import numpy as np
import torch
import torch.nn.functional as F

from deepmammo.caffe import rng
from deepmammo.caffe.layers.base import Layer, register
from deepmammo.caffe.proto import caffe_pb2 as pb


@register
class ReLU(Layer):
    """Caffe's backward reads the bottom blob as it is when backward runs: in place, that is
    the top (and whatever later in-place layers wrote over it), so a negative slope or a later
    sign change gives Caffe's numbers only this way."""
    TYPE = "ReLU"
    FIELDS = {"relu_param": {"negative_slope"}}
    EXACT_BOTTOMS = 1
    EXACT_TOPS = 1
    AUTOGRAD = False
    BACKWARD_READS_BLOBS = True
    # Set by the Net for an in-place ReLU whose bottom tensor no other layer's backward reads
    # (it comes straight from a Convolution or InnerProduct): then it overwrites it, as Caffe
    # does, and no new blob-sized tensor is made per layer.
    overwrite_bottom = False

    def reshape(self, bottom_shapes):
        return [bottom_shapes[0]]

    def forward(self, bottoms, params):
        slope = self.layer_param.relu_param.negative_slope
        x = bottoms[0]
        if self.overwrite_bottom:
            y = x.detach()
            if slope == 0:
                return [y.clamp_min_(0)]
            return [y.copy_(torch.where(y > 0, y, y * slope))]
        if slope == 0:
            return [F.relu(x)]
        # Caffe: x > 0 ? x : slope * x (also for slopes outside (0, 1)).
        return [torch.where(x > 0, x, x * slope)]

    def backward(self, tops, top_diffs, bottoms, params, need_bottom, need_param):
        if not need_bottom[0]:
            return [None], []
        slope = self.layer_param.relu_param.negative_slope
        x, dy = bottoms[0], top_diffs[0]
        with torch.no_grad():
            if slope == 0:
                # the fused kernel: 8x faster than masked_fill_ with a boolean mask
                return [torch.ops.aten.threshold_backward(dy, x, 0.0)], []
            return [dy * torch.where(x > 0, 1.0, slope).to(dy.dtype)], []


@register
class Dropout(Layer):
    REPLAYABLE = False      # the mask is drawn in forward
    TYPE = "Dropout"
    FIELDS = {"dropout_param": {"dropout_ratio"}}
    EXACT_BOTTOMS = 1
    EXACT_TOPS = 1

    def __init__(self, *args):
        super().__init__(*args)
        self.ratio = self.layer_param.dropout_param.dropout_ratio
        if not 0.0 <= self.ratio < 1.0:
            raise self.error(f"dropout_ratio must be in [0, 1), got {self.ratio}")
        # Caffe keeps the ratio as a float, and computes in double: keep probability
        # 1 - ratio, scale float(1 / (1 - ratio)).
        threshold = float(np.float32(self.ratio))
        self.keep_probability = 1.0 - threshold
        self.scale = float(np.float32(1.0 / (1.0 - threshold)))

    def reshape(self, bottom_shapes):
        return [bottom_shapes[0]]

    def forward(self, bottoms, params):
        x = bottoms[0]
        if self.phase != pb.TRAIN:
            # A distinct graph node, so an in-place top still gets its own diff rule.
            return [x.view_as(x) if x.requires_grad else x]
        # Caffe's mask: one Bernoulli draw per element from the thread's stream, made on the
        # CPU on every device so that a GPU run drops the units a CPU run drops.
        keep = rng.stream().bernoulli(x.numel(), self.keep_probability)
        mask = torch.from_numpy(keep.reshape(tuple(x.shape)))
        if x.device.type == "cuda":
            # From pinned memory the copy is queued behind the GPU's work instead of waiting
            # for it, so drawing the next masks overlaps the GPU's computing.
            mask = mask.pin_memory().to(x.device, non_blocking=True)
        elif x.device.type != "cpu":
            mask = mask.to(x.device)
        self.mask = mask
        return [x * mask.to(x.dtype) * self.scale]
