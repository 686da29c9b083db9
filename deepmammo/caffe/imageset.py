"""Caffe's convert_imageset and compute_image_mean: image folders to LMDB, LMDB to a mean file.

convert_imageset reads a list file of `relative/path label` lines, optionally shuffles them,
reads each image (deepmammo.caffe.formats.image: cv::imread, cv::resize INTER_LINEAR), and
writes one Datum per image under the key `%08d_<path>`, the number being the line's index in
the (shuffled) list, so an image that cannot be read leaves a gap, as in Caffe.

Shuffling is caffe::shuffle (Fisher-Yates with boost::uniform_int) on Caffe's random stream.
Caffe's tool never seeds that stream, so its order changes from run to run; `seed` starts the
stream as Caffe::set_random_seed(seed) would, which makes ours repeatable, and gives the order
real Caffe would give with that seed.

compute_image_mean sums every record (raw or encoded) in key order in float32, as Caffe's tool
keeps its running sum in the BlobProto's float data, and divides by the count.
"""
import errno
import logging
import os

import numpy as np

from deepmammo.caffe.formats.datum import DatumError
from deepmammo.caffe.formats.image import (
    ImageError,
    encode_image,
    image_to_datum,
    read_image,
    resize_linear,
)
from deepmammo.caffe.formats.lmdb_io import LMDBReader, LMDBWriter, lmdb_key
from deepmammo.caffe.proto import caffe_pb2 as pb

log = logging.getLogger(__name__)

_COMMIT_EVERY = 1000


class ImagesetError(ValueError):
    pass


def _atoi(text):
    """C's atoi: optional blanks and sign, then digits; 0 when there are none."""
    text = text.lstrip(" \t\n\v\f\r")
    sign, i = 1, 0
    if text[:1] in ("+", "-"):
        sign, i = (-1 if text[0] == "-" else 1), 1
    j = i
    while j < len(text) and text[j].isdigit() and text[j].isascii():
        j += 1
    return sign * int(text[i:j]) if j > i else 0


def read_list(path):
    """[(relative path, label)] of a list file, split as convert_imageset splits its lines:
    at the last space; a line without one is a path whose label is atoi of the whole line."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(errno.ENOENT, "no such list file", path)
    with open(path, "rb") as f:
        text = f.read().decode("utf-8", errors="surrogateescape")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()          # the newline ending the last line starts no new one
    entries = []
    for line in lines:
        pos = line.rfind(" ")
        if pos < 0:
            entries.append((line, _atoi(line)))
        else:
            entries.append((line[:pos], _atoi(line[pos + 1:])))
    return entries


def caffe_shuffle(items, rng):
    """caffe::shuffle: Fisher-Yates from the end, each swap index from boost::uniform_int(0, i)
    on the 32-bit generator `rng` (a deepmammo.caffe.rng.CaffeRNG), in place."""
    for i in range(len(items) - 1, 0, -1):
        j = _uniform_int(rng, i)
        items[i], items[j] = items[j], items[i]
    return items


def _uniform_int(rng, upper):
    """boost::uniform_int<>(0, upper) from a 32-bit engine: the engine's range cut into
    upper + 1 buckets of equal size, an output past the last bucket drawn again."""
    brange = 0xFFFFFFFF
    bucket = brange // (upper + 1)
    if brange % (upper + 1) == upper:
        bucket += 1
    while True:
        value = rng.rand() // bucket
        if value <= upper:
            return value


def _guess_encoding(name):
    dot = name.rfind(".")
    if dot < 0:
        raise ImagesetError(f"{name}: cannot guess the encoding of a file name without an "
                            "extension; give --encode_type")
    return name[dot + 1:].lower()


def _matching_extension(name, encoding):
    dot = name.rfind(".")
    ext = (name[dot + 1:] if dot >= 0 else name).lower()
    encoding = encoding.lower()
    return ext == encoding or (encoding == "jpg" and ext == "jpeg")


def image_datum(path, label, resize_height=0, resize_width=0, is_color=True, encoding=""):
    """ReadImageToDatum: the Datum convert_imageset stores for one image, or None when the
    image cannot be read (Caffe skips it)."""
    try:
        image = read_image(path, is_color)
    except (OSError, ImageError) as exc:
        log.error("Could not open or find file %s (%s)", path, exc)
        return None
    resize = resize_height > 0 and resize_width > 0
    if resize:
        image = resize_linear(image, resize_height, resize_width)
    if encoding:
        # An encoded Datum holds the bytes and the label only (no channels, height, width).
        datum = pb.Datum(label=int(label))
        channels = image.shape[2] if image.ndim == 3 else 1
        if (channels == 3) == is_color and not resize and _matching_extension(path, encoding):
            with open(path, "rb") as f:
                datum.data = f.read()            # the file as it is (ReadFileToDatum)
        else:
            datum.data = encode_image(image, encoding)
        datum.encoded = True
        return datum
    return image_to_datum(image, label)


def convert_imageset(root, list_file, db_path, gray=False, shuffle=False, seed=None,
                     resize_height=0, resize_width=0, check_size=False, encoded=False,
                     encode_type=""):
    """Write the LMDB `db_path` from the images `list_file` names under `root` (joined as
    Caffe joins them: root + path, so ROOT usually ends with a slash). Returns the number of
    records written."""
    from deepmammo.caffe.rng import CaffeRNG
    db_path = os.fspath(db_path)
    if os.path.lexists(db_path):
        raise FileExistsError(errno.EEXIST, "exists; convert_imageset writes a new database "
                              "(remove it or choose another name)", db_path)
    entries = read_list(list_file)
    if shuffle:
        log.info("Shuffling data")
        caffe_shuffle(entries, CaffeRNG(seed))
    log.info("A total of %d images.", len(entries))
    if encode_type and not encoded:
        log.info("encode_type specified, assuming encoded=true.")
    resize_height, resize_width = max(0, resize_height), max(0, resize_width)
    size = None
    count = 0
    with LMDBWriter(db_path, commit_every=_COMMIT_EVERY) as db:
        for line_id, (name, label) in enumerate(entries):
            encoding = encode_type or (_guess_encoding(name) if encoded else "")
            path = os.fspath(root) + name
            datum = image_datum(path, label, resize_height, resize_width, not gray, encoding)
            if datum is None:
                continue
            if check_size:
                if size is None:
                    size = datum.channels * datum.height * datum.width
                elif len(datum.data) != size:
                    raise ImagesetError(f"{path}: {len(datum.data)} bytes of pixels, the "
                                        f"first image had {size} (--check_size: all images "
                                        "must have one size)")
            db.put_datum(lmdb_key(line_id, name), datum)
            count += 1
            if count % _COMMIT_EVERY == 0:
                log.info("Processed %d files.", count)
        if entries and not count:
            # Caffe would write an empty database; nothing could use it.
            raise ImagesetError(f"{list_file}: none of its {len(entries)} images could be "
                                f"read under {os.fspath(root)!r} (each path is appended to "
                                "ROOT as it is, so ROOT usually ends with a slash)")
    if count % _COMMIT_EVERY != 0:
        log.info("Processed %d files.", count)
    return count


# ---------------------------------------------------------------------------- the mean image

def compute_image_mean(db_path):
    """(mean as float32 (C, H, W), per-channel means) of every record of the LMDB `db_path`,
    summed in key order as compute_image_mean sums them."""
    from deepmammo.caffe.formats.image import decode_datum
    db_path = os.fspath(db_path)
    total = None
    count = 0
    shape = None
    with LMDBReader(db_path) as db:
        for key, datum in db.datums():
            where = f"{db_path}: record {key}"
            datum = decode_datum(datum, where)
            values = (np.frombuffer(datum.data, dtype=np.uint8) if len(datum.data)
                      else np.asarray(datum.float_data, dtype=np.float32))
            if total is None:
                shape = (datum.channels, datum.height, datum.width)
                total = np.zeros(values.size, dtype=np.float32)
                expected = int(np.prod(shape))
            if values.size != expected:
                raise DatumError(f"{where}: {values.size} values, but the first record is "
                                 f"{shape[0]} x {shape[1]} x {shape[2]} = {expected}")
            total = total + values.astype(np.float32)
            count += 1
            if count % 10000 == 0:
                log.info("Processed %d files.", count)
    if count == 0:
        raise DatumError(f"{db_path}: the database has no records")
    if count % 10000 != 0:
        log.info("Processed %d files.", count)
    mean = (total / np.float32(count)).astype(np.float32).reshape(shape)
    dim = shape[1] * shape[2]
    channel_means = [float(np.cumsum(mean[c].ravel(), dtype=np.float32)[-1] / np.float32(dim))
                     for c in range(shape[0])]
    return mean, channel_means
