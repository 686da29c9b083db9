"""Upgrade old nets and solvers to the current format, as Caffe's upgrade_proto does.

Nets pass through the same steps, in the same order, as in Caffe's UpgradeNetAsNeeded:

1. V0 (`layers { layer { type: "conv" ... } }`, lower-case type names and flat fields such as
   `kernelsize`, `batchsize`, `meanfile`): padding layers are folded into the convolution or
   pooling layer they feed, then each layer becomes a V1 layer (enum type, `*_param` messages);
2. transformation fields (scale, mean_file, crop_size, mirror) kept in the `*_param` of V1
   DATA, IMAGE_DATA and WINDOW_DATA layers move to `transform_param`;
3. V1 (`layers { type: CONVOLUTION blobs_lr: 1 ... }`) becomes `layer { type: "Convolution"
   param { lr_mult: 1 } ... }`;
4. the deprecated net fields `input` with `input_shape` or `input_dim` become an Input layer
   in front (a bare `input`, as old caffemodels hold, is dropped);
5. BatchNorm layers with three `param` specs (the old definition, whose statistics blobs had
   learning rates) get lr_mult and decay_mult 0: the statistics are never learned.

What Caffe drops with an error line and then reads on without ("continuing anyway"), is
dropped here too, with a warning naming the file, the layer and the field: a V0 setting on a
layer type that has no such setting ("Unknown parameter ... for layer type ..."), a V0 `layer`
inside a V1 layer, and input shapes beyond the net's inputs. What Caffe stops on (an unknown
V0 type, a bottom no layer produces, a padding layer feeding anything but one convolution or
pooling, `layer` and `layers` in one net, too few input shapes) raises an UpgradeError naming
the file. Solvers: the `solver_type` enum becomes the `type` string (UpgradeSolverType).
"""
import logging

from deepmammo.caffe.proto import caffe_pb2 as pb

log = logging.getLogger(__name__)


class UpgradeError(ValueError):
    pass


# ------------------------------------------------------------------------------------ V0 -> V1

# V0's lower-case type names and the V1 enum each became (a V0 net has no other types; its
# "padding" layers are folded away before this table is read).
V0_TYPES = {
    "accuracy": "ACCURACY", "bnll": "BNLL", "concat": "CONCAT", "conv": "CONVOLUTION",
    "data": "DATA", "dropout": "DROPOUT", "euclidean_loss": "EUCLIDEAN_LOSS",
    "flatten": "FLATTEN", "hdf5_data": "HDF5_DATA", "hdf5_output": "HDF5_OUTPUT",
    "im2col": "IM2COL", "images": "IMAGE_DATA", "infogain_loss": "INFOGAIN_LOSS",
    "innerproduct": "INNER_PRODUCT", "lrn": "LRN",
    "multinomial_logistic_loss": "MULTINOMIAL_LOGISTIC_LOSS", "pool": "POOLING", "relu": "RELU",
    "sigmoid": "SIGMOID", "softmax": "SOFTMAX", "softmax_loss": "SOFTMAX_LOSS", "split": "SPLIT",
    "tanh": "TANH", "window_data": "WINDOW_DATA",
}

# V0 field -> {V0 type: (V1 message field, field inside it)}. The key None: any type (the
# transformation fields, which every V0 layer could carry). Repeated targets (convolution's
# pad, kernel_size and stride) get the value appended.
_V0_FIELDS = {
    "num_output": {"conv": ("convolution_param", "num_output"),
                   "innerproduct": ("inner_product_param", "num_output")},
    "biasterm": {"conv": ("convolution_param", "bias_term"),
                 "innerproduct": ("inner_product_param", "bias_term")},
    "weight_filler": {"conv": ("convolution_param", "weight_filler"),
                      "innerproduct": ("inner_product_param", "weight_filler")},
    "bias_filler": {"conv": ("convolution_param", "bias_filler"),
                    "innerproduct": ("inner_product_param", "bias_filler")},
    "pad": {"conv": ("convolution_param", "pad"), "pool": ("pooling_param", "pad")},
    "kernelsize": {"conv": ("convolution_param", "kernel_size"),
                   "pool": ("pooling_param", "kernel_size")},
    "group": {"conv": ("convolution_param", "group")},
    "stride": {"conv": ("convolution_param", "stride"), "pool": ("pooling_param", "stride")},
    "pool": {"pool": ("pooling_param", "pool")},
    "dropout_ratio": {"dropout": ("dropout_param", "dropout_ratio")},
    "local_size": {"lrn": ("lrn_param", "local_size")},
    "alpha": {"lrn": ("lrn_param", "alpha")},
    "beta": {"lrn": ("lrn_param", "beta")},
    "k": {"lrn": ("lrn_param", "k")},
    "source": {"data": ("data_param", "source"), "hdf5_data": ("hdf5_data_param", "source"),
               "images": ("image_data_param", "source"),
               "window_data": ("window_data_param", "source"),
               "infogain_loss": ("infogain_loss_param", "source")},
    "scale": {None: ("transform_param", "scale")},
    "meanfile": {None: ("transform_param", "mean_file")},
    "batchsize": {"data": ("data_param", "batch_size"),
                  "hdf5_data": ("hdf5_data_param", "batch_size"),
                  "images": ("image_data_param", "batch_size"),
                  "window_data": ("window_data_param", "batch_size")},
    "cropsize": {None: ("transform_param", "crop_size")},
    "mirror": {None: ("transform_param", "mirror")},
    "rand_skip": {"data": ("data_param", "rand_skip"),
                  "images": ("image_data_param", "rand_skip")},
    "shuffle_images": {"images": ("image_data_param", "shuffle")},
    "new_height": {"images": ("image_data_param", "new_height")},
    "new_width": {"images": ("image_data_param", "new_width")},
    "concat_dim": {"concat": ("concat_param", "concat_dim")},
    "det_fg_threshold": {"window_data": ("window_data_param", "fg_threshold")},
    "det_bg_threshold": {"window_data": ("window_data_param", "bg_threshold")},
    "det_fg_fraction": {"window_data": ("window_data_param", "fg_fraction")},
    "det_context_pad": {"window_data": ("window_data_param", "context_pad")},
    "det_crop_mode": {"window_data": ("window_data_param", "crop_mode")},
    "hdf5_output_param": {"hdf5_output": ("hdf5_output_param", None)},
}


def net_needs_v0_upgrade(net):
    return any(entry.HasField("layer") for entry in net.layers)


def _fold_padding_layers(net, source):
    """V0 `padding` layers removed, their pad moved into the conv or pool layer they feed
    (whose bottom becomes the padding layer's bottom). Returns the new list of V1 entries."""
    last_top = {name: None for name in net.input}   # blob -> index of the layer writing it
    kept = []
    for i, entry in enumerate(net.layers):
        v0 = entry.layer
        if v0.type != "padding":
            kept.append(pb.V1LayerParameter())
            kept[-1].CopyFrom(entry)
        for j, blob in enumerate(entry.bottom):
            if blob not in last_top:
                raise UpgradeError(f"{source}: V0 layer {v0.name!r} reads blob {blob!r}, "
                                   "which no earlier layer or net input produces")
            top_index = last_top[blob]
            if top_index is None or net.layers[top_index].layer.type != "padding":
                continue
            pad_entry = net.layers[top_index]
            if v0.type not in ("conv", "pool"):
                raise UpgradeError(f"{source}: V0 padding layer {pad_entry.layer.name!r} feeds "
                                   f"layer {v0.name!r} of type {v0.type!r}; only a conv or "
                                   "pool layer can take a padding layer's output")
            if len(entry.bottom) != 1 or len(pad_entry.bottom) != 1 or len(pad_entry.top) != 1:
                raise UpgradeError(f"{source}: V0 padding layer {pad_entry.layer.name!r} and "
                                   f"the layer {v0.name!r} it feeds must each have one bottom "
                                   "(and the padding layer one top)")
            kept[-1].layer.pad = pad_entry.layer.pad
            kept[-1].bottom[j] = pad_entry.bottom[0]
        for blob in entry.top:
            last_top[blob] = i
    return kept


def _v0_to_v1_layer(entry, source):
    """One V0 layer (a V1 entry holding `layer`) as a V1 layer."""
    v1 = pb.V1LayerParameter()
    v1.bottom.extend(entry.bottom)
    v1.top.extend(entry.top)
    if not entry.HasField("layer"):
        return v1
    v0 = entry.layer
    if v0.HasField("name"):
        v1.name = v0.name
    kind = v0.type
    if v0.HasField("type"):
        if kind not in V0_TYPES:
            raise UpgradeError(f"{source}: V0 layer {v0.name!r} has unknown type {kind!r}")
        v1.type = pb.V1LayerParameter.LayerType.Value(V0_TYPES[kind])
    v1.blobs.extend(v0.blobs)
    v1.blobs_lr.extend(v0.blobs_lr)
    v1.weight_decay.extend(v0.weight_decay)
    for field, targets in _V0_FIELDS.items():
        if not v0.HasField(field):
            continue
        target = targets.get(None, targets.get(kind))
        if target is None:
            log.warning("%s: V0 layer %r: field %s does not apply to layer type %r; dropped, "
                        "as Caffe's upgrade drops it", source, v0.name, field, kind)
            continue
        message_name, name = target
        message = getattr(v1, message_name)
        value = getattr(v0, field)
        if name is None:
            message.CopyFrom(value)
        elif field == "pool":
            # V0's and PoolingParameter's PoolMethod enums share names and numbers.
            message.pool = pb.PoolingParameter.PoolMethod.Value(
                pb.V0LayerParameter.PoolMethod.Name(value))
        else:
            descriptor = message.DESCRIPTOR.fields_by_name[name]
            if descriptor.message_type is not None:
                getattr(message, name).CopyFrom(value)
            elif _is_repeated(descriptor):
                getattr(message, name).append(value)
            else:
                setattr(message, name, value)
    return v1


def _is_repeated(descriptor):
    if hasattr(descriptor, "is_repeated"):
        return descriptor.is_repeated
    return descriptor.label == descriptor.LABEL_REPEATED


def _upgrade_v0(net, source):
    """UpgradeV0Net: only the name, inputs, input_dim and force_backward of a V0 net are kept
    beside its layers."""
    entries = _fold_padding_layers(net, source)
    layers = [_v0_to_v1_layer(entry, source) for entry in entries]
    kept = pb.NetParameter()
    if net.HasField("name"):
        kept.name = net.name
    kept.input.extend(net.input)
    kept.input_dim.extend(net.input_dim)
    if net.HasField("force_backward"):
        kept.force_backward = net.force_backward
    kept.layers.extend(layers)
    net.CopyFrom(kept)


# ------------------------------------------------------------------- V1 data transformation

_V1_DATA_PARAMS = {"DATA": "data_param", "IMAGE_DATA": "image_data_param",
                   "WINDOW_DATA": "window_data_param"}
_TRANSFORM_FIELDS = ("scale", "mean_file", "crop_size", "mirror")


def net_needs_data_upgrade(net):
    for entry in net.layers:
        field = _V1_DATA_PARAMS.get(pb.V1LayerParameter.LayerType.Name(entry.type))
        if field and any(getattr(entry, field).HasField(f) for f in _TRANSFORM_FIELDS):
            return True
    return False


def _upgrade_data_transformation(net):
    for entry in net.layers:
        field = _V1_DATA_PARAMS.get(pb.V1LayerParameter.LayerType.Name(entry.type))
        if not field:
            continue
        param = getattr(entry, field)
        for name in _TRANSFORM_FIELDS:
            if param.HasField(name):
                setattr(entry.transform_param, name, getattr(param, name))
                param.ClearField(name)


# ------------------------------------------------------------------------------------ V1 -> V2

# V1 enum name -> current type string.
V1_TYPE_NAMES = {
    "NONE": "", "ABSVAL": "AbsVal", "ACCURACY": "Accuracy", "ARGMAX": "ArgMax", "BNLL": "BNLL",
    "CONCAT": "Concat", "CONTRASTIVE_LOSS": "ContrastiveLoss", "CONVOLUTION": "Convolution",
    "DATA": "Data", "DECONVOLUTION": "Deconvolution", "DROPOUT": "Dropout",
    "DUMMY_DATA": "DummyData", "EUCLIDEAN_LOSS": "EuclideanLoss", "ELTWISE": "Eltwise",
    "EXP": "Exp", "FLATTEN": "Flatten", "HDF5_DATA": "HDF5Data", "HDF5_OUTPUT": "HDF5Output",
    "HINGE_LOSS": "HingeLoss", "IM2COL": "Im2col", "IMAGE_DATA": "ImageData",
    "INFOGAIN_LOSS": "InfogainLoss", "INNER_PRODUCT": "InnerProduct", "LRN": "LRN",
    "MEMORY_DATA": "MemoryData", "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN", "POOLING": "Pooling", "POWER": "Power", "RELU": "ReLU", "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss", "SILENCE": "Silence",
    "SOFTMAX": "Softmax", "SOFTMAX_LOSS": "SoftmaxWithLoss", "SPLIT": "Split", "SLICE": "Slice",
    "TANH": "TanH", "WINDOW_DATA": "WindowData", "THRESHOLD": "Threshold",
}

# Every per-layer message of a V1 layer (its `*_param` fields, transform_param and loss_param
# among them) exists under the same name in LayerParameter and is copied whole.
_SHARED_PARAM_FIELDS = tuple(
    f.name for f in pb.V1LayerParameter.DESCRIPTOR.fields
    if f.name.endswith("_param") and f.name in pb.LayerParameter.DESCRIPTOR.fields_by_name)


def upgrade_v1_layer(v1, source="<net>"):
    """One V1LayerParameter as a LayerParameter."""
    if v1.HasField("layer"):
        log.warning("%s: V1 layer %r holds a V0 `layer { ... }` entry; dropped, as Caffe's "
                    "upgrade drops it", source, v1.name)
    layer = pb.LayerParameter()
    layer.bottom.extend(v1.bottom)
    layer.top.extend(v1.top)
    if v1.HasField("name"):
        layer.name = v1.name
    layer.include.extend(v1.include)
    layer.exclude.extend(v1.exclude)
    if v1.HasField("type"):
        layer.type = V1_TYPE_NAMES[pb.V1LayerParameter.LayerType.Name(v1.type)]
    layer.blobs.extend(v1.blobs)
    # Shared-parameter names, share modes, learning-rate and decay multipliers become
    # ParamSpecs, as many as the longest of the four lists.
    n_specs = max(len(v1.param), len(v1.blob_share_mode), len(v1.blobs_lr), len(v1.weight_decay))
    for i in range(n_specs):
        spec = layer.param.add()
        if i < len(v1.param):
            spec.name = v1.param[i]
        if i < len(v1.blob_share_mode):
            # V1's DimCheckMode and ParamSpec's share names and numbers.
            spec.share_mode = v1.blob_share_mode[i]
        if i < len(v1.blobs_lr):
            spec.lr_mult = v1.blobs_lr[i]
        if i < len(v1.weight_decay):
            spec.decay_mult = v1.weight_decay[i]
    layer.loss_weight.extend(v1.loss_weight)
    for field in _SHARED_PARAM_FIELDS:
        if v1.HasField(field):
            getattr(layer, field).CopyFrom(getattr(v1, field))
    return layer


def _upgrade_v1(net, source):
    if len(net.layer):
        raise UpgradeError(f"{source}: the net has both `layer` entries (the current format) "
                           "and `layers` entries (the V1 format); write all in the `layer` "
                           "format")
    upgraded = [upgrade_v1_layer(v1, source) for v1 in net.layers]
    del net.layers[:]
    net.layer.extend(upgraded)


# ------------------------------------------------------------------------------ input fields

def _upgrade_input_fields(net, source):
    """`input` + `input_shape`/`input_dim` become an Input layer in front; a bare `input`
    (an old caffemodel's) is dropped."""
    if not len(net.input):
        return
    if len(net.input_shape) or len(net.input_dim):
        layer = pb.LayerParameter(name="input", type="Input")
        layer.top.extend(net.input)
        # Caffe takes one shape (or 4 input_dim values) per input, in order, and reads no
        # further: extra ones are dropped, too few would have it read past the end.
        n = len(net.input)
        if len(net.input_shape):
            if len(net.input_shape) < n:
                raise UpgradeError(f"{source}: {n} inputs but {len(net.input_shape)} "
                                   "input_shape entries")
            if len(net.input_shape) > n:
                log.warning("%s: %d inputs but %d input_shape entries; the extra ones are "
                            "dropped, as Caffe's upgrade drops them", source, n,
                            len(net.input_shape))
            layer.input_param.shape.extend(net.input_shape[:n])
        else:
            if len(net.input_dim) < 4 * n:
                raise UpgradeError(f"{source}: input_dim needs 4 values per input "
                                   f"({n} inputs, {len(net.input_dim)} values)")
            if len(net.input_dim) > 4 * n:
                log.warning("%s: %d inputs but %d input_dim values; the values past the "
                            "first %d are dropped, as Caffe's upgrade drops them", source, n,
                            len(net.input_dim), 4 * n)
            for i in range(n):
                layer.input_param.shape.add().dim.extend(net.input_dim[4 * i:4 * i + 4])
        existing = list(net.layer)
        del net.layer[:]
        net.layer.extend([layer] + existing)
    del net.input[:], net.input_shape[:], net.input_dim[:]


# -------------------------------------------------------------------------------- batch norm

def net_needs_batch_norm_upgrade(net):
    return any(layer.type == "BatchNorm" and len(layer.param) == 3 for layer in net.layer)


def _upgrade_batch_norm(net):
    """Old nets gave BatchNorm's three statistics blobs ParamSpecs; they are not learned
    (Caffe's UpgradeNetBatchNorm sets their lr_mult and decay_mult to 0)."""
    for layer in net.layer:
        if layer.type == "BatchNorm" and len(layer.param) == 3:
            for spec in layer.param:
                spec.lr_mult = 0
                spec.decay_mult = 0


# ------------------------------------------------------------------------------------- nets

def net_needs_upgrade(net):
    """NetNeedsUpgrade: whether any of the steps would change `net`."""
    return (net_needs_v0_upgrade(net) or len(net.layers) > 0 or net_needs_data_upgrade(net)
            or len(net.input) > 0 or net_needs_batch_norm_upgrade(net))


def upgrade_net(net, source="<net>"):
    """Upgrade `net` (a NetParameter) in place to the current format and return it."""
    if net_needs_v0_upgrade(net):
        _upgrade_v0(net, source)
    if net_needs_data_upgrade(net):
        _upgrade_data_transformation(net)
    if len(net.layers):
        _upgrade_v1(net, source)
    _upgrade_input_fields(net, source)
    _upgrade_batch_norm(net)
    return net


# ----------------------------------------------------------------------------------- solvers

SOLVER_TYPE_NAMES = {"SGD": "SGD", "NESTEROV": "Nesterov", "ADAGRAD": "AdaGrad",
                     "RMSPROP": "RMSProp", "ADADELTA": "AdaDelta", "ADAM": "Adam"}


def solver_needs_upgrade(solver):
    return solver.HasField("solver_type")


def upgrade_solver(solver, source="<solver>"):
    """The legacy `solver_type` enum becomes the `type` string, in place; returns `solver`."""
    if not solver.HasField("solver_type"):
        return solver
    if solver.HasField("type"):
        raise UpgradeError(f"{source}: give the solver type by `type` or by the legacy "
                           "`solver_type`, not both")
    solver.type = SOLVER_TYPE_NAMES[pb.SolverParameter.SolverType.Name(solver.solver_type)]
    solver.ClearField("solver_type")
    return solver
