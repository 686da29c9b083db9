"""WindowData: batches of windows cut from images and warped to crop_size, as Caffe's
WindowDataLayer (R-CNN fine-tuning; it reads images with OpenCV, here image_io.py).

The window file (`source`), whitespace-separated, repeats: "#", the image's index, its path
(appended to `root_folder` as a plain string), channels, height, width, the number of windows,
then per window "class overlap x1 y1 x2 y2" (inclusive pixel corners). A window is foreground
when overlap >= fg_threshold (its class must be > 0), background (class and overlap set to 0)
when overlap < bg_threshold, dropped otherwise; windows find their image by its index.

Each batch: batch_size - int(batch_size * fg_fraction) background windows, then the
foreground ones, each drawn with replacement as (raw output of the layer's own mt19937) mod
the count, then, with transform_param.mirror, a mirror when the next output is odd. The
window (with context_pad, or with crop_mode "square" its tightest enclosing square, scaled
about its centre so that the padding is context_pad pixels after warping; clipped to the
image, the clipped part kept as zero padding) is resized with OpenCV's INTER_LINEAR to
crop_size (transform_param) and placed in a zeroed crop_size x crop_size output; values are
(pixel - mean) * window_data_param.scale, the mean being the centre of transform_param's
mean_file or its mean_value. Images are read in colour (3 channels, B, G, R); cache_images
keeps the files' bytes in memory. Only these fields are read, as by Caffe's layer:
window_data_param's own crop_size, mirror and mean_file, and transform_param's scale, are
ignored by Caffe and refused here.

Random numbers drawn from the thread's stream at construction, as Caffe's: the first
transformer seed (when it mirrors, or crops at TRAIN), the window stream's seed, the second
transformer seed, the prefetch thread's seed.
"""
import io

import numpy as np
import torch

from deepmammo.caffe import rng
from deepmammo.caffe.formats.binaryproto import read_mean
from deepmammo.caffe.image_io import imread, resize_linear
from deepmammo.caffe.layers.base import Layer, register
from deepmammo.caffe.layers.prefetch import PrefetchingLayer
from deepmammo.caffe.proto import caffe_pb2 as pb

_F32 = np.float32


def round_half_away(x):
    """C's round() of a float: halves away from zero."""
    x = np.float64(x)
    return int(np.sign(x) * np.floor(abs(x) + 0.5))


def read_window_file(source, root_folder, fg_threshold, bg_threshold, where_error):
    """(images [(path, (channels, height, width))] by index, foreground windows, background
    windows); a window is (image index, label, overlap, x1, y1, x2, y2)."""
    with open(source, encoding="utf-8", errors="surrogateescape") as f:
        tokens = f.read().split()
    pos = 0

    def take(kind, what):
        nonlocal pos
        if pos >= len(tokens):
            raise where_error(f"{source}: the window file ends early (expected {what})")
        token = tokens[pos]
        pos += 1
        try:
            return kind(token)
        except ValueError:
            raise where_error(f"{source}: {what} {token!r} is not a number") from None

    if len(tokens) < 2:
        raise where_error(f"{source}: window file is empty")
    images, fg, bg = [], [], []
    fg_t, bg_t = _F32(fg_threshold), _F32(bg_threshold)
    while pos < len(tokens):
        if tokens[pos] != "#":
            raise where_error(f"{source}: expected '#' before an image, found {tokens[pos]!r}")
        pos += 1
        index = take(int, "image index")
        path = root_folder + take(str, "image path")
        size = tuple(take(int, "image size") for _ in range(3))
        images.append((path, size))
        for _ in range(take(int, "window count")):
            label = take(int, "window class")
            overlap = _F32(take(float, "window overlap"))
            x1, y1, x2, y2 = (take(int, "window corner") for _ in range(4))
            if overlap >= fg_t:
                if label <= 0:
                    raise where_error(f"{source}: foreground window of image {index} has "
                                      f"class {label} (must be > 0)")
                fg.append((index, label, overlap, x1, y1, x2, y2))
            elif overlap < bg_t:
                bg.append((index, 0, 0.0, x1, y1, x2, y2))
    return images, fg, bg


@register
class WindowData(PrefetchingLayer, Layer):
    TYPE = "WindowData"
    FIELDS = {"window_data_param": {"source", "scale", "batch_size", "fg_threshold",
                                    "bg_threshold", "fg_fraction", "context_pad",
                                    "crop_mode", "cache_images", "root_folder"},
              "transform_param": {"mirror", "crop_size", "mean_file", "mean_value"}}
    EXACT_BOTTOMS = 0
    EXACT_TOPS = 2
    AUTOGRAD = False

    def __init__(self, *args):
        super().__init__(*args)
        p = self.layer_param.window_data_param
        tp = self.layer_param.transform_param
        if p.crop_mode not in ("warp", "square"):
            raise self.error(f"crop_mode must be \"warp\" or \"square\", not {p.crop_mode!r}")
        stream = rng.stream()
        if tp.mirror or (self.phase == pb.TRAIN and tp.crop_size):
            stream.rand()                       # BaseDataLayer's transformer seed
        self.window_rng = rng.CaffeRNG(stream.rand()) if (tp.mirror or tp.crop_size) else None
        try:
            self.images, self.fg, self.bg = read_window_file(
                p.source, p.root_folder, p.fg_threshold, p.bg_threshold, self.error)
        except OSError as exc:
            raise self.error(f"failed to open window file {p.source}: {exc.strerror}") from None
        self.cache = None
        if p.cache_images:
            self.cache = {}
            for path, _ in self.images:
                try:
                    with open(path, "rb") as f:
                        self.cache[path] = f.read()
                except OSError:
                    raise self.error(f"could not open or find file {path}") from None
        if not self.fg or not self.bg:
            raise self.error(f"the window file needs foreground and background windows "
                             f"(has {len(self.fg)} and {len(self.bg)})")
        self.channels = self.images[-1][1][0]
        self.crop = int(tp.crop_size)
        if self.crop <= 0:
            raise self.error("transform_param.crop_size must be set (> 0): the warped size")
        self._load_mean(tp)
        if tp.mirror or (self.phase == pb.TRAIN and tp.crop_size):
            stream.rand()                       # the prefetching layer's second seed
        stream.rand()                           # the prefetch thread's seed
        self.top_shape = (int(p.batch_size), self.channels, self.crop, self.crop)
        self.start_prefetch(self._make_batch)

    def check_fields(self):
        p = self.layer_param.window_data_param
        for name in ("crop_size", "mirror", "mean_file"):
            if p.HasField(name):
                raise self.error(f"window_data_param.{name} is not read by this layer (as by "
                                 f"Caffe's): set transform_param.{name}")
        if self.layer_param.transform_param.HasField("scale"):
            raise self.error("transform_param.scale is not read by this layer (as by "
                             "Caffe's): set window_data_param.scale")
        super().check_fields()

    def _load_mean(self, tp):
        self.mean_image = self.mean_values = None
        if tp.HasField("mean_file") and len(tp.mean_value):
            raise self.error("cannot specify mean_file and mean_value at the same time")
        if tp.HasField("mean_file"):
            try:
                mean = read_mean(tp.mean_file)
            except (OSError, ValueError) as exc:
                raise self.error(str(exc)) from None
            # Caffe centres the crop by the mean's width, on both axes.
            off = (mean.shape[2] - self.crop) // 2
            if mean.shape[0] < self.channels or off < 0 or off + self.crop > mean.shape[1]:
                raise self.error(f"the mean {mean.shape} must cover {self.channels} channels "
                                 f"and a centred {self.crop}x{self.crop} crop")
            self.mean_image = mean
        elif len(tp.mean_value):
            values = list(tp.mean_value)
            if len(values) not in (1, self.channels):
                raise self.error(f"specify either 1 mean_value or as many as channels: "
                                 f"{self.channels}")
            self.mean_values = np.resize(np.asarray(values, np.float32), self.channels)

    def _image(self, index):
        if not 0 <= index < len(self.images):
            raise self.error(f"window of image {index}: the file lists {len(self.images)} "
                             "images")
        path = self.images[index][0]
        img = imread(io.BytesIO(self.cache[path]) if self.cache is not None else path, True)
        if img is None:
            raise self.error(f"could not open or find file {path}")
        if img.shape[2] != self.channels:
            raise self.error(f"{path} is read with {img.shape[2]} channels, the window file "
                             f"says {self.channels}")
        return img

    def _geometry(self, window, img_h, img_w, do_mirror):
        """(x1, y1, x2, y2) of the region to warp, its warped (height, width), and the
        output offsets (pad_h, pad_w), as Caffe computes them in float."""
        p = self.layer_param.window_data_param
        crop, pad = self.crop, int(p.context_pad)
        x1, y1, x2, y2 = window[3:]
        if not (pad > 0 or p.crop_mode == "square"):
            if x1 < 0 or y1 < 0 or x2 >= img_w or y2 >= img_h or x2 < x1 or y2 < y1:
                raise self.error(f"window {window[3:]} is not inside the {img_w}x{img_h} "
                                 "image")
            return (x1, y1, x2, y2), (crop, crop), (0, 0)
        context_scale = _F32(crop) / _F32(crop - 2 * pad)
        half_h = _F32(np.float64(y2 - y1 + 1) / 2.0)
        half_w = _F32(np.float64(x2 - x1 + 1) / 2.0)
        cx, cy = _F32(x1) + half_w, _F32(y1) + half_h
        if p.crop_mode == "square":
            half_h = half_w = max(half_h, half_w)
        x1 = round_half_away(cx - half_w * context_scale)
        x2 = round_half_away(cx + half_w * context_scale)
        y1 = round_half_away(cy - half_h * context_scale)
        y2 = round_half_away(cy + half_h * context_scale)
        unclipped_h, unclipped_w = y2 - y1 + 1, x2 - x1 + 1
        pad_x1, pad_y1 = max(0, -x1), max(0, -y1)
        pad_x2, pad_y2 = max(0, x2 - img_w + 1), max(0, y2 - img_h + 1)
        x1, x2, y1, y2 = x1 + pad_x1, x2 - pad_x2, y1 + pad_y1, y2 - pad_y2
        if x1 < 0 or y1 < 0 or x2 >= img_w or y2 >= img_h:
            raise self.error(f"window {window[3:]} leaves the {img_w}x{img_h} image")
        scale_x = _F32(crop) / _F32(unclipped_w)
        scale_y = _F32(crop) / _F32(unclipped_h)
        width = round_half_away(_F32(x2 - x1 + 1) * scale_x)
        height = round_half_away(_F32(y2 - y1 + 1) * scale_y)
        pad_x1 = round_half_away(_F32(pad_x1) * scale_x)
        pad_x2 = round_half_away(_F32(pad_x2) * scale_x)
        pad_y1 = round_half_away(_F32(pad_y1) * scale_y)
        pad_h = pad_y1
        pad_w = pad_x2 if do_mirror else pad_x1
        height = min(height, crop - pad_h)
        width = min(width, crop - pad_w)
        return (x1, y1, x2, y2), (height, width), (pad_h, pad_w)

    def _make_batch(self, stopped):
        p = self.layer_param.window_data_param
        mirror = self.layer_param.transform_param.mirror
        batch_size, crop, c = int(p.batch_size), self.crop, self.channels
        data = np.zeros((batch_size, c, crop, crop), dtype=np.float32)
        labels = np.empty((batch_size,), dtype=np.float32)
        num_fg = int(_F32(batch_size) * _F32(p.fg_fraction))
        scale = _F32(p.scale)
        item = 0
        for windows, n in ((self.bg, batch_size - num_fg), (self.fg, num_fg)):
            for _ in range(n):
                if stopped():
                    return None
                window = windows[self.window_rng.rand() % len(windows)]
                do_mirror = bool(mirror and self.window_rng.rand() % 2)
                img = self._image(window[0])
                (x1, y1, x2, y2), (h, w), (pad_h, pad_w) = self._geometry(
                    window, img.shape[0], img.shape[1], do_mirror)
                if h <= 0 or w <= 0:
                    raise self.error(f"window {window[3:]} warps to {h}x{w} pixels")
                patch = resize_linear(img[y1:y2 + 1, x1:x2 + 1], h, w)
                if do_mirror:
                    patch = patch[:, ::-1]
                values = patch.transpose(2, 0, 1).astype(np.float32)        # (C, h, w)
                if self.mean_image is not None:
                    off = (self.mean_image.shape[2] - crop) // 2
                    values = values - self.mean_image[:c, off + pad_h:off + pad_h + h,
                                                      off + pad_w:off + pad_w + w]
                elif self.mean_values is not None:
                    values = values - self.mean_values[:, None, None]
                data[item, :, pad_h:pad_h + h, pad_w:pad_w + w] = values * scale
                labels[item] = window[1]
                item += 1
        return torch.from_numpy(data), torch.from_numpy(labels)

    def reshape(self, bottom_shapes):
        return [self.top_shape, (self.top_shape[0],)]

    def forward(self, bottoms, params):
        data, labels = self.next_batch()
        return [data.to(self.device), labels.to(self.device)]

    def backward(self, tops, top_diffs, bottoms, params, need_bottom, need_param):
        return [], []
