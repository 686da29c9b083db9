"""Net rules (include/exclude, sharing, loss weights, propagate_down), weights files (new
format, V1 with legacy shapes, what we save real Caffe loads), the Data layer against real
Caffe, the pycaffe interface and the solver-facing contract."""
import numpy as np
import pytest
import torch

import deepmammo.caffe as caffe
from deepmammo.caffe.crosscheck import crosscheck
from deepmammo.caffe.formats.binaryproto import write_mean
from deepmammo.caffe.formats.blobproto import array_to_blob
from deepmammo.caffe.formats.caffemodel import write_caffemodel
from deepmammo.caffe.formats.datum import array_to_datum
from deepmammo.caffe.formats.lmdb_io import LMDBWriter, lmdb_key
from deepmammo.caffe.netstate import NetError
from deepmammo.caffe.proto import caffe_pb2 as pb

TOL = 2e-5

SMALL = '''name: "small"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 6 dim: 6 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
        convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "gaussian" std: 0.1 }
                            bias_filler { type: "constant" value: 0.2 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "fc" type: "InnerProduct" bottom: "conv1" top: "fc"
        inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
'''


def _write(tmp_path, text, name="net.prototxt"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# ---------------------------------------------------------------- net rules
RULES = '''name: "rules"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 } } }
layer { name: "train_only" type: "ReLU" bottom: "data" top: "a" include { phase: TRAIN } }
layer { name: "test_only" type: "ReLU" bottom: "data" top: "a" include { phase: TEST } }
layer { name: "level2" type: "ReLU" bottom: "a" top: "b" include { min_level: 2 } }
layer { name: "level_low" type: "ReLU" bottom: "a" top: "c" include { max_level: 1 } }
layer { name: "stage_x" type: "ReLU" bottom: "a" top: "d" include { stage: "x" } }
layer { name: "stage_xy" type: "ReLU" bottom: "a" top: "e" include { stage: "x" stage: "y" } }
layer { name: "not_y" type: "ReLU" bottom: "a" top: "f" include { not_stage: "y" } }
layer { name: "either" type: "ReLU" bottom: "a" top: "g" include { stage: "y" } include { phase: TRAIN } }
layer { name: "excl" type: "ReLU" bottom: "a" top: "h" exclude { phase: TEST stage: "x" } }
'''


@pytest.mark.parametrize("phase,level,stages", [
    (0, 0, []), (1, 0, []), (1, 2, []), (0, 1, ["x"]), (1, 3, ["x", "y"]), (1, 0, ["y"])])
def test_include_exclude_match_real(real_caffe, tmp_path, phase, level, stages):
    path = _write(tmp_path, RULES)
    real = real_caffe.Net(path, phase, level=level, stages=stages)
    ours = caffe.Net(path, phase, level=level, stages=stages)
    assert list(ours._layer_names) == list(real._layer_names)
    assert ours.outputs == list(real.outputs)


def test_include_and_exclude_together_is_an_error(tmp_path):
    text = RULES + 'layer { name: "bad" type: "ReLU" bottom: "a" top: "z" include { phase: TEST } exclude { phase: TRAIN } }\n'
    with pytest.raises(NetError, match="bad"):
        caffe.Net(_write(tmp_path, text), caffe.TEST)


SHARED = '''name: "shared" force_backward: true
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 3 dim: 4 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1" param { name: "w" lr_mult: 3 } param { name: "b" }
        inner_product_param { num_output: 4 } }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2" param { name: "w" decay_mult: 5 } param { name: "b" }
        inner_product_param { num_output: 4 } }
layer { name: "ip3" type: "InnerProduct" bottom: "ip2" top: "ip3" param { lr_mult: 0 } param { lr_mult: 0 }
        inner_product_param { num_output: 2 } }
layer { name: "loss_a" type: "EuclideanLoss" bottom: "ip3" bottom: "target" top: "loss_a" loss_weight: 0.5 }
layer { name: "target" type: "Input" top: "target" input_param { shape { dim: 3 dim: 2 } } }
'''


def test_shared_params_sum_gradients_like_real(real_caffe):
    # "target" is declared after its use: reorder so the net is valid in both.
    lines = SHARED.strip().split("\n")
    text = "\n".join(lines[:2] + [lines[-1]] + lines[2:-1]) + "\n"
    report = crosscheck(real_caffe, text, 0)
    assert report.worst() < TOL, report
    net = report.ours
    assert net.params["ip1"][0] is net.params["ip2"][0]
    owners = [b.owner_name for b in net.learnable_params]
    assert owners == ["ip1/0", "ip1/1", "ip3/0", "ip3/1"]
    w = net.learnable_params[0]
    assert (w.lr_mult, w.decay_mult) == (3, 5)
    # lr_mult 0 leaves ip3 out of backward, except that force_backward turns every
    # parameter's propagation on (as in Caffe: the crosscheck compared these diffs too).
    assert net.params["ip3"][0].diff.any()


def test_unknown_bottom_and_duplicate_top_are_errors(tmp_path):
    bad = SMALL.replace('bottom: "fc" top: "prob"', 'bottom: "nope" top: "prob"')
    with pytest.raises(NetError, match="prob.*nope|nope.*prob"):
        caffe.Net(_write(tmp_path, bad), caffe.TEST)
    dup = SMALL + 'layer { name: "again" type: "ReLU" bottom: "fc" top: "prob" }\n'
    with pytest.raises(NetError, match="again"):
        caffe.Net(_write(tmp_path, dup), caffe.TEST)


def test_loss_weight_propagate_down_and_several_losses(real_caffe):
    text = '''name: "losses"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 4 dim: 3 } } }
layer { name: "t" type: "Input" top: "t" input_param { shape { dim: 4 dim: 2 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 2 } }
layer { name: "ip2" type: "InnerProduct" bottom: "ip" top: "ip2" loss_weight: 0.25 inner_product_param { num_output: 1 } }
layer { name: "l1" type: "EuclideanLoss" bottom: "ip" bottom: "t" top: "l1" propagate_down: true propagate_down: false }
layer { name: "l2" type: "EuclideanLoss" bottom: "ip" bottom: "t" top: "l2" loss_weight: 3 }
'''
    report = crosscheck(real_caffe, text, 0)
    assert report.worst() < TOL, report
    net = report.ours
    loss = net.forward_backward()
    expected = 0.25 * net.blobs["ip2"].data.sum() + net.blobs["l1"].data + 3 * net.blobs["l2"].data
    assert loss == pytest.approx(float(expected), rel=1e-5)


def test_unsupported_type_and_fields_name_the_layer(tmp_path):
    cases = [
        ('layer { name: "mystery" type: "MyCustomLayer" bottom: "data" top: "x" }',
         r"net\.prototxt:3: layer 'mystery' has type 'MyCustomLayer', which is not a BVLC Caffe "
         r"layer type; a Caffe build that has this layer runs the net with --engine caffe$"),
        ('layer { name: "stoch" type: "Pooling" bottom: "data" top: "x" pooling_param { pool: STOCHASTIC kernel_size: 2 pad: 1 } }', "stoch.*padding"),
        ('layer { name: "even" type: "LRN" bottom: "data" top: "x" lrn_param { local_size: 4 } }', "even.*odd"),
        ('layer { name: "padbig" type: "Pooling" bottom: "data" top: "x" pooling_param { kernel_size: 2 pad: 2 } }', "padbig.*pad"),
        ('layer { name: "axis3" type: "Convolution" bottom: "data" top: "x" convolution_param { num_output: 2 kernel_size: 1 axis: 2 } }', "axis3.*axis"),
        ('layer { name: "ndconv" type: "Convolution" bottom: "data" top: "x" convolution_param { num_output: 2 kernel_size: 1 kernel_size: 1 kernel_size: 1 } }', "ndconv"),
    ]
    head = 'name: "e"\nlayer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 4 dim: 4 } } }\n'
    for body, pattern in cases:
        with pytest.raises(NetError, match=pattern):
            caffe.Net(_write(tmp_path, head + body), caffe.TEST)


def test_deprecated_input_fields_match_real(real_caffe, tmp_path):
    text = ('name: "old"\ninput: "data"\ninput_dim: 2\ninput_dim: 3\ninput_dim: 5\ninput_dim: 5\n'
            'layer { name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param { num_output: 2 kernel_size: 3 } }\n')
    report = crosscheck(real_caffe, text, 1)
    assert report.worst() < TOL and report.ours.inputs == ["data"]
    text2 = ('name: "old2"\ninput: "data"\ninput_shape { dim: 2 dim: 4 }\n'
             'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 2 } }\n')
    report = crosscheck(real_caffe, text2, 1)
    assert report.worst() < TOL


# ---------------------------------------------------------------- weights
def _fill_random(net, seed=0):
    rs = np.random.RandomState(seed)
    for blobs in net.params.values():
        for b in blobs:
            b.data[...] = rs.randn(*b.data.shape).astype(np.float32)


def test_real_weights_load_by_name_and_ours_load_in_real(real_caffe, tmp_path):
    path = _write(tmp_path, SMALL)
    real = real_caffe.Net(path, real_caffe.TEST)
    _fill_random(real)
    real.save(str(tmp_path / "real.caffemodel"))
    # pycaffe's (weights, phase) order, and a layer renamed (fc -> fc_new) is left alone.
    renamed = _write(tmp_path, SMALL.replace('name: "fc"', 'name: "fc_new"'), "renamed.prototxt")
    ours = caffe.Net(renamed, str(tmp_path / "real.caffemodel"), caffe.TEST)
    np.testing.assert_array_equal(ours.params["conv1"][0].data, real.params["conv1"][0].data)
    assert not np.array_equal(ours.params["fc_new"][0].data, real.params["fc"][0].data)
    ours2 = caffe.Net(path, caffe.TEST, weights=str(tmp_path / "real.caffemodel"))
    _fill_random(ours2, seed=7)
    ours2.save(str(tmp_path / "ours.caffemodel"))
    back = real_caffe.Net(path, real_caffe.TEST, weights=str(tmp_path / "ours.caffemodel"))
    for name in ours2.params:
        for k, blob in enumerate(ours2.params[name]):
            np.testing.assert_array_equal(back.params[name][k].data, blob.data)
    x = np.random.RandomState(1).randn(2, 3, 6, 6).astype(np.float32)
    np.testing.assert_allclose(ours2.forward(data=x)["prob"], back.forward(data=x)["prob"],
                               rtol=1e-5, atol=1e-7)


def _v1_file(path, shapes_from, seed=3):
    """A V1-format caffemodel (`layers`, enum types, legacy 4-D blob shapes) as
    bvlc_alexnet.caffemodel is: conv weight N x C x h x w, IP weight 1 x 1 x N x K,
    biases 1 x 1 x 1 x N."""
    rs = np.random.RandomState(seed)
    net = pb.NetParameter(name="v1")
    kinds = {"conv1": pb.V1LayerParameter.CONVOLUTION, "fc": pb.V1LayerParameter.INNER_PRODUCT}
    for name, kind in kinds.items():
        layer = net.layers.add(name=name, type=kind)
        for shape in shapes_from[name]:
            layer.blobs.append(array_to_blob(rs.randn(*shape).astype(np.float32), legacy=True))
    extra = net.layers.add(name="not_in_net", type=pb.V1LayerParameter.RELU)
    extra.bottom.append("x")
    write_caffemodel(net, path)
    return net


def test_v1_weights_file_with_legacy_shapes(real_caffe, tmp_path):
    path = _write(tmp_path, SMALL)
    ours = caffe.Net(path, caffe.TEST)
    shapes = {n: [b.shape for b in ours.params[n]] for n in ("conv1", "fc")}
    v1 = str(tmp_path / "v1.caffemodel")
    _v1_file(v1, shapes)
    ours.copy_from(v1)
    real = real_caffe.Net(path, real_caffe.TEST)
    real.copy_from(v1)
    for name in ("conv1", "fc"):
        for k in range(2):
            np.testing.assert_array_equal(ours.params[name][k].data, real.params[name][k].data)
    x = np.random.RandomState(2).randn(2, 3, 6, 6).astype(np.float32)
    np.testing.assert_allclose(ours.forward(data=x)["prob"], real.forward(data=x)["prob"],
                               rtol=1e-5, atol=1e-7)


def test_shape_mismatch_names_layer_and_both_shapes(tmp_path):
    path = _write(tmp_path, SMALL)
    ours = caffe.Net(path, caffe.TEST)
    ours.save(str(tmp_path / "w.caffemodel"))
    wider = _write(tmp_path, SMALL.replace("num_output: 3", "num_output: 5"), "wider.prototxt")
    with pytest.raises(NetError, match=r"'fc'.*\(3, 64\).*\(5, 64\)"):
        caffe.Net(wider, caffe.TEST, weights=str(tmp_path / "w.caffemodel"))


# ---------------------------------------------------------------- Data layer
def _lmdb(tmp_path, n=5, shape=(3, 8, 7)):
    rs = np.random.RandomState(11)
    images = rs.randint(0, 256, size=(n,) + shape).astype(np.uint8)
    path = str(tmp_path / "db")
    with LMDBWriter(path) as db:
        for i in range(n):
            db.put_datum(lmdb_key(i, f"img{i}.png"), array_to_datum(images[i], label=i % 3))
    return path, images


def _data_net(source, transform, batch=2, phase_layers=""):
    return f'''name: "d"
layer {{ name: "data" type: "Data" top: "data" top: "label"
        transform_param {{ {transform} }} data_param {{ source: "{source}" batch_size: {batch} backend: LMDB }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param {{ num_output: 2 }} }}
{phase_layers}'''


@pytest.mark.parametrize("transform", ["crop_size: 5 scale: 0.5 mean_file: MEAN",
                                       "mean_value: 100 mean_value: 110 mean_value: 120",
                                       "crop_size: 4 mean_value: 128 scale: 0.0078125", ""])
def test_data_layer_test_batches_match_real(real_caffe, tmp_path, transform):
    source, images = _lmdb(tmp_path)
    mean_path = str(tmp_path / "mean.binaryproto")
    write_mean(images.astype(np.float32).mean(axis=0), mean_path)
    text = _data_net(source, transform.replace("MEAN", f'"{mean_path}"'))
    path = _write(tmp_path, text)
    real = real_caffe.Net(path, real_caffe.TEST)
    ours = caffe.Net(path, caffe.TEST)
    try:
        assert ours.blobs["data"].shape == tuple(real.blobs["data"].data.shape)
        for _ in range(4):     # 5 records, batch 2: the third batch wraps around
            real.forward()
            ours.forward()
            np.testing.assert_allclose(ours.blobs["data"].data, real.blobs["data"].data,
                                       rtol=1e-6, atol=1e-5)
            np.testing.assert_array_equal(ours.blobs["label"].data, real.blobs["label"].data)
    finally:
        ours.close()


def test_data_layer_train_crop_mirror_are_seeded_and_valid(tmp_path):
    source, images = _lmdb(tmp_path, n=4, shape=(1, 6, 6))
    text = _data_net(source, "crop_size: 4 mirror: true", batch=4)
    path = _write(tmp_path, text)
    batches = []
    for _ in range(2):
        caffe.set_random_seed(42)
        net = caffe.Net(path, caffe.TRAIN)
        try:
            batches.append([net.forward() and net.blobs["data"].data.copy() for _ in range(6)])
        finally:
            net.close()
    np.testing.assert_array_equal(np.stack(batches[0]), np.stack(batches[1]))
    # Every image is a 4x4 window of its source, mirrored or not; both happen.
    mirrored = plain = 0
    for batch in batches[0]:
        for i, crop in enumerate(batch):
            src = images[i, 0].astype(np.float32)
            windows = [src[h:h + 4, w:w + 4] for h in range(3) for w in range(3)]
            if any(np.array_equal(crop[0], win) for win in windows):
                plain += 1
            elif any(np.array_equal(crop[0], win[:, ::-1]) for win in windows):
                mirrored += 1
            else:
                raise AssertionError("a crop that is not a window of its image")
    assert mirrored > 0 and plain > 0


def test_data_layer_errors_name_layer(tmp_path):
    with pytest.raises(NetError, match="'data'.*no_such_db"):
        caffe.Net(_write(tmp_path, _data_net(str(tmp_path / "no_such_db"), "")), caffe.TEST)
    source, _ = _lmdb(tmp_path)
    with pytest.raises(NetError, match="'data'.*crop_size 9"):
        caffe.Net(_write(tmp_path, _data_net(source, "crop_size: 9")), caffe.TEST)


# ---------------------------------------------------------------- pycaffe interface
def test_pycaffe_interface(tmp_path):
    net = caffe.Net(_write(tmp_path, SMALL), caffe.TEST)
    assert net.inputs == ["data"] and net.outputs == ["prob"]
    assert list(net.params) == ["conv1", "fc"] and net.layer_dict["conv1"].type == "Convolution"
    assert net.blobs["conv1"].shape == (2, 4, 4, 4) and net.blobs["conv1"].count == 128
    assert net.params["conv1"][1].data[0] == pytest.approx(0.2)      # bias filler
    x = np.random.RandomState(0).randn(2, 3, 6, 6).astype(np.float32)
    net.blobs["data"].data[...] = x
    out = net.forward()
    np.testing.assert_allclose(out["prob"].sum(axis=1), 1.0, rtol=1e-6)
    # forward(start=...) from a blob edited in place; forward(end=...) returns that layer's tops
    net.blobs["conv1"].data[...] = 0
    part = net.forward(start="fc")
    assert np.allclose(part["prob"], 1.0 / 3)
    assert set(net.forward(end="relu1")) == {"conv1"}
    # reshape the input, then the net: a new batch size propagates; a new image size
    # reaches fc, sized for 4x4 maps, which refuses it (as Caffe's Reshape does)
    net.blobs["data"].reshape(5, 3, 6, 6)
    net.reshape()
    assert net.blobs["conv1"].shape == (5, 4, 4, 4) and net.blobs["prob"].shape == (5, 3)
    net.blobs["data"].reshape(5, 3, 8, 8)
    with pytest.raises(NetError, match="'fc'"):
        net.reshape()
    net2 = caffe.Net(_write(tmp_path, SMALL, "b.prototxt"), caffe.TEST)
    all_out = net2.forward_all(data=np.concatenate([x, x, x[:1]]))
    assert all_out["prob"].shape == (5, 3)


def test_blob_numpy_views_track_tensors(tmp_path):
    net = caffe.Net(_write(tmp_path, SMALL), caffe.TEST)
    blob = net.params["fc"][0]
    blob.data[...] = 1.5
    assert float(blob.tdata[0, 0]) == 1.5
    with torch.no_grad():
        blob.tdata.mul_(2)
        blob.tdiff.add_(1)
    assert blob.data[0, 0] == 3.0 and blob.diff[0, 0] == 1.0


def test_solver_contract(tmp_path):
    text = SMALL.replace('layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }',
                         'layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 2 } } }\n'
                         'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }\n'
                         'layer { name: "acc" type: "Accuracy" bottom: "fc" bottom: "label" top: "acc" }')
    caffe.set_random_seed(5)
    net = caffe.Net(_write(tmp_path, text), caffe.TRAIN)
    assert net.outputs == ["acc", "loss"] and net.phase == caffe.TRAIN
    assert [b.owner_name for b in net.learnable_params] == ["conv1/0", "conv1/1", "fc/0", "fc/1"]
    assert [(b.lr_mult, b.decay_mult) for b in net.learnable_params] == [(1, 1), (2, 0), (1, 1), (1, 1)]
    net.blobs["data"].data[...] = np.random.RandomState(0).randn(2, 3, 6, 6)
    net.blobs["label"].data[...] = [0, 2]
    loss1 = net.forward_backward()
    g1 = [b.diff.copy() for b in net.learnable_params]
    loss2 = net.forward_backward()
    assert loss1 == pytest.approx(loss2) and loss1 == pytest.approx(float(net.blobs["loss"].data))
    for b, g in zip(net.learnable_params, g1):
        np.testing.assert_allclose(b.diff, 2 * g, rtol=1e-6)     # accumulated (iter_size)
    net.clear_param_diffs()
    assert not any(b.diff.any() for b in net.learnable_params)
    test_net = caffe.Net(_write(tmp_path, text, "t.prototxt"), caffe.TEST)
    test_net.share_trained_params(net)
    assert test_net.params["fc"][0].tdata is net.params["fc"][0].tdata
    with torch.no_grad():
        net.learnable_params[2].tdata.add_(1.0)
    np.testing.assert_array_equal(test_net.params["fc"][0].data, net.params["fc"][0].data)
    proto = net.to_net_param()
    assert [l.name for l in proto.layer if len(l.blobs)] == ["conv1", "fc"]


def test_dropout_train_scales_and_masks(tmp_path):
    text = '''name: "drop" force_backward: true
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 100 dim: 100 } } }
layer { name: "drop" type: "Dropout" bottom: "data" top: "data" dropout_param { dropout_ratio: 0.3 } }
'''
    caffe.set_random_seed(1)
    net = caffe.Net(_write(tmp_path, text), caffe.TRAIN)
    net.blobs["data"].data[...] = 1.0
    out = net.forward()["data"]
    kept = out != 0
    assert abs(kept.mean() - 0.7) < 0.02
    np.testing.assert_allclose(out[kept], 1 / 0.7, rtol=1e-6)
    net.blobs["data"].diff[...] = 1.0
    net.backward()
    np.testing.assert_allclose(net.blobs["data"].diff, out, rtol=1e-6)   # same mask, same scale


def test_fillers_follow_caffe(tmp_path):
    text = '''name: "f"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 64 dim: 8 dim: 8 } } }
layer { name: "x" type: "Convolution" bottom: "data" top: "x" convolution_param { num_output: 64 kernel_size: 3 group: 4 weight_filler { type: "xavier" } } }
layer { name: "m" type: "Convolution" bottom: "data" top: "m" convolution_param { num_output: 128 kernel_size: 3 weight_filler { type: "msra" variance_norm: FAN_OUT } } }
layer { name: "z" type: "InnerProduct" bottom: "data" top: "z" inner_product_param { num_output: 10 } }
layer { name: "u" type: "InnerProduct" bottom: "data" top: "u" inner_product_param { num_output: 10 weight_filler { type: "uniform" min: -2 max: -1 } } }
layer { name: "g" type: "InnerProduct" bottom: "data" top: "g" inner_product_param { num_output: 50 weight_filler { type: "gaussian" std: 0.5 sparse: 5 } } }
'''
    caffe.set_random_seed(3)
    net = caffe.Net(_write(tmp_path, text), caffe.TEST)
    x = net.params["x"][0].data                      # fan_in = 64/4 * 9 = 144
    bound = np.sqrt(3.0 / 144)
    assert x.max() <= bound and x.min() >= -bound and x.max() > 0.9 * bound
    m = net.params["m"][0].data                      # fan_out = count / shape[1] = 128 * 9
    assert abs(m.std() - np.sqrt(2.0 / (128 * 9))) < 0.05 * np.sqrt(2.0 / (128 * 9))
    assert not net.params["z"][0].data.any() and not net.params["z"][1].data.any()
    u = net.params["u"][0].data
    assert u.min() >= -2 and u.max() <= -1
    g = net.params["g"][0].data                      # sparse 5 of 50 outputs
    assert abs((g != 0).mean() - 0.1) < 0.02
    caffe.set_random_seed(3)
    again = caffe.Net(_write(tmp_path, text, "again.prototxt"), caffe.TEST)
    np.testing.assert_array_equal(again.params["m"][0].data, m)


def test_io_transformer_and_resize_match_pycaffe(real_caffe):
    img = np.random.RandomState(0).rand(8, 10, 3).astype(np.float32)
    outs = []
    for mod in (caffe, real_caffe):
        t = mod.io.Transformer({"data": (1, 3, 6, 7)})
        t.set_transpose("data", (2, 0, 1))
        t.set_channel_swap("data", (2, 1, 0))
        t.set_raw_scale("data", 255)
        t.set_mean("data", np.array([104, 117, 123.0]))
        t.set_input_scale("data", 0.5)
        x = t.preprocess("data", img)
        outs.append((x, t.deprocess("data", x)))
    np.testing.assert_array_equal(outs[0][0], outs[1][0])     # more in test_pycaffe_io.py
    np.testing.assert_array_equal(outs[0][1], outs[1][1])
    for dims in [(16, 13), (4, 5)]:
        np.testing.assert_array_equal(caffe.io.resize_image(img, dims),
                                      real_caffe.io.resize_image(img, dims))


def test_errors_of_a_net_named_by_a_solver_name_the_net_file(tmp_path):
    net_path = tmp_path / "train_val.prototxt"
    net_path.write_text('layer { name: "ip" type: "InnerProduct" bottom: "nowhere" top: "ip" '
                        'inner_product_param { num_output: 1 } }\n')
    solver_path = tmp_path / "solver.prototxt"
    solver_path.write_text(f'net: "{net_path}"\nbase_lr: 0.1\nlr_policy: "fixed"\nmax_iter: 1\n')
    with pytest.raises(NetError, match=r"train_val\.prototxt.*nowhere"):
        caffe.get_solver(str(solver_path))


def test_convolution_refuses_input_with_other_channels_naming_the_layer(tmp_path):
    net = caffe.Net(_write(tmp_path, 
        'layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 dim: 3 dim: 5 '
        'dim: 5 } } }\nlayer { name: "c" type: "Convolution" bottom: "x" top: "c" '
        'convolution_param { num_output: 2 kernel_size: 3 } }\n'), caffe.TEST)
    net.blobs["x"].reshape(1, 4, 5, 5)
    with pytest.raises(NetError, match=r"'c'.*incompatible with convolution kernel: 4 channels"):
        net.reshape()


def test_old_batchnorm_param_specs_are_upgraded_to_frozen():
    from deepmammo.caffe.formats.prototxt import parse_net
    net = parse_net('layer { name: "bn" type: "BatchNorm" bottom: "x" top: "x" '
                    'param { lr_mult: 1 } param { lr_mult: 1 } param { lr_mult: 1 } }')
    assert [(p.lr_mult, p.decay_mult) for p in net.layer[0].param] == [(0, 0)] * 3


def test_backward_before_forward_replays_pure_layers_and_refuses_random_ones(tmp_path):
    # Caffe's backward reads whatever the blobs hold; a Dropout mask drawn again would not be
    # the one a forward used, so that one is refused.
    text = ('name: "r"\nforce_backward: true\n'
            'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }\n'
            'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" '
            'inner_product_param { num_output: 2 } }\n'
            'layer { name: "drop" type: "Dropout" bottom: "ip" top: "out" }\n')
    net = caffe.Net(_write(tmp_path, text), caffe.TRAIN)
    net.params["ip"][0].data[...] = [[1, 2, 3], [4, 5, 6]]
    net.blobs["ip"].diff[...] = [[1, 0], [0, 2]]
    got = net.backward(start="ip", end="ip")["data"]
    np.testing.assert_array_equal(got, [[1, 2, 3], [8, 10, 12]])
    with pytest.raises(RuntimeError, match="'drop': backward before forward.*random"):
        net.backward(start="drop", end="drop")


def test_a_param_the_layer_type_does_not_read_is_ignored_with_a_warning(tmp_path, caplog):
    # Caffe ignores it silently (V1 files carry such fields); the engine says so.
    text = ('name: "e"\nlayer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 } } }\n'
            'layer { name: "stray" type: "ReLU" bottom: "data" top: "x" convolution_param { num_output: 2 } }\n')
    with caplog.at_level("WARNING"):
        net = caffe.Net(_write(tmp_path, text), caffe.TEST)
    net.blobs["data"].data[...] = [[-1, 2]]
    np.testing.assert_array_equal(net.forward()["x"], [[0, 2]])
    assert "'stray' (ReLU): `convolution_param` is not read by this layer type; ignored" in caplog.text
