"""Blob: a Caffe blob (data and diff) held as torch tensors, shown to Python as numpy arrays.

pycaffe code reads and writes `blob.data` / `blob.diff` in place (`blob.data[...] = x`). On the
CPU those arrays are views of the torch tensors, so both sides always agree. On CUDA a host copy
is kept, as Caffe's SyncedMemory does: handing out the numpy array moves the "head" to the host
(the caller may write it), and handing out the torch tensor (`tdata` / `tdiff`) copies a newer
host array back and moves the head to the device (the caller may mutate it). So code that
alternates between the two must fetch the array or tensor again after the other side wrote it,
exactly as with Caffe's cpu_data()/gpu_data() pointers.
"""
import numpy as np
import torch

_AT_DEVICE, _AT_HOST, _SYNCED = "device", "host", "synced"


class _Synced:
    """One tensor plus, on CUDA, its host mirror and which side holds the newest values."""

    __slots__ = ("tensor", "host", "head")

    def __init__(self, tensor):
        self.tensor = tensor
        self.host = None
        self.head = _AT_DEVICE

    def set(self, tensor):
        self.tensor = tensor
        self.head = _AT_DEVICE

    def device_tensor(self):
        t = self.tensor
        if t.device.type != "cpu" and self.head == _AT_HOST:
            t.copy_(torch.from_numpy(self.host), non_blocking=False)
        self.head = _AT_DEVICE
        return t

    def peek_tensor(self):
        """The tensor for reading without claiming it for writing (forward/backward inputs)."""
        t = self.tensor
        if t.device.type != "cpu" and self.head == _AT_HOST:
            t.copy_(torch.from_numpy(self.host))
            self.head = _SYNCED
        return t

    def array(self):
        t = self.tensor
        if t.device.type == "cpu":
            return t.numpy()
        if self.host is None or self.host.shape != tuple(t.shape):
            # A fresh host buffer holds nothing yet: the device copy is the truth.
            self.host = np.empty(tuple(t.shape), dtype=np.float32)
            self.head = _AT_DEVICE
        if self.head == _AT_DEVICE:
            self.host[...] = t.detach().cpu().numpy()
        self.head = _AT_HOST
        return self.host


class Blob:
    """A named N-D array with data and diff, like caffe::Blob (float32 only).

    Attributes used by the solver (see net.py for the contract): `tdata`, `tdiff` (torch
    tensors on the net's device), `lr_mult`, `decay_mult`, `owner_name`.
    """

    def __init__(self, shape=(), device="cpu", name=""):
        self.name = name
        self.device = torch.device(device)
        shape = tuple(int(d) for d in shape)
        self._data = _Synced(torch.zeros(shape, dtype=torch.float32, device=self.device))
        self._diff = _Synced(torch.zeros(shape, dtype=torch.float32, device=self.device))
        self.lr_mult = 1.0
        self.decay_mult = 1.0
        self.owner_name = ""

    # ---- numpy side (pycaffe) ----
    @property
    def data(self):
        return self._data.array()

    @data.setter
    def data(self, value):
        self.data[...] = value

    @property
    def diff(self):
        return self._diff.array()

    @diff.setter
    def diff(self, value):
        self.diff[...] = value

    # ---- torch side (net internals, solver) ----
    @property
    def tdata(self):
        return self._data.device_tensor()

    @tdata.setter
    def tdata(self, tensor):
        self._set_tensor(self._data, tensor)

    @property
    def tdiff(self):
        return self._diff.device_tensor()

    @tdiff.setter
    def tdiff(self, tensor):
        self._set_tensor(self._diff, tensor)

    def _set_tensor(self, synced, tensor):
        tensor = tensor.detach()
        if tensor.dtype != torch.float32:
            tensor = tensor.float()
        if not tensor.is_contiguous():
            tensor = tensor.contiguous()
        synced.set(tensor)

    def read_data(self):
        """The data tensor for reading (no claim to write it)."""
        return self._data.peek_tensor()

    def read_diff(self):
        return self._diff.peek_tensor()

    # ---- shape ----
    @property
    def shape(self):
        return tuple(self._data.tensor.shape)

    @property
    def count(self):
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def num(self):
        return self._legacy(0)

    @property
    def channels(self):
        return self._legacy(1)

    @property
    def height(self):
        return self._legacy(2)

    @property
    def width(self):
        return self._legacy(3)

    def _legacy(self, i):
        # Caffe's LegacyShape: axes past the blob's rank read as 1.
        return self.shape[i] if i < len(self.shape) else 1

    def reshape(self, *shape):
        """Change the shape (values are not kept, as Caffe gives no guarantee about them)."""
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        shape = tuple(int(d) for d in shape)
        if any(d < 0 for d in shape):
            raise ValueError(f"blob {self.name!r}: negative dimension in shape {shape}")
        if shape == self.shape:
            return
        self._data.set(torch.zeros(shape, dtype=torch.float32, device=self.device))
        self._diff.set(torch.zeros(shape, dtype=torch.float32, device=self.device))

    def __repr__(self):
        return f"Blob({self.name!r}, shape={self.shape})"
