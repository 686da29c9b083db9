"""The layer base class and registry.

A layer turns bottom tensors into top tensors with torch ops (`forward`), reports its top
shapes without computing (`reshape`), and owns its parameter Blobs (`blobs`). Backward is
autograd on the layer's own small graph, run layer by layer by the Net (so start/end, per-layer
timing, in-place tops and Caffe's assign-bottom-diff / accumulate-param-diff rules hold); a
layer whose gradient autograd would not give exactly overrides `backward`.

Fields: every field set in a layer's own `*_param` must be one the layer implements
(`FIELDS`), or the layer is refused. A `*_param` the layer type does not read (a ReLU with a
`convolution_param`, a Silence with a `transform_param`) is ignored with a warning: Caffe
ignores it silently, and the file must run as it runs in Caffe. `engine` is accepted and
ignored (one engine here).
"""
import logging
import math

import torch

from deepmammo.caffe.blob import Blob
from deepmammo.caffe.fillers import fill
from deepmammo.caffe.netstate import NetError
from deepmammo.caffe.proto import caffe_pb2 as pb

log = logging.getLogger(__name__)

REGISTRY = {}

# LayerParameter fields every layer may carry (the net, not the layer, interprets them).
COMMON_FIELDS = {"name", "type", "bottom", "top", "phase", "loss_weight", "param", "blobs",
                 "propagate_down", "include", "exclude"}


def register(cls):
    REGISTRY[cls.TYPE] = cls
    return cls


def canonical_axis(axis, ndim, where):
    if not -ndim <= axis < max(ndim, 1):
        raise NetError(f"{where}: axis {axis} out of range for a {ndim}-D blob")
    return axis % ndim if ndim else 0


class Layer:
    TYPE = None
    # {"<name>_param": {allowed subfields}}; these sub-messages may be set on this layer.
    FIELDS = {}
    EXACT_BOTTOMS = None
    MIN_BOTTOMS = 0
    MAX_BOTTOMS = None
    EXACT_TOPS = None
    MIN_TOPS = 0
    MAX_TOPS = None
    IS_LOSS = False
    # False for layers whose blobs are statistics (BatchNorm): backward leaves their diffs alone.
    PARAM_GRADS = True
    # False for layers whose `backward` needs no autograd graph (forward then runs without one).
    AUTOGRAD = True
    # True for layers whose backward reads its bottom and top data as the blobs hold them when
    # backward runs, as Caffe's does: an in-place layer's bottom then holds its top, and a later
    # in-place layer may have overwritten either. The Net passes those instead of the forward's.
    BACKWARD_READS_BLOBS = False
    # False for layers whose forward draws random numbers or updates state (Dropout,
    # BatchNorm, data layers): a backward with no forward before it cannot rebuild their graph.
    REPLAYABLE = True

    def __init__(self, param, phase, device, where):
        self.layer_param = param
        self.name = param.name
        self.type = param.type
        self.phase = param.phase if param.HasField("phase") else phase
        self.device = device
        self.where = where          # "<file>: layer '<name>'" for messages
        self.blobs = []             # parameter Blobs (pycaffe's layer.blobs)
        self.check_fields()
        self.check_counts()

    # ---- construction ----
    def error(self, message):
        return NetError(f"{self.where} ({self.type}): {message}")

    def check_fields(self):
        allowed = COMMON_FIELDS | set(self.FIELDS)
        for field, value in self.layer_param.ListFields():
            if field.name not in allowed:
                log.warning("%s (%s): `%s` is not read by this layer type; ignored, as Caffe "
                            "ignores it", self.where, self.type, field.name)
                continue
            sub = self.FIELDS.get(field.name)
            if sub is None or field.message_type is None:
                continue
            for subfield, _ in value.ListFields():
                if subfield.name not in sub and subfield.name != "engine":
                    raise self.error(f"`{field.name}.{subfield.name}` is not supported")

    def check_counts(self):
        nb, nt = len(self.layer_param.bottom), len(self.layer_param.top)
        for n, exact, lo, hi, what in (
                (nb, self.EXACT_BOTTOMS, self.MIN_BOTTOMS, self.MAX_BOTTOMS, "bottom"),
                (nt, self.EXACT_TOPS, self.MIN_TOPS, self.MAX_TOPS, "top")):
            if exact is not None and n != exact:
                raise self.error(f"needs exactly {exact} {what} blob(s), has {n}")
            if n < lo or (hi is not None and n > hi):
                raise self.error(f"needs {lo}..{hi if hi is not None else 'any'} {what} "
                                 f"blob(s), has {n}")

    def in_place(self):
        """Whether a top is its bottom at the same index (Caffe's in-place computation)."""
        lp = self.layer_param
        return any(j < len(lp.bottom) and name == lp.bottom[j] for j, name in enumerate(lp.top))

    def refuse_in_place(self, why="this layer type does not allow in-place computation"):
        if self.in_place():
            raise self.error(f"top and bottom are the same blob: {why}")

    def setup(self, bottom_shapes):
        """Create parameter blobs (first reshape only). Default: none."""

    def make_blob(self, shape, filler, index):
        blob = Blob(shape, self.device, name=f"{self.name}/{index}")
        if len(self.layer_param.blobs):
            # Blobs given in the prototxt replace the fillers: Caffe then skips them, and so
            # draws nothing from the random stream.
            values = torch.zeros(tuple(int(d) for d in shape))
        else:
            values = fill(filler, shape, where=f"{self.where} blob {index}")
        blob.tdata = values.to(self.device)
        return blob

    def make_weight_and_bias(self, param, weight_shape):
        """Blobs of a Convolution or InnerProduct layer: weight, then bias when bias_term.
        An unset filler is Caffe's constant 0 (not PyTorch's default init)."""
        wf = param.weight_filler if param.HasField("weight_filler") else default_filler()
        self.blobs = [self.make_blob(weight_shape, wf, 0)]
        if param.bias_term:
            bf = param.bias_filler if param.HasField("bias_filler") else default_filler()
            self.blobs.append(self.make_blob((self.num_output,), bf, 1))

    def reshape(self, bottom_shapes):
        """Top shapes for these bottom shapes (raise a NetError naming the layer if invalid)."""
        raise NotImplementedError

    # ---- computation ----
    def forward(self, bottoms, params):
        """Top tensors from bottom tensors; `params` are this layer's parameter tensors."""
        raise NotImplementedError

    def backward(self, tops, top_diffs, bottoms, params, need_bottom, need_param):
        """Gradients (bottom_grads, param_grads) by autograd on this layer's forward graph;
        None where not needed. Layers with their own rule override this."""
        outs, grads = [], []
        for t, d in zip(tops, top_diffs):
            if t is not None and t.requires_grad:
                outs.append(t)
                grads.append(d)
        wanted = [b for b, n in zip(bottoms, need_bottom) if n]
        wanted += [p for p, n in zip(params, need_param) if n]
        if not outs or not wanted:
            return [None] * len(bottoms), [None] * len(params)
        got = list(torch.autograd.grad(outs, wanted, grads, retain_graph=True,
                                       allow_unused=True))
        bottom_grads = [got.pop(0) if n else None for n in need_bottom]
        param_grads = [got.pop(0) if n else None for n in need_param]
        return bottom_grads, param_grads

    def allow_force_backward(self, bottom_index):
        return True

    def default_loss_weights(self):
        return [1.0] if self.IS_LOSS else []

    def __repr__(self):
        return f"<{self.type} layer {self.name!r}>"


def count(shape, start=0, end=None):
    return math.prod(shape[start:end])


def default_filler(kind="constant", value=0.0):
    return pb.FillerParameter(type=kind, value=value)
