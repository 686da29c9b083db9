"""Net: a Caffe network built from a prototxt and run on torch, with pycaffe's interface.

Construction follows Caffe's Net::Init: include/exclude filtering by NetState, Split layers
where a top has several readers, in-place tops, parameter sharing by ParamSpec name, loss
weights, and Caffe's rules for which layers and blobs need backward (force_backward too).

pycaffe interface: `Net(model, phase, weights=..., level=0, stages=())` or
`Net(model, weights, phase)`; `blobs`, `params`, `layers`, `layer_dict`, `_layer_names`,
`_blob_names`, `inputs`, `outputs` (sorted by name, as Caffe's set of available blobs),
`top_names`, `bottom_names`, `blob_loss_weights`, `forward(blobs=None, start=None, end=None,
**inputs)`, `backward(diffs=None, start=None, end=None, **top_diffs)`, `forward_all`,
`reshape()`, `copy_from(path)`, `save(path)`.

Contract used by the solver (deepmammo.caffe.solver):
- `net.learnable_params`: list of Blob, each once (a blob shared by ParamSpec name appears at
  its owner), in layer order then param index. Each has `lr_mult`, `decay_mult` (from its
  ParamSpec, default 1; a sharing layer may set what the owner left unset), `owner_name`
  ('layer/index'), and torch tensors `tdata` / `tdiff` on `net.device`. Fetch `tdata`/`tdiff`
  again after numpy code touched `.data`/`.diff` (on CUDA the property re-syncs).
- `net.clear_param_diffs()` zeroes every learnable diff.
- `net.forward_backward()` -> float loss (sum of loss_weight * loss tops); forward, then
  backward that ACCUMULATES (+=) parameter gradients into `tdiff` (Caffe, for iter_size).
  Bottom diffs are assigned, as in Caffe.
- `net.forward_backward_deferred()`: the same without waiting for the device; returns a
  DeferredLoss that becomes the float on float() (or resolve_losses() for many at once).
- `net.forward()` returns the dict of outputs; every blob is readable as `net.blobs[n].data`;
  `net.last_loss` holds the loss of the last full forward.
- `net.share_trained_params(train_net)`: layers with the same name share parameter data
  (same tensors) with the train net (Caffe's ShareTrainedLayersWith; diffs stay separate).
- `net.phase`, `net.name`, `net.device` (torch.device), `net.to_net_param(with_diff=False)`.

Where this differs from BVLC Caffe (on purpose):
- Each forward gives computed blobs new tensors: an array from an earlier `forward()` keeps
  its values instead of being overwritten (input blobs keep their storage, as in Caffe).
- force_backward through an Accuracy layer: Caffe aborts (NOT_IMPLEMENTED); here Accuracy
  does not take part in backward. SoftmaxWithLoss with a second top and two loss_weight values
  is accepted (Caffe's internal Softmax rejects the count).
- Pooling with pad 0 and stride > kernel keeps Caffe's empty last window (-FLT_MAX, mask -1);
  Caffe's backward then writes through index -1, ours sends those windows nothing.
- Speed on the CPU (process-wide, see mode.tune_cpu_allocator and caffe/__init__.py): glibc
  keeps freed memory (no page faults per layer), and OpenMP threads wait passively.
"""
import collections
import logging
import os
import sys

import numpy as np
import torch

from deepmammo.caffe import layers as _layers
from deepmammo.caffe import mode
from deepmammo.caffe.blob import Blob
from deepmammo.caffe.formats.blobproto import array_to_blob, blob_shape, blob_to_array, shapes_match
from deepmammo.caffe.formats.caffemodel import read_caffemodel, write_caffemodel
from deepmammo.caffe.mode import current_device
from deepmammo.caffe.netstate import NetError, filter_net, insert_splits
from deepmammo.caffe.proto import caffe_pb2 as pb

log = logging.getLogger(__name__)

TRAIN, TEST = pb.TRAIN, pb.TEST


def _read_model(model, source=None):
    if isinstance(model, pb.NetParameter):
        param = pb.NetParameter()
        param.CopyFrom(model)
        from deepmammo.caffe.formats.upgrade import upgrade_net
        source = source or "<NetParameter>"
        return upgrade_net(param, source), source
    from deepmammo.caffe.formats.prototxt import read_net
    return read_net(model), os.fspath(model)


def _parse_args(args, kwargs):
    """pycaffe's two call forms: (phase[, weights=]) and (weights, phase)."""
    weights = kwargs.pop("weights", None)
    phase = kwargs.pop("phase", None)
    args = list(args)
    if args and isinstance(args[0], (str, os.PathLike)):
        weights = args.pop(0)
    if args:
        phase = args.pop(0)
    if args:
        raise TypeError(f"Net: unexpected positional arguments {args}")
    if phase is None:
        raise TypeError("Net: the phase (caffe.TRAIN or caffe.TEST) is required")
    if phase not in (TRAIN, TEST):
        raise ValueError(f"Net: phase must be caffe.TRAIN (0) or caffe.TEST (1), not {phase!r}")
    return phase, weights


def _layer_loss(terms):
    """A layer's loss as Python adds it: 0.0 + w1 * s1 + w2 * s2 ... in doubles."""
    loss = 0.0
    for w, t in terms:
        loss += w * float(t)
    return loss


class DeferredLoss:
    """A net's loss kept as device tensors until read: per layer, its (loss_weight, 0-d
    tensor) terms. float() reads all terms back at once and sums them in the order and
    precision the immediate computation used, so the value is the same to the last bit.
    resolve_losses() reads many at once (the solver's losses between two displays)."""

    __slots__ = ("layers", "_value")

    def __init__(self):
        self.layers = []
        self._value = None

    def _tensors(self):
        return [t for terms in self.layers for _, t in terms]

    def _settle(self, values):
        """The value from the terms' numbers `values` (an iterator, in _tensors order)."""
        loss = 0.0
        for terms in self.layers:
            loss += _layer_loss([(w, next(values)) for w, _ in terms])
        self._value = loss
        self.layers = []           # the tensors are no longer needed

    def __float__(self):
        if self._value is None:
            resolve_losses([self])
        return self._value


def resolve_losses(losses):
    """Settle DeferredLoss objects (others pass through) with one read-back from the device;
    returns their float values."""
    pending = [x for x in losses if isinstance(x, DeferredLoss) and x._value is None]
    tensors = [t for x in pending for t in x._tensors()]
    if tensors:
        devices = {t.device for t in tensors}
        if len(devices) == 1:
            values = iter(torch.stack([t.reshape(()) for t in tensors]).tolist())
        else:
            values = iter([float(t) for t in tensors])
        for x in pending:
            x._settle(values)
    else:
        for x in pending:
            x._settle(iter(()))
    return [float(x) for x in losses]


def _allocation_failure(exc):
    """torch's message when `exc` is a failed allocation (sizes too large), else None."""
    if isinstance(exc, MemoryError):
        return "out of memory"
    if isinstance(exc, RuntimeError):
        text = str(exc)
        if any(k in text for k in ("allocate", "overflow", "out of memory", "too large")):
            return text.splitlines()[0][-200:]
    return None


class Net:
    def __init__(self, model, *args, level=0, stages=(), device=None, source=None, **kwargs):
        """`source` names an in-memory NetParameter in errors (e.g. the file it came from)."""
        phase, weights = _parse_args(args, kwargs)
        if kwargs:
            raise TypeError(f"Net: unexpected arguments {sorted(kwargs)}")
        param, self.source = _read_model(model, source)
        param.state.phase = phase
        param.state.level = level
        param.state.stage.extend(stages)
        self.phase = phase
        self.device = torch.device(device) if device is not None else current_device()
        self.precision = mode.precision()
        mode.check_precision(self.precision, self.device)
        self._autocast = mode.autocast_dtype(self.precision)
        if self.device.type == "cuda":
            mode.apply_precision()
        else:
            mode.tune_cpu_allocator()
        self.name = param.name
        self.force_backward = param.force_backward
        self.layers = []
        try:
            self._build(param)
            self.last_loss = 0.0
            if weights is not None:
                self.copy_from(weights)
        except BaseException as exc:
            self.close()  # Data layers built before the failure stop prefetching
            too_big = _allocation_failure(exc)
            if too_big:   # sizes in the prototxt beyond this machine: say so, no traceback
                raise NetError(f"{self.source}: the net's blobs do not fit in memory "
                               f"({too_big}); check the sizes in the prototxt") from None
            raise

    # ------------------------------------------------------------------ construction
    def _build(self, param):
        filtered = filter_net(param, param.state, self.source)
        self.net_param = insert_splits(filtered, self.source)
        self._blobs = collections.OrderedDict()
        self.layers, self._layer_names = [], []
        self._bottom_ids, self._top_ids = [], []       # per layer: blob names
        self._bottom_need_backward, self._layer_need_backward = [], []
        self._param_propagate_down, self._loss_weights = [], []
        self.learnable_params, self._param_owner = [], {}
        self._input_names = []
        blob_need_backward = {}
        available = set()
        writer = {}          # blob name -> type of the layer that last wrote it
        for lp in self.net_param.layer:
            layer = self._create_layer(lp)
            if (lp.type == "ReLU" and len(lp.bottom) == 1 and list(lp.top) == list(lp.bottom)
                    and writer.get(lp.bottom[0]) in ("Convolution", "InnerProduct")):
                # Nothing else reads that tensor in backward: overwrite it as Caffe does.
                layer.overwrite_bottom = True
            for name in lp.top:
                writer[name] = lp.type
            i = len(self.layers)
            self.layers.append(layer)
            self._layer_names.append(lp.name)
            if len(lp.propagate_down) not in (0, len(lp.bottom)):
                raise layer.error("propagate_down must be given 0 times or once per bottom")
            need_backward = False
            bottoms, bnb = [], []
            for j, name in enumerate(lp.bottom):
                if name not in available:
                    raise layer.error(f"unknown bottom blob {name!r} (bottom index {j})")
                available.discard(name)
                bottoms.append(name)
                need = blob_need_backward[name]
                if len(lp.propagate_down):
                    need = lp.propagate_down[j]
                bnb.append(need)
                need_backward |= blob_need_backward[name]
            tops = []
            for j, name in enumerate(lp.top):
                in_place = j < len(lp.bottom) and lp.bottom[j] == name
                if not in_place:
                    if name in self._blobs:
                        raise layer.error(f"top blob {name!r} produced by multiple sources")
                    self._blobs[name] = Blob((), self.device, name=name)
                    blob_need_backward[name] = False
                    if lp.type == "Input":
                        self._input_names.append(name)
                tops.append(name)
                available.add(name)
            self._bottom_ids.append(bottoms)
            self._top_ids.append(tops)
            self._bottom_need_backward.append(bnb)
            self._setup_layer(i, layer)
            self._set_loss_weights(i, layer)
            specs = list(lp.param)
            if len(specs) > len(layer.blobs):
                raise layer.error(f"{len(specs)} param specs for {len(layer.blobs)} blobs")
            ppd = []
            for k in range(len(layer.blobs)):
                lr = specs[k].lr_mult if k < len(specs) else 1.0
                ppd.append(lr != 0)
                need_backward |= lr != 0
            self._param_propagate_down.append(ppd)
            for k in range(len(layer.blobs)):
                self._append_param(i, layer, k)
            self._layer_need_backward.append(need_backward)
            if need_backward:
                for name in tops:
                    blob_need_backward[name] = True
        self._prune_backward()
        if self.force_backward:
            for i, layer in enumerate(self.layers):
                self._layer_need_backward[i] = True
                for j in range(len(self._bottom_ids[i])):
                    self._bottom_need_backward[i][j] = (self._bottom_need_backward[i][j]
                                                        or layer.allow_force_backward(j))
                self._param_propagate_down[i] = [True] * len(layer.blobs)
        self._output_names = sorted(available)
        self._saved = [None] * len(self.layers)

    def _create_layer(self, lp):
        where = f"{self.source}: layer {lp.name!r}"
        cls = _layers.REGISTRY.get(lp.type)
        if cls is None:
            raise NetError(f"{where}: unsupported layer type {lp.type!r} (supported: "
                           f"{', '.join(sorted(_layers.REGISTRY))})")
        return cls(lp, self.phase, self.device, where)

    def _setup_layer(self, i, layer):
        bottom_shapes = [self._blobs[n].shape for n in self._bottom_ids[i]]
        if getattr(layer, "WORKS_ON_BLOBS", False):   # Python layers: the net's own Blobs
            layer.bind(self, [self._blobs[n] for n in self._bottom_ids[i]],
                       [self._blobs[n] for n in self._top_ids[i]])
        if layer.type == "Input":
            for name, shape in zip(self._top_ids[i], layer.initial_shapes()):
                self._blobs[name].reshape(shape)
            return
        layer.setup(bottom_shapes)
        if len(layer.layer_param.blobs):
            self._copy_layer_blobs(layer, layer.layer_param.blobs, f"{layer.where} (prototxt)")
        self._reshape_tops(i, layer, bottom_shapes)

    def _reshape_tops(self, i, layer, bottom_shapes):
        top_shapes = layer.reshape(bottom_shapes)
        if top_shapes is None:
            return
        for name, shape in zip(self._top_ids[i], top_shapes):
            blob = self._blobs[name]
            if blob.shape != tuple(shape):
                blob.reshape(shape)
                self._refill_loss_weight(name)

    def _set_loss_weights(self, i, layer):
        lp = layer.layer_param
        weights = list(lp.loss_weight) or layer.default_loss_weights()
        if weights and len(weights) != len(lp.top):
            raise layer.error(f"loss_weight must be unspecified or given once per top blob "
                              f"({len(lp.top)} tops, {len(weights)} loss_weight values)")
        self._loss_weights.append(weights or [0.0] * len(lp.top))
        for name, w in zip(self._top_ids[i], self._loss_weights[i]):
            if w:
                self._blobs[name].tdiff.fill_(w)

    def _loss_weight_of(self, name):
        for tops, weights in zip(self._top_ids, self._loss_weights):
            for t, w in zip(tops, weights):
                if t == name and w:
                    return w
        return 0.0

    def _refill_loss_weight(self, name):
        w = self._loss_weight_of(name)
        if w:
            self._blobs[name].tdiff.fill_(w)

    def _append_param(self, i, layer, k):
        lp = layer.layer_param
        spec = lp.param[k] if k < len(lp.param) else pb.ParamSpec()
        blob = layer.blobs[k]
        pname = spec.name
        if not pname or pname not in self._param_owner:
            blob.owner_name = f"{lp.name}/{k}"
            if layer.type != "BatchNorm":
                blob.lr_mult = spec.lr_mult
            blob.decay_mult = spec.decay_mult
            blob._has_lr, blob._has_decay = spec.HasField("lr_mult"), spec.HasField("decay_mult")
            if pname:
                self._param_owner[pname] = (i, k)
            self.learnable_params.append(blob)
            return
        oi, ok = self._param_owner[pname]
        owner = self.layers[oi].blobs[ok]
        if spec.share_mode == pb.ParamSpec.PERMISSIVE:
            if owner.count != blob.count:
                raise layer.error(f"cannot share param {pname!r} owned by layer "
                                  f"{self._layer_names[oi]!r}: count mismatch (owner shape "
                                  f"{owner.shape}, this layer expects {blob.shape})")
        elif owner.shape != blob.shape:
            raise layer.error(f"cannot share param {pname!r} owned by layer "
                              f"{self._layer_names[oi]!r}: shape mismatch (owner shape "
                              f"{owner.shape}, this layer expects {blob.shape})")
        if spec.HasField("lr_mult"):
            if owner._has_lr and owner.lr_mult != spec.lr_mult:
                raise layer.error(f"shared param {pname!r} has mismatched lr_mult")
            owner.lr_mult, owner._has_lr = spec.lr_mult, True
        if spec.HasField("decay_mult"):
            if owner._has_decay and owner.decay_mult != spec.decay_mult:
                raise layer.error(f"shared param {pname!r} has mismatched decay_mult")
            owner.decay_mult, owner._has_decay = spec.decay_mult, True
        if owner.shape != blob.shape:
            raise layer.error(f"sharing param {pname!r} between different shapes "
                              f"({owner.shape} and {blob.shape}) is not supported")
        layer.blobs[k] = owner

    def _prune_backward(self):
        """Caffe's pass from the top: layers that feed no loss, or whose every top needs no
        backward, skip backward."""
        under_loss, skip = set(), set()
        for i in range(len(self.layers) - 1, -1, -1):
            contributes, skip_down = False, True
            for j, name in enumerate(self._top_ids[i]):
                if self._loss_weights[i][j] or name in under_loss:
                    contributes = True
                if name not in skip:
                    skip_down = False
                if contributes and not skip_down:
                    break
            if self._layer_need_backward[i] and skip_down:
                self._layer_need_backward[i] = False
                self._bottom_need_backward[i] = [False] * len(self._bottom_ids[i])
            if not contributes:
                self._layer_need_backward[i] = False
            for j, name in enumerate(self._bottom_ids[i]):
                if contributes:
                    under_loss.add(name)
                else:
                    self._bottom_need_backward[i][j] = False
                if not self._bottom_need_backward[i][j]:
                    skip.add(name)

    # ------------------------------------------------------------------ pycaffe views
    @property
    def blobs(self):
        return self._blobs

    @property
    def _blob_names(self):
        return list(self._blobs)

    @property
    def params(self):
        return collections.OrderedDict(
            (n, l.blobs) for n, l in zip(self._layer_names, self.layers) if l.blobs)

    @property
    def layer_dict(self):
        return collections.OrderedDict(zip(self._layer_names, self.layers))

    @property
    def inputs(self):
        return list(self._input_names)

    @property
    def outputs(self):
        return list(self._output_names)

    @property
    def _inputs(self):
        names = list(self._blobs)
        return [names.index(n) for n in self._input_names]

    @property
    def _outputs(self):
        names = list(self._blobs)
        return [names.index(n) for n in self._output_names]

    @property
    def top_names(self):
        return collections.OrderedDict(zip(self._layer_names, (list(t) for t in self._top_ids)))

    @property
    def bottom_names(self):
        return collections.OrderedDict(zip(self._layer_names,
                                           (list(b) for b in self._bottom_ids)))

    @property
    def blob_loss_weights(self):
        return collections.OrderedDict((n, self._loss_weight_of(n)) for n in self._blobs)

    def layer_need_backward(self, i):
        return self._layer_need_backward[i]

    # ------------------------------------------------------------------ running
    def _layer_index(self, name, default):
        if name is None:
            return default
        try:
            return self._layer_names.index(name)
        except ValueError:
            raise KeyError(f"{self.source}: no layer named {name!r}") from None

    def forward_layer(self, i):
        """Run layer i forward (Caffe's Layer::Forward, reshaping first); returns its loss."""
        return _layer_loss(self._run_layer(i))

    def _run_layer(self, i):
        """Layer i forward; returns its loss terms [(loss_weight, 0-d tensor)], left on the
        device (reading them back would wait for the device)."""
        layer = self.layers[i]
        bottom_blobs = [self._blobs[n] for n in self._bottom_ids[i]]
        top_blobs = [self._blobs[n] for n in self._top_ids[i]]
        self._reshape_tops(i, layer, [b.shape for b in bottom_blobs])
        grad = torch.is_grad_enabled() and self._layer_need_backward[i]
        bottoms = []
        for b, need in zip(bottom_blobs, self._bottom_need_backward[i]):
            t = b.read_data()
            bottoms.append(t.detach().requires_grad_() if grad and need else t)
        params = []
        for b, need in zip(layer.blobs, self._param_propagate_down[i]):
            t = b.read_data()
            if grad and need and layer.PARAM_GRADS:
                t = t.detach().requires_grad_()
            params.append(t)
        with torch.set_grad_enabled(grad and layer.AUTOGRAD):
            if self._autocast is None:
                tops = layer.forward(bottoms, params)
            else:
                tops = self._forward_autocast(layer, bottoms, params)
        if tops is None:          # Input: its tops are what the user put there
            self._saved[i] = None
            return []
        self._saved[i] = (bottoms, params, tops) if grad else None
        terms = []
        for blob, t, w in zip(top_blobs, tops, self._loss_weights[i]):
            if blob.shape != tuple(t.shape):
                blob.reshape(tuple(t.shape))
                self._refill_loss_weight(blob.name)
            blob.tdata = t
            if w:
                terms.append((w, t.detach().sum()))
        return terms

    def _forward_autocast(self, layer, bottoms, params):
        """layer.forward under torch.autocast (precision bf16). The tops go back to float32
        inside the graph, so blobs, diffs and every layer's inputs stay float32 and backward
        runs the cast's gradient (float32 -> the layer's dtype) before the layer's own."""
        with torch.autocast(self.device.type, dtype=self._autocast):
            tops = layer.forward(bottoms, params)
        if tops is None:
            return None
        return [t.float() if t is not None and t.is_floating_point() and t.dtype != torch.float32
                else t for t in tops]

    def backward_layer(self, i):
        """Run layer i backward: assign bottom diffs, accumulate parameter diffs."""
        if not self._layer_need_backward[i]:
            return
        layer = self.layers[i]
        saved = self._saved[i]
        if saved is None and getattr(layer, "WORKS_ON_BLOBS", False):
            saved = (None, None, None)     # Python layers: backward before forward, as Caffe
        if saved is None:
            if not self._bottom_ids[i]:
                return
            raise RuntimeError(f"{layer.where}: backward before forward (or forward ran "
                               "without gradients)")
        bottoms, params, tops = saved
        top_diffs = [self._blobs[n].read_diff() for n in self._top_ids[i]]
        need_bottom = list(self._bottom_need_backward[i])
        need_param = [n and layer.PARAM_GRADS for n in self._param_propagate_down[i]]
        bottom_grads, param_grads = layer.backward(tops, top_diffs, bottoms, params,
                                                   need_bottom, need_param)
        with torch.no_grad():
            for name, g, need in zip(self._bottom_ids[i], bottom_grads, need_bottom):
                if not need:
                    continue
                blob = self._blobs[name]
                blob.tdiff = g if g is not None else torch.zeros(blob.shape, device=self.device)
            for blob, g in zip(layer.blobs, param_grads):
                if g is not None:
                    blob.tdiff.add_(g.reshape(blob.shape))

    def _forward(self, start, end):
        loss = DeferredLoss()
        for i in range(start, end + 1):
            terms = self._run_layer(i)
            if terms:
                loss.layers.append(terms)
        return loss

    def _backward(self, start, end):
        for i in range(start, end - 1, -1):
            self.backward_layer(i)

    def forward(self, blobs=None, start=None, end=None, **kwargs):
        """pycaffe's forward: set inputs from kwargs, run [start, end], return the outputs
        (or the tops of `end`) plus `blobs`, as numpy arrays."""
        blobs = list(blobs or [])
        start_i = self._layer_index(start, 0)
        end_i = self._layer_index(end, len(self.layers) - 1)
        outputs = set((self._top_ids[end_i] if end is not None else self._output_names) + blobs)
        if kwargs:
            if set(kwargs) != set(self._input_names):
                raise Exception("Input blob arguments do not match net inputs.")
            for name, value in kwargs.items():
                if value.shape[0] != self._blobs[name].shape[0]:
                    raise Exception("Input is not batch sized")
                self._blobs[name].data[...] = value
        loss = self._forward(start_i, end_i)
        if start is None and end is None:
            self._last_loss = loss
        return {name: self._blobs[name].data for name in outputs}

    def backward(self, diffs=None, start=None, end=None, **kwargs):
        """pycaffe's backward: set top diffs from kwargs, run [start, end] backward, return the
        diffs of the inputs (or of `end`'s bottoms) plus `diffs`."""
        diffs = list(diffs or [])
        start_i = self._layer_index(start, len(self.layers) - 1)
        end_i = self._layer_index(end, 0)
        outputs = set((self._bottom_ids[end_i] if end is not None else self._input_names) + diffs)
        if kwargs:
            if set(kwargs) != set(self._output_names):
                raise Exception("Top diff arguments do not match net outputs.")
            for name, value in kwargs.items():
                if value.shape[0] != self._blobs[name].shape[0]:
                    raise Exception("Diff is not batch sized")
                self._blobs[name].diff[...] = value
        self._backward(start_i, end_i)
        return {name: self._blobs[name].diff for name in outputs}

    def forward_backward(self):
        """One forward and backward over the whole net; parameter diffs accumulate. Returns
        the loss (sum of loss_weight * loss tops)."""
        return float(self.forward_backward_deferred())

    def forward_backward_deferred(self):
        """forward_backward without waiting for the device: returns a DeferredLoss, read
        (float()) when the figure is needed, e.g. at the solver's display."""
        loss = self._forward(0, len(self.layers) - 1)
        self._last_loss = loss
        self._backward(len(self.layers) - 1, 0)
        return loss

    @property
    def last_loss(self):
        """The loss of the last full forward, as a float (reading it waits for the device)."""
        return float(self._last_loss)

    @last_loss.setter
    def last_loss(self, value):
        self._last_loss = value

    def clear_param_diffs(self):
        with torch.no_grad():
            torch._foreach_zero_([blob.tdiff for blob in self.learnable_params])

    def forward_all(self, blobs=None, **kwargs):
        """pycaffe's forward_all: run batch by batch over inputs of any length."""
        outs = {name: [] for name in set(self._output_names + list(blobs or []))}
        names = list(kwargs)
        total = len(kwargs[names[0]]) if names else 0
        batch = self._blobs[self._input_names[0]].shape[0] if self._input_names else 1
        for start in range(0, total, batch):
            chunk = {}
            for name in names:
                part = np.asarray(kwargs[name][start:start + batch])
                if len(part) < batch:
                    pad = np.zeros((batch - len(part),) + part.shape[1:], dtype=part.dtype)
                    part = np.concatenate([part, pad])
                chunk[name] = part
            out = self.forward(blobs=blobs, **chunk)
            for name, value in out.items():
                outs[name].extend(value.copy()[:min(batch, total - start)])
        return {name: np.asarray(v) for name, v in outs.items()}

    def reshape(self):
        """Propagate the input blobs' shapes through the net (Caffe's Net::Reshape)."""
        for i, layer in enumerate(self.layers):
            self._reshape_tops(i, layer, [self._blobs[n].shape for n in self._bottom_ids[i]])

    # ------------------------------------------------------------------ weights
    def _copy_layer_blobs(self, layer, blob_protos, source):
        if len(blob_protos) != len(layer.blobs):
            raise NetError(f"{source}: incompatible number of blobs for layer {layer.name!r} "
                           f"(source {len(blob_protos)}, target {len(layer.blobs)})")
        for k, (proto, blob) in enumerate(zip(blob_protos, layer.blobs)):
            if not shapes_match(blob.shape, proto):
                raise NetError(f"{source}: cannot copy param {k} weights from layer "
                               f"{layer.name!r}; shape mismatch. Source param shape is "
                               f"{blob_shape(proto)}; target param shape is {blob.shape}")
            values = blob_to_array(proto, where=f"{source}: layer {layer.name!r} blob {k}")
            with torch.no_grad():
                blob.tdata.copy_(torch.from_numpy(values.reshape(blob.shape)))

    def copy_from(self, path):
        """Load weights by layer name from a .caffemodel (new or V1 format); layers the net
        lacks are skipped; shapes must match (legacy 4-D shapes compare from the end)."""
        path = os.fspath(path)
        if path.endswith(".h5"):
            raise NetError(f"{path}: HDF5 weights are not supported; use a .caffemodel")
        source = read_caffemodel(path)
        index = {n: i for i, n in enumerate(self._layer_names)}
        for lp in source.layer:
            if lp.name not in index:
                log.debug("%s: ignoring source layer %s", path, lp.name)
                continue
            self._copy_layer_blobs(self.layers[index[lp.name]], lp.blobs, path)

    def to_net_param(self, with_diff=False):
        """The net as a NetParameter with each layer's blobs (what .caffemodel files hold)."""
        out = pb.NetParameter()
        out.name = self.name
        for lp, layer in zip(self.net_param.layer, self.layers):
            entry = out.layer.add()
            entry.CopyFrom(lp)
            del entry.blobs[:]
            if not entry.HasField("phase"):
                entry.phase = layer.phase
            for blob in layer.blobs:
                entry.blobs.append(array_to_blob(blob.data, blob.diff if with_diff else None))
        return out

    def save(self, path):
        """Write the weights as a new-format .caffemodel (real Caffe loads it)."""
        write_caffemodel(self.to_net_param(), os.fspath(path))

    def share_trained_params(self, other):
        """Share parameter data with `other`'s layers of the same name (test net <- train)."""
        index = {n: i for i, n in enumerate(other._layer_names)}
        for name, layer in zip(self._layer_names, self.layers):
            if name not in index:
                continue
            source = other.layers[index[name]]
            if len(source.blobs) != len(layer.blobs):
                raise NetError(f"layer {name!r}: {len(layer.blobs)} blobs here, "
                               f"{len(source.blobs)} in net {other.name!r}")
            for k, (mine, theirs) in enumerate(zip(layer.blobs, source.blobs)):
                if mine.shape != theirs.shape:
                    raise NetError(f"layer {name!r} param {k}: shape {mine.shape} here, "
                                   f"{theirs.shape} in net {other.name!r}")
                mine._data = theirs._data

    ShareTrainedLayersWith = share_with = share_trained_params

    # ------------------------------------------------------------------ lifetime
    def close(self):
        """Stop Data-layer prefetch threads."""
        for layer in getattr(self, "layers", ()):
            if hasattr(layer, "close"):
                layer.close()

    def __del__(self):
        # The prefetch threads hold their layers, not the net: dropping the net stops them.
        # At interpreter exit the Data layer's atexit hook has already stopped them; nothing
        # is done during finalization, where a frozen thread could make close() wait for ever.
        if sys.is_finalizing():
            return
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self):
        return f"<Net {self.name!r} phase={'TRAIN' if self.phase == TRAIN else 'TEST'} " \
               f"{len(self.layers)} layers on {self.device}>"
