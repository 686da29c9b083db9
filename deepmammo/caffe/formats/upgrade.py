"""Upgrade old nets to the current format in memory, as Caffe's upgrade_proto does:
V1 `layers` (enum types, blobs_lr/weight_decay) to `layer`, the deprecated net `input` fields
to an Input layer, and Data-layer transformation fields to transform_param."""
from deepmammo.caffe.proto import caffe_pb2 as pb

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

# Per-layer parameter messages present in both V1LayerParameter and LayerParameter.
_SHARED_PARAM_FIELDS = tuple(
    f.name for f in pb.V1LayerParameter.DESCRIPTOR.fields
    if f.name.endswith("_param") and f.name in pb.LayerParameter.DESCRIPTOR.fields_by_name)


class UpgradeError(ValueError):
    pass


def upgrade_v1_layer(v1, source="<net>"):
    """One V1LayerParameter as a LayerParameter."""
    layer = pb.LayerParameter()
    layer.name = v1.name
    layer.bottom.extend(v1.bottom)
    layer.top.extend(v1.top)
    if v1.HasField("type"):
        enum_name = pb.V1LayerParameter.LayerType.Name(v1.type)
        layer.type = V1_TYPE_NAMES[enum_name]
    layer.include.extend(v1.include)
    layer.exclude.extend(v1.exclude)
    layer.loss_weight.extend(v1.loss_weight)
    layer.blobs.extend(v1.blobs)
    # Learning-rate and decay multipliers, and shared-parameter names, become ParamSpecs.
    n_specs = max(len(v1.param), len(v1.blobs_lr), len(v1.weight_decay), len(v1.blob_share_mode))
    for i in range(n_specs):
        spec = layer.param.add()
        if i < len(v1.param):
            spec.name = v1.param[i]
        if i < len(v1.blob_share_mode):
            spec.share_mode = v1.blob_share_mode[i]
        if i < len(v1.blobs_lr):
            spec.lr_mult = v1.blobs_lr[i]
        if i < len(v1.weight_decay):
            spec.decay_mult = v1.weight_decay[i]
    for field in _SHARED_PARAM_FIELDS:
        if v1.HasField(field):
            getattr(layer, field).CopyFrom(getattr(v1, field))
    return layer


def _upgrade_v1(net, source):
    if len(net.layer):
        raise UpgradeError(f"{source}: net mixes old `layers` (V1) and new `layer` entries")
    upgraded = [upgrade_v1_layer(v1, source) for v1 in net.layers]
    del net.layers[:]
    net.layer.extend(upgraded)


def _upgrade_input_fields(net, source):
    """Deprecated `input` + `input_shape`/`input_dim` become an Input layer in front."""
    if not len(net.input):
        return
    layer = pb.LayerParameter(name="input", type="Input")
    layer.top.extend(net.input)
    if len(net.input_shape):
        if len(net.input_shape) not in (1, len(net.input)):
            raise UpgradeError(f"{source}: {len(net.input)} inputs but "
                               f"{len(net.input_shape)} input_shape entries")
        layer.input_param.shape.extend(net.input_shape)
    elif len(net.input_dim):
        if len(net.input_dim) != 4 * len(net.input):
            raise UpgradeError(f"{source}: input_dim needs 4 values per input "
                               f"({len(net.input)} inputs, {len(net.input_dim)} values)")
        for i in range(len(net.input)):
            layer.input_param.shape.add().dim.extend(net.input_dim[4 * i:4 * i + 4])
    existing = list(net.layer)
    del net.layer[:]
    net.layer.extend([layer] + existing)
    del net.input[:], net.input_shape[:], net.input_dim[:]


def _upgrade_data_transformation(net):
    """Old Data layers kept scale/mean_file/crop_size/mirror in data_param."""
    for layer in net.layer:
        if layer.type != "Data" or not layer.HasField("data_param"):
            continue
        dp, tp = layer.data_param, layer.transform_param
        for field in ("scale", "mean_file", "crop_size", "mirror"):
            if dp.HasField(field):
                setattr(tp, field, getattr(dp, field))
                dp.ClearField(field)


def _upgrade_batch_norm(net):
    """Old nets gave BatchNorm's three statistics blobs ParamSpecs; they are not learned
    (Caffe's UpgradeNetBatchNorm sets their lr_mult and decay_mult to 0)."""
    for layer in net.layer:
        if layer.type == "BatchNorm" and len(layer.param) == 3:
            for spec in layer.param:
                spec.lr_mult = 0
                spec.decay_mult = 0


def upgrade_net(net, source="<net>"):
    """Upgrade `net` (a NetParameter) in place to the current format and return it."""
    if len(net.layers):
        _upgrade_v1(net, source)
    _upgrade_input_fields(net, source)
    _upgrade_data_transformation(net)
    _upgrade_batch_norm(net)
    return net
