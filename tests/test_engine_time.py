"""`deepmammo time` (caffe time) on our engine and, with --engine caffe, on real Caffe."""
import json

import pytest

from deepmammo.cli import main

NET = '''name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 12 dim: 12 } } }
layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 2 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "pool1" top: "fc" inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }
'''


@pytest.mark.parametrize("engine", ["torch", "caffe"])
def test_time_prints_per_layer_and_totals(tmp_path, capsys, engine, real_caffe):
    model = tmp_path / "tiny.prototxt"
    model.write_text(NET)
    out_json = tmp_path / "time.json"
    assert main(["time", "--model", str(model), "--iterations", "2", "--engine", engine,
                 "--json", str(out_json)]) == 0
    printed = capsys.readouterr().out
    for name in ("conv1", "relu1", "pool1", "fc", "loss"):
        assert f"{name}\tforward:" in printed and f"{name}\tbackward:" in printed
    for label in ("Average Forward pass", "Average Backward pass", "Average Forward-Backward",
                  "Total Time"):
        assert label in printed
    result = json.loads(out_json.read_text())
    assert result["engine"] == engine and result["forward_backward_ms"] > 0
    assert [row[0] for row in result["layers"]][:3] == ["data", "label", "conv1"]


def test_time_rejects_missing_model(tmp_path, capsys):
    assert main(["time", "--model", str(tmp_path / "none.prototxt")]) == 2
    assert "none.prototxt" in capsys.readouterr().err
