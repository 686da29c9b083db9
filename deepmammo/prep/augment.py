"""Offline augmentation (paper section 3.2) and the plain resize + centre crop.

Every output image is rendered in one resampling step from the grey-mapped crop (float32,
0-255): rotation (clockwise, about the centre, onto a canvas large enough for the whole rotated
crop, as ImageMagick's `-rotate` does), optional centred window, and resizing so the shorter side
is `size`. Large reductions are first prefiltered with an antialiasing resize, so detail is
averaged rather than skipped. The 224x224 records are then cut from that image and rounded to
uint8 once.

Plans (one list of record specs per crop, drawn from the crop's own random generator):
- `paper` (training): 5 rotations by uniform random angles in [0, 360), corners filled with the
  training set's mean pixel, each resized to `size` on the shorter side, then 5 random
  size x size crops each: 25 records.
- `code` (training, the authors' script): the unrotated original plus 4 rotations by random whole
  degrees, corners filled with grey 132; the rotated ones cut to their centre 0.6 x 0.6 before the
  shorter side is resized to `size` (length truncated, as their int()); 5 random crops each with
  offsets int(uniform(0, excess)): 25 records.
- `eval` (validation, test, and training under `none`): resized to `size` on the shorter side and
  cut once in the centre, at Caffe's centre-crop offset (excess // 2); or, with
  `eval_resize="squash"`, resized to size x size ignoring the aspect ratio (what the authors'
  convert_imageset call did).
"""
import math

import numpy as np
from PIL import Image

PAPER_ROTATIONS, PAPER_CROPS = 5, 5
CODE_FILL, CODE_WINDOW = 132.0, 0.6


def rotated_extent(h, w, angle):
    """(height, width) of the box holding an h x w image rotated by `angle` degrees."""
    a = math.radians(angle)
    c, s = abs(math.cos(a)), abs(math.sin(a))
    # Rounding noise (cos 90 = 6e-17) must not add a pixel.
    return round(h * c + w * s, 9), round(w * c + h * s, 9)


def shorter_side(h, w, size, truncate=False):
    """Output (height, width) with the shorter side `size`, the other scaled alike."""
    if h <= w:
        other = w * size / h
        return size, max(size, int(other) if truncate else int(round(other)))
    other = h * size / w
    return max(size, int(other) if truncate else int(round(other))), size


def prefilter_scale(window, out_shape):
    """The net reduction (output pixels per source pixel) of a render."""
    return min(out_shape[0] / window[0], out_shape[1] / window[1])


def prefiltered(grey, scale_y, scale_x=None):
    """`grey` reduced by `scale` (per axis if two are given) with an antialiasing
    (area-weighted bilinear) resize."""
    scale_x = scale_y if scale_x is None else scale_x
    h, w = grey.shape
    ph, pw = max(1, int(round(h * scale_y))), max(1, int(round(w * scale_x)))
    im = Image.fromarray(np.ascontiguousarray(grey, dtype=np.float32))  # mode F
    return np.asarray(im.resize((pw, ph), Image.BILINEAR))


def render(grey, angle, fill, window, out_shape, source=None):
    """Rotate `grey` by `angle` degrees clockwise, take the centred `window` (height, width, in
    rotated full-resolution pixels), resample it to `out_shape`. Returns float32.

    `source`: an antialiased reduction of `grey` to sample from (see `prefiltered`); by default
    one is made when the reduction is large (below 0.8).
    """
    h, w = grey.shape
    oh, ow = out_shape
    wh, ww = window
    sy, sx = oh / wh, ow / ww  # output pixels per source pixel (nearly equal)
    src = source
    if src is None and angle % 360 == 0:
        # No rotation: the axes stay apart, so each is reduced by its own factor (a squash
        # resize shrinks one axis and may stretch the other).
        py, px = (sy if sy < 0.8 else 1.0), (sx if sx < 0.8 else 1.0)
        src = prefiltered(grey, py, px) if min(py, px) < 1.0 else grey
    elif src is None:
        pre = min(sy, sx)
        src = prefiltered(grey, pre) if pre < 0.8 else grey
    ky, kx = src.shape[0] / h, src.shape[1] / w  # source-to-prefiltered scale per axis
    a = math.radians(angle)
    c, s = math.cos(a), math.sin(a)
    # Continuous coordinates (pixel centres at +0.5). Output point (Y, X) -> relative to the
    # window centre -> rotated back into the original crop -> scaled into the prefiltered one:
    #   rel = (Y / sy - wh / 2, X / sx - ww / 2)
    #   (y, x) = [[c, -s], [s, c]] @ rel + (h / 2, w / 2)
    #   source = (ky * y, kx * x)
    # PIL's affine transform takes exactly this map, as x_in = a X + b Y + c0, y_in = d X + e Y + f.
    coeffs = (kx * c / sx, kx * s / sy, kx * (w / 2 - s * wh / 2 - c * ww / 2),
              -ky * s / sx, ky * c / sy, ky * (h / 2 - c * wh / 2 + s * ww / 2))
    out = Image.fromarray(np.ascontiguousarray(src, dtype=np.float32)).transform(
        (ow, oh), Image.AFFINE, coeffs, resample=Image.BILINEAR, fillcolor=float(fill))
    return np.asarray(out)


def to_uint8(arr):
    return np.clip(np.rint(arr), 0, 255).astype(np.uint8)


def plan_eval(h, w, size, resize="crop"):
    """One record: `crop` = shorter side to `size`, centre cut (default); `squash` = the whole
    crop resized to size x size, aspect ignored, as the authors' `convert_imageset
    --resize_height --resize_width` made their unaugmented LMDBs."""
    if resize == "squash":
        rh, rw = size, size
    elif resize == "crop":
        rh, rw = shorter_side(h, w, size)
    else:
        raise ValueError(f"eval resize {resize!r}: expected crop or squash")
    return [dict(rotation=0, crop=0, angle=0.0, fill=0.0, window_h=h, window_w=w,
                 resized_h=rh, resized_w=rw, offset_row=(rh - size) // 2,
                 offset_col=(rw - size) // 2)]


def plan_paper(h, w, size, rng, fill, rotations=PAPER_ROTATIONS, crops=PAPER_CROPS):
    specs = []
    for r in range(rotations):
        angle = float(rng.uniform(0.0, 360.0))
        eh, ew = rotated_extent(h, w, angle)
        rh, rw = shorter_side(eh, ew, size)
        for k in range(crops):
            specs.append(dict(rotation=r, crop=k, angle=angle, fill=float(fill), window_h=eh,
                              window_w=ew, resized_h=rh, resized_w=rw,
                              offset_row=int(rng.integers(0, rh - size + 1)),
                              offset_col=int(rng.integers(0, rw - size + 1))))
    return specs


def plan_code(h, w, size, rng, rotations=PAPER_ROTATIONS, crops=PAPER_CROPS):
    specs = []
    for r in range(rotations):
        if r == 0:  # their first copy is the crop itself, not rotated, not windowed
            angle, wh, ww = 0.0, float(h), float(w)
        else:
            angle = float(int(rng.uniform(0, 360)))
            eh, ew = rotated_extent(h, w, angle)
            wh, ww = float(max(1, int(CODE_WINDOW * eh))), float(max(1, int(CODE_WINDOW * ew)))
        rh, rw = shorter_side(wh, ww, size, truncate=True)
        for k in range(crops):
            specs.append(dict(rotation=r, crop=k, angle=angle, fill=CODE_FILL, window_h=wh,
                              window_w=ww, resized_h=rh, resized_w=rw,
                              offset_row=int(rng.uniform(0, rh - size)),
                              offset_col=int(rng.uniform(0, rw - size))))
    return specs


def records_per_crop(augment, split):
    if split != "train" or augment == "none":
        return 1
    if augment in ("paper", "code"):
        return PAPER_ROTATIONS * PAPER_CROPS
    raise ValueError(f"augment {augment!r}: expected paper, code or none")


def plan(augment, split, h, w, size, rng, fill, eval_resize="crop"):
    if split != "train" or augment == "none":
        return plan_eval(h, w, size, eval_resize)
    if augment == "paper":
        return plan_paper(h, w, size, rng, fill)
    if augment == "code":
        return plan_code(h, w, size, rng)
    raise ValueError(f"augment {augment!r}: expected paper, code or none")


def _fits(pre, p, low=0.8):
    return low - 1e-9 <= pre / p <= 1.0 + 1e-9


def _shared_sources(grey, specs, low=0.8):
    """Antialiasing reductions of the crop shared between rotations.

    Each rotation needs a net reduction `pre`; one reduction made at scale p serves every
    rotation with low <= pre / p <= 1 (the bilinear transform does the small remainder). The
    scales needed are covered greedily from the smallest, so random angles (whose scales differ
    by at most sqrt 2) need at most two resizes instead of five.
    """
    pres = sorted({prefilter_scale((s["window_h"], s["window_w"]),
                                   (s["resized_h"], s["resized_w"]))
                   for s in specs if s["angle"] % 360 != 0})
    sources = []
    for pre in pres:
        if pre >= low or any(_fits(pre, p, low) for p, _ in sources):
            continue
        p = min(pre / low, 1.0)
        sources.append((p, prefiltered(grey, p) if p < 1.0 else grey))
    return sources


def realise(grey, specs, size):
    """The uint8 size x size records of a plan, one per spec (rendering each rotation once)."""
    out, cache = [], {}
    sources = _shared_sources(grey, specs)
    for spec in specs:
        key = (spec["angle"], spec["window_h"], spec["window_w"], spec["resized_h"],
               spec["resized_w"], spec["fill"])
        if key not in cache:
            cache.clear()  # specs come grouped by rotation
            window = (spec["window_h"], spec["window_w"])
            shape = (spec["resized_h"], spec["resized_w"])
            pre = prefilter_scale(window, shape)
            if spec["angle"] % 360 == 0:
                src = None  # unrotated: render reduces each axis by its own factor
            else:
                src = grey if pre >= 0.8 else next(s for p, s in sources if _fits(pre, p))
            cache[key] = to_uint8(render(grey, spec["angle"], spec["fill"], window, shape,
                                         source=src))
        img = cache[key]
        r, c = spec["offset_row"], spec["offset_col"]
        rec = img[r:r + size, c:c + size]
        if rec.shape != (size, size):
            raise AssertionError(f"record {rec.shape} from {img.shape} at {r},{c}")
        out.append(np.ascontiguousarray(rec))
    return out
