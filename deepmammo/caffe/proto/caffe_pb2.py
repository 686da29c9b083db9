"""pycaffe's module name for the schema: `from deepmammo.caffe.proto.caffe_pb2 import NetParameter`."""
from deepmammo.caffe.proto.deepmammo_caffe_pb2 import *  # noqa: F401,F403
from deepmammo.caffe.proto.deepmammo_caffe_pb2 import DESCRIPTOR  # noqa: F401
