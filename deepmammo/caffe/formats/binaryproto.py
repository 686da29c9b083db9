"""Mean files (`.binaryproto`): one BlobProto, legacy num/channels/height/width or `shape`."""
import os

import numpy as np

from deepmammo.atomic import write_bytes
from deepmammo.caffe.formats.blobproto import BlobError, array_to_blob, blob_to_array
from deepmammo.caffe.formats.caffemodel import CaffemodelError, _read_bytes, parse_message
from deepmammo.caffe.proto import caffe_pb2 as pb


def read_blob(path):
    """The BlobProto in a .binaryproto file."""
    path = os.fspath(path)
    return parse_message(_read_bytes(path, "binaryproto"), pb.BlobProto(), path, "binaryproto")


def read_mean(path):
    """A mean image as float32 (C, H, W); a leading num axis of 1 is dropped."""
    path = os.fspath(path)
    try:
        arr = blob_to_array(read_blob(path), where=path)
    except BlobError as exc:
        raise CaffemodelError(str(exc)) from None
    if arr.ndim == 4:
        if arr.shape[0] != 1:
            raise CaffemodelError(f"{path}: a mean file holds one image, not {arr.shape[0]}")
        arr = arr[0]
    if arr.ndim != 3:
        raise CaffemodelError(f"{path}: mean blob has shape {arr.shape}, expected (C, H, W)")
    return arr


def write_mean(mean, path):
    """Write a (C, H, W) mean image as compute_image_mean does (legacy 1 x C x H x W)."""
    mean = np.asarray(mean, dtype=np.float32)
    if mean.ndim != 3:
        raise ValueError(f"{path}: a mean image is (C, H, W), got shape {mean.shape}")
    write_bytes(path, array_to_blob(mean[None], legacy=True).SerializeToString())
