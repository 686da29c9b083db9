"""pycaffe's `caffe.io` for `import deepmammo.caffe as caffe` scripts: the input Transformer,
image loading and resizing, and BlobProto/Datum conversions.

Transformer.preprocess: resize to the input blob's H x W (if needed), transpose (e.g. HWC ->
CHW), channel swap (RGB -> BGR), raw scale, mean subtraction, input scale; deprocess undoes
them. Images load as float RGB in [0, 1] (H, W, 3), as pycaffe's load_image. Resizing is
scikit-image's (pycaffe's) done with scipy: the same values to about 1e-3.
"""
import numpy as np
from scipy import ndimage

from deepmammo.caffe.formats import datum as _datum
from deepmammo.caffe.formats.blobproto import array_to_blob, blob_to_array
from deepmammo.caffe.proto import caffe_pb2


def blobproto_to_array(blob, return_diff=False):
    """BlobProto -> ndarray (legacy blobs come back 4-D, as pycaffe's)."""
    return blob_to_array(blob, diff=return_diff)


def array_to_blobproto(arr, diff=None):
    return array_to_blob(arr, diff)


def arraylist_to_blobprotovector_str(arraylist):
    vec = caffe_pb2.BlobProtoVector()
    vec.blobs.extend(array_to_blobproto(a) for a in arraylist)
    return vec.SerializeToString()


def blobprotovector_str_to_arraylist(data):
    vec = caffe_pb2.BlobProtoVector()
    vec.ParseFromString(data)
    return [blobproto_to_array(b) for b in vec.blobs]


def array_to_datum(arr, label=None):
    return _datum.array_to_datum(arr, 0 if label is None else label)


def datum_to_array(datum):
    return np.asarray(_datum.datum_to_array(datum))


class Transformer:
    """Prepare images for a net's input blobs (pycaffe's caffe.io.Transformer).

    `inputs`: {blob name: shape (N, C, H, W)}, e.g. {"data": net.blobs["data"].data.shape}.
    """

    def __init__(self, inputs):
        self.inputs = {k: tuple(v) for k, v in inputs.items()}
        self.transpose, self.channel_swap = {}, {}
        self.raw_scale, self.mean, self.input_scale = {}, {}, {}

    def _check(self, in_):
        if in_ not in self.inputs:
            raise Exception(f"{in_} is not one of the net inputs: {list(self.inputs)}")

    def preprocess(self, in_, data):
        """An image (H, W, K) as the net's input (K, H', W') float32."""
        self._check(in_)
        x = np.asarray(data, dtype=np.float32)
        in_dims = self.inputs[in_][2:]
        if x.shape[:2] != in_dims:
            x = resize_image(x, in_dims)
        if in_ in self.transpose:
            x = x.transpose(self.transpose[in_])
        if in_ in self.channel_swap:
            x = x[list(self.channel_swap[in_]), :, :]
        if in_ in self.raw_scale:
            x = x * self.raw_scale[in_]
        if in_ in self.mean:
            x = x - self.mean[in_]
        if in_ in self.input_scale:
            x = x * self.input_scale[in_]
        return np.ascontiguousarray(x, dtype=np.float32)

    def deprocess(self, in_, data):
        """Undo preprocess (without the resize)."""
        self._check(in_)
        x = np.array(data, dtype=np.float32).squeeze()
        if in_ in self.input_scale:
            x = x / self.input_scale[in_]
        if in_ in self.mean:
            x = x + self.mean[in_]
        if in_ in self.raw_scale:
            x = x / self.raw_scale[in_]
        if in_ in self.channel_swap:
            x = x[np.argsort(self.channel_swap[in_]), :, :]
        if in_ in self.transpose:
            x = x.transpose(np.argsort(self.transpose[in_]))
        return x

    def set_transpose(self, in_, order):
        self._check(in_)
        if len(order) != len(self.inputs[in_]) - 1:
            raise Exception("Transpose order needs to have the same number of dimensions "
                            "as the input.")
        self.transpose[in_] = tuple(order)

    def set_channel_swap(self, in_, order):
        self._check(in_)
        if len(order) != self.inputs[in_][1]:
            raise Exception("Channel swap needs to have the same number of dimensions as "
                            "the input channels.")
        self.channel_swap[in_] = tuple(order)

    def set_raw_scale(self, in_, scale):
        self._check(in_)
        self.raw_scale[in_] = scale

    def set_mean(self, in_, mean):
        """Mean per channel (C,) or a full (C, H, W) image."""
        self._check(in_)
        mean = np.asarray(mean, dtype=np.float32)
        if mean.ndim == 1:
            if mean.shape[0] != self.inputs[in_][1]:
                raise ValueError("Mean channels incompatible with input.")
            mean = mean[:, None, None]
        elif mean.shape[-2:] != self.inputs[in_][-2:] or mean.shape[0] != self.inputs[in_][1]:
            raise ValueError("Mean shape incompatible with input shape.")
        self.mean[in_] = mean

    def set_input_scale(self, in_, scale):
        self._check(in_)
        self.input_scale[in_] = scale


def load_image(filename, color=True):
    """An image file as float32 in [0, 1]: (H, W, 3) RGB when `color`, else (H, W, 1)."""
    from PIL import Image
    with Image.open(filename) as im:
        im = im.convert("RGB" if color else "L")
        arr = np.asarray(im, dtype=np.float32) / 255.0
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return arr


def resize_image(im, new_dims, interp_order=1):
    """Resize (H, W, K) to new_dims (H', W') with spline interpolation of `interp_order`, as
    pycaffe's (scikit-image's resize, mode 'constant', with its Gaussian anti-aliasing when
    shrinking): pixel-centre aligned, zero outside the image."""
    im = np.asarray(im, dtype=np.float32)
    factors = (new_dims[0] / im.shape[0], new_dims[1] / im.shape[1]) + (1,) * (im.ndim - 2)
    sigma = [max(0.0, (1.0 / f - 1.0) / 2.0) for f in factors]
    if any(sigma):
        im = ndimage.gaussian_filter(im, sigma, mode="constant")
    out = ndimage.zoom(im, factors, order=interp_order, mode="grid-constant", grid_mode=True)
    return out.astype(np.float32)


def oversample(images, crop_dims):
    """The 4 corner and centre crops of each image, and their mirrors (10 per image)."""
    im_shape = np.array(images[0].shape)
    crop_dims = np.array(crop_dims)
    centre = (im_shape[:2] - crop_dims) / 2.0
    starts = [(0, 0), (0, im_shape[1] - crop_dims[1]), (im_shape[0] - crop_dims[0], 0),
              (im_shape[0] - crop_dims[0], im_shape[1] - crop_dims[1]),
              (int(centre[0]), int(centre[1]))]
    crops = []
    for im in images:
        own = [im[h:h + crop_dims[0], w:w + crop_dims[1], :] for h, w in starts]
        crops.extend(own + [c[:, ::-1, :] for c in own])
    return np.asarray(crops, dtype=np.float32)
