"""pycaffe's NetSpec (deepmammo/caffe/net_spec.py) and coord_map against real pycaffe's: the
same script must print the same prototxt text, and map the same coordinates. Scripts take the
`caffe` module, so each runs once with real pycaffe and once with deepmammo.caffe; Caffe's own
examples/pycaffe/caffenet.py runs unchanged under both, through `deepmammo pycaffe`."""
import os
import subprocess
import sys

import numpy as np
import pytest

import deepmammo.caffe as caffe
from deepmammo.caffe import coord_map, net_spec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def lenet(caffe, batch_size=64):
    L, P = caffe.layers, caffe.params
    n = caffe.NetSpec()
    n.data, n.label = L.Data(batch_size=batch_size, backend=P.Data.LMDB, source="train_lmdb",
                             transform_param=dict(scale=1. / 255), ntop=2)
    n.conv1 = L.Convolution(n.data, kernel_size=5, num_output=20,
                            weight_filler=dict(type="xavier"),
                            param=[dict(lr_mult=1), dict(lr_mult=2, decay_mult=0)])
    n.pool1 = L.Pooling(n.conv1, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.ip1 = L.InnerProduct(n.pool1, num_output=500, weight_filler=dict(type="xavier"))
    n.relu1 = L.ReLU(n.ip1, in_place=True)
    n.ip2 = L.InnerProduct(n.relu1, num_output=10, weight_filler=dict(type="xavier"))
    n.loss = L.SoftmaxWithLoss(n.ip2, n.label, loss_weight=0.5)
    n.acc = L.Accuracy(n.ip2, n.label, include=dict(phase=caffe.TEST), top_k=2)
    return n.to_proto()


def anonymous(caffe):
    """Generated names: counters per type, in the order the graph is walked."""
    L, P = caffe.layers, caffe.params
    data, label = L.DummyData(shape=[dict(dim=[2, 3, 8, 8]), dict(dim=[2])], ntop=2)
    conv = L.Convolution(data, kernel_size=3, num_output=4, pad=[1], stride=1)
    relu = L.ReLU(conv, in_place=True)
    pool = L.Pooling(relu, pool=P.Pooling.AVE, global_pooling=True)
    left = L.InnerProduct(pool, num_output=2)
    right = L.InnerProduct(pool, num_output=2)
    both = L.Eltwise(left, right, operation=P.Eltwise.SUM, coeff=[0.5, 0.5])
    loss = L.SoftmaxWithLoss(both, label)
    return caffe.to_proto(loss, L.Silence(left, ntop=0).inputs[0])


def mixed_names(caffe):
    """Named tops, unnamed layers in between, a top named twice, multi-top and no-top layers."""
    L = caffe.layers
    n = caffe.NetSpec()
    n.x = L.Input(shape=[dict(dim=[1, 4]), dict(dim=[1, 4])], ntop=2)[0]
    a, b = L.Slice(n.x, axis=1, slice_point=[1], ntop=2)
    n.cat = L.Concat(L.TanH(a), L.Sigmoid(b), L.AbsVal(a))
    n["alias"] = n.cat                            # the later name wins
    n.py = L.Python(n.cat, python_param=dict(module="m", layer="L", param_str="{'k': 1}"))
    n.quiet = L.Silence(n.py, ntop=0)
    n.split_a, n.split_b = L.Split(n.py, ntop=2)
    n.drop = L.Dropout(n.split_a, dropout_ratio=0.25, in_place=True, propagate_down=[True],
                       exclude=[dict(phase=caffe.TRAIN), dict(stage="deploy")])
    return n.to_proto()


def caffenet_like(caffe):
    L, P = caffe.layers, caffe.params
    n = caffe.NetSpec()
    n.data = L.Input(input_param=dict(shape=dict(dim=[1, 3, 227, 227])))
    n.conv1 = L.Convolution(n.data, kernel_h=11, kernel_w=9, stride_h=4, stride_w=3,
                            num_output=96, group=1, bias_term=False,
                            engine=P.Convolution.CAFFE)
    n.norm1 = L.LRN(n.conv1, local_size=5, alpha=1e-4, beta=0.75,
                    norm_region=P.LRN.WITHIN_CHANNEL)
    n.bn = L.BatchNorm(n.norm1, use_global_stats=True, param=[dict(lr_mult=0)] * 3)
    n.scale = L.Scale(n.bn, bias_term=True, in_place=True)
    n.fc = L.InnerProduct(n.scale, num_output=10, bias_filler=dict(type="constant", value=0.1))
    n.prob = L.Softmax(n.fc)
    return n.to_proto()


SCRIPTS = [lenet, anonymous, mixed_names, caffenet_like]


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.__name__ for s in SCRIPTS])
def test_same_text_as_pycaffe(real_caffe, script):
    ours, real = script(caffe), script(real_caffe)
    assert isinstance(ours, caffe.proto.caffe_pb2.NetParameter)
    assert str(ours) == str(real)
    assert len(ours.layer) > 2


def test_top_to_proto_and_errors(real_caffe):
    for module in (caffe, real_caffe):
        top = module.layers.ReLU(module.layers.Input(shape=dict(dim=[2])))
        assert [layer.name for layer in top.to_proto().layer] == ["Input1", "ReLU1"]
    with pytest.raises(TypeError, match=r"^Silence input 0 is not a Top \(type is <class 'tuple'>\)$"):
        caffe.layers.Silence(caffe.layers.DummyData(ntop=2), ntop=0)
    with pytest.raises(AttributeError):          # not a field anywhere
        caffe.to_proto(caffe.layers.ReLU(caffe.layers.Input(), no_such_field=1))
    n = caffe.NetSpec()
    with pytest.raises(KeyError):                # pycaffe's NetSpec: a missing name is KeyError
        _ = n.missing
    assert not hasattr(n, "missing")
    assert caffe.params.Pooling.STOCHASTIC == real_caffe.params.Pooling.STOCHASTIC == 2
    assert net_spec.param_name_dict() == real_caffe.net_spec.param_name_dict()


def test_caffe_layers_is_the_engine_package_too():
    from deepmammo.caffe.layers import REGISTRY, python_layer
    assert "Python" in REGISTRY and python_layer.PythonLayer.TYPE == "Python"
    top = caffe.layers.Convolution(caffe.layers.Input(), num_output=1, kernel_size=1)
    assert isinstance(top, net_spec.Top) and top.fn.type_name == "Convolution"
    with pytest.raises(AttributeError):
        _ = caffe.layers.not_a_module_here


def _coord_net(module, ks=3, stride=1, pad=0, pool=2, dstride=2, dpad=0):
    L, P = module.layers, module.params
    n = module.NetSpec()
    n.data = L.Input(shape=dict(dim=[2, 1, 100, 100]))
    n.conv = L.Convolution(n.data, num_output=10, kernel_size=ks, stride=stride, pad=pad,
                           dilation=2)
    n.pool = L.Pooling(n.conv, pool=P.Pooling.MAX, kernel_size=pool, stride=pool, pad=0)
    n.deconv = L.Deconvolution(n.pool, convolution_param=dict(
        num_output=10, kernel_size=[2 * s for s in dstride] if isinstance(dstride, list)
        else 2 * dstride, stride=dstride, pad=dpad))
    n.relu = L.ReLU(n.deconv)
    return n


@pytest.mark.parametrize("kw", [{}, dict(pool=4, dstride=4), dict(pad=3, dpad=1),
                                dict(ks=[3, 5], stride=[1, 2], pad=[0, 10], dstride=[2, 2])])
def test_coord_map_as_pycaffe(real_caffe, kw):
    from caffe import coord_map as real_coord_map  # real pycaffe's, imported by real_caffe
    ours, real = _coord_net(caffe, **kw), _coord_net(real_caffe, **kw)
    got = coord_map.coord_map_from_to(ours.relu, ours.data)
    want = real_coord_map.coord_map_from_to(real.relu, real.data)
    assert got[0] == want[0]
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[2], want[2])
    try:
        want_crop = real_coord_map.crop(real.relu, real.data)
    except AssertionError:
        with pytest.raises(AssertionError):
            coord_map.crop(ours.relu, ours.data)
        return
    ours.crop = coord_map.crop(ours.relu, ours.data)
    real.crop = want_crop
    assert str(ours.to_proto()) == str(real.to_proto())


@pytest.mark.subprocess
def test_caffenet_example_unchanged(real_caffe, tmp_path):
    """Caffe's examples/pycaffe/caffenet.py writes the same train/test prototxt files."""
    from deepmammo.caffe.real import find_build
    build = find_build()
    script = os.path.join(build, "src", "examples", "pycaffe", "caffenet.py")
    outputs = {}
    for name, command, path in (
            ("real", [sys.executable, script], os.path.join(build, "src", "python")),
            ("ours", [sys.executable, "-m", "deepmammo", "pycaffe", script], ROOT)):
        work = tmp_path / name
        work.mkdir()
        proc = subprocess.run(command, cwd=work, env=dict(os.environ, PYTHONPATH=path),
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        outputs[name] = [(work / f).read_text() for f in ("train.prototxt", "test.prototxt")]
    assert outputs["ours"] == outputs["real"]
    assert "SoftmaxWithLoss" in outputs["ours"][0] and "Accuracy" in outputs["ours"][1]
