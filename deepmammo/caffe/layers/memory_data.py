"""MemoryData: batches cut from arrays handed over by `reset` (pycaffe's set_input_arrays),
as Caffe's MemoryDataLayer.

memory_data_param gives batch_size, channels, height and width (all positive). `reset(data,
labels, n)` keeps the arrays themselves, not copies, as Caffe keeps their pointers: data
float32 (n, channels, height, width) and labels float32 with n values, C-contiguous, n a
multiple of batch_size. Each forward gives the next batch_size rows, as views of those
arrays (data (batch, C, H, W), labels (batch, 1, 1, 1); before the first forward the label
top is (batch,)), wrapping at n. No transformation is applied to arrays (Caffe warns when
transform_param is set); a transform_param that mirrors, or crops at TRAIN, still draws its
transformer's seed from the Caffe stream at construction, as Caffe's does.
"""
import logging

import numpy as np
import torch

from deepmammo.caffe import rng
from deepmammo.caffe.layers.base import Layer, register
from deepmammo.caffe.proto import caffe_pb2 as pb

log = logging.getLogger(__name__)

_TRANSFORM_FIELDS = {"scale", "mirror", "crop_size", "mean_file", "mean_value"}


def check_array(arr, name, channels, height, width):
    """pycaffe's checks of an array for set_input_arrays (RuntimeError, its messages)."""
    if not isinstance(arr, np.ndarray) or not arr.flags["C_CONTIGUOUS"]:
        raise RuntimeError(f"{name} must be C contiguous")
    if arr.ndim != 4:
        raise RuntimeError(f"{name} must be 4-d")
    if arr.dtype != np.float32:
        raise RuntimeError(f"{name} must be float32")
    if arr.shape[1] != channels:
        raise RuntimeError(f"{name} has wrong number of channels")
    if arr.shape[2] != height:
        raise RuntimeError(f"{name} has wrong height")
    if arr.shape[3] != width:
        raise RuntimeError(f"{name} has wrong width")


@register
class MemoryData(Layer):
    TYPE = "MemoryData"
    FIELDS = {"memory_data_param": {"batch_size", "channels", "height", "width"},
              "transform_param": _TRANSFORM_FIELDS}
    EXACT_BOTTOMS = 0
    EXACT_TOPS = 2
    AUTOGRAD = False

    def __init__(self, *args):
        super().__init__(*args)
        p = self.layer_param.memory_data_param
        self.batch_size, self.channels = int(p.batch_size), int(p.channels)
        self.height, self.width = int(p.height), int(p.width)
        if self.batch_size * self.channels * self.height * self.width <= 0:
            raise self.error("batch_size, channels, height, and width must be specified and "
                             "positive in memory_data_param")
        tp = self.layer_param.transform_param
        if tp.mirror or (self.phase == pb.TRAIN and tp.crop_size):
            rng.stream().rand()       # the transformer's seed (arrays are not transformed)
        self.data = self.labels = None
        self.n = self.pos = 0
        self.label_shape = (self.batch_size,)

    def check_input_arrays(self, data, labels):
        """pycaffe's checks of set_input_arrays (RuntimeError with its messages): data
        (n, channels, height, width) and labels (n,) or (n, 1, 1, 1), float32,
        C-contiguous, n a multiple of batch_size."""
        check_array(data, "data array", self.channels, self.height, self.width)
        if isinstance(labels, np.ndarray) and labels.ndim == 1:
            labels = labels.reshape(-1, 1, 1, 1)
        check_array(labels, "labels array", 1, 1, 1)
        if data.shape[0] != labels.shape[0]:
            raise RuntimeError("data and labels must have the same first dimension")
        if data.shape[0] % self.batch_size:
            raise RuntimeError("first dimensions of input arrays must be a multiple of batch "
                               "size")

    def reset(self, data, labels, n):
        """Read batches from these arrays, kept without copying (Caffe's Reset, after
        pycaffe's checks of set_input_arrays): rows 0..n-1, n a multiple of batch_size."""
        if data is None or labels is None:
            raise self.error("reset needs data and labels")
        self.check_input_arrays(data, labels)
        n = int(n)
        if n % self.batch_size:
            raise self.error(f"n must be a multiple of batch size (n = {n}, batch size "
                             f"{self.batch_size})")
        if not 0 < n <= data.shape[0]:
            raise self.error(f"n = {n} rows, the arrays hold {data.shape[0]}")
        if self.layer_param.HasField("transform_param"):
            log.warning("%s: %s does not transform array data on reset()", self.where,
                        self.type)
        self.data = torch.from_numpy(data)
        self.labels = torch.from_numpy(labels.reshape(-1))
        self.n, self.pos = n, 0

    def reshape(self, bottom_shapes):
        return [(self.batch_size, self.channels, self.height, self.width), self.label_shape]

    def forward(self, bottoms, params):
        if self.data is None:
            raise self.error("MemoryData needs to be initialized by calling reset "
                             "(pycaffe: net.set_input_arrays)")
        lo, hi = self.pos, self.pos + self.batch_size
        data = self.data[lo:hi].to(self.device)
        labels = self.labels[lo:hi].reshape(self.batch_size, 1, 1, 1).to(self.device)
        self.label_shape = (self.batch_size, 1, 1, 1)
        self.pos = hi % self.n
        return [data, labels]

    def backward(self, tops, top_diffs, bottoms, params, need_bottom, need_param):
        return [], []
