"""Caffe's global mode (CPU or GPU and the device id), read by Nets when they are built, and
the process-wide switches that go with it (the precision: fp32, tf32 or bf16; the CPU
allocator)."""
import ctypes
import os

import torch

# The precisions and their checks are deepmammo.engine's (mode.PRECISIONS and
# mode.PrecisionError are those).
from deepmammo.engine import PRECISIONS, PrecisionError, check_names  # noqa: F401

_state = {"gpu": False, "device_id": 0}


def set_mode_cpu():
    _state["gpu"] = False


def set_mode_gpu():
    if not torch.cuda.is_available():
        raise RuntimeError("set_mode_gpu: no CUDA device is available to torch")
    _state["gpu"] = True


def set_device(device_id):
    _state["device_id"] = int(device_id)


def current_device():
    """The torch.device that nets built now will use."""
    if _state["gpu"]:
        return torch.device("cuda", _state["device_id"])
    return torch.device("cpu")


def set_precision(name):
    """Choose the arithmetic of nets built from now on (one of PRECISIONS, described in
    deepmammo.engine): bf16 autocasts each layer's forward, tf32 switches torch's CUDA matrix
    units."""
    check_names(precision=name)
    _state["precision"] = name
    apply_precision()


def precision():
    """The precision nets built now will use ('fp32' unless set_precision said otherwise)."""
    return _state.get("precision", "fp32")


def set_tf32(allowed):
    """Allow TF32 matrix maths on CUDA (a fast mode, not fp32-faithful): set_precision('tf32')
    or back to 'fp32'. Off by default: PyTorch's cuDNN default would otherwise run
    convolutions in TF32 on Ampere and later."""
    set_precision("tf32" if allowed else "fp32")


def autocast_dtype(name):
    """The dtype a layer's forward autocasts to under precision `name` (None: no autocast)."""
    return torch.bfloat16 if name == "bf16" else None


def apply_precision():
    """Put torch's CUDA precision switches where the mode says: TF32 only under 'tf32'."""
    allowed = precision() == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = allowed
    torch.backends.cudnn.allow_tf32 = allowed


_allocator_tuned = False


def tune_cpu_allocator():
    """Keep freed memory in the process instead of handing it back to the kernel.

    Caffe allocates each blob once; PyTorch allocates each layer's output afresh. glibc serves
    large requests with mmap and returns them on free, so every large tensor costs page
    faults (kernel zeroing) on each iteration: 3-4x the time of an elementwise layer. Turning
    mmap off for malloc and never trimming the heap makes freed blocks reusable at no cost.
    Set DEEPMAMMO_KEEP_MALLOC=1 to leave glibc's defaults alone."""
    global _allocator_tuned
    if _allocator_tuned or os.environ.get("DEEPMAMMO_KEEP_MALLOC"):
        return
    _allocator_tuned = True
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:          # not glibc: nothing to tune
        return
    m_trim_threshold, m_top_pad, m_mmap_max = -1, -2, -4
    libc.mallopt(m_mmap_max, 0)
    libc.mallopt(m_trim_threshold, 2 ** 31 - 1)
    libc.mallopt(m_top_pad, 64 << 20)
