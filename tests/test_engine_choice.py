"""deepmammo.engine: the engines, devices and precisions every command and config offers, the one
check of what runs together, and pycaffe's API set up for them; the commands take their
--engine/--device/--precision from it, and the engine package imports no command line."""
import argparse
import json
import os

import pytest

from deepmammo import engine
from deepmammo.caffe import mode
from deepmammo.caffe.scenario import make_data, write_solver
from deepmammo.cli import build_parser, main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = '''name: "tiny"
layer { name: "data" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } shape { dim: 2 } } }
layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc"
        inner_product_param { num_output: 2 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }
'''


@pytest.fixture(autouse=True)
def fp32_after():
    yield
    mode.set_precision("fp32")


@pytest.mark.parametrize("request_, message", [
    (("tensorflow", "cpu", "fp32"), "unknown engine 'tensorflow' (one of torch, caffe)"),
    (("torch", "tpu", "fp32"), "unknown device 'tpu' (one of cpu, cuda)"),
    (("torch", "cpu", "fp16"), "unknown precision 'fp16' (one of fp32, tf32, bf16)"),
    (("caffe", "cuda", "fp32"), "real Caffe (the build of `make caffe`) runs on the CPU only"),
    (("caffe", "cuda:1", "fp32"), "runs on the CPU only"),
    (("caffe", "cpu", "bf16"), "precision bf16: real Caffe computes in fp32 only"),
    (("torch", "cpu", "tf32"), "precision tf32 needs a CUDA GPU"),
])
def test_what_cannot_run_is_refused_on_any_machine(request_, message):
    with pytest.raises(engine.EngineError, match=message.replace("(", r"\(").replace(")", r"\)")):
        engine.check_combination(*request_)
    with pytest.raises(engine.EngineError):
        engine.check(*request_)


def test_what_can_run_passes_and_several_workers_are_fp32_only():
    for request_ in (("torch", "cpu", "fp32"), ("torch", "cpu", "bf16"), ("caffe", "cpu", "fp32"),
                     ("torch", "cuda", "tf32"), ("torch", "cuda:0", "fp32")):
        engine.check_combination(*request_)
    engine.check_combination("torch", "cuda", "fp32", workers=4)
    with pytest.raises(engine.PrecisionError, match="several GPUs runs in fp32 only"):
        engine.check_combination("torch", "cuda", "bf16", workers=2)
    # the torch engine's own mode refuses through the same check
    assert mode.PrecisionError is engine.PrecisionError and mode.PRECISIONS is engine.PRECISIONS
    with pytest.raises(engine.PrecisionError, match="one of fp32, tf32, bf16"):
        mode.set_precision("fp16")


def test_pycaffe_is_the_engines_api_set_up_for_the_device_and_precision(tmp_path):
    import deepmammo.caffe as ours
    caffe = engine.pycaffe("torch", None, "bf16")
    assert caffe is ours and mode.precision() == "bf16" and str(mode.current_device()) == "cpu"
    path = tmp_path / "tiny.prototxt"
    path.write_text(TINY)
    assert caffe.Net(str(path), caffe.TEST).precision == "bf16"
    assert engine.pycaffe("torch").__name__ == "deepmammo.caffe" and mode.precision() == "fp32"
    with pytest.raises(engine.PrecisionError, match="tf32 needs a CUDA GPU"):
        engine.pycaffe("torch", None, "tf32")
    with pytest.raises(engine.EngineError, match="CPU only"):
        engine.pycaffe("caffe", 0)
    assert mode.precision() == "fp32"    # a refused request changed nothing


def _option_actions(parser, path=()):
    """(command path, action) of every option of every subcommand."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _option_actions(sub, path + (name,))
        else:
            yield path, action


def test_every_commands_engine_device_and_precision_choices_are_the_engine_modules():
    found = {}
    for path, action in _option_actions(build_parser()):
        for option, constant in (("--engine", engine.ENGINES), ("--device", engine.DEVICES),
                                 ("--precision", engine.PRECISIONS)):
            if option in action.option_strings:
                assert action.choices is constant, (path, option)
                found.setdefault(option, set()).add(" ".join(path))
    assert {"train", "test", "time", "eval", "classify", "experiment", "figures",
            "report"} <= found["--engine"]
    assert {"train", "time", "eval", "classify"} <= found["--precision"]
    assert found["--device"] == {"experiment"}


def test_time_takes_precision_and_tf32_stays_its_alias(tmp_path, capsys):
    parser = build_parser()
    base = ["time", "--model", "m.prototxt"]
    assert parser.parse_args(base).precision == "fp32"
    assert parser.parse_args(base + ["--tf32"]).precision == "tf32"
    assert parser.parse_args(base + ["--precision", "bf16"]).precision == "bf16"
    model = tmp_path / "tiny.prototxt"
    model.write_text(TINY)
    for option in (["--tf32"], ["--precision", "tf32"]):
        assert main(["time", "--model", str(model), "--iterations", "1", *option]) == 2
        assert "precision tf32 needs a CUDA GPU" in capsys.readouterr().err
    out = tmp_path / "time.json"
    assert main(["time", "--model", str(model), "--iterations", "1", "--precision", "bf16",
                 "--json", str(out)]) == 0
    assert json.loads(out.read_text())["provenance"]["config"]["precision"] == "bf16"
    # real Caffe: the CPU and fp32 only, refused before it starts
    assert main(["time", "--model", str(model), "--engine", "caffe", "--gpu", "0"]) == 2
    assert "runs on the CPU only" in capsys.readouterr().err
    assert main(["time", "--model", str(model), "--engine", "caffe", "--precision", "bf16"]) == 2
    assert "real Caffe computes in fp32 only" in capsys.readouterr().err


def test_the_train_command_wraps_the_library_train(tmp_path, monkeypatch):
    from deepmammo.caffe import train_cli
    calls = []
    monkeypatch.setattr(train_cli, "train", lambda solver, **kw: calls.append((solver, kw)) or 0)
    assert main(["train", "--solver", "s.prototxt", "--gpu", "0,1", "--stage", "a",
                 "--precision", "bf16"]) == 0
    solver, options = calls[0]
    assert solver == "s.prototxt" and options == {
        "weights": None, "snapshot": None, "engine": "torch", "gpu": "0,1", "log": None,
        "level": 0, "stage": ["a"], "sigint_effect": "stop", "sighup_effect": "snapshot",
        "precision": "bf16"}


def test_library_train_refuses_first_then_trains_with_the_records_of_the_command(tmp_path):
    from deepmammo.caffe.train import train
    net = make_data(str(tmp_path))
    body = ('type: "SGD" base_lr: 0.05 momentum: 0.9 lr_policy: "fixed" max_iter: 2 '
            "display: 1 snapshot: 0")
    solver = write_solver(str(tmp_path), "s", body, net)
    log = tmp_path / "run" / "train.log"
    for kwargs, message in (({"engine": "caffe", "gpu": "0"}, "CPU only"),
                            ({"engine": "caffe", "precision": "bf16"}, "fp32 only"),
                            ({"precision": "tf32"}, "tf32 needs a CUDA GPU")):
        with pytest.raises(engine.EngineError, match=message):
            train(solver, log=str(log), **kwargs)
        assert not log.parent.exists()
    assert train(solver, log=str(log), precision="bf16") == 0
    record = json.loads((log.parent / "train_run.json").read_text())
    assert record["precision"] == "bf16" and record["provenance"]["config"] == {
        "solver": solver, "precision": "bf16", "weights": None, "snapshot": None}
    assert "] Precision: bf16 (" in log.read_text().splitlines()[0]


def _imports(path):
    """Every module a source file imports, at its top or inside a function."""
    import ast
    tree = ast.parse(open(path, encoding="utf-8").read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def test_the_engine_package_and_predict_import_no_command_line():
    import glob
    for path in glob.glob(os.path.join(ROOT, "deepmammo", "caffe", "**", "*.py"), recursive=True):
        assert "deepmammo.cli" not in set(_imports(path)), path
    for path in ("predict.py", "snapshots.py"):
        found = set(_imports(os.path.join(ROOT, "deepmammo", "evaluate", path)))
        assert not [m for m in found if m == "deepmammo.cli" or m.endswith(("_cli", "commands"))]


def test_a_config_and_caffes_test_are_checked_alike(capsys):
    from deepmammo.experiment import ExperimentError, load_config
    config = os.path.join(ROOT, "configs", "levynet.yaml")
    for overrides, message in ((["engine=caffe", "device=cuda"], "runs on the CPU only"),
                               (["engine=caffe", "precision=bf16"], "fp32 only"),
                               (["precision=tf32"], "tf32 needs a CUDA GPU")):
        with pytest.raises(ExperimentError, match=message) as refused:
            load_config(config, overrides, environ={})
        assert str(refused.value).startswith(f"{config} (with overrides): ")
    assert main(["test", "--model", config, "--weights", config, "--engine", "caffe",
                 "--gpu", "0"]) == 2
    assert "runs on the CPU only" in capsys.readouterr().err
