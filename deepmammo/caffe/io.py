"""pycaffe's `caffe.io` for `import deepmammo.caffe as caffe` scripts: BlobProto/Datum
conversions, the input Transformer, image loading, resizing and oversampling.

The numbers are pycaffe's, without scikit-image: load_image converts pixels as
skimage.img_as_float does (8-bit v/255, 16-bit v/65535, in float32 arithmetic; grey from colour
as rgb2gray, transparency onto white as rgba2rgb), and resize_image calls scipy.ndimage with
the arguments skimage.transform.resize passes it (the same Gaussian anti-aliasing, grid-mode
zoom, padding and clipping), so both give the same values to the bit.

Where this differs from pycaffe (on purpose): preprocess never writes into the caller's array
(pycaffe's in-place scaling does when the image already has the net's size and no transpose);
set_mean resizes a constant mean image of another size to that constant (pycaffe's
normalisation divides by zero and gives NaNs) and an (H, W) mean of another size as one
channel (pycaffe's transpose fails on it); blobproto_to_array reads `double_data` when a
blob has no float `data`.
"""
import numpy as np
from scipy import ndimage

from deepmammo.caffe.formats.blobproto import _packed_floats
from deepmammo.caffe.proto import caffe_pb2

_LEGACY_FIELDS = ("num", "channels", "height", "width")


# ---------------------------------------------------------------- proto / datum / ndarray

def blobproto_to_array(blob, return_diff=False):
    """A BlobProto's data (or diff) as an array of its shape (float32; float64 from
    double_data): the legacy 4-D shape when any of num/channels/height/width is set, else
    `shape` (no dims: a 0-d array, so a blob of several values and no shape raises
    ValueError)."""
    if return_diff:
        values = blob.diff if len(blob.diff) or not len(blob.double_diff) else blob.double_diff
    else:
        values = blob.data if len(blob.data) or not len(blob.double_data) else blob.double_data
    data = np.array(values)
    if any(blob.HasField(f) for f in _LEGACY_FIELDS):
        return data.reshape(blob.num, blob.channels, blob.height, blob.width)
    return data.reshape(tuple(blob.shape.dim))


def array_to_blobproto(arr, diff=None):
    """A BlobProto with `shape` and the values of `arr` (and of `diff`, unchecked, as
    pycaffe)."""
    arr = np.asarray(arr)
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend(int(d) for d in arr.shape)
    # The values as packed float32 wire bytes: what extending the field value by value gives,
    # without the per-value conversion.
    blob.MergeFromString(_packed_floats(5, arr.astype(np.float32)))
    if diff is not None:
        blob.MergeFromString(_packed_floats(6, np.asarray(diff).astype(np.float32)))
    return blob


def arraylist_to_blobprotovector_str(arraylist):
    """Serialized BlobProtoVector of the arrays."""
    vec = caffe_pb2.BlobProtoVector()
    vec.blobs.extend([array_to_blobproto(arr) for arr in arraylist])
    return vec.SerializeToString()


def blobprotovector_str_to_arraylist(data):
    """The arrays of a serialized BlobProtoVector."""
    vec = caffe_pb2.BlobProtoVector()
    vec.ParseFromString(data)
    return [blobproto_to_array(blob) for blob in vec.blobs]


def array_to_datum(arr, label=None):
    """A Datum from a 3-D (C, H, W) array: uint8 as the `data` bytes, anything else as
    `float_data`. label=None leaves the label unset (a smaller record)."""
    if arr.ndim != 3:
        raise ValueError("Incorrect array shape.")
    datum = caffe_pb2.Datum()
    datum.channels, datum.height, datum.width = arr.shape
    if arr.dtype == np.uint8:
        datum.data = arr.tobytes()
    else:
        datum.float_data.extend(arr.astype(np.float32).ravel().tolist())
    if label is not None:
        datum.label = label
    return datum


def datum_to_array(datum):
    """A Datum's pixels (C, H, W): uint8 from `data`, else float64 from `float_data` (the
    label stays in datum.label)."""
    shape = (datum.channels, datum.height, datum.width)
    if len(datum.data):
        return np.frombuffer(datum.data, dtype=np.uint8).copy().reshape(shape)
    return np.array(datum.float_data, dtype=np.float64).reshape(shape)


# ------------------------------------------------------------------------ preprocessing

class Transformer:
    """Prepare images for a net's input blobs, and undo it (pycaffe's caffe.io.Transformer).

    `inputs`: {blob name: blob shape (N, C, H, W)}, e.g. {"data": net.blobs["data"].data.shape}.
    preprocess: float32, resize to (H, W), transpose, channel swap, raw scale, minus the mean,
    input scale; deprocess undoes all but the resize.
    """

    def __init__(self, inputs):
        self.inputs = inputs
        self.transpose = {}
        self.channel_swap = {}
        self.raw_scale = {}
        self.mean = {}
        self.input_scale = {}

    def _check_input(self, in_):
        if in_ not in self.inputs:
            raise Exception(f"{in_} is not one of the net inputs: {self.inputs}")

    def preprocess(self, in_, data):
        """An image (H', W', K) as the input blob's (K, H, W) float32."""
        self._check_input(in_)
        caffe_in = np.array(data, dtype=np.float32)   # a copy: the steps below work in place
        in_dims = self.inputs[in_][2:]
        if caffe_in.shape[:2] != in_dims:
            caffe_in = resize_image(caffe_in, in_dims)
        if in_ in self.transpose:
            caffe_in = caffe_in.transpose(self.transpose[in_])
        if in_ in self.channel_swap:
            caffe_in = caffe_in[list(self.channel_swap[in_]), :, :]
        # In place on float32, as pycaffe: each product is rounded to float32 at once.
        if in_ in self.raw_scale:
            caffe_in *= self.raw_scale[in_]
        if in_ in self.mean:
            caffe_in -= self.mean[in_]
        if in_ in self.input_scale:
            caffe_in *= self.input_scale[in_]
        return caffe_in

    def deprocess(self, in_, data):
        """Undo preprocess (but the resize): a (K, H, W) input back to (H, W, K)."""
        self._check_input(in_)
        decaf_in = data.copy().squeeze()
        if in_ in self.input_scale:
            decaf_in /= self.input_scale[in_]
        if in_ in self.mean:
            decaf_in += self.mean[in_]
        if in_ in self.raw_scale:
            decaf_in /= self.raw_scale[in_]
        if in_ in self.channel_swap:
            decaf_in = decaf_in[np.argsort(self.channel_swap[in_]), :, :]
        if in_ in self.transpose:
            decaf_in = decaf_in.transpose(np.argsort(self.transpose[in_]))
        return decaf_in

    def set_transpose(self, in_, order):
        """The order of the axes, e.g. (2, 0, 1): an H x W x C image to C x H x W."""
        self._check_input(in_)
        if len(order) != len(self.inputs[in_]) - 1:
            raise Exception("Transpose order needs to have the same number of "
                            "dimensions as the input.")
        self.transpose[in_] = order

    def set_channel_swap(self, in_, order):
        """The order to take the channels in after the transpose, e.g. (2, 1, 0): RGB to
        BGR."""
        self._check_input(in_)
        if len(order) != self.inputs[in_][1]:
            raise Exception("Channel swap needs to have the same number of "
                            "dimensions as the input channels.")
        self.channel_swap[in_] = order

    def set_raw_scale(self, in_, scale):
        """Scale of the raw input (before the mean): 255 for models trained on [0, 255]
        pixels, as images load in [0, 1]."""
        self._check_input(in_)
        self.raw_scale[in_] = scale

    def set_mean(self, in_, mean):
        """The mean to subtract: one value per channel (C,), or an image (C, H, W) or (H, W);
        an image of another size is resized to the input's."""
        self._check_input(in_)
        ms = mean.shape
        if mean.ndim == 1:
            if ms[0] != self.inputs[in_][1]:
                raise ValueError("Mean channels incompatible with input.")
            mean = mean[:, np.newaxis, np.newaxis]
        else:
            if len(ms) == 2:
                ms = (1,) + ms
            if len(ms) != 3:
                raise ValueError("Mean shape invalid")
            in_shape = tuple(self.inputs[in_][1:])
            if ms != in_shape:
                mean = mean.reshape(ms)          # an (H, W) mean as one channel
                m_min, m_max = mean.min(), mean.max()
                if m_max > m_min:
                    normal_mean = (mean - m_min) / (m_max - m_min)
                    mean = resize_image(normal_mean.transpose((1, 2, 0)),
                                        in_shape[1:]).transpose((2, 0, 1)) * \
                        (m_max - m_min) + m_min
                else:
                    mean = np.full((ms[0],) + in_shape[1:], m_min, dtype=np.float32)
        self.mean[in_] = mean

    def set_input_scale(self, in_, scale):
        """Scale after the mean subtraction: blob = (input * raw_scale - mean) * scale."""
        self._check_input(in_)
        self.input_scale[in_] = scale


# ------------------------------------------------------------------------------ image IO

def _read_pixels(filename):
    """The file's pixels as its reader gives them: (H, W) or (H, W, K), of the file's type
    (uint8, uint16 for 16-bit PNG, bool for 1-bit); palettes expanded."""
    from PIL import Image
    with Image.open(filename) as im:
        if im.mode == "P":
            im = im.convert(im.palette.mode)
        elif im.format == "PNG" and im.mode == "I":
            im = im.convert("I;16")       # a 16-bit PNG Pillow opened as 32-bit
        elif im.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
            im = im.convert("RGB")
        arr = np.array(im)
    if arr.dtype.byteorder not in ("=", "|"):
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr


def _as_float(img):
    """skimage.img_as_float: integers times 1 / their type's maximum in float64 (8-bit v/255,
    16-bit v/65535), bool to 0/1, floats unchanged."""
    if img.dtype.kind == "f":
        return img
    if img.dtype == bool:
        return img.astype(np.float64)
    if img.dtype.kind not in "ui":
        raise ValueError(f"cannot convert pixels of type {img.dtype} to float")
    out = np.multiply(img, 1.0 / np.iinfo(img.dtype).max, dtype=np.float64)
    if img.dtype.kind == "i":
        np.maximum(out, -1.0, out=out)
    return out


def _grey(img):
    """skimage's as_gray reading: colour to luminance (transparency blended onto white)."""
    if img.ndim <= 2:
        return img
    rgb = _as_float(img)
    if rgb.dtype == np.float16:
        rgb = rgb.astype(np.float32)
    if rgb.shape[2] == 4:
        white = np.ones(3, dtype=rgb.dtype)
        alpha = rgb[..., 3:4]
        rgb = np.clip((1 - alpha) * white + alpha * rgb[..., :3], a_min=0, a_max=1)
    return rgb @ np.array([0.2125, 0.7154, 0.0721], dtype=rgb.dtype)


def load_image(filename, color=True):
    """An image file as float32 in [0, 1]: (H, W, 3) RGB when `color` (grey files tiled to
    three channels, alpha dropped), else (H, W, 1) intensity."""
    pixels = _read_pixels(filename)
    if not color:
        pixels = _grey(pixels)
    img = _as_float(pixels).astype(np.float32)
    if img.ndim == 2:
        img = img[:, :, np.newaxis]
        if color:
            img = np.tile(img, (1, 1, 3))
    elif img.shape[2] == 4:
        img = img[:, :, :3]
    return img


def _resize_unit(image, new_dims, order):
    """skimage.transform.resize(image, new_dims, order, mode='constant') of an image with
    values in [0, 1]: Gaussian anti-aliasing when shrinking, grid-mode spline zoom, zero
    outside, output clipped to the input's range."""
    output_shape = tuple(new_dims)
    if len(output_shape) == image.ndim - 1:
        output_shape = output_shape + (image.shape[-1],)
    elif len(output_shape) > image.ndim:
        image = image.reshape(image.shape + (1,) * (len(output_shape) - image.ndim))
    input_shape = image.shape
    if image.dtype == np.float16:
        image = image.astype(np.float32)
    elif image.dtype.kind != "f" and order > 0:
        image = _as_float(image)
    factors = np.divide(input_shape, output_shape)
    if any(x < y for x, y in zip(output_shape, input_shape)):
        sigma = np.maximum(0, (factors - 1) / 2)
        filtered = ndimage.gaussian_filter(image, sigma, cval=0, mode="grid-constant")
    else:
        filtered = image
    zoom_factors = [1 / f for f in factors]
    out = ndimage.zoom(filtered, zoom_factors, order=order, mode="grid-constant", cval=0,
                       grid_mode=True)
    lo, hi = np.min(image), np.max(image)
    if np.isnan(lo):
        lo, hi = np.nanmin(image), np.nanmax(image)
    if not lo <= 0 <= hi and np.min(out) <= 0 <= np.max(out):
        zero = image.dtype.type(0)
        lo, hi = min(lo, zero), max(hi, zero)
    np.clip(out, np.asarray(lo), np.asarray(hi), out=out)
    return out


def resize_image(im, new_dims, interp_order=1):
    """Resize an (H, W, K) image to new_dims (H', W') by spline interpolation of
    `interp_order`, as pycaffe: 1 or 3 channels are scaled to [0, 1] and resized as
    scikit-image does (so the border blends towards the image's minimum); other channel
    counts are zoomed by scipy (points outside the image are 0). Returns float32."""
    if im.shape[-1] == 1 or im.shape[-1] == 3:
        im_min, im_max = im.min(), im.max()
        if im_max > im_min:
            im_std = (im - im_min) / (im_max - im_min)
            resized_std = _resize_unit(im_std, new_dims, interp_order)
            resized_im = resized_std * (im_max - im_min) + im_min
        else:
            ret = np.empty((new_dims[0], new_dims[1], im.shape[-1]), dtype=np.float32)
            ret.fill(im_min)
            return ret
    else:
        scale = tuple(np.array(new_dims, dtype=float) / np.array(im.shape[:2]))
        resized_im = ndimage.zoom(im, scale + (1,), order=interp_order)
    return resized_im.astype(np.float32)


def oversample(images, crop_dims):
    """The four corner crops and the centre crop of each (H, W, K) image, then the same five
    mirrored left-right: (10 * N, crop H, crop W, K) float32, in pycaffe's order."""
    im_shape = np.array(images[0].shape)
    crop_dims = np.array(crop_dims)
    im_center = im_shape[:2] / 2.0
    starts = [(i, j) for i in (0, im_shape[0] - crop_dims[0])
              for j in (0, im_shape[1] - crop_dims[1])]
    # The centre box's corners truncated to integers, as pycaffe's int array stores them.
    box = (np.tile(im_center, (1, 2)) + np.concatenate([-crop_dims / 2.0, crop_dims / 2.0]))
    box = box.astype(int).ravel()
    boxes = [(i, j, i + crop_dims[0], j + crop_dims[1]) for i, j in starts] + [tuple(box)]
    crops = np.empty((10 * len(images), crop_dims[0], crop_dims[1], im_shape[-1]),
                     dtype=np.float32)
    for n, im in enumerate(images):
        for k, (y0, x0, y1, x1) in enumerate(boxes):
            crops[10 * n + k] = im[y0:y1, x0:x1, :]
        crops[10 * n + 5:10 * n + 10] = crops[10 * n:10 * n + 5, :, ::-1, :]
    return crops
