"""A background thread that makes a data layer's batches ahead of its forward passes, in
order (Caffe's BasePrefetchingDataLayer, `depth` batches ahead as data_param.prefetch's
default 4). The batches depend only on the layer's own random streams, never on the thread's
timing. An error while making one reaches the consumer, which raises it with the layer's
name; `close()` stops the thread, and layers that own one are stopped at interpreter exit
with the Data layers (layers.data.close_all)."""
import logging
import queue
import sys
import threading

from deepmammo.caffe.layers import data
from deepmammo.caffe.netstate import NetError

log = logging.getLogger(__name__)

DEPTH = 4


class Prefetcher:
    def __init__(self, make_batch, name, depth=DEPTH):
        """`make_batch(stopped)` returns the next batch; `stopped()` tells it to give up
        early (it may then return anything)."""
        self._make = make_batch
        self._queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=name)
        self._thread.start()

    def _run(self):
        try:
            while not self._stop.is_set():
                batch = self._make(self._stop.is_set)
                if self._stop.is_set():
                    return
                self._put(batch)
        except Exception as exc:  # handed to the consumer
            self._put(exc)

    def _put(self, item):
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def get(self):
        """The next batch; raises what making it raised (again on every later call)."""
        item = self._queue.get()
        if isinstance(item, Exception):
            self._queue.put(item)
            raise item
        return item

    def close(self, where):
        if self._stop.is_set():
            return
        self._stop.set()
        if sys.is_finalizing() or self._thread is threading.current_thread():
            return
        self._thread.join(timeout=10)
        if self._thread.is_alive():
            log.warning("%s: prefetch thread did not stop", where)


class PrefetchingLayer:
    """Mixin for a Layer whose batches come from a Prefetcher in `self.prefetcher`."""

    def start_prefetch(self, make_batch):
        self.prefetcher = Prefetcher(make_batch, f"prefetch-{self.name}")
        data._LIVE.add(self)

    def next_batch(self):
        try:
            return self.prefetcher.get()
        except NetError:
            raise
        except Exception as exc:
            raise self.error(str(exc)) from exc

    def close(self):
        prefetcher = getattr(self, "prefetcher", None)
        if prefetcher is not None:
            data._LIVE.discard(self)
            prefetcher.close(self.where)

    def __del__(self):
        prefetcher = getattr(self, "prefetcher", None)
        if prefetcher is not None:
            prefetcher._stop.set()
