"""Caffe's random streams on the CPU, number for number (docs/random-streams.md).

Caffe keeps one boost::mt19937 per thread (its `Caffe` singleton is thread-local):
`caffe.set_random_seed(s)` reseeds the calling thread's, the solver seeds it with
`random_seed + rank`, and fillers, Data layers (at construction) and Dropout (at each forward)
draw from it in the order the nets are built and run. Boost's distributions turn the 32-bit
outputs into values; `CaffeRNG` reproduces the ones Caffe calls, vectorised:

- `rand()`: one raw output (caffe_rng_rand);
- `uniform(n, a, b)`: boost::uniform_real<float>(a, nextafter(b)) (caffe_rng_uniform);
- `gaussian(n, mu, sigma)`: boost::normal_distribution<float>, Boost 1.74's ziggurat
  (caffe_rng_gaussian);
- `bernoulli(n, p, dtype)`: boost::bernoulli_distribution<dtype> (caffe_rng_bernoulli).

NumPy's legacy RandomState(seed) is the same mt19937 with the same seeding, so its raw 32-bit
outputs are Caffe's. Without a seed a thread's stream starts from the OS's entropy, as Caffe's
does.
"""
import math
import os
import threading

import numpy as np

from deepmammo.caffe import ziggurat_tables as _z

NAME = "caffe-mt19937"     # what logs and provenance call this stream

_F32 = np.float32
_TWO_M24 = _F32(2.0 ** -24)
_TWO_M32 = _F32(2.0 ** -32)            # uniform_01<float>'s factor: 1 / (float(2^32 - 1) + 1)
_TWO_32_F = _F32(4294967296.0)         # float(2^32 - 1) rounds up to 2^32

# The normal ziggurat's tables, as Boost reads them: doubles for the comparisons, floats where
# it converts them (RealType(table_x[i])).
_NX = np.array(_z.NORMAL_X, dtype=np.float64)
_NY = np.array(_z.NORMAL_Y, dtype=np.float64)
_NX32 = _NX.astype(_F32)
_EX = np.array(_z.EXP_X, dtype=np.float64)
_EY = np.array(_z.EXP_Y, dtype=np.float64)


def _fast_limits():
    """Per low byte b of an output (bit 0 the sign, bits 1-7 the layer i): the scale that
    turns the top 24 bits m into the signed x = m * 2^-24 * x[i] (exact: m * 2^-24 is), and
    the smallest m whose x fails the fast test x < x[i+1]. x grows with m, so the test is
    m < limit, in integers."""
    layer = np.arange(256) >> 1
    scale = _NX32[layer] * _TWO_M24
    # lo: the largest m known to pass (-1: none; the top layer, whose x[i+1] is 0, passes
    # none), hi: the smallest m known to fail (2^24: none).
    lo = np.full(256, -1, dtype=np.int64)
    hi = np.full(256, 2 ** 24, dtype=np.int64)
    for _ in range(25):
        mid = (lo + hi) // 2
        passes = (mid.astype(_F32) * scale).astype(np.float64) < _NX[layer + 1]
        lo = np.where(passes, mid, lo)
        hi = np.where(passes, hi, mid)
    signed = np.where(np.arange(256) & 1, scale, -scale).astype(_F32)
    return signed, hi.astype(np.uint32)


_SIGNED_SCALE, _FAST_LIMIT = _fast_limits()


def _expf(x):
    """expf(x) for a float x: exp in double rounded to float (glibc's expf is correctly
    rounded in all but astronomically rare cases)."""
    return _F32(np.exp(np.float64(x)))


def unit_fast(u):
    """Whether output u, read as a normal-ziggurat try, is accepted by the fast test."""
    u = int(u)
    return (u >> 8) < int(_FAST_LIMIT[u & 0xFF])


def _wedge(x, layer, y01):
    """Boost's wedge test for normal-ziggurat tries that missed the fast test (layer > 0),
    elementwise in float as Boost computes it: True where x is accepted."""
    xi = _NX32[layer]
    yi = _NY[layer].astype(_F32)
    y = yi + y01 * (_NY[layer + 1] - _NY[layer]).astype(_F32)
    strip = (_NX[layer] - _NX[layer + 1]).astype(_F32) * y01 - (xi - x)
    tangent = y - (yi + (xi - x) * yi * xi)
    convex = _NX[layer] >= 1       # the convex part, with the inflection layer (see Boost)
    above_upper = np.where(convex, strip, tangent)
    above_lower = np.where(convex, tangent, strip)
    density = np.exp((-(x * x / _F32(2))).astype(np.float64)).astype(_F32)
    return (above_upper < 0) & ((above_lower < 0) | (y < density))


class CaffeRNG:
    """One Caffe random stream: a boost::mt19937 and the distributions Caffe draws from it."""

    def __init__(self, seed=None):
        if seed is None:                      # Caffe's cluster_seedgen: entropy from the OS
            seed = int.from_bytes(os.urandom(4), "little")
        self.seed = int(seed) % (2 ** 32)     # Caffe takes an unsigned int
        self._mt = np.random.RandomState(self.seed)

    # ---------------------------------------------------------------- raw outputs
    def raw(self, n):
        """The next n 32-bit outputs (uint32), in order."""
        return self._mt.randint(0, 2 ** 32, size=int(n), dtype=np.uint32)

    def rand(self):
        """The next 32-bit output, as an int (caffe_rng_rand)."""
        return int(self._mt.randint(0, 2 ** 32, dtype=np.uint32))

    def randint(self, n):
        """rand() % n: how Caffe's DataTransformer::Rand picks crops and mirrors."""
        return self.rand() % int(n)

    # ---------------------------------------------------------------- uniform
    def uniform(self, n, a, b):
        """n float32 values of boost::uniform_real<float>(a, nextafter(b, +max)).

        Per value: float(u) / 2^32 * (b' - a) + a in float, drawn again while it reaches b'.
        Rejected candidates drop out of the stream, so the values are the first n accepted
        candidates of consecutive outputs."""
        n = int(n)
        a = _F32(a)
        hi = np.nextafter(_F32(b), _F32(np.finfo(_F32).max))
        span = _F32(hi - a)
        out = np.empty(n, dtype=_F32)
        done = 0
        while done < n:
            cand = self.raw(n - done).astype(_F32) / _TWO_32_F * span + a
            keep = cand[cand < hi]
            out[done:done + len(keep)] = keep
            done += len(keep)
        return out

    # ---------------------------------------------------------------- gaussian
    def gaussian(self, n, mu, sigma):
        """n float32 values of boost::normal_distribution<float>(mu, sigma).

        Boost's ziggurat: each try takes one output u (bit 0: sign, bits 1-7: layer i, the top
        24 bits: r in [0, 1)); x = r * x[i] is accepted at once when x < x[i+1], about 99% of
        tries. A try that misses takes the next output for a wedge test, and a try in the base
        layer samples the tail from several more. Both common cases are computed for a whole
        block of outputs at once; the rare tries whose outputs overlap (a tail, two misses in
        a row, a wedge draw that Boost redraws) run one by one in stream order."""
        n = int(n)
        mu, sigma = _F32(mu), _F32(sigma)
        out = np.empty(n, dtype=_F32)
        done = 0
        while done < n:
            # Each value needs at least one output, so this block is never more than needed.
            block = self.raw(n - done)
            unit, emit, scalar = self._ziggurat_block(block)
            values = unit * sigma + mu
            pos, size = 0, len(block)
            for c in scalar:
                if c < pos:           # already taken by an earlier try
                    continue
                got = values[pos:c][emit[pos:c]]
                out[done:done + len(got)] = got
                done += len(got)
                value, pos = self._slow_try(block, c)
                if value is not None:
                    out[done] = value * sigma + mu
                    done += 1
                if pos < size and unit_fast(block[pos]):
                    emit[pos] = True  # a try now, even if it followed a miss
            if pos < size:
                got = values[pos:][emit[pos:]]
                out[done:done + len(got)] = got
                done += len(got)
        return out

    @staticmethod
    def _ziggurat_block(block):
        """For each output of `block` read as a try: its unit value (signed), whether it
        yields that value when the tries run in order (`emit`), and the positions of the tries
        that must run one by one (`scalar`, sorted)."""
        size = len(block)
        low = block & 0xFF
        top = block >> 8
        unit = top.astype(_F32) * _SIGNED_SCALE.take(low)
        fast = top < _FAST_LIMIT.take(low)
        miss = np.flatnonzero(~fast)
        layer = low[miss] >> 1
        nxt = np.minimum(miss + 1, size - 1)
        y01 = block[nxt].astype(_F32) * _TWO_M32
        hard = (layer == 0) | (miss + 1 >= size) | ~fast[nxt] | (y01 >= _F32(1.0))
        simple = miss[~hard]
        accept = _wedge(np.abs(unit[simple]), layer[~hard].astype(np.intp), y01[~hard])
        emit = fast.copy()
        emit[simple + 1] = False             # the wedge test's draw is no try
        emit[simple] = accept
        return unit, emit, miss[hard]

    def _take(self, block, pos):
        """The output at `pos` of the block, or the stream's next one past its end."""
        if pos < len(block):
            return int(block[pos]), pos + 1
        return self.rand(), pos + 1

    def _uniform01_from(self, block, pos):
        while True:
            u, pos = self._take(block, pos)
            v = _F32(u) * _TWO_M32
            if v < _F32(1.0):
                return v, pos

    def _slow_try(self, block, q):
        """The ziggurat try at block[q] that missed the fast test: (unit value or None,
        position after the outputs it took)."""
        u = int(block[q])
        sign = _F32(1.0) if u & 1 else _F32(-1.0)
        i = (u & 0xFF) >> 1
        x = _F32(u >> 8) * _TWO_M24 * _NX32[i]
        pos = q + 1
        if i == 0:
            value, pos = self._normal_tail(block, pos)
            return value * sign, pos
        y01, pos = self._uniform01_from(block, pos)
        xi = _NX32[i]
        yi = _F32(_NY[i])
        y = yi + y01 * _F32(_NY[i + 1] - _NY[i])
        strip = _F32(_NX[i] - _NX[i + 1]) * y01 - (xi - x)
        tangent = y - (yi + (xi - x) * yi * xi)
        if _NX[i] >= 1:         # convex part (and the inflection layer, see Boost)
            above_upper, above_lower = strip, tangent
        else:                   # concave part
            above_lower, above_upper = strip, tangent
        if above_upper < 0 and (above_lower < 0 or y < _expf(-(x * x / _F32(2)))):
            return x * sign, pos
        return None, pos

    def _normal_tail(self, block, pos):
        """Beyond the base layer: x[1] plus an exponential(x[1]) draw, accepted when
        2 * exp1 > x^2 (Boost's generate_tail)."""
        start = _F32(_NX[1])
        while True:
            e, pos = self._unit_exponential(block, pos)
            x = e / start
            y, pos = self._unit_exponential(block, pos)
            if _F32(2) * y > x * x:
                return x + start, pos

    def _unit_exponential(self, block, pos):
        """One boost::exponential_distribution<float>(1) value: Boost 1.74's 256-layer
        ziggurat, whose base layer repeats with a shift."""
        shift = _F32(0)
        while True:
            u, pos = self._take(block, pos)
            i = u & 0xFF
            x = _F32(u >> 8) * _TWO_M24 * _F32(_EX[i])
            if x < _F32(_EX[i + 1]):
                return shift + x, pos
            if i == 0:
                shift = shift + _F32(_EX[1])
                continue
            y01, pos = self._uniform01_from(block, pos)
            y = _F32(_EY[i]) + y01 * _F32(_EY[i + 1] - _EY[i])
            above_upper = _F32(_EX[i] - _EX[i + 1]) * y01 - (_F32(_EX[i]) - x)
            above_lower = y - (_F32(_EY[i + 1]) + (_F32(_EX[i + 1]) - x) * _F32(_EY[i + 1]))
            if above_upper < 0 and (above_lower < 0 or y < _expf(-x)):
                return x + shift, pos

    # ---------------------------------------------------------------- bernoulli
    def bernoulli(self, n, p, dtype=np.float64):
        """n draws of boost::bernoulli_distribution<dtype>(p) as a bool array: true when
        dtype(u) <= p * dtype(2^32 - 1), in that precision. p == 0 draws nothing."""
        n = int(n)
        if not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"bernoulli probability {p} is outside [0, 1]")
        if dtype == np.float64:
            p = float(p)
            if p == 0.0:
                return np.zeros(n, dtype=bool)
            # u is exact in double, so double(u) <= P is u <= floor(P): one integer compare.
            return self.raw(n) <= np.uint32(math.floor(p * 4294967295.0))
        p = _F32(p)
        if p == 0:
            return np.zeros(n, dtype=bool)
        return self.raw(n).astype(_F32) <= p * _TWO_32_F


# ---------------------------------------------------------------- the thread's stream
_local = threading.local()


def stream():
    """The calling thread's stream (Caffe::rng_stream), started from the OS if unseeded."""
    s = getattr(_local, "rng", None)
    if s is None:
        s = _local.rng = CaffeRNG()
    return s


def set_random_seed(seed):
    """Caffe::set_random_seed: restart the calling thread's stream at `seed` (an unsigned
    int; negative values wrap as in C++)."""
    _local.rng = CaffeRNG(seed)


def describe():
    """One line for logs and provenance: which stream, and the seed it started from."""
    return f"{NAME} seed {stream().seed} (Caffe's CPU random streams)"
