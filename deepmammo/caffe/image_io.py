"""Images as Caffe's ImageData and WindowData layers read them through OpenCV, without OpenCV:
decoding with Pillow, resizing in numpy.

`imread(path, is_color)` is cv::imread with IMREAD_COLOR (3 channels in OpenCV's B, G, R
order; a grey image repeated into all three) or IMREAD_GRAYSCALE (1 channel), as an
(H, W, C) uint8 array. Colour to grey as OpenCV's codecs do it: JPEG is decoded straight to
grey by libjpeg (its luma), PNG by libpng's rgb_to_gray ((9797 R + 19234 G + 3737 B) >> 15),
other formats by OpenCV's BT.601 weights ((4899 R + 9617 G + 1868 B + 2^13) >> 14). 16-bit
images keep their high byte, as OpenCV's 8-bit read does (a 16-bit colour PNG read as grey
may differ by one level: libpng converts it before dropping the low byte, which Pillow has
already dropped); alpha is dropped. Unreadable files give None, as cv::imread does. Checked
against opencv-python 4.10 on PNG (8/16-bit, grey, RGB, RGBA, palette), JPEG (4:4:4, 4:2:0),
BMP and TIFF files: equal in every pixel but that one case.

`resize_linear(img, height, width)` is cv::resize with INTER_LINEAR on 8-bit images:
pixel centres at half-integers (source x = (dx + 0.5) * src_w / dst_w - 0.5), samples
clamped at the edges, weights in 11-bit fixed point (round(w * 2048)), a horizontal pass in
integers then a vertical pass rounded as OpenCV's vectorised path does
(((a >> 4) * b0 >> 16) + ((c >> 4) * b1 >> 16) + 2) >> 2; an exact halving of both sides is
OpenCV's 2x2 average, (sum + 2) >> 2. Against opencv-python 4.10: equal in every pixel of
400 random resizes (1 to 130 pixels a side, up and down, 1 and 3 channels) and of the usual
227/256 sizes (tests/test_engine_layers_data.py keeps hand-computed cases, OpenCV being no
dependency here).
"""
import numpy as np

_COEF_BITS = 11
_COEF_SCALE = 1 << _COEF_BITS


def imread(path, is_color=True):
    """The image at `path` as (H, W, 3) BGR or (H, W, 1) grey uint8, or None if unreadable."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as img:
            if not is_color and img.format == "JPEG" and img.mode in ("RGB", "YCbCr", "L"):
                img.draft("L", img.size)       # libjpeg's own grey output, as OpenCV's
            img.load()
            arr = _to_uint8(img)
            kind = img.format
    except (OSError, UnidentifiedImageError, ValueError):
        return None
    if arr.ndim == 2:
        grey = arr
        return np.repeat(grey[:, :, None], 3, axis=2) if is_color else grey[:, :, None]
    rgb = arr[:, :, :3]
    if is_color:
        return np.ascontiguousarray(rgb[:, :, ::-1])
    if kind == "PNG":
        # libpng's rgb_to_gray (OpenCV asks libpng for grey): 15-bit weights, truncated.
        grey = (rgb.astype(np.int64) @ np.array([9797, 19234, 3737], dtype=np.int64)) >> 15
    else:
        # OpenCV's own BGR2GRAY: 14-bit weights, rounded.
        weights = np.array([4899, 9617, 1868], dtype=np.int64)      # R, G, B
        grey = (rgb.astype(np.int64) @ weights + (1 << 13)) >> 14
    return grey.astype(np.uint8)[:, :, None]


def _to_uint8(img):
    """Pillow image -> uint8 array (H, W) or (H, W, 3|4)."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img).astype(np.int64)
        return (np.clip(arr, 0, 65535) >> 8).astype(np.uint8)
    if mode == "1":
        return np.asarray(img.convert("L"))
    if mode in ("L", "RGB"):
        return np.asarray(img)
    if mode in ("LA", "La"):
        return np.asarray(img.convert("L"))
    return np.asarray(img.convert("RGB"))


def _coefficients(src, dst):
    """Per destination index: the first source index and the two fixed-point weights, as
    OpenCV computes them (in float, then rounded to 11 bits)."""
    scale = src / dst
    f = ((np.arange(dst, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    i = np.floor(f).astype(np.int64)
    frac = (f - i.astype(np.float32)).astype(np.float32)
    low = i < 0
    high = i >= src - 1
    frac = np.where(low | high, np.float32(0), frac)
    i = np.where(low, 0, np.where(high, src - 1, i))
    w1 = np.rint(frac * np.float32(_COEF_SCALE)).astype(np.int64)
    w0 = np.rint((np.float32(1) - frac) * np.float32(_COEF_SCALE)).astype(np.int64)
    return i, np.minimum(i + 1, src - 1), w0, w1


def _vertical_coefficients(src, dst):
    """As `_coefficients`, but OpenCV keeps the vertical weights at the edges and clamps the
    rows instead (the same values: both rows are the edge row)."""
    scale = src / dst
    f = ((np.arange(dst, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    i = np.floor(f).astype(np.int64)
    frac = (f - i.astype(np.float32)).astype(np.float32)
    w1 = np.rint(frac * np.float32(_COEF_SCALE)).astype(np.int64)
    w0 = np.rint((np.float32(1) - frac) * np.float32(_COEF_SCALE)).astype(np.int64)
    return np.clip(i, 0, src - 1), np.clip(i + 1, 0, src - 1), w0, w1


def resize_linear(img, height, width):
    """cv::resize(img, (width, height), INTER_LINEAR) of an (H, W, C) uint8 image."""
    img = np.asarray(img)
    if img.dtype != np.uint8 or img.ndim != 3:
        raise ValueError(f"resize_linear takes (H, W, C) uint8 images, got {img.dtype} "
                         f"{img.shape}")
    h, w, _ = img.shape
    height, width = int(height), int(width)
    if height <= 0 or width <= 0 or h == 0 or w == 0:
        raise ValueError(f"cannot resize a {h}x{w} image to {height}x{width}")
    if (h, w) == (height, width):
        return img.copy()
    if h == 2 * height and w == 2 * width:
        # OpenCV turns an exact halving into its 2x2 area average.
        s = img.astype(np.int32)
        total = s[0::2, 0::2] + s[0::2, 1::2] + s[1::2, 0::2] + s[1::2, 1::2]
        return ((total + 2) >> 2).astype(np.uint8)
    x0, x1, a0, a1 = _coefficients(w, width)
    y0, y1, b0, b1 = _vertical_coefficients(h, height)
    s = img.astype(np.int64)
    rows = s[:, x0, :] * a0[None, :, None] + s[:, x1, :] * a1[None, :, None]   # (h, W, C)
    top = ((rows[y0] >> 4) * b0[:, None, None]) >> 16
    bottom = ((rows[y1] >> 4) * b1[:, None, None]) >> 16
    return np.clip((top + bottom + 2) >> 2, 0, 255).astype(np.uint8)
