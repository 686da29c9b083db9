"""Caffe's global mode (CPU or GPU and the device id), read by Nets when they are built, and
the process-wide switches that go with it (CUDA precision, the CPU allocator)."""
import ctypes
import os

import torch

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


def set_tf32(allowed):
    """Allow TF32 matrix maths on CUDA (a fast mode, not fp32-faithful). Off by default:
    PyTorch's cuDNN default would otherwise run convolutions in TF32 on Ampere and later."""
    _state["tf32"] = bool(allowed)
    apply_precision()


def apply_precision():
    """Put torch's CUDA precision switches where the mode says (fp32 unless set_tf32)."""
    allowed = _state.get("tf32", False)
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
