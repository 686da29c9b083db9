"""Old net and solver formats, upgraded as real Caffe's own upgrade tools upgrade them.

Real pycaffe has no upgrade API; its build's tools upgrade_net_proto_text,
upgrade_net_proto_binary and upgrade_solver_proto_text run in a subprocess on the fixtures in
tests/fixtures/upgrade (V0 and V1 nets, old fields in the current format, an old solver), and
the messages they write are compared, parsed, with ours. What Caffe's upgrade drops and reads
on without is dropped here too, with a warning; what it stops on is refused."""
import logging
import os
import re
import subprocess

import numpy as np
import pytest
from google.protobuf import text_format

from deepmammo.caffe.formats import prototxt
from deepmammo.caffe.formats.caffemodel import read_caffemodel
from deepmammo.caffe.formats.upgrade import (
    UpgradeError,
    net_needs_upgrade,
    upgrade_net,
    upgrade_solver,
    upgrade_v1_layer,
)
from deepmammo.caffe.proto import caffe_pb2 as pb

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "upgrade")

NETS = ["v0_net.prototxt", "v0_sources.prototxt", "v0_deploy.prototxt", "v1_net.prototxt",
        "v1_deploy.prototxt", "current_old_fields.prototxt", "current.prototxt",
        "input_extra.prototxt", "input_dim_extra.prototxt"]


def fixture(name):
    return os.path.join(FIXTURES, name)


def parse(path, message):
    with open(path) as f:
        return text_format.Parse(f.read(), message)


def caffe_upgrade(real_caffe, tool, source, out):
    """Run one of real Caffe's upgrade tools; (exit status, its glog lines)."""
    from deepmammo.caffe.real import caffe_tool
    proc = subprocess.run([caffe_tool(tool), os.fspath(source), os.fspath(out)],
                          capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stderr


@pytest.mark.subprocess
@pytest.mark.parametrize("name", NETS)
def test_net_upgrade_matches_caffes_tool(real_caffe, tmp_path, name):
    out = tmp_path / "caffe.prototxt"
    rc, err = caffe_upgrade(real_caffe, "upgrade_net_proto_text", fixture(name), out)
    assert rc == 0, err
    theirs = parse(out, pb.NetParameter())
    ours = upgrade_net(parse(fixture(name), pb.NetParameter()), name)
    assert ours == theirs, text_format.MessageToString(ours)
    assert not len(ours.layers) and not len(ours.input)
    assert net_needs_upgrade(parse(fixture(name), pb.NetParameter())) == (name != "current.prototxt")
    # Reading a net (what every Net does) upgrades the same way.
    assert prototxt.read_net(fixture(name)) == theirs


def test_v0_padding_layers_fold_into_the_layer_they_feed():
    net = prototxt.read_net(fixture("v0_net.prototxt"))
    layers = {layer.name: layer for layer in net.layer}
    assert "pad1" not in layers and "pad2" not in layers
    assert list(layers["conv1"].bottom) == ["data"]
    assert list(layers["conv1"].convolution_param.pad) == [2]
    assert list(layers["pool1"].bottom) == ["conv1"]
    assert layers["pool1"].pooling_param.pad == 1
    assert layers["pool1"].pooling_param.pool == pb.PoolingParameter.AVE
    data = layers["data"]
    assert (data.transform_param.crop_size, data.transform_param.mirror,
            data.transform_param.mean_file) == (8, True, "mean.binaryproto")
    assert (data.data_param.batch_size, data.data_param.rand_skip) == (4, 2)
    assert [(p.lr_mult, p.decay_mult) for p in layers["conv1"].param] == [(1, 1), (2, 0)]


@pytest.mark.subprocess
def test_solver_type_upgrade_matches_caffes_tool(real_caffe, tmp_path):
    out = tmp_path / "solver.prototxt"
    rc, err = caffe_upgrade(real_caffe, "upgrade_solver_proto_text",
                            fixture("solver_v1.prototxt"), out)
    assert rc == 0, err
    theirs = parse(out, pb.SolverParameter())
    ours = upgrade_solver(parse(fixture("solver_v1.prototxt"), pb.SolverParameter()))
    assert ours == theirs
    assert ours.type == "Nesterov" and not ours.HasField("solver_type")


@pytest.mark.subprocess
@pytest.mark.parametrize("name, tool, caffe_says, we_say", [
    ("mixed.prototxt", "upgrade_net_proto_text", "Refusing to upgrade inconsistent",
     "both `layer` entries"),
    ("v0_bad_padding.prototxt", "upgrade_net_proto_text", "Padding layer input to non-conv",
     "padding layer 'pad' feeds layer 'relu'"),
    ("v0_unknown_bottom.prototxt", "upgrade_net_proto_text", "Unknown blob input nowhere",
     "reads blob 'nowhere'"),
    ("solver_both.prototxt", "upgrade_solver_proto_text", "cannot be both specified",
     "not both"),
])
def test_what_caffe_refuses_is_an_error_naming_the_file(real_caffe, tmp_path, name,
                                                                 tool, caffe_says, we_say):
    rc, err = caffe_upgrade(real_caffe, tool, fixture(name), tmp_path / "out.prototxt")
    assert rc != 0 and caffe_says in err, err
    message = pb.SolverParameter() if "solver" in name else pb.NetParameter()
    parse(fixture(name), message)
    with pytest.raises(UpgradeError) as info:
        (upgrade_solver if "solver" in name else upgrade_net)(message, fixture(name))
    assert we_say in str(info.value) and str(info.value).startswith(fixture(name))


UPGRADE_LOG = "deepmammo.caffe.formats.upgrade"


@pytest.mark.subprocess
@pytest.mark.parametrize("name, layers", [
    ("v0_incompatible.prototxt", ["pool"]),
    ("v0_dropped_fields.prototxt", ["conv", "conv", "relu", "relu", "pool", "pool", "fc", "fc",
                                    "fc", "prob", "prob"]),
])
def test_what_caffe_drops_and_reads_on_is_dropped_with_a_warning(real_caffe, tmp_path, caplog,
                                                                 name, layers):
    """A V0 setting on a layer type without it: Caffe's upgrade logs "Unknown parameter F for
    layer type T", drops it and goes on ("continuing anyway"; its tool exits 1 and writes the
    upgraded net all the same). We drop the same fields, warn once for each, naming the file,
    the layer and the field, and the net runs as real Caffe runs it."""
    out = tmp_path / "caffe.prototxt"
    rc, err = caffe_upgrade(real_caffe, "upgrade_net_proto_text", fixture(name), out)
    assert rc == 1 and "continuing anyway" in err, err
    caffe_dropped = re.findall(r"Unknown parameter (\w+) for layer type (\w+)", err)
    with caplog.at_level(logging.WARNING, logger=UPGRADE_LOG):
        ours = upgrade_net(parse(fixture(name), pb.NetParameter()), fixture(name))
    assert ours == parse(out, pb.NetParameter()), text_format.MessageToString(ours)
    warnings = [r.getMessage() for r in caplog.records if r.name == UPGRADE_LOG]
    said = [re.search(r"field (\w+) does not apply to layer type '(\w+)'", w).groups()
            for w in warnings]
    assert said == caffe_dropped and len(said) == len(layers)
    for warning, layer in zip(warnings, layers):
        assert warning.startswith(f"{fixture(name)}: V0 layer {layer!r}: field "), warning
    # Every Net reads it so (with the warnings), and computes what real Caffe computes.
    assert prototxt.read_net(fixture(name)) == ours
    from deepmammo.caffe.crosscheck import crosscheck
    with open(fixture(name)) as f:
        report = crosscheck(real_caffe, f.read(), phase=1)
    assert report.worst() < 1e-5, report


@pytest.mark.parametrize("name, says", [
    ("input_extra.prototxt", "2 inputs but 3 input_shape entries"),
    ("input_dim_extra.prototxt", "1 inputs but 6 input_dim values"),
])
def test_input_shapes_past_the_inputs_are_dropped_with_a_warning(caplog, name, says):
    """Caffe takes one shape per input and reads no further (the upgraded nets are compared
    with its tool's in test_net_upgrade_matches_caffes_tool)."""
    with caplog.at_level(logging.WARNING, logger=UPGRADE_LOG):
        net = prototxt.read_net(fixture(name))
    warnings = [r.getMessage() for r in caplog.records if r.name == UPGRADE_LOG]
    assert len(warnings) == 1 and warnings[0].startswith(f"{fixture(name)}: {says}")
    assert net.layer[0].type == "Input" and not len(net.input_dim) and not len(net.input_shape)


def test_a_v0_layer_inside_a_v1_layer_is_dropped_with_a_warning(caplog):
    """UpgradeV1LayerParameter logs "Input NetParameter has V0 layer -- ignoring." and
    upgrades the rest. (A net file never gets there: one V0 entry sends the whole net through
    the V0 upgrade first.)"""
    v1 = text_format.Parse('name: "fc" type: INNER_PRODUCT bottom: "a" top: "b" '
                           'inner_product_param { num_output: 2 } '
                           'layer { name: "old" type: "relu" }', pb.V1LayerParameter())
    with caplog.at_level(logging.WARNING, logger=UPGRADE_LOG):
        layer = upgrade_v1_layer(v1, "n.prototxt")
    assert layer == text_format.Parse('name: "fc" type: "InnerProduct" bottom: "a" top: "b" '
                                      'inner_product_param { num_output: 2 }',
                                      pb.LayerParameter())
    warnings = [r.getMessage() for r in caplog.records if r.name == UPGRADE_LOG]
    assert len(warnings) == 1 and warnings[0].startswith("n.prototxt: V1 layer 'fc' holds a V0")


def _with_blobs(net, rng):
    """Give the conv and fc layers of a V0 or V1 net weights in legacy 4-D blobs."""
    for entry in net.layers:
        holder = entry.layer if entry.HasField("layer") else entry
        if holder.name in ("conv", "fc"):
            for shape in ((2, 3, 3, 3), (1, 1, 1, 2)):
                blob = holder.blobs.add(num=shape[0], channels=shape[1], height=shape[2],
                                        width=shape[3])
                blob.data.extend(rng.randn(int(np.prod(shape))).astype(np.float32))
    return net


@pytest.mark.subprocess
@pytest.mark.parametrize("name", ["v0_deploy.prototxt", "v1_deploy.prototxt"])
def test_binary_caffemodel_upgrade_matches_caffes_tool(real_caffe, tmp_path, rng, name):
    old = _with_blobs(parse(fixture(name), pb.NetParameter()), rng)
    source = tmp_path / "old.caffemodel"
    source.write_bytes(old.SerializeToString())
    out = tmp_path / "new.caffemodel"
    rc, err = caffe_upgrade(real_caffe, "upgrade_net_proto_binary", source, out)
    assert rc == 0, err
    theirs = pb.NetParameter.FromString(out.read_bytes())
    assert upgrade_net(pb.NetParameter.FromString(source.read_bytes())) == theirs
    assert read_caffemodel(source) == theirs
    weighted = [layer for layer in theirs.layer if len(layer.blobs)]
    assert len(weighted) == 1 and len(weighted[0].blobs) == 2


def test_v0_net_runs_as_real_caffe_runs_it(real_caffe):
    """Both engines read the V0 file themselves (upgrading it) and compute the same."""
    from deepmammo.caffe.crosscheck import crosscheck
    with open(fixture("v0_deploy.prototxt")) as f:
        text = f.read()
    report = crosscheck(real_caffe, text, phase=1)
    assert report.worst() < 1e-5, report
    assert list(report.ours._layer_names) == ["input", "conv", "pool", "prob"]


def test_input_fields_need_a_shape_for_every_input():
    # Caffe would read past the end of the list: refused.
    with pytest.raises(UpgradeError, match="4 values per input"):
        prototxt.parse_net('input: "a" input_dim: 1 input_dim: 2', "n.prototxt")
    with pytest.raises(UpgradeError, match="2 inputs but 1 input_shape"):
        prototxt.parse_net('input: "a" input: "b" input_shape { dim: 1 }', "n.prototxt")
    bare = prototxt.parse_net('input: "a" layer { name: "x" type: "Input" top: "a" '
                              'input_param { shape { dim: 1 } } }')
    assert [layer.name for layer in bare.layer] == ["x"] and not len(bare.input)


def test_unknown_v0_type_is_named():
    with pytest.raises(UpgradeError, match="'odd' has unknown type 'warp'"):
        prototxt.parse_net('layers { layer { name: "odd" type: "warp" } }', "n.prototxt")
