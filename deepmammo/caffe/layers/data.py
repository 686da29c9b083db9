"""Input (shapes from input_param) and Data (LMDB of Datums, transform_param, background
prefetch).

Data reads records in key order and wraps at the end (no shuffle: shuffle when writing). Each
image: optional mean subtraction at its uncropped position (mean_file, full size) or per
channel (mean_value), then a crop (random at TRAIN, centred at TEST), a mirror with
probability 1/2 whenever `mirror: true` (any phase, as Caffe), and `scale`:
out = (x - mean) * scale. A background thread prepares up to `prefetch` batches ahead.

Random numbers as in Caffe (docs/random-streams.md): at construction the layer takes Caffe's
draws from the thread's stream (two transformer seeds, the second kept, when it mirrors or
crops at TRAIN; then the prefetch thread's seed), and the transformer draws from its own
mt19937, per record in database order: Rand(2) for the mirror, then the crop's row and column
offsets, each `u % n`. So crops and mirrors are real Caffe's, whatever the threads' timing.
"""
import atexit
import logging
import os
import queue
import sys
import threading
import weakref

import numpy as np
import torch

from deepmammo.caffe import distributed, rng
from deepmammo.caffe.formats.datum import datum_from_bytes, datum_to_array
from deepmammo.caffe.layers.base import Layer, register
from deepmammo.caffe.proto import caffe_pb2 as pb
from deepmammo.caffe.transformer import Transformer

log = logging.getLogger(__name__)

_TRANSFORM_FIELDS = {"scale", "mirror", "crop_size", "mean_file", "mean_value"}


@register
class Input(Layer):
    TYPE = "Input"
    FIELDS = {"input_param": {"shape"}}
    EXACT_BOTTOMS = 0
    MIN_TOPS = 1

    def __init__(self, *args):
        super().__init__(*args)
        shapes = [tuple(int(d) for d in s.dim) for s in self.layer_param.input_param.shape]
        ntop = len(self.layer_param.top)
        if len(shapes) not in (0, 1, ntop):
            raise self.error(f"input_param needs 0, 1 or {ntop} shapes, has {len(shapes)}")
        self.shapes = shapes * ntop if len(shapes) == 1 else shapes

    def reshape(self, bottom_shapes):
        # Input tops keep whatever shape the user gave them (net.blobs[...].reshape).
        return None

    def initial_shapes(self):
        return self.shapes or [(0,)] * len(self.layer_param.top)

    def forward(self, bottoms, params):
        return None


_READERS = {}                # realpath -> [LMDBReader, users]: py-lmdb opens a path once
_READERS_LOCK = threading.Lock()
# Data layers whose prefetch thread may still run. At interpreter exit they are stopped and
# their databases closed while threads still run normally: once finalization starts, a daemon
# thread that wants the GIL is frozen where it stands, and closing an LMDB environment it
# holds (Net.__del__ during module teardown) then waits for it for ever.
_LIVE = weakref.WeakSet()


@atexit.register
def close_all():
    """Stop every Data layer's prefetch thread and close its database (runs at exit)."""
    for layer in list(_LIVE):
        layer.close()


def _open_reader(path):
    from deepmammo.caffe.formats.lmdb_io import LMDBReader  # lmdb only where a Data layer is used
    key = os.path.realpath(path)
    with _READERS_LOCK:
        entry = _READERS.get(key)
        if entry is None:
            entry = _READERS[key] = [LMDBReader(path), 0]
        entry[1] += 1
        return entry[0]


def _close_reader(path):
    key = os.path.realpath(path)
    with _READERS_LOCK:
        entry = _READERS.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            entry[0].close()
            del _READERS[key]


def _records(reader, skip):
    """Datum bytes in key order, forever (wrapping), after skipping `skip` records."""
    first = True
    while True:
        n = 0
        for _, value in reader:
            if first and n < skip:
                n += 1
                continue
            n += 1
            yield value
        if n == 0:
            return
        first = False


@register
class Data(Layer):
    TYPE = "Data"
    FIELDS = {"data_param": {"source", "batch_size", "rand_skip", "backend", "prefetch"},
              "transform_param": _TRANSFORM_FIELDS}
    EXACT_BOTTOMS = 0
    MIN_TOPS = 1
    MAX_TOPS = 2

    def __init__(self, *args):
        super().__init__(*args)
        dp = self.layer_param.data_param
        if dp.backend != pb.DataParameter.LMDB:
            raise self.error("only the LMDB backend is supported")
        if not dp.source:
            raise self.error("data_param.source is required")
        if dp.batch_size <= 0:
            raise self.error("data_param.batch_size must be positive")
        self.batch_size = dp.batch_size
        try:
            self.reader = _open_reader(dp.source)
        except FileNotFoundError as exc:
            raise self.error(str(exc)) from None
        try:
            self._inspect(dp)
        except Exception:
            _close_reader(dp.source)     # a layer that fails to build holds no database
            raise
        # rand_skip (which Caffe's Data layer no longer reads) draws from the prefetch
        # thread's stream, which Caffe's Data layer leaves unused: the main stream stays
        # Caffe's.
        skip = rng.CaffeRNG(self._thread_seed).randint(dp.rand_skip) if dp.rand_skip else 0
        self.top_shape = (self.batch_size,) + self.transformer.out_shape(self.datum_shape)
        self._queue = queue.Queue(maxsize=max(1, dp.prefetch))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._prefetch, args=(skip,), daemon=True,
                                        name=f"prefetch-{self.name}")
        self._thread.start()
        _LIVE.add(self)

    def _inspect(self, dp):
        """Shape of the records (from the first) and the transformer."""
        if len(self.reader) == 0:
            raise self.error(f"{dp.source}: the database is empty")
        first_key, first = next(iter(self.reader))
        self.datum_shape = tuple(datum_to_array(
            datum_from_bytes(first, where=f"{dp.source}: {first_key!r}")).shape)
        tp = self.layer_param.transform_param
        needs_rand = tp.mirror or (self.phase == pb.TRAIN and tp.crop_size)
        stream = rng.stream()
        if needs_rand:
            stream.rand()        # BaseDataLayer::LayerSetUp's InitRand: replaced just below
        transform_rng = rng.CaffeRNG(stream.rand()) if needs_rand else None
        self._thread_seed = stream.rand()       # StartInternalThread: the prefetch thread's
        try:
            self.transformer = Transformer(tp, self.phase, self.datum_shape, self.where,
                                           transform_rng)
        except ValueError as exc:
            raise self.error(str(exc)) from None

    def _prefetch(self, skip):
        records = None
        try:
            records = _records(self.reader, skip)
            if self.phase == pb.TRAIN and distributed.solver_count() > 1:
                # Several workers train together: each keeps its share (Caffe's Skip()).
                records = distributed.shard(records, distributed.solver_count(),
                                            distributed.solver_rank())
            while not self._stop.is_set():
                data = np.empty(self.top_shape, dtype=np.float32)
                labels = np.empty((self.batch_size,), dtype=np.float32)
                source = self.layer_param.data_param.source
                for i in range(self.batch_size):
                    if self._stop.is_set():   # a large batch must not delay close()
                        return
                    datum = datum_from_bytes(next(records), where=source)
                    arr = datum_to_array(datum, where=source)
                    if tuple(arr.shape) != self.datum_shape:
                        raise ValueError(f"record shape {tuple(arr.shape)} differs from the "
                                         f"first record's {self.datum_shape}")
                    data[i] = self.transformer(arr)
                    labels[i] = datum.label
                self._put((torch.from_numpy(data), torch.from_numpy(labels)))
        except Exception as exc:  # handed to the consumer, which raises it with the layer name
            self._put(exc)
        finally:
            if records is not None:
                records.close()   # ends the read transaction before close() closes the database

    def _put(self, item):
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def reshape(self, bottom_shapes):
        tops = [self.top_shape]
        if len(self.layer_param.top) == 2:
            tops.append((self.batch_size,))
        return tops

    def forward(self, bottoms, params):
        item = self._queue.get()
        if isinstance(item, Exception):
            self._queue.put(item)
            raise self.error(f"reading {self.layer_param.data_param.source}: {item}")
        data, labels = item
        tops = [data.to(self.device, non_blocking=True)]
        if len(self.layer_param.top) == 2:
            tops.append(labels.to(self.device, non_blocking=True))
        return tops

    def close(self):
        """Stop the prefetch thread, then release the database (once)."""
        if self._stop.is_set():
            return
        self._stop.set()
        _LIVE.discard(self)
        if sys.is_finalizing():
            # Threads are frozen now: joining or closing the environment under one would wait
            # for ever; the process is ending and the OS reclaims the database.
            return
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        if self._thread.is_alive():
            log.warning("%s: prefetch thread did not stop; leaving %s open", self.where,
                        self.layer_param.data_param.source)
            return
        _close_reader(self.layer_param.data_param.source)

    def __del__(self):
        try:
            self._stop.set()
        except Exception:
            pass
