"""The engine: Caffe's nets on PyTorch behind pycaffe's names, so that
`import deepmammo.caffe as caffe` runs pycaffe scripts unchanged.

    net = caffe.Net("deploy.prototxt", caffe.TEST, weights="bvlc_googlenet.caffemodel")
    net.blobs["data"].data[...] = images
    probs = net.forward()["prob"]
"""
from deepmammo.caffe import io, proto  # noqa: E402,F401  (caffe.io, caffe.proto.caffe_pb2)
from deepmammo.caffe.mode import set_device, set_mode_cpu, set_mode_gpu  # noqa: E402,F401
from deepmammo.caffe.net import Net  # noqa: E402,F401
from deepmammo.caffe.proto.caffe_pb2 import TEST, TRAIN  # noqa: E402,F401
from deepmammo.caffe.rng import set_random_seed  # noqa: E402,F401


def layer_type_list():
    """Names of the supported layer types (pycaffe's caffe.layer_type_list)."""
    from deepmammo.caffe.layers import REGISTRY
    return sorted(REGISTRY)


# ---- solvers (added by the solver engineer below this line) ----
from deepmammo.caffe.solvers import (AdaDeltaSolver, AdaGradSolver, AdamSolver,  # noqa: F401,E402
                                     NesterovSolver, RMSPropSolver, SGDSolver, get_solver)
from deepmammo.caffe.distributed import (set_solver_count, set_solver_rank,  # noqa: F401,E402
                                         solver_count, solver_rank)
