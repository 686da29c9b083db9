"""Caffe's two shuffles, draw for draw.

- `caffe_shuffle(items, stream)`: caffe::shuffle (util/rng.hpp), a Fisher-Yates pass from the
  end drawing boost::uniform_int(0, i) from a layer's own mt19937 (ImageData's file list).
  Boost maps a 32-bit output u to u // bucket, bucket = (2^32 - 1) // (i + 1) (plus one when
  i + 1 divides 2^32), and draws again when that exceeds i.
- `random_shuffle(items)`: std::random_shuffle as libstdc++ writes it (a forward pass,
  swapping item i with item rand() % (i + 1)), drawing from glibc's rand(): one process-wide
  generator that Caffe never seeds (it starts as srand(1)), which HDF5Data's file and row
  shuffles use. `srand(seed)` restarts it, as glibc's srand does; the real library's state
  is not touched (this is a copy of its algorithm: the additive feedback generator of
  degree 31, seeded by the Lehmer sequence 16807 x mod 2^31 - 1, 310 outputs discarded).

Both are sequential by nature (each swap sees the previous ones); the draws are vectorised
where the stream allows it.
"""
import threading

import numpy as np

_DEGREE, _SEP = 31, 3


class GlibcRand:
    """glibc's rand() (TYPE_3 random_r), output for output."""

    def __init__(self, seed=1):
        self.srand(seed)

    def srand(self, seed):
        seed = int(seed) % 2 ** 32
        if seed == 0:
            seed = 1
        word = seed - 2 ** 32 if seed >= 2 ** 31 else seed     # glibc keeps it in an int32
        state = [word]
        for _ in range(1, _DEGREE):
            hi = abs(word) // 127773 * (1 if word >= 0 else -1)      # C's / and %
            lo = word - hi * 127773
            word = 16807 * lo - 2836 * hi
            if word < 0:
                word += 2147483647
            state.append(word)
        self._r = [s % 2 ** 32 for s in state]
        self._f, self._b = _SEP, 0           # glibc's front and rear pointers
        self.raw(10 * _DEGREE)               # srandom_r discards 310 outputs

    def raw(self, n):
        """The next n outputs of rand() (ints in [0, 2^31)), as a numpy int64 array."""
        r, f, b = self._r, self._f, self._b
        out = np.empty(int(n), dtype=np.int64)
        for k in range(int(n)):
            v = (r[f] + r[b]) & 0xFFFFFFFF
            r[f] = v
            out[k] = v >> 1
            f += 1
            b += 1
            if f >= _DEGREE:
                f = 0
            elif b >= _DEGREE:
                b = 0
        self._f, self._b = f, b
        return out

    def rand(self):
        return int(self.raw(1)[0])


_libc = GlibcRand()
_libc_lock = threading.Lock()


def srand(seed):
    """Restart the emulated process-wide rand() at `seed` (glibc's srand)."""
    with _libc_lock:
        _libc.srand(seed)


def random_shuffle(items):
    """Shuffle the list `items` in place as std::random_shuffle(begin, end) does, drawing
    from the emulated process-wide rand()."""
    n = len(items)
    if n < 2:
        return items
    with _libc_lock:
        draws = _libc.raw(n - 1)
    picks = draws % np.arange(2, n + 1)
    for i, j in zip(range(1, n), picks.tolist()):
        if i != j:
            items[i], items[j] = items[j], items[i]
    return items


def _buckets(ranges):
    """boost::uniform_int's bucket size for 32-bit outputs and each range [0, r]."""
    brange = 2 ** 32 - 1
    r1 = ranges.astype(np.uint64) + 1
    bucket = np.uint64(brange) // r1
    bucket += (np.uint64(brange) % r1 == ranges.astype(np.uint64)).astype(np.uint64)
    return bucket


def caffe_shuffle(items, stream):
    """Shuffle the list `items` in place as caffe::shuffle does with `stream` (an
    rng.CaffeRNG): for i from the end down to 1, swap item i with uniform_int(0, i)."""
    n = len(items)
    if n < 2:
        return items
    ranges = np.arange(n - 1, 0, -1, dtype=np.int64)       # i = n-1 .. 1
    buckets = _buckets(ranges)
    picks = np.empty(len(ranges), dtype=np.int64)
    done = 0
    while done < len(ranges):
        # Each draw is usually accepted: take a block, keep it up to the first rejection,
        # which drops its output and moves the rest along.
        u = stream.raw(len(ranges) - done).astype(np.uint64)
        got = u // buckets[done:]
        bad = np.flatnonzero(got > ranges[done:].astype(np.uint64))
        keep = int(bad[0]) if len(bad) else len(got)
        picks[done:done + keep] = got[:keep]
        done += keep
        if len(bad):
            # Outputs after the rejected one were drawn for the wrong ranges: redo them
            # one at a time until the block's outputs are used up in stream order.
            rest = u[keep + 1:]
            for value in rest.tolist():
                v = value // int(buckets[done])
                if v <= ranges[done]:
                    picks[done] = v
                    done += 1
    for i, j in zip(ranges.tolist(), picks.tolist()):
        items[i], items[j] = items[j], items[i]
    return items
