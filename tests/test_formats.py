"""Caffe's file formats: our schema and readers/writers against real BVLC Caffe."""
import os

import numpy as np
import pytest

from deepmammo.caffe.formats import binaryproto, caffemodel, prototxt, solverstate
from deepmammo.caffe.formats import datum as datum_io
from deepmammo.caffe.formats.blobproto import array_to_blob, blob_to_array, shapes_match
from deepmammo.caffe.formats.lmdb_io import LMDBReader, LMDBWriter, lmdb_key
from deepmammo.caffe.proto import caffe_pb2 as pb

TINY_NET = """
name: "tiny"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 2 dim: 3 dim: 6 dim: 6 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        param { lr_mult: 1 } param { lr_mult: 2 }
        convolution_param { num_output: 4 kernel_size: 3
          weight_filler { type: "gaussian" std: 0.1 } bias_filler { type: "constant" value: 0.2 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "ip1" type: "InnerProduct" bottom: "conv1" top: "ip1"
        inner_product_param { num_output: 5 weight_filler { type: "xavier" } } }
"""


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# ------------------------------------------------------------------ the schema itself

SCHEMA_MESSAGES = [
    "BlobShape", "BlobProto", "BlobProtoVector", "Datum", "FillerParameter", "NetParameter",
    "SolverParameter", "SolverState", "NetState", "NetStateRule", "ParamSpec", "LayerParameter",
    "TransformationParameter", "LossParameter", "AccuracyParameter", "BatchNormParameter",
    "ConcatParameter", "ConvolutionParameter", "DataParameter", "DropoutParameter",
    "EltwiseParameter", "FlattenParameter", "InnerProductParameter", "InputParameter",
    "LRNParameter", "PoolingParameter", "ReLUParameter", "ScaleParameter", "SoftmaxParameter",
    "V1LayerParameter",
]


@pytest.mark.parametrize("name", SCHEMA_MESSAGES)
def test_schema_fields_match_real_caffe(real_caffe, name):
    from caffe.proto import caffe_pb2 as theirs
    ours_desc = getattr(pb, name).DESCRIPTOR
    theirs_desc = getattr(theirs, name).DESCRIPTOR
    assert ours_desc.full_name == f"deepmammo_caffe.{name}"
    for field in ours_desc.fields:
        other = theirs_desc.fields_by_name.get(field.name)
        assert other is not None, f"{name}.{field.name} is not in BVLC's schema"
        assert (field.number, field.type, field.is_repeated) == (other.number, other.type, other.is_repeated), \
            f"{name}.{field.name}"
        if field.has_default_value:
            assert field.default_value == other.default_value, f"{name}.{field.name} default"
        if field.enum_type is not None:
            ours_enum = {v.name: v.number for v in field.enum_type.values}
            theirs_enum = {v.name: v.number for v in other.enum_type.values}
            assert ours_enum.items() <= theirs_enum.items(), f"{name}.{field.name} enum"


def test_solver_parameter_is_complete(real_caffe):
    from caffe.proto import caffe_pb2 as theirs
    ours = set(pb.SolverParameter.DESCRIPTOR.fields_by_name)
    assert set(theirs.SolverParameter.DESCRIPTOR.fields_by_name) <= ours


def test_layer_params_of_supported_layers_are_declared(real_caffe):
    from caffe.proto import caffe_pb2 as theirs
    needed = {"transform_param", "loss_param", "accuracy_param", "batch_norm_param",
              "concat_param", "convolution_param", "data_param", "dropout_param", "eltwise_param",
              "flatten_param", "inner_product_param", "input_param", "lrn_param",
              "pooling_param", "relu_param", "scale_param", "softmax_param"}
    ours = pb.LayerParameter.DESCRIPTOR.fields_by_name
    for name in needed:
        assert ours[name].number == theirs.LayerParameter.DESCRIPTOR.fields_by_name[name].number


# ------------------------------------------------------------------ prototxt

def test_prototxt_round_trip(tmp_path):
    net = prototxt.parse_net(TINY_NET)
    path = str(tmp_path / "net.prototxt")
    prototxt.write_prototxt(net, path)
    assert prototxt.read_net(path) == net
    assert [l.name for l in net.layer] == ["data", "conv1", "relu1", "ip1"]
    assert net.layer[1].param[1].lr_mult == 2


def test_malformed_prototxt_names_file_line_and_field(tmp_path):
    path = write(tmp_path, "bad.prototxt",
                 'name: "x"\nlayer {\n  name: "c"\n  type: "Convolution"\n  kernal_size: 3\n}\n')
    with pytest.raises(prototxt.PrototxtError) as err:
        prototxt.read_net(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}:5:")
    assert "kernal_size" in msg


def test_prototxt_syntax_error_and_missing_file(tmp_path):
    path = write(tmp_path, "broken.prototxt", 'layer { name: "a" \n')
    with pytest.raises(prototxt.PrototxtError, match="broken.prototxt:"):
        prototxt.read_net(path)
    with pytest.raises(FileNotFoundError, match="nope.prototxt"):
        prototxt.read_net(str(tmp_path / "nope.prototxt"))


def test_solver_prototxt_and_legacy_solver_type(tmp_path):
    path = write(tmp_path, "solver.prototxt",
                 'net: "n.prototxt"\nbase_lr: 0.01\nlr_policy: "poly"\npower: 0.5\n'
                 'solver_type: ADAM\nmax_iter: 10\n')
    solver = prototxt.read_solver(path)
    assert solver.base_lr == pytest.approx(0.01)
    assert prototxt.solver_type(solver) == "Adam"
    solver.type = "Nesterov"
    assert prototxt.solver_type(solver) == "Nesterov"
    bad = write(tmp_path, "bad_solver.prototxt", 'lr_policy: "cosine"\n')
    with pytest.raises(prototxt.PrototxtError, match="lr_policy"):
        prototxt.read_solver(bad)
    bad = write(tmp_path, "bad_solver2.prototxt", 'base_lr: "fast"\n')
    with pytest.raises(prototxt.PrototxtError, match=r"bad_solver2.prototxt:1:"):
        prototxt.read_solver(bad)


def test_v1_prototxt_and_input_fields_are_upgraded():
    net = prototxt.parse_net("""
        input: "data" input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8
        layers { name: "conv" type: CONVOLUTION bottom: "data" top: "conv"
                 blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0
                 convolution_param { num_output: 2 kernel_size: 3 } }
        layers { name: "loss" type: SOFTMAX_LOSS bottom: "conv" bottom: "label" top: "loss" }
    """)
    assert [(l.name, l.type) for l in net.layer] == [
        ("input", "Input"), ("conv", "Convolution"), ("loss", "SoftmaxWithLoss")]
    assert list(net.layer[0].input_param.shape[0].dim) == [1, 3, 8, 8]
    conv = net.layer[1]
    assert [(p.lr_mult, p.decay_mult) for p in conv.param] == [(1, 1), (2, 0)]
    assert conv.convolution_param.num_output == 2
    assert not len(net.layers)


# ------------------------------------------------------------------ blobs and caffemodels

def test_blob_round_trip_and_legacy_shapes(rng):
    arr = rng.randn(2, 3, 4).astype(np.float32)
    blob = array_to_blob(arr, diff=arr * 2)
    assert np.array_equal(blob_to_array(blob), arr)
    assert np.array_equal(blob_to_array(blob, diff=True), arr * 2)
    legacy = array_to_blob(rng.randn(5, 7).astype(np.float32), legacy=True)
    assert (legacy.num, legacy.channels, legacy.height, legacy.width) == (1, 1, 5, 7)
    assert blob_to_array(legacy).shape == (1, 1, 5, 7)
    assert shapes_match((5, 7), legacy) and not shapes_match((7, 5), legacy)
    doubles = pb.BlobProto(double_data=[1.5, 2.5])
    doubles.shape.dim.append(2)
    assert blob_to_array(doubles).tolist() == [1.5, 2.5]


def _net_with_blobs(rng):
    net = prototxt.parse_net(TINY_NET)
    shapes = {"conv1": [(4, 3, 3, 3), (4,)], "ip1": [(5, 64), (5,)]}
    for layer in net.layer:
        for shape in shapes.get(layer.name, []):
            layer.blobs.append(array_to_blob(rng.randn(*shape).astype(np.float32)))
    return net


def test_caffemodel_round_trip(tmp_path, rng):
    net = _net_with_blobs(rng)
    path = str(tmp_path / "w.caffemodel")
    caffemodel.write_caffemodel(net, path)
    back = caffemodel.read_caffemodel(path)
    assert back == net
    weights = caffemodel.layer_blobs(back)
    assert list(weights) == ["conv1", "ip1"]
    assert weights["ip1"][0].shape == (5, 64)


def test_truncated_and_empty_caffemodel_errors(tmp_path, rng):
    path = str(tmp_path / "w.caffemodel")
    caffemodel.write_caffemodel(_net_with_blobs(rng), path)
    data = open(path, "rb").read()
    cut = str(tmp_path / "cut.caffemodel")
    open(cut, "wb").write(data[: len(data) - 100])
    with pytest.raises(caffemodel.CaffemodelError, match="cut.caffemodel"):
        caffemodel.read_caffemodel(cut)
    empty = str(tmp_path / "empty.caffemodel")
    open(empty, "wb").close()
    with pytest.raises(caffemodel.CaffemodelError, match="empty.caffemodel: empty"):
        caffemodel.read_caffemodel(empty)
    with pytest.raises(FileNotFoundError, match="missing.caffemodel"):
        caffemodel.read_caffemodel(str(tmp_path / "missing.caffemodel"))


def test_wrong_shape_blob_error(tmp_path):
    net = pb.NetParameter()
    layer = net.layer.add(name="fc", type="InnerProduct")
    blob = layer.blobs.add()
    blob.shape.dim.extend([3, 4])
    blob.data.extend([0.0] * 11)
    path = str(tmp_path / "bad.caffemodel")
    caffemodel.write_caffemodel(net, path)
    with pytest.raises(caffemodel.CaffemodelError, match=r"bad.caffemodel: layer 'fc' blob 0: "
                                                         r"shape \(3, 4\) needs 12 values"):
        caffemodel.read_caffemodel(path)


def _v1_caffemodel(rng):
    """An old-format net: `layers` with enum types and legacy 4-D blob shapes (as BVLC's)."""
    net = pb.NetParameter(name="old")
    conv = net.layers.add(name="conv1", type=pb.V1LayerParameter.CONVOLUTION)
    conv.bottom.append("data"), conv.top.append("conv1")
    conv.convolution_param.num_output = 4
    conv.convolution_param.kernel_size.append(3)
    conv.blobs.append(array_to_blob(rng.randn(4, 3, 3, 3).astype(np.float32), legacy=True))
    conv.blobs.append(array_to_blob(rng.randn(4).astype(np.float32), legacy=True))
    conv.blobs_lr.extend([1, 2])
    relu = net.layers.add(name="relu1", type=pb.V1LayerParameter.RELU)
    relu.bottom.append("conv1"), relu.top.append("conv1")
    ip = net.layers.add(name="ip1", type=pb.V1LayerParameter.INNER_PRODUCT)
    ip.bottom.append("conv1"), ip.top.append("ip1")
    ip.inner_product_param.num_output = 5
    ip.blobs.append(array_to_blob(rng.randn(5, 64).astype(np.float32), legacy=True))
    ip.blobs.append(array_to_blob(rng.randn(5).astype(np.float32), legacy=True))
    return net


def test_v1_caffemodel_is_upgraded_in_memory(tmp_path, rng):
    old = _v1_caffemodel(rng)
    path = str(tmp_path / "old.caffemodel")
    caffemodel.write_caffemodel(old, path)
    net = caffemodel.read_caffemodel(path)
    assert [(l.name, l.type) for l in net.layer] == [
        ("conv1", "Convolution"), ("relu1", "ReLU"), ("ip1", "InnerProduct")]
    weights = caffemodel.layer_blobs(net)
    assert weights["ip1"][0].shape == (1, 1, 5, 64)        # legacy shape, as Caffe reads it
    assert weights["ip1"][1].shape == (1, 1, 1, 5)
    assert np.array_equal(weights["ip1"][0][0, 0], blob_to_array(old.layers[2].blobs[0])[0, 0])
    assert shapes_match((5, 64), net.layer[2].blobs[0])


def test_large_caffemodel_beyond_64mb(tmp_path):
    # Protobuf's C++ default limit is 64 MB; a 17M-value blob is about 68 MB on disk.
    net = pb.NetParameter()
    big = np.arange(17_000_000, dtype=np.float32)
    net.layer.add(name="fc6", type="InnerProduct").blobs.append(array_to_blob(big))
    path = str(tmp_path / "big.caffemodel")
    caffemodel.write_caffemodel(net, path)
    assert os.path.getsize(path) > 64 * 2**20
    back = caffemodel.layer_blobs(caffemodel.read_caffemodel(path))
    assert np.array_equal(back["fc6"][0], big)


# ------------------------------------------------------------------ solverstate, mean, Datum, LMDB

def test_solverstate_round_trip(tmp_path, rng):
    state = pb.SolverState(iter=7, learned_net="x_iter_7.caffemodel", current_step=2)
    hist = [rng.randn(3, 2).astype(np.float32), rng.randn(4).astype(np.float32)]
    state.history.extend(array_to_blob(h) for h in hist)
    path = str(tmp_path / "x.solverstate")
    with open(path, "wb") as f:                    # as the solver's snapshot writes it
        f.write(state.SerializeToString())
    back = solverstate.read_solverstate(path)
    assert back == state
    for a, b in zip(solverstate.history_arrays(back), hist):
        assert np.array_equal(a, b)


def test_mean_round_trip_both_shape_styles(tmp_path, rng):
    mean = rng.rand(3, 5, 6).astype(np.float32) * 255
    path = str(tmp_path / "mean.binaryproto")
    binaryproto.write_mean(mean, path)
    blob = binaryproto.read_blob(path)
    assert (blob.num, blob.channels, blob.height, blob.width) == (1, 3, 5, 6)
    assert np.array_equal(binaryproto.read_mean(path), mean)
    shaped = str(tmp_path / "shaped.binaryproto")
    open(shaped, "wb").write(array_to_blob(mean[None]).SerializeToString())
    assert np.array_equal(binaryproto.read_mean(shaped), mean)


def test_datum_round_trip(rng):
    img = (rng.rand(3, 4, 5) * 255).astype(np.uint8)
    d = datum_io.datum_from_bytes(datum_io.datum_to_bytes(datum_io.array_to_datum(img, 1)))
    assert d.label == 1 and np.array_equal(datum_io.datum_to_array(d), img)
    f = rng.randn(2, 3, 1).astype(np.float32)
    assert np.array_equal(datum_io.datum_to_array(datum_io.array_to_datum(f)), f)
    bad = pb.Datum(channels=3, height=2, width=2, data=b"\x00" * 5)
    with pytest.raises(datum_io.DatumError, match="needs 12 values"):
        datum_io.datum_to_array(bad)


def test_lmdb_round_trip_grows_map_and_is_atomic(tmp_path, rng):
    path = str(tmp_path / "train_lmdb")
    images = [(rng.rand(3, 16, 16) * 255).astype(np.uint8) for _ in range(40)]
    with LMDBWriter(path, map_size=1 << 15, commit_every=7) as db:
        for i, img in enumerate(images):
            db.put_datum(lmdb_key(i, f"crop{i}"), datum_io.array_to_datum(img, i % 2))
    reader = LMDBReader(path)
    assert len(reader) == 40
    records = list(reader.datums())
    assert records[0][0] == "00000000_crop0"
    for (_, d), img in zip(records, images):
        assert np.array_equal(datum_io.datum_to_array(d), img)
    reader.close()
    # A writer that dies leaves the complete database untouched and no temporary folder.
    with pytest.raises(RuntimeError):
        with LMDBWriter(path) as db:
            db.put(b"x", b"y")
            raise RuntimeError("killed")
    assert len(LMDBReader(path)) == 40
    assert sorted(os.listdir(tmp_path)) == ["train_lmdb"]


# ------------------------------------------------------------------ against real Caffe

def test_real_caffe_files_read_back_with_our_readers(tmp_path, real_caffe, rng):
    caffe = real_caffe
    net_path = write(tmp_path, "net.prototxt", TINY_NET)
    solver_path = write(tmp_path, "solver.prototxt",
                        f'train_net: "{net_path}"\nbase_lr: 0.01\nlr_policy: "fixed"\n'
                        f'type: "Adam"\nmax_iter: 10\nsnapshot_prefix: "{tmp_path}/snap"\n'
                        'solver_mode: CPU\n')
    # A net saved by pycaffe.
    net = caffe.Net(net_path, caffe.TEST)
    saved = str(tmp_path / "saved.caffemodel")
    net.save(saved)
    ours = caffemodel.layer_blobs(caffemodel.read_caffemodel(saved))
    for name in ("conv1", "ip1"):
        for i, p in enumerate(net.params[name]):
            assert np.array_equal(ours[name][i], p.data)
    # Its solverstate (Adam: 2 history blobs per param).
    solver = caffe.get_solver(solver_path)
    solver.snapshot()
    state = solverstate.read_solverstate(str(tmp_path / "snap_iter_0.solverstate"))
    assert state.iter == 0 and len(state.history) == 8
    assert state.learned_net.endswith("snap_iter_0.caffemodel")
    # A mean binaryproto written by caffe.io.
    mean = rng.rand(1, 3, 4, 5).astype(np.float32)
    mean_path = str(tmp_path / "mean.binaryproto")
    open(mean_path, "wb").write(caffe.io.array_to_blobproto(mean).SerializeToString())
    assert np.array_equal(binaryproto.read_mean(mean_path), mean[0])
    # An LMDB written with caffe.io.array_to_datum.
    import lmdb
    lmdb_path = str(tmp_path / "theirs_lmdb")
    images = [(rng.rand(3, 6, 7) * 255).astype(np.uint8) for _ in range(3)]
    env = lmdb.open(lmdb_path, map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i, img in enumerate(images):
            txn.put(lmdb_key(i, "x").encode(), caffe.io.array_to_datum(img, i).SerializeToString())
    env.close()
    records = list(LMDBReader(lmdb_path).datums())
    assert [d.label for _, d in records] == [0, 1, 2]
    for (_, d), img in zip(records, images):
        assert np.array_equal(datum_io.datum_to_array(d), img)


def test_our_files_load_in_real_caffe(tmp_path, real_caffe, rng):
    caffe = real_caffe
    net_path = write(tmp_path, "net.prototxt", TINY_NET)
    # Weights we write, loaded by caffe.Net(..., weights, TEST).
    ours = _net_with_blobs(rng)
    weights = str(tmp_path / "ours.caffemodel")
    caffemodel.write_caffemodel(ours, weights)
    net = caffe.Net(net_path, weights, caffe.TEST)
    expected = caffemodel.layer_blobs(ours)
    for name in ("conv1", "ip1"):
        for i, p in enumerate(net.params[name]):
            assert np.array_equal(p.data, expected[name][i])
    # An old V1 file with legacy shapes loads in real Caffe too (the same weights).
    old = str(tmp_path / "old.caffemodel")
    caffemodel.write_caffemodel(_v1_caffemodel(np.random.RandomState(5)), old)
    net_old = caffe.Net(net_path, old, caffe.TEST)
    ours_old = caffemodel.layer_blobs(caffemodel.read_caffemodel(old))
    assert np.array_equal(net_old.params["ip1"][0].data, ours_old["ip1"][0].reshape(5, 64))
    # A solverstate we write, restored by real Caffe.
    solver_path = write(tmp_path, "solver.prototxt",
                        f'train_net: "{net_path}"\nbase_lr: 0.01\nlr_policy: "fixed"\n'
                        'momentum: 0.9\nmax_iter: 10\nsolver_mode: CPU\n')
    state = pb.SolverState(iter=3, learned_net=weights)
    for name in ("conv1", "ip1"):
        for arr in expected[name]:
            state.history.append(array_to_blob(np.full_like(arr, 0.5)))
    state_path = str(tmp_path / "ours.solverstate")
    with open(state_path, "wb") as f:
        f.write(state.SerializeToString())
    solver = caffe.get_solver(solver_path)
    solver.restore(state_path)
    assert solver.iter == 3
    assert np.array_equal(solver.net.params["ip1"][0].data, expected["ip1"][0])


def test_real_caffe_data_layer_reads_our_lmdb_and_mean(tmp_path, real_caffe, rng):
    caffe = real_caffe
    images = [(rng.rand(3, 8, 8) * 255).astype(np.uint8) for _ in range(4)]
    lmdb_path = str(tmp_path / "val_lmdb")
    with LMDBWriter(lmdb_path) as db:
        for i, img in enumerate(images):
            db.put_datum(lmdb_key(i, f"r{i}"), datum_io.array_to_datum(img, i % 2))
    mean = rng.rand(3, 8, 8).astype(np.float32) * 100
    mean_path = str(tmp_path / "mean.binaryproto")
    binaryproto.write_mean(mean, mean_path)
    net_path = write(tmp_path, "data.prototxt", f"""
        layer {{ name: "data" type: "Data" top: "data" top: "label"
          transform_param {{ mean_file: "{mean_path}" crop_size: 6 scale: 0.5 }}
          data_param {{ source: "{lmdb_path}" backend: LMDB batch_size: 4 }} }}""")
    net = caffe.Net(net_path, caffe.TEST)
    net.forward()
    want = np.stack([(img.astype(np.float32) - mean)[:, 1:7, 1:7] * 0.5 for img in images])
    np.testing.assert_allclose(net.blobs["data"].data, want, rtol=1e-6, atol=1e-5)
    assert net.blobs["label"].data.tolist() == [0, 1, 0, 1]
