"""pycaffe's caffe.Timer: start(), stop(), and `ms`, the milliseconds between them.

As Caffe's Timer: in GPU mode (caffe.set_mode_gpu) it times with CUDA events, so `ms` is the
device's time for the work queued between start and stop; reading `ms` stops a running timer;
a timer never started reads 0 with a warning. On the CPU the time has microsecond resolution
(Caffe's CPU timer truncates `ms` to whole milliseconds).
"""
import logging
import time

import torch

from deepmammo.caffe.mode import current_device

log = logging.getLogger(__name__)


class Timer:
    def __init__(self):
        self._running = False
        self._has_run = False
        self._cuda = False
        self._start = self._stop = None

    def start(self):
        if self._running:
            return
        self._cuda = current_device().type == "cuda"
        if self._cuda:
            self._start = torch.cuda.Event(enable_timing=True)
            self._stop = torch.cuda.Event(enable_timing=True)
            self._start.record()
        else:
            self._start = time.perf_counter()
        self._running = True
        self._has_run = True

    def stop(self):
        if not self._running:
            return
        if self._cuda:
            self._stop.record()
        else:
            self._stop = time.perf_counter()
        self._running = False

    @property
    def ms(self):
        """Milliseconds from start to stop (stopping the timer if it runs)."""
        if not self._has_run:
            log.warning("Timer has never been run before reading time.")
            return 0.0
        if self._running:
            self.stop()
        if self._cuda:
            self._stop.synchronize()
            return float(self._start.elapsed_time(self._stop))
        return (self._stop - self._start) * 1000.0
