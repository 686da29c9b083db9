"""Caffe's extract_features on our engine: blobs of a TEST-phase net, one Datum per image.

For each of `num_batches` forward passes and each named blob, every item n of the batch is
written as a Datum whose float_data is the blob's values for that item and whose channels,
height and width are the blob's legacy 4-D shape (missing axes 1), under the key `%010d`
counting that blob's items from 0. Several blobs go to several databases in one pass.
"""
import errno
import logging
import os

log = logging.getLogger(__name__)

_COMMIT_EVERY = 1000


class FeaturesError(ValueError):
    pass


def _legacy_shape(shape, name):
    """Blob::LegacyShape: (num, channels, height, width), a missing axis counting 1."""
    if len(shape) > 4:
        raise FeaturesError(f"blob {name!r} has {len(shape)} axes; a Datum holds at most 4 "
                            "(num, channels, height, width)")
    return tuple(shape) + (1,) * (4 - len(shape))


def _feature_datum(values, channels, height, width):
    """A Datum of float_data with the blob's legacy shape (no label, as Caffe's tool)."""
    from deepmammo.caffe.proto import caffe_pb2 as pb
    datum = pb.Datum(channels=channels, height=height, width=width)
    datum.float_data.extend(values)
    return datum


def extract_features(weights, model, blob_names, db_names, num_batches, gpu=None):
    """Run the net `model` (TEST phase) with `weights` for `num_batches` forward passes and
    write each blob of `blob_names` to the LMDB of the same index in `db_names`. Returns
    the number of items written per blob."""
    import contextlib

    import numpy as np

    import deepmammo.caffe as caffe
    from deepmammo.caffe.formats.lmdb_io import LMDBWriter
    if len(blob_names) != len(db_names):
        raise FeaturesError(f"{len(blob_names)} blob names but {len(db_names)} database "
                            "names: the number of blob names and database names must be equal")
    if num_batches < 0:
        raise FeaturesError(f"num_mini_batches {num_batches}: give a count of batches")
    for db in db_names:
        if os.path.lexists(db):
            raise FileExistsError(errno.EEXIST, "exists; extract_features writes a new "
                                  "database (remove it or choose another name)", db)
    if gpu is not None:
        caffe.set_device(gpu)
        caffe.set_mode_gpu()
    else:
        caffe.set_mode_cpu()
    net = caffe.Net(model, caffe.TEST, weights=weights)
    try:
        for name in blob_names:
            if name not in net.blobs:
                raise FeaturesError(f"{model}: unknown feature blob name {name!r} in the "
                                    f"network (its blobs: {', '.join(net.blobs)})")
        counts = [0] * len(blob_names)
        log.info("Extracting Features")
        with contextlib.ExitStack() as stack:
            writers = [stack.enter_context(LMDBWriter(db, commit_every=_COMMIT_EVERY))
                       for db in db_names]
            for _ in range(num_batches):
                net.forward()
                for i, name in enumerate(blob_names):
                    data = np.asarray(net.blobs[name].data, dtype=np.float32)
                    num, channels, height, width = _legacy_shape(data.shape, name)
                    for item in data.reshape(num, -1):
                        datum = _feature_datum(item, channels, height, width)
                        writers[i].put_datum("%010d" % counts[i], datum)
                        counts[i] += 1
                        if counts[i] % _COMMIT_EVERY == 0:
                            log.info("Extracted features of %d query images for feature "
                                     "blob %s", counts[i], name)
        for name, count in zip(blob_names, counts):
            log.info("Extracted features of %d query images for feature blob %s", count, name)
    finally:
        net.close()
    log.info("Successfully extracted the features!")
    return counts
