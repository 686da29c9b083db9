"""The mapping from a crop's source grey levels (12 or 16 bit) to the 8-bit range the nets read.

One mapping is chosen per dataset build and recorded in build.json. The default is
**full-range**: `v8 = v * 255 / (2**bits - 1)`, with `bits` the source's bit depth from
cases.csv. Why this default:

- It is what the authors' pipeline did in effect. Their crops were 16-bit TIFFs (the pre-release
  CBIS-DDSM, scaled to the full 16-bit range) and Caffe's `convert_imageset` read them with
  OpenCV's 8-bit colour read, which scales 16-bit samples by 1/256: the full bit range, linearly.
  (`v * 255/65535` and `v / 256` differ by less than one grey level.)
- It is one global, fixed mapping: a grey level means the same film density in every crop, so the
  brightness of a mass against its surround (which radiologists read) survives, and one mean
  image subtracted from all crops is meaningful. A per-crop window would stretch a faint mass
  and a dense one to the same contrast.

Alternatives, for ablations: `window` (per-crop percentile window, for example 0.5-99.5 %, the
common "auto contrast" of later pipelines) and `od` (DDSM optical density from the scanner's
calibration, clipped to [0.05, 3.0] and shown with dense tissue bright).

All mappings return float32 in [0, 255]; geometry (rotation, resizing) is done on these floats and
the result is rounded to uint8 once, at the end.
"""
import math

import numpy as np

# DDSM calibration (grey level GL -> optical density), keyed by scanner name as in cases.csv.
# Source: the USF DDSM documentation.
OD_RANGE = (0.05, 3.0)


def _od_dba(gl):
    return (np.log10(np.clip(gl, 4, 64064)) - 4.80662) / -1.07553


def _od_howtek_mgh(gl):
    return 3.789 - 0.00094568 * np.minimum(gl, 4006)


def _od_howtek_ismd(gl):
    return 3.96604095240593 - 0.00099055807612 * np.minimum(gl, 4003)


def _od_lumisys(gl):
    return (np.clip(gl, 61, 4097) - 4096.99) / -1009.01


OD_SCANNERS = {
    "dba": _od_dba,
    "howtek": _od_howtek_mgh,
    "howtek_mgh": _od_howtek_mgh,
    "howtek_ismd": _od_howtek_ismd,
    "lumisys": _od_lumisys,
}


class GreyMapping:
    """A named mapping with its parameters; `apply(arr, bits, scanner)` -> float32 [0, 255]."""

    KINDS = ("full-range", "window", "od")

    def __init__(self, kind="full-range", low=0.5, high=99.5):
        if kind not in self.KINDS:
            raise ValueError(f"grey mapping {kind!r}: expected one of {', '.join(self.KINDS)}")
        if kind == "window" and not 0 <= low < high <= 100:
            raise ValueError(f"grey window {low}-{high}: need 0 <= low < high <= 100 (percent)")
        self.kind, self.low, self.high = kind, float(low), float(high)

    @classmethod
    def parse(cls, text):
        """'full-range', 'od', 'window' or 'window:LOW-HIGH' (percentiles)."""
        kind, _, arg = text.partition(":")
        if kind == "window" and arg:
            try:
                low, high = (float(x) for x in arg.split("-"))
            except ValueError:
                raise ValueError(f"grey mapping {text!r}: expected window:LOW-HIGH, "
                                 "e.g. window:0.5-99.5") from None
            return cls(kind, low, high)
        if arg:
            raise ValueError(f"grey mapping {text!r}: {kind} takes no parameters")
        return cls(kind)

    def to_config(self):
        cfg = {"kind": self.kind}
        if self.kind == "window":
            cfg.update(low_percentile=self.low, high_percentile=self.high)
        if self.kind == "od":
            cfg.update(od_range=list(OD_RANGE), bright="low optical density (dense tissue)")
        if self.kind == "full-range":
            cfg.update(formula="v * 255 / (2**bits - 1)")
        return cfg

    def __str__(self):
        return f"window:{self.low:g}-{self.high:g}" if self.kind == "window" else self.kind

    def apply(self, arr, bits, scanner=""):
        """Map a 2-D array of source grey levels to float32 in [0, 255]."""
        arr = np.asarray(arr)
        if self.kind == "full-range":
            return full_range(arr, bits)
        if self.kind == "window":
            return window(arr, self.low, self.high)
        return optical_density(arr, scanner)


def full_range(arr, bits):
    bits = int(bits)
    if not 1 <= bits <= 16:
        raise ValueError(f"bits={bits}: expected 1..16")
    top = float(2 ** bits - 1)
    # Values above the declared depth (a mislabelled 12-bit image) saturate rather than wrap.
    return np.minimum(arr.astype(np.float32) * np.float32(255.0 / top), np.float32(255.0))


def window(arr, low=0.5, high=99.5):
    lo, hi = np.percentile(arr, [low, high])
    if not math.isfinite(lo) or hi <= lo:
        return np.zeros(arr.shape, np.float32)  # a flat crop: nothing to stretch
    out = (arr.astype(np.float32) - np.float32(lo)) * np.float32(255.0 / (hi - lo))
    return np.clip(out, 0, 255)


def scanner_key(scanner):
    key = str(scanner or "").strip().lower().replace(" ", "_").replace("-", "_")
    for name in sorted(OD_SCANNERS, key=len, reverse=True):
        if key.startswith(name):
            return name
    raise ValueError(f"scanner {scanner!r}: no optical-density calibration "
                     f"(known: {', '.join(sorted(OD_SCANNERS))})")


def optical_density(arr, scanner):
    od = OD_SCANNERS[scanner_key(scanner)](arr.astype(np.float64))
    lo, hi = OD_RANGE
    od = np.clip(od, lo, hi)
    # High density (tissue) is low OD on film; show it bright as on a light box.
    return ((hi - od) * (255.0 / (hi - lo))).astype(np.float32)
