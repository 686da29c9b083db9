"""Caffe's schema (our own .proto, package `deepmammo_caffe`, BVLC's field numbers and names).

`from deepmammo.caffe.proto import caffe_pb2` mirrors pycaffe's `from caffe.proto import caffe_pb2`.
"""
from deepmammo.caffe.proto import deepmammo_caffe_pb2 as caffe_pb2  # noqa: F401
