"""Every deploy and train_val prototxt loads in real BVLC Caffe with the expected shapes and
parameter counts. The train_val nets read a tiny LMDB and mean file made here, pointed at by
the same code the experiment runner uses (deepmammo.experiment.resolve_net)."""
import os

import numpy as np
import pytest

from deepmammo.caffe.formats.binaryproto import write_mean
from deepmammo.caffe.formats.datum import array_to_datum
from deepmammo.caffe.formats.lmdb_io import LMDBWriter, lmdb_key
from deepmammo.caffe.formats.prototxt import read_net, to_text
from deepmammo.experiment import dataset_paths, resolve_net

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = ("levynet", "levynet_code", "alexnet_finetune", "googlenet_shallow", "googlenet_deeper")

# Learnable parameters (BatchNorm's running statistics excluded).
# AlexNet: BVLC's 60,965,224 - (4096 x 1000 + 1000) + (4096 x 2 + 2).
# GoogLeNet without auxiliary heads: 6,998,552 - (1024 x 1000 + 1000) + (1024 x 2 + 2).
PARAMS = {
    "alexnet_finetune": 56_876_418,
    "googlenet_shallow": 5_975_602,
    "googlenet_deeper": 5_975_602,
    "levynet": 1_643_042,
    "levynet_code": 1_693_474,
}
SCORE = {"alexnet_finetune": "fc8_mammo", "googlenet_shallow": "loss3/classifier_mammo",
         "googlenet_deeper": "loss3/classifier_mammo", "levynet": "fc3", "levynet_code": "fc3"}
OUTPUTS = {"googlenet": ("loss3/loss3", "loss3/top-1"), "other": ("loss", "accuracy")}
POOLED = {  # the last spatial blob before the classifiers, at 224x224 input
    "alexnet_finetune": ("pool5", (256, 6, 6)),
    "googlenet_shallow": ("pool5/7x7_s1", (1024, 1, 1)),
    "googlenet_deeper": ("pool5/7x7_s1", (1024, 1, 1)),
    "levynet": ("pool3", (64, 14, 14)),
    "levynet_code": ("pool3", (64, 14, 14)),
}


def make_dataset(folder, n=(3, 2), size=224, seed=0):
    """train_lmdb / val_lmdb of 224x224 grey-as-RGB records and their mean image."""
    rng = np.random.RandomState(seed)
    images = {}
    for split, count in zip(("train_lmdb", "val_lmdb"), n):
        with LMDBWriter(os.path.join(folder, split)) as db:
            images[split] = []
            for i in range(count):
                grey = rng.randint(0, 256, size=(size, size), dtype=np.uint8)
                arr = np.repeat(grey[None], 3, axis=0)
                images[split].append(arr)
                db.put_datum(lmdb_key(i, f"crop{i}"), array_to_datum(arr, label=i % 2))
    write_mean(np.mean(images["train_lmdb"], axis=0), os.path.join(folder, "mean.binaryproto"))
    return folder


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(str(tmp_path_factory.mktemp("dataset")))


def learnable_count(net):
    return sum(b.data.size for name, blobs in net.params.items()
               if net.layer_dict[name].type != "BatchNorm" for b in blobs)


def param_shapes(net):
    return {name: [b.data.shape for b in blobs] for name, blobs in net.params.items()}


@pytest.fixture(scope="module")
def deploy_nets(real_caffe):
    return {m: real_caffe.Net(os.path.join(ROOT, "prototxt", m, "deploy.prototxt"),
                              real_caffe.TEST) for m in MODELS}


@pytest.mark.parametrize("name", MODELS)
def test_deploy_loads_in_real_caffe(deploy_nets, name):
    net = deploy_nets[name]
    assert learnable_count(net) == PARAMS[name]
    assert net.blobs["data"].data.shape == (1, 3, 224, 224)
    assert net.blobs[SCORE[name]].data.shape == (1, 2)
    assert net.blobs["prob"].data.shape == (1, 2)
    blob, shape = POOLED[name]
    assert net.blobs[blob].data.shape == (1,) + shape
    net.blobs["data"].data[...] = np.random.RandomState(1).randn(1, 3, 224, 224) * 30
    prob = net.forward()["prob"]
    assert np.all(np.isfinite(prob)) and prob.sum() == pytest.approx(1.0, abs=1e-5)


def test_alexnet_conv1_at_224(deploy_nets):
    # 224 input: conv1 54x54 (55 at BVLC's 227), pool1 27x27 either way.
    net = deploy_nets["alexnet_finetune"]
    assert net.blobs["conv1"].data.shape == (1, 96, 54, 54)
    assert net.blobs["pool1"].data.shape == (1, 96, 27, 27)
    assert param_shapes(net)["fc6"] == [(4096, 9216), (4096,)]


@pytest.mark.parametrize("name", MODELS)
def test_train_val_loads_in_real_caffe(real_caffe, deploy_nets, dataset, tmp_path, name):
    source = os.path.join(ROOT, "prototxt", name, "train_val.prototxt")
    net_param = read_net(source)
    # Small batches keep the big nets light; the runner uses the same substitution.
    resolved = resolve_net(net_param, dataset_paths(dataset, net_param, source),
                           batch_size=2, test_batch_size=2)
    path = tmp_path / "train_val.prototxt"
    path.write_text(to_text(resolved))
    for phase in (real_caffe.TRAIN, real_caffe.TEST):
        net = real_caffe.Net(str(path), phase)
        assert net.blobs["data"].data.shape == (2, 3, 224, 224)
        assert net.blobs["label"].data.shape == (2,)
        assert net.blobs[SCORE[name]].data.shape == (2, 2)
        assert param_shapes(net) == param_shapes(deploy_nets[name])
        out = net.forward()
        loss, acc = OUTPUTS["googlenet" if name.startswith("googlenet") else "other"]
        assert set(out) == {loss, acc}
        assert np.isfinite(out[loss]) and 0 <= float(out[acc]) <= 1
