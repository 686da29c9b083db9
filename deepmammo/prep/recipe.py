"""A dataset's input recipe, and the one implementation of it: how a mass on a full mammogram
becomes the uint8 record a net reads.

    crop       the mask's bounding box plus padding, clipped at the border (crops.cut_crop)
    grey       source grey levels (8-16 bit) to float 0-255 (greylevel.GreyMapping)
    record     shorter side resized to `size` and the centre cut, or squashed to size x size
               (augment.plan_eval + augment.realise), rounded to uint8 once, the grey replicated
               into 3 channels

`crops` and `lmdb` build the datasets with these functions; `classify` runs them on new masses
with the recipe a run's dataset recorded (its build.json), so a mass of that dataset gets its
LMDB record back bit for bit. The net's own transform (training mean, crop, scale) follows in
deepmammo.caffe.transformer, as in evaluation.
"""
import json
import os

import numpy as np

from deepmammo.prep import augment as aug
from deepmammo.prep.crops import Padding, cut_crop
from deepmammo.prep.greylevel import GreyMapping

CHANNELS = 3


def source_bits(bits, array):
    """The bit depth to map from: the recorded one, else the array's container depth."""
    if bits not in (None, ""):
        return int(bits)
    return 16 if np.asarray(array).dtype == np.uint16 else 8


def grey_levels(crop, mapping, bits=None, scanner=""):
    """A crop's source grey levels mapped to float32 0-255 (`lmdb` and `classify` both)."""
    return mapping.apply(crop, source_bits(bits, crop), scanner or "")


def eval_record(grey, size, eval_resize="crop"):
    """The validation/test record of a grey-mapped crop: (3, size, size) uint8, as `lmdb`
    writes it (the same plan and rendering as its val and test splits)."""
    h, w = grey.shape
    image = aug.realise(grey, aug.plan_eval(h, w, size, eval_resize), size)[0]
    return np.ascontiguousarray(np.broadcast_to(image, (CHANNELS, size, size)))


class Recipe:
    """What a dataset did to each mass: padding and edge rule of its crops, grey mapping,
    record size and the val/test resize."""

    def __init__(self, padding="proportional:2", edge="clip", grey="full-range", size=224,
                 eval_resize="crop", source=None):
        self.padding = padding if isinstance(padding, Padding) else Padding.parse(padding)
        if edge not in ("clip", "code"):
            raise ValueError(f"edge {edge!r}: expected clip or code")
        self.edge = edge
        self.grey = grey if isinstance(grey, GreyMapping) else GreyMapping.parse(grey)
        self.size = int(size)
        if eval_resize not in ("crop", "squash"):
            raise ValueError(f"eval resize {eval_resize!r}: expected crop or squash")
        self.eval_resize = eval_resize
        self.source = source   # the build.json it came from, for messages

    @classmethod
    def from_build(cls, path, padding=None):
        """The recipe a dataset's build.json (or the dataset folder holding it) recorded;
        `padding` stands in where the record does not name its crops' padding."""
        path = os.fspath(path)
        if os.path.isdir(path):
            path = os.path.join(path, "build.json")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: dataset build record not found (the run's "
                                    "dataset was built by `deepmammo lmdb`, which writes it)")
        with open(path) as f:
            try:
                config = json.load(f).get("config") or {}
            except (ValueError, AttributeError) as exc:
                raise ValueError(f"{path}: not a dataset build record ({exc})") from None
        crops = config.get("crops_config") or {}
        padding = crops.get("padding") or padding
        if not padding:
            raise ValueError(f"{path}: does not say how its crops were padded (crops_config."
                             "padding); rebuild the dataset with `deepmammo lmdb`")
        try:
            return cls(padding=padding, edge=crops.get("edge", "clip"),
                       grey=config.get("grey_spec") or "full-range",
                       size=config.get("size", 224),
                       eval_resize=config.get("eval_resize", "crop"), source=path)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: {exc}") from None

    def to_dict(self):
        return {"padding": str(self.padding), "edge": self.edge, "grey": str(self.grey),
                "size": self.size, "eval_resize": self.eval_resize, "channels": CHANNELS,
                "record_dtype": "uint8"}

    def crop(self, image, bbox, bits=None):
        """The mass crop of `image` around `bbox` (crops.cut_crop with this padding)."""
        return cut_crop(image, bbox, self.padding, self.edge, source_bits(bits, image))[0]

    def record(self, crop, bits=None, scanner=""):
        """The (3, size, size) uint8 record of a crop at source bit depth."""
        return eval_record(grey_levels(crop, self.grey, bits, scanner), self.size,
                           self.eval_resize)
