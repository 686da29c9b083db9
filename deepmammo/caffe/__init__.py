"""The engine: Caffe's nets on PyTorch behind pycaffe's names, so that
`import deepmammo.caffe as caffe` runs pycaffe scripts unchanged.

    net = caffe.Net("deploy.prototxt", caffe.TEST, weights="bvlc_googlenet.caffemodel")
    net.blobs["data"].data[...] = images
    probs = net.forward()["prob"]

pycaffe's names are loaded on first use (PEP 562), so that `deepmammo.caffe.formats` (Caffe's
file formats) and `deepmammo.caffe.proto` (the schema) import without torch.
"""
import importlib

from deepmammo.caffe.proto.caffe_pb2 import TEST, TRAIN  # noqa: F401

# pycaffe's top-level names -> the module that defines them.
_LAZY = {
    "Net": "deepmammo.caffe.net",
    "set_mode_cpu": "deepmammo.caffe.mode",
    "set_mode_gpu": "deepmammo.caffe.mode",
    "set_device": "deepmammo.caffe.mode",
    "set_random_seed": "deepmammo.caffe.rng",
    "get_solver": "deepmammo.caffe.solvers",
    "SGDSolver": "deepmammo.caffe.solvers",
    "NesterovSolver": "deepmammo.caffe.solvers",
    "AdaGradSolver": "deepmammo.caffe.solvers",
    "RMSPropSolver": "deepmammo.caffe.solvers",
    "AdaDeltaSolver": "deepmammo.caffe.solvers",
    "AdamSolver": "deepmammo.caffe.solvers",
    "set_solver_count": "deepmammo.caffe.distributed",
    "set_solver_rank": "deepmammo.caffe.distributed",
    "solver_count": "deepmammo.caffe.distributed",
    "solver_rank": "deepmammo.caffe.distributed",
    "set_multiprocess": "deepmammo.caffe.distributed",
    "has_nccl": "deepmammo.caffe.distributed",
    "NCCL": "deepmammo.caffe.distributed",
    "Timer": "deepmammo.caffe.timer",
    "init_log": "deepmammo.caffe.glog",
    "log": "deepmammo.caffe.glog",
    "Classifier": "deepmammo.caffe.classifier",
    "Detector": "deepmammo.caffe.detector",
    "Layer": "deepmammo.caffe.layers.python_layer",
    "NetSpec": "deepmammo.caffe.net_spec",
    "to_proto": "deepmammo.caffe.net_spec",
    "params": "deepmammo.caffe.net_spec",
}
# The BVLC Caffe version whose behaviour the engine follows (pycaffe's caffe.__version__).
__version__ = "1.0.0"

# pycaffe's submodules: caffe.io, caffe.proto.
_SUBMODULES = ("io", "proto", "layers", "net_spec", "draw", "coord_map", "pycaffe")

__all__ = sorted(_LAZY) + list(_SUBMODULES) + ["TEST", "TRAIN", "layer_type_list"]


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))


def layer_type_list():
    """Names of the supported layer types (pycaffe's caffe.layer_type_list)."""
    from deepmammo.caffe.layers import REGISTRY
    return sorted(REGISTRY)
