"""Read and write `.caffemodel` files (binary NetParameter with weights).

Both formats are read: the current one (`layer`, field 100) and the old V1 one (`layers`,
field 2, enum types, legacy 4-D blob shapes) that bvlc_alexnet.caffemodel and
bvlc_googlenet.caffemodel use; V1 is upgraded in memory. Files of several hundred MB are read
whole (the Python protobuf runtime has no 64 MB message limit). Caffe writes, and so do we,
the current format with `shape`-based blobs.
"""
import collections
import os

from google.protobuf.message import DecodeError

from deepmammo.atomic import write_bytes
from deepmammo.caffe.formats.blobproto import BlobError, blob_to_array, check_blob
from deepmammo.caffe.formats.upgrade import upgrade_net
from deepmammo.caffe.proto import caffe_pb2 as pb


class CaffemodelError(ValueError):
    pass


def _read_bytes(path, what):
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such {what} file")
    with open(path, "rb") as f:
        return f.read()


def parse_message(data, message, path, what):
    """Parse binary protobuf `data` into `message`, naming `path` on failure."""
    if not data:
        raise CaffemodelError(f"{path}: empty {what} file")
    try:
        message.ParseFromString(data)
    except DecodeError as exc:
        raise CaffemodelError(f"{path}: not a valid {what} (truncated or corrupt: {exc})") from None
    return message


def read_caffemodel(path):
    """The NetParameter of a .caffemodel, in the current format, blobs checked against shapes."""
    path = os.fspath(path)
    net = parse_message(_read_bytes(path, "caffemodel"), pb.NetParameter(), path, "caffemodel")
    if not len(net.layer) and not len(net.layers):
        raise CaffemodelError(f"{path}: no layers (not a caffemodel, or truncated)")
    upgrade_net(net, path)
    for layer in net.layer:
        check_blobs(layer.blobs, f"{path}: layer {layer.name!r} blob")
    return net


def check_blobs(blobs, where):
    """Each blob's values must fill its shape; a CaffemodelError names `where` and the index."""
    for i, blob in enumerate(blobs):
        try:
            check_blob(blob, where=f"{where} {i}")
        except BlobError as exc:
            raise CaffemodelError(str(exc)) from None


def layer_blobs(net):
    """OrderedDict layer name -> list of float32 arrays, for layers that hold blobs."""
    out = collections.OrderedDict()
    for layer in net.layer:
        if len(layer.blobs):
            out[layer.name] = [blob_to_array(b, where=f"layer {layer.name!r}") for b in layer.blobs]
    return out


def write_caffemodel(net, path):
    """Write a NetParameter (with blobs) as a .caffemodel, atomically."""
    write_bytes(path, net.SerializeToString())
