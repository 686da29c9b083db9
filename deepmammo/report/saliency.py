"""Saliency maps (Simonyan et al. 2013, the paper's Figure 5): the gradient of the class score
(the input of the final Softmax, not the probability) with respect to the input image, absolute
value, maximum over channels. Works with any pycaffe-API net (ours or real Caffe)."""
import os
import tempfile

import numpy as np


def class_score_layer(model_path):
    """(score blob, layer producing it) of a deploy prototxt: the bottom of a final Softmax,
    or the net's last top when it ends without one."""
    from deepmammo.caffe.formats.prototxt import read_net
    net = read_net(model_path)
    layers = list(net.layer)
    if not layers:
        raise ValueError("%s: no layers (old V1 `layers` deploy files are not supported here)"
                         % model_path)
    last = layers[-1]
    score = last.bottom[0] if last.type == "Softmax" else last.top[0]
    producers = [l for l in layers if score in l.top and l is not last]
    if last.type != "Softmax":
        producers = [last]
    if not producers:
        raise ValueError("%s: no layer produces the class score blob %r" % (model_path, score))
    return score, producers[-1].name


def with_force_backward(model_path, out_dir=None):
    """A copy of the deploy prototxt with force_backward: true, so the input gets a gradient
    (Caffe skips backward into inputs that need none). Returns the copy's path."""
    from deepmammo.caffe.formats.prototxt import read_net, write_prototxt
    net = read_net(model_path)
    net.force_backward = True
    fd, path = tempfile.mkstemp(prefix="saliency_", suffix=".prototxt", dir=out_dir)
    os.close(fd)
    write_prototxt(net, path)
    return path


def saliency_maps(net, batch, classes, score_blob, start_layer, input_blob="data"):
    """(N, H, W) saliency of preprocessed images `batch` (N, C, H, W) for `classes` (N ints).

    The net must have been built with force_backward (see `with_force_backward`).
    """
    batch = np.asarray(batch, dtype=np.float32)
    classes = np.asarray(classes, dtype=np.int64).ravel()
    if classes.size != batch.shape[0]:
        raise ValueError("one class per image: %d images, %d classes"
                         % (batch.shape[0], classes.size))
    if tuple(net.blobs[input_blob].data.shape) != batch.shape:
        net.blobs[input_blob].reshape(*batch.shape)
        net.reshape()
    net.blobs[input_blob].data[...] = batch
    net.forward()
    scores = net.blobs[score_blob]
    diff = np.zeros(scores.data.shape, dtype=np.float32)
    diff.reshape(batch.shape[0], -1)[np.arange(classes.size), classes] = 1.0
    # Start backward at the layer that produces the score: the Softmax above it is skipped, so
    # the gradient is of the unnormalised class score, as in Simonyan et al.
    scores.diff[...] = diff
    net.backward(start=start_layer)
    grad = np.array(net.blobs[input_blob].diff, dtype=np.float32, copy=True)
    return np.abs(grad).max(axis=1)


def compute_saliency(caffe, model_path, weights, images, classes, mean=None, scale=1.0):
    """Saliency maps and the preprocessed images shown under them, for raw LMDB records."""
    from deepmammo.caffe.real_child import open_net
    from deepmammo.evaluate.predict import preprocess
    forced = with_force_backward(model_path)
    try:
        net = open_net(caffe, forced, weights, caffe.TEST, shown_as=model_path)
    finally:
        os.unlink(forced)
    crop = tuple(net.blobs["data"].data.shape[2:4])
    batch = np.stack([preprocess(im, crop, mean, scale) for im in images])
    score_blob, start = class_score_layer(model_path)
    maps = saliency_maps(net, batch, classes, score_blob, start)
    return maps, batch
