"""ImageData: batches of image files listed in a text file, as Caffe's ImageDataLayer (which
reads them with OpenCV; here image_io.py: Pillow, and OpenCV's INTER_LINEAR resize in numpy).

`source`: one "path label" per line, split at the last space (the label read as C's atoi),
each path appended to `root_folder` as a plain string. Images are read in colour (3 channels,
B, G, R as OpenCV orders them) or grey (`is_color: false`), resized to new_height x new_width
when both are set, then transformed as the Data layer transforms records (transformer.py:
mean at the uncropped position or per channel, crop random at TRAIN and centred at TEST,
mirror, scale). Records go in list order, wrapping; `shuffle` shuffles the list at setup and
at each wrap with caffe::shuffle on the layer's own stream; `rand_skip` starts at a random
line below it. A batch takes its shape from its first image, so without a crop every image
of a batch must have that size (batch_size 1 allows any).

Random numbers as Caffe draws them from the thread's stream at construction: the first
transformer seed (when it mirrors or crops at TRAIN; replaced below), the shuffle stream's
seed (with `shuffle`), the skip (with `rand_skip`), the transformer's seed kept, and the
prefetch thread's seed. Batches are made ahead on a background thread (prefetch.py).
"""
import re

import numpy as np
import torch

from deepmammo.caffe import rng, shuffles
from deepmammo.caffe.formats.binaryproto import read_mean
from deepmammo.caffe.image_io import imread, resize_linear
from deepmammo.caffe.layers.base import Layer, register
from deepmammo.caffe.layers.prefetch import PrefetchingLayer
from deepmammo.caffe.proto import caffe_pb2 as pb
from deepmammo.caffe.transformer import Transformer

TRANSFORM_FIELDS = {"scale", "mirror", "crop_size", "mean_file", "mean_value"}
_ATOI = re.compile(r"[ \t\n\v\f\r]*([+-]?[0-9]+)")


def atoi(text):
    """C's atoi: leading whitespace, a sign, digits; 0 when there are none."""
    m = _ATOI.match(text)
    return int(m.group(1)) if m else 0


def read_image_list(source):
    """[(path, label)] of an ImageData source file, as Caffe's getline loop reads it."""
    with open(source, encoding="utf-8", errors="surrogateescape", newline="") as f:
        pieces = f.read().split("\n")
    if pieces and pieces[-1] == "":
        pieces.pop()
    lines = []
    for line in pieces:
        pos = line.rfind(" ")
        if pos < 0:
            lines.append((line, atoi(line)))
        else:
            lines.append((line[:pos], atoi(line[pos + 1:])))
    return lines


def transform_mean(param, where):
    """transform_param's mean, loaded once: an image (mean_file), per-channel values, or
    None. Both at once are refused, as Caffe's DataTransformer refuses them."""
    if param.HasField("mean_file") and len(param.mean_value):
        raise ValueError(f"{where}: cannot specify mean_file and mean_value at the same time")
    if param.HasField("mean_file"):
        return read_mean(param.mean_file)
    if len(param.mean_value):
        return np.asarray(list(param.mean_value), dtype=np.float32)
    return None


def read_chw(path, new_height, new_width, is_color):
    """The image at `path` as (C, H, W) uint8, resized when both sizes are set; None when
    it cannot be read."""
    img = imread(path, is_color)
    if img is None:
        return None
    if new_height > 0 and new_width > 0:
        img = resize_linear(img, new_height, new_width)
    return np.ascontiguousarray(img.transpose(2, 0, 1))


@register
class ImageData(PrefetchingLayer, Layer):
    TYPE = "ImageData"
    FIELDS = {"image_data_param": {"source", "batch_size", "rand_skip", "shuffle",
                                   "new_height", "new_width", "is_color", "root_folder"},
              "transform_param": TRANSFORM_FIELDS}
    EXACT_BOTTOMS = 0
    EXACT_TOPS = 2
    AUTOGRAD = False

    def __init__(self, *args):
        super().__init__(*args)
        p = self.layer_param.image_data_param
        if not ((p.new_height == 0 and p.new_width == 0)
                or (p.new_height > 0 and p.new_width > 0)):
            raise self.error("new_height and new_width must be set at the same time")
        tp = self.layer_param.transform_param
        try:
            self.mean = transform_mean(tp, self.where)
        except (OSError, ValueError) as exc:
            raise self.error(str(exc)) from None
        needs_rand = tp.mirror or (self.phase == pb.TRAIN and tp.crop_size)
        stream = rng.stream()
        if needs_rand:
            stream.rand()             # the first transformer seed, replaced below
        try:
            self.lines = read_image_list(p.source)
        except OSError as exc:
            raise self.error(f"cannot open source {p.source}: {exc.strerror}") from None
        if not self.lines:
            raise self.error(f"{p.source}: file is empty")
        self.shuffle_rng = None
        if p.shuffle:
            self.shuffle_rng = rng.CaffeRNG(stream.rand())
            shuffles.caffe_shuffle(self.lines, self.shuffle_rng)
        self.line_id = 0
        if p.rand_skip:
            skip = stream.rand() % p.rand_skip
            if len(self.lines) <= skip:
                raise self.error(f"not enough points to skip ({skip} of {len(self.lines)})")
            self.line_id = skip
        first = self._read(self.line_id)
        if p.batch_size <= 0:
            raise self.error("positive batch size required")
        self.transform_rng = rng.CaffeRNG(stream.rand()) if needs_rand else None
        stream.rand()                 # the prefetch thread's seed
        self._transformers = {}
        self.top_shape = (p.batch_size,) + self._transformer(first.shape).out_shape(first.shape)
        self.start_prefetch(self._make_batch)

    def _read(self, line_id):
        p = self.layer_param.image_data_param
        path = p.root_folder + self.lines[line_id][0]
        img = read_chw(path, p.new_height, p.new_width, p.is_color)
        if img is None:
            raise self.error(f"could not load {self.lines[line_id][0]} ({path})")
        return img

    def _transformer(self, shape):
        t = self._transformers.get(shape)
        if t is None:
            try:
                t = Transformer(self.layer_param.transform_param, self.phase, shape,
                                self.where, self.transform_rng, mean=self.mean)
            except ValueError as exc:
                raise self.error(str(exc)) from None
            self._transformers[shape] = t
        return t

    def _make_batch(self, stopped):
        batch_size = self.layer_param.image_data_param.batch_size
        first = self._read(self.line_id)
        out_shape = self._transformer(first.shape).out_shape(first.shape)
        data = np.empty((batch_size,) + out_shape, dtype=np.float32)
        labels = np.empty((batch_size,), dtype=np.float32)
        for i in range(batch_size):
            if stopped():
                return None
            img = first if i == 0 else self._read(self.line_id)
            if out_shape != self._transformer(img.shape).out_shape(img.shape):
                raise self.error(f"{self.lines[self.line_id][0]} is {img.shape[1]}x"
                                 f"{img.shape[2]} with {img.shape[0]} channels; the batch's "
                                 f"first image gives {out_shape}")
            data[i] = self._transformer(img.shape)(img)
            labels[i] = self.lines[self.line_id][1]
            self.line_id += 1
            if self.line_id >= len(self.lines):
                self.line_id = 0
                if self.shuffle_rng is not None:
                    shuffles.caffe_shuffle(self.lines, self.shuffle_rng)
        return torch.from_numpy(data), torch.from_numpy(labels)

    def reshape(self, bottom_shapes):
        return [self.top_shape, (self.top_shape[0],)]

    def forward(self, bottoms, params):
        data, labels = self.next_batch()
        self.top_shape = tuple(data.shape)
        return [data.to(self.device), labels.to(self.device)]

    def backward(self, tops, top_diffs, bottoms, params, need_bottom, need_param):
        return [], []
