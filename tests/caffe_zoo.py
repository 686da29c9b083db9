"""Caffe's own nets (`models/` and `examples/` of the Caffe source that `make caffe` unpacks),
made runnable without their data: every data layer becomes an Input layer of the same tops and
include rules, with the shapes that layer would produce at a small batch size."""
import glob
import os

from deepmammo.caffe.formats.prototxt import read_net, to_text
from deepmammo.caffe.proto import caffe_pb2 as pb
from deepmammo.caffe.real import find_build

DATA_TYPES = {"Data", "ImageData", "HDF5Data", "WindowData", "MemoryData", "DummyData"}

# Per-example shape of each data top, by the folder the net lives in: what the net's data
# files hold (the files themselves are not in the source tree). Labels are scalars.
_IMAGENET = {"data": (3, 227, 227), "label": ()}
EXAMPLE_SHAPES = {
    "cifar10": {"data": (3, 32, 32), "label": ()},
    "feature_extraction": _IMAGENET,
    "finetune_pascal_detection": _IMAGENET,
    "hdf5_classification": {"data": (4,), "label": ()},
    "mnist": {"data": (1, 28, 28), "label": ()},
    "siamese": {"pair_data": (2, 28, 28), "sim": ()},
    "bvlc_alexnet": _IMAGENET,
    "bvlc_reference_caffenet": _IMAGENET,
    "bvlc_googlenet": {"data": (3, 224, 224), "label": ()},
    "finetune_flickr_style": _IMAGENET,
}


# The net prototxts (not solvers) under models/ and examples/ of the Caffe source, relative to it:
# what zoo_nets() finds there, written out so that collecting the tests needs no build.
ZOO = (
    "examples/cifar10/cifar10_full.prototxt",
    "examples/cifar10/cifar10_full_sigmoid_train_test.prototxt",
    "examples/cifar10/cifar10_full_sigmoid_train_test_bn.prototxt",
    "examples/cifar10/cifar10_full_train_test.prototxt",
    "examples/cifar10/cifar10_quick.prototxt",
    "examples/cifar10/cifar10_quick_train_test.prototxt",
    "examples/feature_extraction/imagenet_val.prototxt",
    "examples/finetune_pascal_detection/pascal_finetune_trainval_test.prototxt",
    "examples/hdf5_classification/nonlinear_auto_test.prototxt",
    "examples/hdf5_classification/nonlinear_auto_train.prototxt",
    "examples/hdf5_classification/nonlinear_train_val.prototxt",
    "examples/hdf5_classification/train_val.prototxt",
    "examples/mnist/lenet.prototxt",
    "examples/mnist/lenet_train_test.prototxt",
    "examples/mnist/mnist_autoencoder.prototxt",
    "examples/net_surgery/bvlc_caffenet_full_conv.prototxt",
    "examples/net_surgery/conv.prototxt",
    "examples/pycaffe/linreg.prototxt",
    "examples/siamese/mnist_siamese.prototxt",
    "examples/siamese/mnist_siamese_train_test.prototxt",
    "models/bvlc_alexnet/deploy.prototxt",
    "models/bvlc_alexnet/train_val.prototxt",
    "models/bvlc_googlenet/deploy.prototxt",
    "models/bvlc_googlenet/train_val.prototxt",
    "models/bvlc_reference_caffenet/deploy.prototxt",
    "models/bvlc_reference_caffenet/train_val.prototxt",
    "models/bvlc_reference_rcnn_ilsvrc13/deploy.prototxt",
    "models/finetune_flickr_style/deploy.prototxt",
    "models/finetune_flickr_style/train_val.prototxt",
)


def caffe_source():
    return os.path.join(find_build(), "src")


def zoo_nets():
    """Every net prototxt (not a solver) under models/ and examples/, relative to the source."""
    root = caffe_source()
    found = glob.glob(os.path.join(root, "models", "**", "*.prototxt"), recursive=True)
    found += glob.glob(os.path.join(root, "examples", "**", "*.prototxt"), recursive=True)
    return sorted(os.path.relpath(p, root) for p in found if "solver" not in os.path.basename(p))


def _input_layer(layer, shapes, batch):
    new = pb.LayerParameter(name=layer.name, type="Input")
    new.top.extend(layer.top)
    new.include.extend(layer.include)
    new.exclude.extend(layer.exclude)
    for k, top in enumerate(layer.top):
        if layer.type == "DummyData":
            given = layer.dummy_data_param.shape
            dims = list(given[min(k, len(given) - 1)].dim)[1:]
        else:
            dims = shapes[top]
        new.input_param.shape.add().dim.extend([batch, *dims])
    return new


def runnable(relpath, batch=2):
    """The net as prototxt text with Input layers for its data layers and a batch of `batch`."""
    net = read_net(os.path.join(caffe_source(), relpath))
    folder = relpath.split(os.sep)[1]
    out = pb.NetParameter()
    out.CopyFrom(net)
    del out.layer[:]
    for layer in net.layer:
        if layer.type in DATA_TYPES:
            layer = _input_layer(layer, EXAMPLE_SHAPES.get(folder, {}), batch)
        elif layer.type == "Input":
            for shape in layer.input_param.shape:
                shape.dim[0] = batch
        out.layer.add().CopyFrom(layer)
    return to_text(out)
