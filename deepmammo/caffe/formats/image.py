"""Images as Caffe's OpenCV helpers give them (caffe/util/io.cpp), read with Pillow.

Caffe's tools read images with cv::imread, resize them with cv::resize and store them in a
Datum as CVMatToDatum lays them out; this module does the same without OpenCV:

- `read_image(path, is_color)`: cv::imread with IMREAD_COLOR (3 channels, BGR; grey images
  repeated, alpha dropped, 16-bit samples cut to their high byte) or IMREAD_GRAYSCALE (1
  channel). A colour image read as grey is converted as OpenCV's decoders convert it:
  libjpeg's own luma for JPEG, libpng's rgb_to_gray for PNG, cv::cvtColor's fixed-point
  weights for the rest (all three checked pixel for pixel against OpenCV 4.5);
- `resize_linear(image, height, width)`: cv::resize with INTER_LINEAR on 8-bit images, in
  OpenCV's fixed-point arithmetic: source coordinates (d + 0.5) * scale - 0.5 clamped at the
  borders, weights rounded to 11 bits, columns then rows, the vertical pass rounded in the
  steps of OpenCV's vector code (which OpenCV 4.5 and 5.1 run for every 8-bit image; checked
  pixel for pixel against both on random images of 1 to 300 pixels a side, 1, 3 and 4
  channels, exact halving included);
- `image_to_datum` (CVMatToDatum: uint8 `data`, channels-first, BGR order), `encode_image`
  (cv::imencode: PNG lossless, JPEG at OpenCV's default quality 95: other bytes than OpenCV's
  encoder writes, the same pixels for PNG), `decode_datum` (DecodeDatumNative: an encoded
  Datum decoded unchanged, i.e. grey stays one channel and alpha is kept).
"""
import io
import os

import numpy as np

from deepmammo.caffe.formats.datum import DatumError
from deepmammo.caffe.proto import caffe_pb2 as pb


class ImageError(ValueError):
    pass


def _pillow():
    from PIL import Image
    return Image


def _open(source, where):
    Image = _pillow()
    try:
        image = Image.open(source)
        image.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{where}: not an image Pillow can read ({exc})") from None
    return image


def _eight_bit(image):
    """An array of 8-bit samples: 16-bit and 32-bit grey modes keep their high byte, as
    OpenCV's decoders strip 16-bit samples to 8 when no ANYDEPTH flag is given."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return (np.asarray(image).astype(np.uint32) >> 8).astype(np.uint8)
    if image.mode == "I":
        return (np.clip(np.asarray(image), 0, 65535).astype(np.uint32) >> 8).astype(np.uint8)
    return None


def _bgr_gray_cv(rgb):
    """cv::cvtColor BGR2GRAY on 8 bits: 14-bit fixed-point weights, rounded."""
    r, g, b = (rgb[..., i].astype(np.int32) for i in range(3))
    return ((r * 4899 + g * 9617 + b * 1868 + (1 << 13)) >> 14).astype(np.uint8)


def _png_gray(rgb):
    """libpng's rgb_to_gray with the weights OpenCV's PNG decoder gives it (0.299, 0.587):
    15-bit fixed point, truncated."""
    r, g, b = (rgb[..., i].astype(np.int32) for i in range(3))
    return ((r * 9797 + g * 19234 + b * 3737) >> 15).astype(np.uint8)


def read_image(path, is_color=True):
    """The image at `path` as cv::imread gives it: (H, W, 3) BGR uint8, or (H, W) uint8 grey."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such image file")
    with open(path, "rb") as f:
        data = f.read()
    image = _open(io.BytesIO(data), path)
    wide = _eight_bit(image)
    if wide is not None:
        return np.repeat(wide[..., None], 3, axis=2) if is_color else wide
    if not is_color:
        if image.mode in ("L", "1"):
            return np.asarray(image.convert("L"))
        if image.format == "JPEG" and image.mode in ("RGB", "YCbCr", "CMYK"):
            return _jpeg_luma(data)
        rgb = np.asarray(image.convert("RGB"))
        return _png_gray(rgb) if image.format == "PNG" else _bgr_gray_cv(rgb)
    if image.mode in ("L", "1", "LA"):
        grey = np.asarray(image.convert("L"))
        return np.repeat(grey[..., None], 3, axis=2)
    rgb = np.asarray(image.convert("RGB"))
    return np.ascontiguousarray(rgb[..., ::-1])


def _jpeg_luma(data):
    """A colour JPEG decoded straight to grey by libjpeg (its Y channel), as OpenCV's JPEG
    decoder asks for when reading grey."""
    image = _pillow().open(io.BytesIO(data))
    image.draft("L", image.size)
    return np.asarray(image.convert("L"))


def decode_image(data, where="image"):
    """Encoded bytes decoded as cv::imdecode(..., IMREAD_UNCHANGED) gives them: (H, W) grey,
    (H, W, 3) BGR or (H, W, 4) BGRA uint8."""
    image = _open(io.BytesIO(data), where)
    wide = _eight_bit(image)
    if wide is not None:
        raise ImageError(f"{where}: a 16-bit image; Caffe's CVMatToDatum takes 8-bit images "
                         "only")
    if image.mode in ("L", "1"):
        return np.asarray(image.convert("L"))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and
                                              "transparency" in image.info):
        rgba = np.asarray(image.convert("RGBA"))
        return np.ascontiguousarray(rgba[..., [2, 1, 0, 3]])
    rgb = np.asarray(image.convert("RGB"))
    return np.ascontiguousarray(rgb[..., ::-1])


# ------------------------------------------------------------------------------------ resize

_COEF_BITS = 11                 # INTER_RESIZE_COEF_BITS
_COEF_SCALE = 1 << _COEF_BITS


def _linear_taps(src, dst, clamp):
    """For each output index: the two source indices and their 11-bit fixed-point weights.

    Columns (`clamp`): a coordinate before the first or past the last source index takes
    that index alone at full weight. Rows keep the weights of the unclamped coordinate and
    clip the two row indices instead, as OpenCV does."""
    scale = 1.0 / (dst / src)                     # OpenCV keeps 1 / inv_scale in double
    d = np.arange(dst, dtype=np.float64)
    f = ((d + 0.5) * scale - 0.5).astype(np.float32)
    s = np.floor(f).astype(np.int64)
    f = (f - s.astype(np.float32)).astype(np.float32)
    if clamp:
        low, high = s < 0, s >= src - 1
        f[low | high] = 0
        s[low] = 0
        s[high] = src - 1
    w0 = np.rint((np.float32(1) - f) * np.float32(_COEF_SCALE)).astype(np.int64)
    w1 = np.rint(f * np.float32(_COEF_SCALE)).astype(np.int64)
    if clamp:
        # Past the last source index OpenCV takes the one tap at full weight.
        w0[high] = _COEF_SCALE
        w1[high] = 0
    return np.clip(s, 0, src - 1), np.clip(s + 1, 0, src - 1), w0, w1


def resize_linear(image, height, width):
    """cv::resize(image, (width, height), INTER_LINEAR) of an 8-bit (H, W) or (H, W, C) image."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ImageError(f"resize takes 8-bit images, not {image.dtype}")
    if height <= 0 or width <= 0:
        raise ImageError(f"resize to {height} x {width}: both sides must be positive")
    src_h, src_w = image.shape[:2]
    if (src_h, src_w) == (height, width):
        return image.copy()
    x0, x1, a0, a1 = _linear_taps(src_w, width, clamp=True)
    y0, y1, b0, b1 = _linear_taps(src_h, height, clamp=False)
    img = image.astype(np.int64)
    shape = (1, -1) + (1,) * (img.ndim - 2)
    rows = img[:, x0] * a0.reshape(shape) + img[:, x1] * a1.reshape(shape)
    shape = (-1,) + (1,) * (img.ndim - 1)
    # The vertical pass as OpenCV's vector code computes it for 8-bit images: each row sum
    # (22 bits) shifted down by 4 to fit 16 bits, times its 16-bit weight keeping the high
    # 16 bits of the product, the two added and rounded off by 2 more bits.
    top = ((rows[y0] >> 4) * b0.reshape(shape)) >> 16
    bottom = ((rows[y1] >> 4) * b1.reshape(shape)) >> 16
    return np.clip((top + bottom + 2) >> 2, 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------ datums

def image_to_datum(image, label=0):
    """CVMatToDatum: an (H, W) or (H, W, C) uint8 image as a Datum of C x H x W bytes."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ImageError("Caffe's CVMatToDatum takes 8-bit images only")
    chw = image[None] if image.ndim == 2 else np.transpose(image, (2, 0, 1))
    datum = pb.Datum(channels=chw.shape[0], height=chw.shape[1], width=chw.shape[2],
                     data=np.ascontiguousarray(chw).tobytes(), label=int(label))
    datum.encoded = False
    return datum


def encode_image(image, encoding):
    """cv::imencode("." + encoding, image): the bytes of a BGR or grey uint8 image."""
    fmt = {"jpg": "JPEG", "jpeg": "JPEG", "jpe": "JPEG", "png": "PNG", "bmp": "BMP",
           "tif": "TIFF", "tiff": "TIFF", "ppm": "PPM", "pgm": "PPM", "pbm": "PPM"}.get(
        encoding.lower())
    if fmt is None:
        raise ImageError(f"encode_type {encoding!r}: not an image format this tool writes "
                         "(png, jpg, bmp, tiff, ppm)")
    Image = _pillow()
    image = np.asarray(image)
    pil = Image.fromarray(image if image.ndim == 2 else np.ascontiguousarray(image[..., ::-1]))
    buf = io.BytesIO()
    options = {"quality": 95} if fmt == "JPEG" else {}
    pil.save(buf, format=fmt, **options)
    return buf.getvalue()


def decode_datum(datum, where="datum"):
    """DecodeDatumNative: an encoded Datum as a raw one (a raw Datum is returned as it is)."""
    if not datum.encoded:
        return datum
    try:
        image = decode_image(datum.data, where)
    except ImageError as exc:
        raise DatumError(str(exc)) from None
    return image_to_datum(image, datum.label)
