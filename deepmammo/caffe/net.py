"""Net: a Caffe network built from a prototxt and run on torch, with pycaffe's interface.

Construction follows Caffe's Net::Init: include/exclude filtering by NetState, Split layers
where a top has several readers, in-place tops, parameter sharing by ParamSpec name, loss
weights, and Caffe's rules for which layers and blobs need backward (force_backward too).

pycaffe interface (_caffe.cpp and pycaffe.py): `Net(model, phase, weights=..., level=0,
stages=())` or `Net(model, weights, phase)`; `blobs`, `params`, `layers` (each with `type`,
`blobs`), `layer_dict`, `inputs`, `outputs` (sorted by name, as Caffe's set of available
blobs), `top_names`, `bottom_names`, `blob_loss_weights`, `forward(blobs=None, start=None,
end=None, **inputs)`, `backward(diffs=None, start=None, end=None, **top_diffs)`, `forward_all`,
`forward_backward_all`, `reshape()`, `clear_param_diffs()`, `copy_from(path)` (caffemodel or
HDF5), `save(path)`, `save_hdf5(path)`, `load_hdf5(path)`, `share_with(net)`,
`set_input_arrays(data, labels)` (a MemoryData first layer), `before_forward(fn)`,
`after_forward(fn)`, `before_backward(fn)`, `after_backward(fn)` (fn(layer index) around each
layer), and the underscored `_forward(start, end)`, `_backward(start, end)`, `_blobs`,
`_blob_names`, `_layer_names`, `_inputs`, `_outputs`, `_top_ids(i)`, `_bottom_ids(i)`,
`_blob_loss_weights`, `_set_input_arrays`, `_batch`.

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
import itertools
import logging
import os
import sys

import numpy as np
import torch

from deepmammo.caffe import layers as _layers
from deepmammo.caffe import mode
from deepmammo.caffe.blob import Blob
from deepmammo.caffe.formats import hdf5 as _hdf5
from deepmammo.caffe.formats.blobproto import array_to_blob, blob_shape, blob_to_array, shapes_match
from deepmammo.caffe.formats.caffemodel import read_caffemodel, write_caffemodel
from deepmammo.caffe.mode import current_device
from deepmammo.caffe.netstate import NetError, filter_net, insert_splits
from deepmammo.caffe.proto import caffe_pb2 as pb
from deepmammo.engine import check as check_engine

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


AUTOMATIC = "(automatic)"


def _with_automatic_tops(lp, taken):
    """A loss layer given fewer tops than it needs gets anonymous ones, as Caffe's
    AutoTopBlobs: named "(automatic)", summed into the loss, read by no other layer and not
    an output. Caffe may hold several blobs of that name; here the second is "(automatic)2"
    and so on (`taken`: the names in use). The net's NetParameter keeps the layer as written."""
    cls = _layers.REGISTRY.get(lp.type)
    if cls is None or not cls.IS_LOSS:
        return lp
    needed = max(cls.MIN_TOPS, cls.EXACT_TOPS or 0)
    if len(lp.top) >= needed:
        return lp
    copy = pb.LayerParameter()
    copy.CopyFrom(lp)
    for _ in range(len(lp.top), needed):
        name, n = AUTOMATIC, 1
        while name in taken:
            n += 1
            name = f"{AUTOMATIC}{n}"
        copy.top.append(name)
        taken.add(name)
    return copy


class Net:
    def __init__(self, model, *args, level=0, stages=(), device=None, source=None, **kwargs):
        """`source` names an in-memory NetParameter in errors (e.g. the file it came from)."""
        phase, weights = _parse_args(args, kwargs)
        if kwargs:
            raise TypeError(f"Net: unexpected arguments {sorted(kwargs)}")
        param, self.source = _read_model(model, source)
        param.state.phase = phase
        param.state.level = level
        param.state.stage.extend(stages or ())      # pycaffe passes None for none
        self.phase = phase
        self.device = torch.device(device) if device is not None else current_device()
        self.precision = mode.precision()
        check_engine("torch", self.device, self.precision)
        self._autocast = mode.autocast_dtype(self.precision)
        if self.device.type == "cuda":
            mode.apply_precision()
        else:
            mode.tune_cpu_allocator()
        self.name = param.name
        self.force_backward = param.force_backward
        self.layers = []
        self._callbacks = {"before_forward": [], "after_forward": [],
                           "before_backward": [], "after_backward": []}
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
        self._blob_map = collections.OrderedDict()
        self.layers, self._layer_names = [], []
        self._layer_bottoms, self._layer_tops = [], []       # per layer: blob names
        self._bottom_need_backward, self._layer_need_backward = [], []
        self._param_propagate_down, self._loss_weights = [], []
        self.learnable_params, self._param_owner = [], {}
        self._input_names = []
        blob_need_backward = {}
        available = set()
        writer = {}          # blob name -> type of the layer that last wrote it
        for lp in self.net_param.layer:
            lp = _with_automatic_tops(lp, set(self._blob_map))
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
                    if name in self._blob_map:
                        raise layer.error(f"top blob {name!r} produced by multiple sources")
                    self._blob_map[name] = Blob((), self.device, name=name)
                    blob_need_backward[name] = False
                    if lp.type == "Input":
                        self._input_names.append(name)
                tops.append(name)
                if not name.startswith(AUTOMATIC):
                    available.add(name)
            self._layer_bottoms.append(bottoms)
            self._layer_tops.append(tops)
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
                for j in range(len(self._layer_bottoms[i])):
                    self._bottom_need_backward[i][j] = (self._bottom_need_backward[i][j]
                                                        or layer.allow_force_backward(j))
                self._param_propagate_down[i] = [True] * len(layer.blobs)
        self._output_names = sorted(available)
        self._saved = [None] * len(self.layers)

    def _create_layer(self, lp):
        where = f"{self.source}: layer {lp.name!r}"
        cls = _layers.REGISTRY.get(lp.type)
        if cls is None:
            raise NetError(self._unknown_type(lp))
        return cls(lp, self.phase, self.device, where)

    def _unknown_type(self, lp):
        """One line: the file and line of the layer, and where such a layer can run."""
        from deepmammo.caffe.formats.prototxt import layer_line
        line = layer_line(self.source, lp.name) if os.path.isfile(self.source) else None
        where = f"{self.source}:{line}" if line else self.source
        return (f"{where}: layer {lp.name!r} has type {lp.type!r}, which is not a BVLC Caffe "
                f"layer type; a Caffe build that has this layer runs the net with "
                f"--engine caffe")

    def _setup_layer(self, i, layer):
        bottom_shapes = [self._blob_map[n].shape for n in self._layer_bottoms[i]]
        if getattr(layer, "WORKS_ON_BLOBS", False):   # Python layers: the net's own Blobs
            layer.bind(self, [self._blob_map[n] for n in self._layer_bottoms[i]],
                       [self._blob_map[n] for n in self._layer_tops[i]])
        if layer.type == "Input":
            for name, shape in zip(self._layer_tops[i], layer.initial_shapes()):
                self._blob_map[name].reshape(shape)
            return
        layer.setup(bottom_shapes)
        if len(layer.layer_param.blobs):
            self._copy_layer_blobs(layer, layer.layer_param.blobs, f"{layer.where} (prototxt)")
        self._reshape_tops(i, layer, bottom_shapes)

    def _reshape_tops(self, i, layer, bottom_shapes):
        top_shapes = layer.reshape(bottom_shapes)
        if top_shapes is None:
            return
        for name, shape in zip(self._layer_tops[i], top_shapes):
            blob = self._blob_map[name]
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
        for name, w in zip(self._layer_tops[i], self._loss_weights[i]):
            if w:
                self._blob_map[name].tdiff.fill_(w)

    def _loss_weight_of(self, name):
        for tops, weights in zip(self._layer_tops, self._loss_weights):
            for t, w in zip(tops, weights):
                if t == name and w:
                    return w
        return 0.0

    def _refill_loss_weight(self, name):
        w = self._loss_weight_of(name)
        if w:
            self._blob_map[name].tdiff.fill_(w)

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
            for j, name in enumerate(self._layer_tops[i]):
                if self._loss_weights[i][j] or name in under_loss:
                    contributes = True
                if name not in skip:
                    skip_down = False
                if contributes and not skip_down:
                    break
            if self._layer_need_backward[i] and skip_down:
                self._layer_need_backward[i] = False
                self._bottom_need_backward[i] = [False] * len(self._layer_bottoms[i])
            if not contributes:
                self._layer_need_backward[i] = False
            for j, name in enumerate(self._layer_bottoms[i]):
                if contributes:
                    under_loss.add(name)
                else:
                    self._bottom_need_backward[i][j] = False
                if not self._bottom_need_backward[i][j]:
                    skip.add(name)

    # ------------------------------------------------------------------ pycaffe views
    @property
    def blobs(self):
        """{blob name: Blob} in the order the net creates them (input to output)."""
        return self._blob_map

    @property
    def _blobs(self):
        return list(self._blob_map.values())

    @property
    def _blob_names(self):
        return list(self._blob_map)

    @property
    def params(self):
        """{layer name: its parameter Blobs}, for the layers that have any."""
        return collections.OrderedDict(
            (n, l.blobs) for n, l in zip(self._layer_names, self.layers) if l.blobs)

    @property
    def layer_dict(self):
        return collections.OrderedDict(zip(self._layer_names, self.layers))

    @property
    def inputs(self):
        """The Input layers' tops."""
        return list(self._input_names)

    @property
    def outputs(self):
        """The blobs no layer reads, sorted by name (Caffe keeps them in a std::set)."""
        return list(self._output_names)

    @property
    def _inputs(self):
        names = list(self._blob_map)
        return [names.index(n) for n in self._input_names]

    @property
    def _outputs(self):
        names = list(self._blob_map)
        return [names.index(n) for n in self._output_names]

    def _top_ids(self, i):
        """Blob indices of layer i's tops."""
        names = list(self._blob_map)
        return [names.index(n) for n in self._layer_tops[i]]

    def _bottom_ids(self, i):
        """Blob indices of layer i's bottoms."""
        names = list(self._blob_map)
        return [names.index(n) for n in self._layer_bottoms[i]]

    @property
    def top_names(self):
        return collections.OrderedDict(zip(self._layer_names,
                                           (list(t) for t in self._layer_tops)))

    @property
    def bottom_names(self):
        return collections.OrderedDict(zip(self._layer_names,
                                           (list(b) for b in self._layer_bottoms)))

    @property
    def _blob_loss_weights(self):
        """Per blob (in blob order), the loss weight of the top that made it (0: none)."""
        return [self._loss_weight_of(n) for n in self._blob_map]

    @property
    def blob_loss_weights(self):
        return collections.OrderedDict(zip(self._blob_map, self._blob_loss_weights))

    def layer_need_backward(self, i):
        return self._layer_need_backward[i]

    # ------------------------------------------------------------------ running
    def _layer_index(self, name, default):
        """The index of the layer called `name` (`default` for None); an unknown name is a
        ValueError, as pycaffe's list.index gives."""
        if name is None:
            return default
        try:
            return self._layer_names.index(name)
        except ValueError:
            raise ValueError(f"{self.source}: no layer named {name!r}") from None

    def forward_layer(self, i):
        """Run layer i forward (Caffe's Layer::Forward, reshaping first); returns its loss."""
        return _layer_loss(self._run_layer(i))

    def _run_layer(self, i):
        """Layer i forward; returns its loss terms [(loss_weight, 0-d tensor)], left on the
        device (reading them back would wait for the device)."""
        layer = self.layers[i]
        top_blobs = [self._blob_map[n] for n in self._layer_tops[i]]
        self._reshape_tops(i, layer, [self._blob_map[n].shape for n in self._layer_bottoms[i]])
        grad = torch.is_grad_enabled() and self._layer_need_backward[i]
        bottoms, params, tops = self._compute_layer(i, grad)
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

    def _compute_layer(self, i, grad):
        """Layer i's forward on its blobs' data, with a graph for backward when `grad`:
        (bottoms, params, tops) as tensors."""
        layer = self.layers[i]
        bottoms = []
        for name, need in zip(self._layer_bottoms[i], self._bottom_need_backward[i]):
            t = self._blob_map[name].read_data()
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
        return bottoms, params, tops

    def _replay(self, i, layer):
        """Backward with no forward before it (Caffe allows it: its backward reads whatever
        the blobs hold): the layer's graph is built again from the blobs' data, its tops left
        as they are. Not for layers whose forward draws random numbers or updates state."""
        if not layer.REPLAYABLE:
            raise RuntimeError(f"{layer.where}: backward before forward (its forward draws "
                               "random numbers or updates statistics, so it is not replayed)")
        with torch.enable_grad():
            return self._compute_layer(i, True)

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
            if not self._layer_bottoms[i]:
                return
            saved = self._replay(i, layer)
        bottoms, params, tops = saved
        if layer.BACKWARD_READS_BLOBS:
            bottoms = [self._blob_map[n].read_data() for n in self._layer_bottoms[i]]
            tops = [self._blob_map[n].read_data() for n in self._layer_tops[i]]
        top_diffs = [self._blob_map[n].read_diff() for n in self._layer_tops[i]]
        need_bottom = list(self._bottom_need_backward[i])
        need_param = [n and layer.PARAM_GRADS for n in self._param_propagate_down[i]]
        bottom_grads, param_grads = layer.backward(tops, top_diffs, bottoms, params,
                                                   need_bottom, need_param)
        with torch.no_grad():
            for name, g, need in zip(self._layer_bottoms[i], bottom_grads, need_bottom):
                if not need:
                    continue
                blob = self._blob_map[name]
                blob.tdiff = g if g is not None else torch.zeros(blob.shape, device=self.device)
            for blob, g in zip(layer.blobs, param_grads):
                if g is not None:
                    blob.tdiff.add_(g.reshape(blob.shape))

    def _forward_range(self, start, end):
        """Layers start..end (inclusive) forward, with the before/after_forward callbacks;
        returns the loss as a DeferredLoss."""
        loss = DeferredLoss()
        before, after = self._callbacks["before_forward"], self._callbacks["after_forward"]
        for i in range(start, end + 1):
            for run in before:
                run(i)
            terms = self._run_layer(i)
            if terms:
                loss.layers.append(terms)
            for run in after:
                run(i)
        return loss

    def _backward_range(self, start, end):
        """Layers start down to end (inclusive) backward, with the before/after_backward
        callbacks (called for every layer, as Caffe's, also where backward is skipped)."""
        before, after = self._callbacks["before_backward"], self._callbacks["after_backward"]
        for i in range(start, end - 1, -1):
            for run in before:
                run(i)
            self.backward_layer(i)
            for run in after:
                run(i)

    def _forward(self, start, end):
        """pycaffe's Net._forward (Caffe's ForwardFromTo): layers start..end by index;
        returns their loss."""
        return float(self._forward_range(start, end))

    def _backward(self, start, end):
        """pycaffe's Net._backward (Caffe's BackwardFromTo): layers start down to end."""
        self._backward_range(start, end)

    def forward(self, blobs=None, start=None, end=None, **kwargs):
        """pycaffe's forward: set the inputs given as keyword arrays (all of them, each of
        the blob's batch size), run the layers `start`..`end` (names, inclusive; default all),
        and return {name: data} of the outputs (of `end`'s tops when `end` is given) and of
        `blobs`."""
        blobs = list(blobs or [])
        start_i = self._layer_index(start, 0)
        if end is not None:
            end_i = self._layer_index(end, None)
            outputs = set(self._layer_tops[end_i] + blobs)
        else:
            end_i = len(self.layers) - 1
            outputs = set(self._output_names + blobs)
        if kwargs:
            if set(kwargs) != set(self._input_names):
                raise Exception("Input blob arguments do not match net inputs.")
            for name, value in kwargs.items():
                if value.shape[0] != self._blob_map[name].shape[0]:
                    raise Exception("Input is not batch sized")
                self._blob_map[name].data[...] = value
        loss = self._forward_range(start_i, end_i)
        if start is None and end is None:
            self._last_loss = loss
        return {name: self._blob_map[name].data for name in outputs}

    def backward(self, diffs=None, start=None, end=None, **kwargs):
        """pycaffe's backward: set the top diffs given as keyword arrays (all outputs), run
        the layers `start` down to `end` (names, inclusive; default all) and return
        {name: diff} of the inputs (of `end`'s bottoms when `end` is given) and of `diffs`."""
        diffs = list(diffs or [])
        start_i = self._layer_index(start, len(self.layers) - 1)
        if end is not None:
            end_i = self._layer_index(end, None)
            outputs = set(self._layer_bottoms[end_i] + diffs)
        else:
            end_i = 0
            outputs = set(self._input_names + diffs)
        if kwargs:
            if set(kwargs) != set(self._output_names):
                raise Exception("Top diff arguments do not match net outputs.")
            for name, value in kwargs.items():
                if value.shape[0] != self._blob_map[name].shape[0]:
                    raise Exception("Diff is not batch sized")
                self._blob_map[name].diff[...] = value
        self._backward_range(start_i, end_i)
        return {name: self._blob_map[name].diff for name in outputs}

    def forward_backward(self):
        """One forward and backward over the whole net; parameter diffs accumulate. Returns
        the loss (sum of loss_weight * loss tops)."""
        return float(self.forward_backward_deferred())

    def forward_backward_deferred(self):
        """forward_backward without waiting for the device: returns a DeferredLoss, read
        (float()) when the figure is needed, e.g. at the solver's display."""
        loss = self._forward_range(0, len(self.layers) - 1)
        self._last_loss = loss
        self._backward_range(len(self.layers) - 1, 0)
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

    def _batch(self, blobs):
        """pycaffe's batching: {name: array of any length} -> {name: batch} per batch of the
        net's batch size (the first blob's), the last one padded with zeros."""
        arrays = list(blobs.values())
        num = len(arrays[0])
        batch_size = next(iter(self._blob_map.values())).shape[0]
        remainder = num % batch_size
        for b in range(num // batch_size):
            i = b * batch_size
            yield {name: blobs[name][i:i + batch_size] for name in blobs}
        if remainder > 0:
            padded = {}
            for name in blobs:
                padding = np.zeros((batch_size - remainder,) + blobs[name].shape[1:])
                padded[name] = np.concatenate([blobs[name][-remainder:], padding])
            yield padded

    def forward_all(self, blobs=None, **kwargs):
        """pycaffe's forward_all: forward batch by batch over input arrays of any length;
        returns {name: array} of the outputs and `blobs` over all inputs (padding dropped)."""
        all_outs = {out: [] for out in set(self._output_names + (blobs or []))}
        for batch in self._batch(kwargs):
            outs = self.forward(blobs=blobs, **batch)
            for out, value in outs.items():
                all_outs[out].extend(value.copy())
        for out in all_outs:
            all_outs[out] = np.asarray(all_outs[out])
        pad = len(next(iter(all_outs.values()))) - len(next(iter(kwargs.values())))
        if pad:
            for out in all_outs:
                all_outs[out] = all_outs[out][:-pad]
        return all_outs

    def forward_backward_all(self, blobs=None, diffs=None, **kwargs):
        """pycaffe's forward_backward_all: forward (inputs from kwargs) and backward (output
        diffs from kwargs) batch by batch; returns ({name: data}, {name: diff}) over all
        batches, for the outputs and `blobs`, and the inputs and `diffs`."""
        all_outs = {out: [] for out in set(self._output_names + (blobs or []))}
        all_diffs = {diff: [] for diff in set(self._input_names + (diffs or []))}
        forward_batches = self._batch({in_: kwargs[in_] for in_ in self._input_names
                                       if in_ in kwargs})
        backward_batches = self._batch({out: kwargs[out] for out in self._output_names
                                        if out in kwargs})
        for fb, bb in itertools.zip_longest(forward_batches, backward_batches, fillvalue={}):
            batch_blobs = self.forward(blobs=blobs, **fb)
            batch_diffs = self.backward(diffs=diffs, **bb)
            for out, value in batch_blobs.items():
                all_outs[out].extend(value.copy())
            for diff, value in batch_diffs.items():
                all_diffs[diff].extend(value.copy())
        for out, diff in zip(all_outs, all_diffs):
            all_outs[out] = np.asarray(all_outs[out])
            all_diffs[diff] = np.asarray(all_diffs[diff])
        pad = len(next(iter(all_outs.values()))) - len(next(iter(kwargs.values())))
        if pad:
            for out, diff in zip(all_outs, all_diffs):
                all_outs[out] = all_outs[out][:-pad]
                all_diffs[diff] = all_diffs[diff][:-pad]
        return all_outs, all_diffs

    # ------------------------------------------------------------------ pycaffe hooks
    def _add_callback(self, when, run):
        # Caffe's Net::Callback objects have run(layer); pycaffe passes Python callables.
        self._callbacks[when].append(getattr(run, "run", run))

    def before_forward(self, run):
        """Call run(layer index) before each layer's forward."""
        self._add_callback("before_forward", run)

    def after_forward(self, run):
        """Call run(layer index) after each layer's forward."""
        self._add_callback("after_forward", run)

    def before_backward(self, run):
        """Call run(layer index) before each layer's backward."""
        self._add_callback("before_backward", run)

    def after_backward(self, run):
        """Call run(layer index) after each layer's backward (an NCCL object here reduces
        that layer's gradients: layer-wise reduce)."""
        self._add_callback("after_backward", run)

    def set_input_arrays(self, data, labels):
        """Give the first layer, a MemoryData layer, arrays to read batches from: data
        (N, C, H, W) float32 and labels (N,) or (N, 1, 1, 1), N a multiple of the batch."""
        if labels.ndim == 1:
            labels = np.ascontiguousarray(labels[:, np.newaxis, np.newaxis, np.newaxis])
        return self._set_input_arrays(data, labels)

    def _set_input_arrays(self, data, labels):
        layer = self.layers[0] if self.layers else None
        if layer is None or layer.type != "MemoryData":
            raise RuntimeError("set_input_arrays may only be called if the first layer is a "
                               "MemoryDataLayer")
        layer.reset(data, labels, data.shape[0])   # pycaffe's checks are the layer's

    def reshape(self):
        """Propagate the input blobs' shapes through the net (Caffe's Net::Reshape)."""
        for i, layer in enumerate(self.layers):
            self._reshape_tops(i, layer, [self._blob_map[n].shape for n in self._layer_bottoms[i]])

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
        """Load weights by layer name from a .caffemodel (new or V1 format) or from Caffe's
        HDF5 weights (told apart by content, as Caffe does); layers the net lacks are
        skipped; shapes must match (legacy 4-D shapes compare from the end)."""
        path = os.fspath(path)
        if _hdf5.is_hdf5(path):
            self.load_hdf5(path)
            return
        source = read_caffemodel(path)
        index = {n: i for i, n in enumerate(self._layer_names)}
        for lp in source.layer:
            if lp.name not in index:
                log.debug("%s: ignoring source layer %s", path, lp.name)
                continue
            self._copy_layer_blobs(self.layers[index[lp.name]], lp.blobs, path)

    def _owns(self, name, k, blob):
        """Whether blob k of layer `name` is its own, not shared from another layer."""
        return blob.owner_name == f"{name}/{k}"

    def load_hdf5(self, path):
        """Load weights from Caffe's HDF5 layout (/data/<layer>/<k>): layers by name, each
        of the layer's blobs present (a shared one may be missing), shapes exactly equal."""
        path = os.fspath(path)
        targets = [(name, [b.shape for b in layer.blobs],
                    [not self._owns(name, k, b) for k, b in enumerate(layer.blobs)])
                   for name, layer in zip(self._layer_names, self.layers)]
        try:
            loaded = _hdf5.read_layer_blobs(path, targets)
        except _hdf5.HDF5Error as exc:
            raise NetError(str(exc)) from None
        layers = self.layer_dict
        with torch.no_grad():
            for name, values in loaded:
                blobs = layers[name].blobs
                for k, arr in values.items():
                    blobs[k].tdata.copy_(torch.from_numpy(arr))

    def save_hdf5(self, path, write_diff=False):
        """Write the weights in Caffe's HDF5 layout (Net::ToHDF5): shared blobs once, at
        their owner; with `write_diff` also every blob's diff under /diff."""
        layers = []
        for name, layer in zip(self._layer_names, self.layers):
            layers.append((name, [(b.data if self._owns(name, k, b) else None,
                                   b.diff if write_diff else None)
                                  for k, b in enumerate(layer.blobs)]))
        _hdf5.write_weights(os.fspath(path), layers, write_diff)

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
        # is done during finalization, where a frozen thread could make close() wait for ever
        # (late in it, module globals such as `sys` may already be gone).
        try:
            if sys.is_finalizing():
                return
            self.close()
        except Exception:
            pass

    def __repr__(self):
        return f"<Net {self.name!r} phase={'TRAIN' if self.phase == TRAIN else 'TEST'} " \
               f"{len(self.layers)} layers on {self.device}>"
