"""caffe.draw (deepmammo/caffe/draw.py) and `deepmammo draw` against real pycaffe's draw and
Caffe's python/draw_net.py: the same graph (dot text) for every net prototxt of Caffe's models/
and examples/, and the same drawn file."""
import os
import re
import subprocess
import sys

import pytest
from google.protobuf import text_format
from helpers import error_line

from deepmammo.caffe import draw
from deepmammo.caffe.proto import caffe_pb2
from deepmammo.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _caffe_nets(build):
    src = os.path.join(build, "src")
    found = []
    for folder in ("models", "examples"):
        for cwd, _, files in os.walk(os.path.join(src, folder)):
            found += [os.path.join(cwd, f) for f in sorted(files)
                      if f.endswith(".prototxt") and "solver" not in f]
    return sorted(found)


def _parse(path, message):
    with open(path) as f:
        text_format.Merge(f.read(), message)
    return message


def test_same_graphs_as_pycaffe(real_caffe, caffe_build):
    from caffe import draw as real_draw
    from caffe.proto import caffe_pb2 as real_pb2
    paths = _caffe_nets(caffe_build)
    assert len(paths) > 20
    variants = [("LR", None, False, True), ("TB", real_caffe.TRAIN, True, True),
                ("BT", real_caffe.TEST, True, False)]
    checked = 0
    for path in paths:
        ours, real = _parse(path, caffe_pb2.NetParameter()), _parse(path, real_pb2.NetParameter())
        for rankdir, phase, lrm, edges in variants:
            try:
                want = real_draw.get_pydot_graph(real, rankdir, edges, phase, lrm).to_string()
            except ValueError as exc:       # e.g. a layer with both include and exclude
                with pytest.raises(ValueError, match=re.escape(str(exc))):
                    draw.get_pydot_graph(ours, rankdir, edges, phase, lrm)
                continue
            got = draw.get_pydot_graph(ours, rankdir, edges, phase, lrm).to_string()
            assert got == want, f"{path} {rankdir} phase={phase} lrm={lrm} edges={edges}"
            checked += 1
    assert checked > 50


def test_label_and_helpers_match(real_caffe):
    from caffe import draw as real_draw
    assert draw.get_pooling_types_dict() == real_draw.get_pooling_types_dict()
    layer = caffe_pb2.LayerParameter(name="c", type="Convolution")
    layer.param.add(lr_mult=0)
    layer.param.add(lr_mult=2)
    layer.convolution_param.kernel_size.append(3)
    assert draw.get_layer_lr_mult(layer) == (0.0, 2.0)
    assert draw.get_layer_label(layer, "LR", True) == \
        r'"c\n(Convolution)\nkernel size: 3\nstride: 1\npad: 0\nlr mult: 0.0, 2.0"'
    with pytest.raises(ValueError):
        draw.get_layer_lr_mult(caffe_pb2.LayerParameter(type="ReLU"))
    assert draw.choose_color_by_layertype("Deconvolution") == "#FF5050"


@pytest.mark.subprocess
def test_draw_command_and_draw_net_script_as_caffe(tmp_path, caffe_build):
    build = caffe_build
    model = os.path.join(build, "src", "examples", "mnist", "lenet_train_test.prototxt")
    script = os.path.join(build, "src", "python", "draw_net.py")
    args = [model, "--rankdir", "TB", "--phase", "TEST", "--display_lrm"]
    runs = {
        "real.dot": ([sys.executable, script], os.path.join(build, "src", "python")),
        "script.dot": ([sys.executable, "-m", "deepmammo", "pycaffe", script], ROOT),
        "command.dot": ([sys.executable, "-m", "deepmammo", "draw"], ROOT),
    }
    for out, (command, path) in runs.items():
        proc = subprocess.run(command + [args[0], str(tmp_path / out)] + args[1:], cwd=tmp_path,
                              env=dict(os.environ, PYTHONPATH=path, GLOG_minloglevel="2"),
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert f"Drawing net to {tmp_path / out}" in proc.stdout
    real = (tmp_path / "real.dot").read_text()
    assert "conv1" in real
    assert (tmp_path / "script.dot").read_text() == real
    assert (tmp_path / "command.dot").read_text() == real


@pytest.mark.parametrize("args, message", [
    (["net.prototxt", "out.png", "--phase", "VAL"], "Unknown phase: VAL"),
    (["absent.prototxt", "out.png"], "absent.prototxt: no such prototxt file"),
    # Graphviz's dot (`make graphviz`) refuses the format
    pytest.param(["net.prototxt", "out.nosuchformat"], 'Format: "nosuchformat" not recognized',
                 marks=pytest.mark.subprocess),
    (["bad.prototxt", "out.png"], "bad.prototxt:"),
    (["latin.prototxt", "out.png"], "latin.prototxt: not UTF-8 text (byte 15"),
])
def test_draw_command_errors_are_one_line(tmp_path, monkeypatch, capsys, args, message):
    (tmp_path / "net.prototxt").write_text('layer { name: "r" type: "ReLU" bottom: "x" top: "x" }')
    (tmp_path / "bad.prototxt").write_text("layer { name: ")
    (tmp_path / "latin.prototxt").write_bytes(b'layer { name: "\xe9" }')
    monkeypatch.chdir(tmp_path)
    rc = main(["draw"] + args)
    error_line("draw", rc, capsys.readouterr().err, message)
    assert not (tmp_path / "out.nosuchformat").exists()
