"""Every deploy and train_val prototxt loads in our engine (`import deepmammo.caffe as caffe`)
with real Caffe's blob and parameter shapes, and with the same weights computes the same
outputs."""
import os

import numpy as np
import pytest

import deepmammo.caffe as caffe
from deepmammo.caffe.formats.binaryproto import write_mean
from deepmammo.caffe.formats.datum import array_to_datum
from deepmammo.caffe.formats.lmdb_io import LMDBWriter, lmdb_key
from deepmammo.caffe.formats.prototxt import read_net, to_text
from deepmammo.experiment import dataset_paths, resolve_net

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = ("levynet", "levynet_code", "alexnet_finetune", "googlenet_shallow", "googlenet_deeper")
PARAMS = {"alexnet_finetune": 56_876_418, "googlenet_shallow": 5_975_602,
          "googlenet_deeper": 5_975_602, "levynet": 1_643_042, "levynet_code": 1_693_474}
SCORE = {"alexnet_finetune": "fc8_mammo", "googlenet_shallow": "loss3/classifier_mammo",
         "googlenet_deeper": "loss3/classifier_mammo", "levynet": "fc3", "levynet_code": "fc3"}


def make_dataset(folder, n=(3, 2), size=224, seed=0):
    """train_lmdb / val_lmdb of 224x224 grey-as-RGB records and their mean image."""
    rng = np.random.RandomState(seed)
    images = []
    for split, count in zip(("train_lmdb", "val_lmdb"), n):
        with LMDBWriter(os.path.join(folder, split)) as db:
            for i in range(count):
                arr = np.repeat(rng.randint(0, 256, (1, size, size)).astype(np.uint8), 3, 0)
                images.append(arr)
                db.put_datum(lmdb_key(i, f"crop{i}"), array_to_datum(arr, label=i % 2))
    write_mean(np.mean(images, axis=0), os.path.join(folder, "mean.binaryproto"))
    return folder


def blob_shapes(net):
    return {name: tuple(blob.data.shape) for name, blob in net.blobs.items()}


def param_shapes(net):
    return {name: [tuple(b.data.shape) for b in blobs] for name, blobs in net.params.items()}


def learnable_count(net):
    return sum(b.data.size for name, blobs in net.params.items()
               if net.layer_dict[name].type != "BatchNorm" for b in blobs)


def random_weights(net, rng):
    """Weights scaled by fan-in, so activations stay finite through GoogLeNet's depth; sane
    BatchNorm statistics (mean, positive variance, factor 1)."""
    weights = {}
    for name, blobs in net.params.items():
        if net.layer_dict[name].type == "BatchNorm":
            c = blobs[0].data.shape[0]
            weights[name] = [rng.standard_normal(c, dtype=np.float32) * 0.1,
                             rng.uniform(0.5, 2.0, c).astype(np.float32),
                             np.ones(1, np.float32)]
            continue
        arrays = []
        for b in blobs:
            shape = b.data.shape
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            arr = rng.standard_normal(shape, dtype=np.float32)
            arr *= np.float32(1 / np.sqrt(fan_in))
            arrays.append(arr)
        weights[name] = arrays
    return weights


def load(net, weights):
    for name, arrays in weights.items():
        for blob, arr in zip(net.params[name], arrays):
            blob.data[...] = arr


@pytest.mark.parametrize("name", MODELS)
def test_deploy_matches_real_caffe(real_caffe, name):
    path = os.path.join(ROOT, "prototxt", name, "deploy.prototxt")
    ours, real = caffe.Net(path, caffe.TEST), real_caffe.Net(path, real_caffe.TEST)
    assert blob_shapes(ours) == blob_shapes(real)
    assert param_shapes(ours) == param_shapes(real)
    assert learnable_count(ours) == PARAMS[name]
    if name == "googlenet_shallow":
        return  # computes what googlenet_deeper does at TEST (they differ in training only)
    rng = np.random.default_rng(7)
    weights = random_weights(real, rng)
    load(real, weights)
    load(ours, weights)
    x = (rng.random((1, 3, 224, 224), dtype=np.float32) - 0.5) * 100
    real.blobs["data"].data[...] = x
    ours.blobs["data"].data[...] = x
    real.forward()
    ours.forward()
    for blob in (SCORE[name], "prob"):
        want, got = real.blobs[blob].data, ours.blobs[blob].data
        assert np.allclose(got, want, rtol=1e-3, atol=1e-4 * np.abs(want).max()), blob


@pytest.mark.parametrize("name", MODELS)
def test_train_val_matches_real_caffe(real_caffe, tmp_path, name):
    # A dataset per net: py-lmdb opens a database once per process, and a Net's Data layer
    # keeps it open as long as the Net lives.
    dataset = make_dataset(str(tmp_path / "dataset"))
    source = os.path.join(ROOT, "prototxt", name, "train_val.prototxt")
    net_param = read_net(source)
    resolved = resolve_net(net_param, dataset_paths(dataset, net_param, source),
                           batch_size=2, test_batch_size=2)
    path = tmp_path / "train_val.prototxt"
    path.write_text(to_text(resolved))
    for ours_phase, real_phase in ((caffe.TRAIN, real_caffe.TRAIN),
                                   (caffe.TEST, real_caffe.TEST)):
        ours, real = caffe.Net(str(path), ours_phase), real_caffe.Net(str(path), real_phase)
        assert blob_shapes(ours) == blob_shapes(real)
        assert param_shapes(ours) == param_shapes(real)
        assert sorted(ours.outputs) == sorted(real.outputs)
    out = ours.forward()  # a TEST batch through the whole net, Data layer included
    assert all(np.isfinite(v).all() for v in out.values())
