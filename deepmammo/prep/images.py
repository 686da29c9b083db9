"""Reading crop PNGs at their bit depth (the crops stage writes them with
deepmammo.sources.images.write_png; the cases table and its images are read through
deepmammo.sources.cases)."""
import os

import numpy as np
from PIL import Image


def read_grey(path):
    """A 2-D uint8 or uint16 array from a PNG/TIFF file (16-bit kept as uint16)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: image file not found")
    try:
        return _read_grey(path)
    except (OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(f"{path}: cannot read the image ({exc})") from None


def _read_grey(path):
    with Image.open(path) as im:
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(im)
            if arr.dtype != np.uint16:
                if arr.min() < 0 or arr.max() > 65535:
                    raise ValueError(f"{path}: grey values outside 0..65535")
                arr = arr.astype(np.uint16)
            return arr
        if im.mode in ("1", "L", "P"):
            return np.asarray(im.convert("L"))
        if im.mode in ("RGB", "RGBA", "LA"):
            return np.asarray(im.convert("L"))
        raise ValueError(f"{path}: unsupported image mode {im.mode}")
