"""The committed model files say what the paper (section 4) says: multipliers, classifiers,
dropout, heads, data layers. Parsed with our own reader, deepmammo.caffe.formats.prototxt."""
import os

import pytest

from deepmammo.caffe.formats.prototxt import read_net, read_solver
from deepmammo.caffe.proto import caffe_pb2 as pb

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = ("levynet", "levynet_code", "alexnet_finetune", "googlenet_shallow", "googlenet_deeper")
LEARNABLE = ("Convolution", "InnerProduct")
INCEPTIONS = ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b")


def model(name, kind):
    return read_net(os.path.join(ROOT, "prototxt", name, kind + ".prototxt"))


def multipliers(layer):
    return [(p.lr_mult, p.decay_mult) for p in layer.param]


def learnable(net):
    return [layer for layer in net.layer if layer.type in LEARNABLE]


def test_alexnet_multipliers_are_the_papers():
    net = model("alexnet_finetune", "train_val")
    layers = {layer.name: layer for layer in learnable(net)}
    assert list(layers) == ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7",
                            "fc8_mammo"]
    for name, layer in layers.items():
        if name == "fc8_mammo":
            # learned from scratch at BVLC's original multipliers
            assert multipliers(layer) == [(1, 1), (2, 0)]
            assert layer.inner_product_param.num_output == 2
            assert layer.inner_product_param.weight_filler.type == "gaussian"
            assert layer.inner_product_param.weight_filler.std == pytest.approx(0.01)
        else:
            assert multipliers(layer) == [(pytest.approx(0.1), 1), (pytest.approx(0.2), 0)], name
    drops = {l.name: l.dropout_param.dropout_ratio for l in net.layer if l.type == "Dropout"}
    assert drops == {"drop6": 0.5, "drop7": 0.5}


@pytest.mark.parametrize("variant,full,dropout", [
    ("shallow", ("5b",), 0.1),
    ("deeper", ("5a", "5b"), 0.2),
])
def test_googlenet_multipliers_are_the_papers(variant, full, dropout):
    net = model("googlenet_" + variant, "train_val")
    names = [layer.name for layer in net.layer]
    assert not [n for n in names if n.startswith(("loss1/", "loss2/"))], "aux heads removed"
    assert "loss3/classifier" not in names
    seen_full = set()
    for layer in learnable(net):
        if layer.name == "loss3/classifier_mammo":
            assert multipliers(layer) == [(10, 1), (20, 0)]
            assert layer.inner_product_param.num_output == 2
            continue
        module = layer.name.split("/")[0].replace("inception_", "")
        if module in full:
            seen_full.add(module)
            assert multipliers(layer) == [(1, 1), (2, 0)], layer.name
        else:
            assert multipliers(layer) == [(pytest.approx(0.1), 1), (pytest.approx(0.2), 0)], \
                layer.name
    assert seen_full == set(full)
    # 3 stem convolutions + 6 per inception module + the classifier
    assert len(learnable(net)) == 3 + 6 * len(INCEPTIONS) + 1
    drops = [l for l in net.layer if l.type == "Dropout"]
    assert [(l.name, l.dropout_param.dropout_ratio) for l in drops] == \
        [("pool5/drop_7x7_s1", pytest.approx(dropout))]


def test_levynet_is_the_papers():
    net = model("levynet", "train_val")
    convs = [l for l in net.layer if l.type == "Convolution"]
    assert [(c.convolution_param.num_output, list(c.convolution_param.kernel_size),
             list(c.convolution_param.pad)) for c in convs] == [(32, [3], [1]), (32, [3], [1]),
                                                                 (64, [3], [1])]
    ips = [l for l in net.layer if l.type == "InnerProduct"]
    assert [l.inner_product_param.num_output for l in ips] == [128, 64, 2]
    for layer in convs + ips:
        assert layer.param[0].lr_mult == 1
        filler = (layer.convolution_param if layer.type == "Convolution"
                  else layer.inner_product_param).weight_filler
        assert filler.type == "xavier"
    for layer in ips:
        assert multipliers(layer) == [(1, 1), (2, 0)]
    # Conv - BatchNorm - Scale - ReLU - Pool, three times, in that order
    types = [l.type for l in net.layer if l.type not in ("Data",)]
    assert types[:15] == ["Convolution", "BatchNorm", "Scale", "ReLU", "Pooling"] * 3
    for layer in net.layer:
        if layer.type == "BatchNorm":
            assert multipliers(layer) == [(0, 0)] * 3  # running statistics, never learned
            assert not layer.batch_norm_param.HasField("use_global_stats")
        if layer.type == "Scale":
            assert layer.scale_param.bias_term
    assert not [l for l in net.layer if l.type == "Dropout"]


def test_levynet_code_is_the_authors():
    net = model("levynet_code", "train_val")
    convs = [l for l in net.layer if l.type == "Convolution"]
    assert [list(c.convolution_param.kernel_size) for c in convs] == [[5], [5], [5]]
    assert not [l for l in net.layer if l.type == "Scale"]
    bns = [l for l in net.layer if l.type == "BatchNorm"]
    assert len(bns) == 3 and all(not l.batch_norm_param.use_global_stats for l in bns)
    assert [l.name for l in net.layer if l.type == "Dropout"] == ["drop1", "drop2"]
    train = [l for l in net.layer if l.type == "Data"][0]
    assert not train.transform_param.mean_file  # commented out in the authors' file


@pytest.mark.parametrize("name,batch", [("levynet", 64), ("levynet_code", 64),
                                        ("alexnet_finetune", 128), ("googlenet_shallow", 32),
                                        ("googlenet_deeper", 32)])
def test_data_layers(name, batch):
    net = model(name, "train_val")
    data = {pb.Phase.Name(l.include[0].phase): l for l in net.layer if l.type == "Data"}
    assert set(data) == {"TRAIN", "TEST"}
    assert data["TRAIN"].data_param.batch_size == batch
    assert data["TRAIN"].transform_param.mirror and not data["TEST"].transform_param.mirror
    for phase, lmdb in (("TRAIN", "train_lmdb"), ("TEST", "val_lmdb")):
        layer = data[phase]
        assert layer.transform_param.crop_size == 224
        assert layer.data_param.source == "data/datasets/large-aug/" + lmdb
        assert layer.data_param.backend == pb.DataParameter.LMDB
        if name != "levynet_code":
            assert layer.transform_param.mean_file == "data/datasets/large-aug/mean.binaryproto"


@pytest.mark.parametrize("name", MODELS)
def test_deploy_matches_train_val(name):
    train_val, deploy = model(name, "train_val"), model(name, "deploy")
    strip = lambda net: [(l.name, l.type) for l in net.layer
                         if l.type not in ("Data", "Input", "Accuracy", "SoftmaxWithLoss",
                                           "Softmax")]
    assert strip(train_val) == strip(deploy)
    assert deploy.layer[0].type == "Input"
    assert list(deploy.layer[0].input_param.shape[0].dim) == [1, 3, 224, 224]
    assert deploy.layer[-1].type == "Softmax" and deploy.layer[-1].top[0] == "prob"
    assert deploy.force_backward  # saliency maps need the input gradient


SOLVERS = {
    # name: (type, base_lr, weight_decay, lr_policy, max_iter, snapshot)
    "levynet": ("Adam", 1e-3, 5e-4, "step", 19908, 4977),
    "levynet-code": ("Adam", 1e-2, 5e-4, "step", 19908, 4977),
    "alexnet-aug-large": ("Adam", 1e-3, 5e-3, "step", 8532, 2133),
    "alexnet-noaug-large": ("Adam", 1e-3, 5e-3, "step", 572, 143),
    "alexnet-noaug-small": ("Adam", 1e-3, 5e-3, "step", 572, 143),
    "googlenet-shallow": ("SGD", 1e-2, 5e-4, "poly", 22752, 5688),
    "googlenet-deeper": ("SGD", 1e-2, 1e-3, "poly", 45500, 11375),
}


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_solvers_are_the_papers(name):
    s = read_solver(os.path.join(ROOT, "solvers", name + ".prototxt"))
    kind, lr, wd, policy, max_iter, snapshot = SOLVERS[name]
    assert (s.type, s.lr_policy, s.max_iter, s.snapshot) == (kind, policy, max_iter, snapshot)
    assert s.base_lr == pytest.approx(lr) and s.weight_decay == pytest.approx(wd)
    assert s.max_iter == 4 * s.snapshot  # four snapshots at the quarter points
    assert s.momentum == pytest.approx(0.9)
    if kind == "SGD":
        assert s.power == pytest.approx(0.5)
    else:
        assert s.gamma == pytest.approx(0.1) and s.momentum2 == pytest.approx(0.999)
    assert os.path.isfile(os.path.join(ROOT, s.net))
