"""Compute Boost.Random's ziggurat tables (normal: 128 layers, exponential: 256) and write them
to deepmammo/caffe/ziggurat_tables.py as exact hex floats.

Caffe draws its Gaussian fillers through boost::normal_distribution, whose ziggurat reads two
tables of layer edges x[i] and heights y[i] = f(x[i]). Both tables follow from one number, the
base layer's edge r: every layer (the base including its tail) has the same area v, so
x[i+1] = f^-1(f(x[i]) + v / x[i]), and r is the value for which the last layer ends at x = 0.
Solving for r in 50-digit arithmetic and rounding each entry to a double gives Boost 1.74's
tables bit for bit. Needs mpmath (installed with torch, through sympy); run it only to
regenerate the module: `python scripts/make_ziggurat_tables.py`.
"""
import os
import sys

import mpmath as mp

HERE = os.path.dirname(os.path.abspath(__file__))
TARGET = os.path.join(HERE, os.pardir, "deepmammo", "caffe", "ziggurat_tables.py")


def _layers(f, finv, tail, n, r):
    """Edges x[0..n-1] for base edge r, and how far the top layer misses y = 1."""
    v = r * f(r) + tail(r)
    xs = [v / f(r), r]
    for i in range(1, n - 1):
        y = f(xs[i]) + v / xs[i]
        if y >= 1:
            return xs, mp.mpf(n - i)         # ran out of height before n layers: r too small
        xs.append(finv(y))
    return xs, f(xs[-1]) + v / xs[-1] - 1


def _solve(f, finv, tail, n, lo, hi):
    lo, hi = mp.mpf(lo), mp.mpf(hi)
    positive_at_lo = _layers(f, finv, tail, n, lo)[1] > 0
    for _ in range(190):
        mid = (lo + hi) / 2
        if (_layers(f, finv, tail, n, mid)[1] > 0) == positive_at_lo:
            lo = mid
        else:
            hi = mid
    xs = _layers(f, finv, tail, n, (lo + hi) / 2)[0] + [mp.mpf(0)]
    ys = [mp.mpf(0)] + [f(x) for x in xs[1:]]
    return [float(x) for x in xs], [float(y) for y in ys]


def tables():
    """{'normal_x', 'normal_y', 'exp_x', 'exp_y'}: lists of floats, as Boost 1.74 holds them."""
    with mp.workdps(50):
        nx, ny = _solve(lambda x: mp.exp(-x * x / 2), lambda y: mp.sqrt(-2 * mp.log(y)),
                        lambda r: mp.sqrt(mp.pi / 2) * mp.erfc(r / mp.sqrt(2)), 128, 3.3, 3.6)
        ex, ey = _solve(lambda x: mp.exp(-x), lambda y: -mp.log(y), lambda r: mp.exp(-r),
                        256, 7.5, 7.9)
    return {"normal_x": nx, "normal_y": ny, "exp_x": ex, "exp_y": ey}


def render(t):
    lines = ['"""Boost.Random 1.74\'s ziggurat tables as exact doubles (written by',
             'scripts/make_ziggurat_tables.py; see there how they are computed)."""', ""]
    for name, values in t.items():
        lines.append(f"{name.upper()} = tuple(float.fromhex(h) for h in (")
        for k in range(0, len(values), 3):
            lines.append("    " + " ".join(f'"{v.hex()}",' for v in values[k:k + 3]))
        lines.append("))")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    text = render(tables())
    with open(TARGET, "w") as fh:
        fh.write(text)
    print(f"wrote {os.path.normpath(TARGET)}", file=sys.stderr)
