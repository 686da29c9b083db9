"""Read `.solverstate` files (SolverState: iter, learned_net, history, current_step)."""
import os

from deepmammo.caffe.formats.blobproto import blob_to_array
from deepmammo.caffe.formats.caffemodel import _read_bytes, check_blobs, parse_message
from deepmammo.caffe.proto import caffe_pb2 as pb


def read_solverstate(path):
    """The SolverState of a .solverstate file; every history blob checked against its shape."""
    path = os.fspath(path)
    state = parse_message(_read_bytes(path, "solverstate"), pb.SolverState(), path, "solverstate")
    check_blobs(state.history, f"{path}: history blob")
    return state


def history_arrays(state):
    """The history blobs of a SolverState as float32 arrays."""
    return [blob_to_array(b, where=f"history blob {i}") for i, b in enumerate(state.history)]
