"""Caffe's DataTransformer for Datums, in numpy (no torch): the Data layer's, and the one
evaluation preprocesses with, so that a snapshot is scored on exactly what its net's TEST phase
saw. Order as Caffe's: the mean at the record's uncropped position (or per channel), the crop
(random at TRAIN from the transformer's own stream, centred at TEST), the mirror, the scale.
"""
import numpy as np

from deepmammo.caffe.formats.binaryproto import read_mean
from deepmammo.caffe.proto import caffe_pb2 as pb


class Transformer:
    """Caffe's DataTransformer for Datums, in numpy."""

    def __init__(self, param, phase, datum_shape, where, transform_rng, mean=None):
        """`param`: a TransformationParameter. `transform_rng`: the transformer's own
        rng.CaffeRNG (None when it needs none). `mean`: an already loaded mean image or
        per-channel values, in place of param's mean_file / mean_value."""
        self.where = where
        self.crop = param.crop_size
        self.mirror = param.mirror
        self.scale = param.scale
        self.train = phase == pb.TRAIN
        self.rng = transform_rng
        _, h, w = datum_shape
        if self.crop and (self.crop > h or self.crop > w):
            raise ValueError(f"{where}: the record is {h}x{w}, smaller than the crop "
                             f"(crop_size {self.crop})")
        self.mean = (self._given_mean(mean, datum_shape) if mean is not None
                     else self._param_mean(param, datum_shape))

    def _param_mean(self, param, datum_shape):
        """The mean of transform_param: mean_file (an image of the record's size) or
        mean_value (one, or one per channel); None without either."""
        c = datum_shape[0]
        where = self.where
        if param.HasField("mean_file") and len(param.mean_value):
            raise ValueError(f"{where}: specify either mean_file or mean_value, not both")
        if param.HasField("mean_file"):
            mean = read_mean(param.mean_file)
            if tuple(mean.shape) != tuple(datum_shape):
                raise ValueError(f"{where}: mean_file {param.mean_file} has shape "
                                 f"{tuple(mean.shape)}, the data {tuple(datum_shape)}")
            return mean.astype(np.float32)
        if len(param.mean_value):
            values = list(param.mean_value)
            if len(values) != 1 and len(values) != c:
                raise ValueError(f"{where}: {len(values)} mean_value entries for {c} channels "
                                 "(give one, or one per channel)")
            if len(values) == 1:
                values = values * c
            return np.asarray(values, dtype=np.float32).reshape(c, 1, 1)
        return None

    def _given_mean(self, mean, datum_shape):
        c = datum_shape[0]
        mean = np.asarray(mean, dtype=np.float32)
        if mean.ndim == 3:
            if tuple(mean.shape) != tuple(datum_shape):
                raise ValueError(f"{self.where}: the mean image is {tuple(mean.shape)} but "
                                 f"records are {tuple(datum_shape)}: a mean_file must have the "
                                 "uncropped record size")
            return mean
        values = mean.ravel()
        if values.size not in (1, c):
            raise ValueError(f"{self.where}: mean_value needs 1 or {c} values, got "
                             f"{values.size}")
        return np.resize(values, c).reshape(c, 1, 1)

    def out_shape(self, datum_shape):
        c, h, w = datum_shape
        return (c, self.crop, self.crop) if self.crop else (c, h, w)

    def __call__(self, arr):
        c, h, w = arr.shape
        do_mirror = self.mirror and self.rng.randint(2)
        x = arr.astype(np.float32)
        if self.mean is not None:
            x = x - self.mean
        if self.crop:
            if self.train:
                h_off = self.rng.randint(h - self.crop + 1)
                w_off = self.rng.randint(w - self.crop + 1)
            else:
                h_off, w_off = (h - self.crop) // 2, (w - self.crop) // 2
            x = x[:, h_off:h_off + self.crop, w_off:w_off + self.crop]
        if do_mirror:
            x = x[:, :, ::-1]
        if self.scale != 1:
            x = x * np.float32(self.scale)
        return x


def test_transform(image, crop_size=0, mean=None, scale=1.0, where="record"):
    """One record (C, H, W) as the TEST phase gives it: centre crop `crop_size` (0: none),
    minus `mean` (an image of the record's size or per-channel values), times `scale`."""
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"{where}: a record must be (channels, height, width), got shape "
                         f"{image.shape}")
    param = pb.TransformationParameter(crop_size=int(crop_size or 0), scale=float(scale))
    return Transformer(param, pb.TEST, image.shape, where, None, mean=mean)(image)
