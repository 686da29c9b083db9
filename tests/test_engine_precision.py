"""Opt-in precision (fp32 default, tf32, bf16) and the loss the net leaves on the device until
it is read: tf32 is refused on the CPU, bf16 autocasts each layer's forward while blobs,
weights, gradients and the solver's history stay float32, and the train and eval commands
record the precision they ran in."""
import json
import os

import numpy as np
import pytest
import torch
from helpers import run_cli

import deepmammo.caffe as caffe
from deepmammo.caffe import mode
from deepmammo.caffe.net import DeferredLoss, resolve_losses
from deepmammo.caffe.scenario import make_data, write_solver
from deepmammo.caffe.solvers import get_solver

NET = '''name: "tiny"
layer { name: "data" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 4 dim: 3 dim: 10 dim: 10 } shape { dim: 4 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 6 kernel_size: 3 weight_filler { type: "gaussian" std: 0.2 }
                            bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "pool1" top: "fc"
        inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss"
        loss_weight: 0.7 }
layer { name: "loss2" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss2" }
'''


@pytest.fixture(autouse=True)
def fp32_after():
    yield
    mode.set_precision("fp32")


@pytest.fixture
def net_path(tmp_path):
    path = tmp_path / "tiny.prototxt"
    path.write_text(NET)
    return str(path)


def _fill(net, seed=0):
    rng = np.random.RandomState(seed)
    net.blobs["data"].data[...] = rng.randn(4, 3, 10, 10)
    net.blobs["label"].data[...] = rng.randint(0, 3, size=4)


def _copy_weights(src, dst):
    for a, b in zip(src.learnable_params, dst.learnable_params, strict=True):
        b.data[...] = a.data


# ------------------------------------------------------------------ the deferred loss

def test_deferred_loss_is_the_immediate_loss_to_the_bit(net_path):
    net = caffe.Net(net_path, caffe.TRAIN)
    _fill(net)
    deferred = []
    for seed in range(3):
        _fill(net, seed)
        net.clear_param_diffs()
        loss = net.forward_backward_deferred()
        assert isinstance(loss, DeferredLoss)
        # The immediate loss: loss_weight (a float32 field) times each loss top, summed in
        # doubles.
        want = 0.0 + float(np.float32(0.7)) * float(net.blobs["loss"].data)
        want = want + 1.0 * float(net.blobs["loss2"].data)
        deferred.append((loss, want))
    values = resolve_losses([d for d, _ in deferred] + [1.5])
    assert values == [w for _, w in deferred] + [1.5]
    assert [float(d) for d, _ in deferred] == values[:3]
    _fill(net, 2)
    assert net.forward_backward() == values[2]
    assert net.last_loss == values[2]


# ------------------------------------------------------------------ precision modes

def test_unknown_and_cpu_tf32_precisions_are_refused(net_path):
    with pytest.raises(mode.PrecisionError, match="one of fp32, tf32, bf16"):
        mode.set_precision("fp16")
    mode.set_precision("tf32")
    with pytest.raises(mode.PrecisionError, match="tf32 needs a CUDA GPU"):
        caffe.Net(net_path, caffe.TEST)
    assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    mode.set_precision("fp32")
    assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    assert caffe.Net(net_path, caffe.TEST).precision == "fp32"


def test_bf16_autocasts_forward_and_keeps_float32_blobs(net_path):
    caffe.set_random_seed(0)
    ref = caffe.Net(net_path, caffe.TRAIN)
    mode.set_precision("bf16")
    net = caffe.Net(net_path, caffe.TRAIN)
    assert net.precision == "bf16"
    _copy_weights(ref, net)
    for n in (ref, net):
        _fill(n)
        n.clear_param_diffs()
    loss_ref, loss = ref.forward_backward(), net.forward_backward()
    assert loss == pytest.approx(loss_ref, rel=2e-2)
    for name, blob in net.blobs.items():
        assert blob.tdata.dtype == torch.float32, name
    # bf16 really ran: the convolution's output differs from float32's, within bf16's
    # 8-bit mantissa.
    a, b = ref.blobs["conv1"].data, net.blobs["conv1"].data
    assert not np.array_equal(a, b)
    np.testing.assert_allclose(b, a, rtol=2e-2, atol=2e-2)
    for p_ref, p in zip(ref.learnable_params, net.learnable_params, strict=True):
        assert p.tdiff.dtype == torch.float32 and p.tdata.dtype == torch.float32
        # Elementwise, bf16's rounding can move a max-pooling window's winner, which on a net
        # this small moves a gradient by up to 10-20% in norm (seeds 0-19: at most 0.12).
        error = np.linalg.norm(p.diff - p_ref.diff) / np.linalg.norm(p_ref.diff)
        assert error < 0.25, p.name


def test_bf16_solver_keeps_float32_master_weights_and_history(tmp_path):
    net = make_data(str(tmp_path))
    body = ('type: "Adam" base_lr: 0.01 momentum: 0.9 momentum2: 0.999 lr_policy: "fixed" '
            "weight_decay: 0.01 display: 0 max_iter: 50")
    path = write_solver(str(tmp_path), "adam", body, net)
    runs = {}
    for precision in ("fp32", "bf16"):
        mode.set_precision(precision)
        with get_solver(path) as solver:
            solver.progress = False
            solver.step(6)
            assert all(h.dtype == torch.float32 for h in solver.history)
            runs[precision] = [b.data.copy() for b in solver.net.learnable_params]
            assert all(b.tdata.dtype == torch.float32 for b in solver.net.learnable_params)
    for a, b in zip(runs["fp32"], runs["bf16"], strict=True):
        np.testing.assert_allclose(b, a, rtol=5e-2, atol=5e-3)


# ------------------------------------------------------------------ the commands

@pytest.mark.subprocess
def test_train_records_its_precision_and_refuses_tf32_on_cpu(tmp_path):
    net = make_data(str(tmp_path))
    body = ('type: "SGD" base_lr: 0.05 momentum: 0.9 lr_policy: "fixed" max_iter: 4 '
            "display: 2 snapshot: 0")
    solver = write_solver(str(tmp_path), "s", body, net)
    log = tmp_path / "tf32" / "train.log"
    proc = run_cli("train", "--solver", solver, "--precision", "tf32", "--log", str(log),
                cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("deepmammo train: error: "
                                                           "precision tf32 needs a CUDA GPU")
    assert not log.parent.exists()      # refused before anything was written
    for precision in ("bf16", None):
        log = tmp_path / (precision or "default") / "train.log"
        extra = ["--precision", precision] if precision else []
        proc = run_cli("train", "--solver", solver, "--log", str(log), *extra, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        want = precision or "fp32"
        first = log.read_text().splitlines()[0]
        assert f"] Precision: {want} (" in first
        record = json.loads((log.parent / "train_run.json").read_text())
        assert record["precision"] == want and record["device"] == "cpu"
        assert record["provenance"]["config"]["precision"] == want
        assert (log.parent / "train_log.csv").read_text().startswith("iteration,")


@pytest.mark.subprocess
def test_eval_records_its_precision_and_refuses_tf32_on_cpu(tmp_path):
    from worlds import build_world
    world = build_world(str(tmp_path / "world"))
    run = world["runs"]["levynet"]
    base = ["eval", "--model", world["model"], "--snapshots",
            os.path.join(run, "*_iter_100.caffemodel"), "--lmdb",
            os.path.join(world["data"], "val_lmdb"), "--mean", world["mean"],
            "--bootstrap", "0"]
    proc = run_cli(*base, "--out", str(tmp_path / "tf32.json"), "--precision", "tf32",
                cwd=tmp_path)
    assert proc.returncode == 2 and "precision tf32 needs a CUDA GPU" in proc.stderr
    assert not (tmp_path / "tf32.json").exists()
    results = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / f"{precision}.json"
        proc = run_cli(*base, "--out", str(out), "--precision", precision, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        results[precision] = json.loads(out.read_text())
        assert results[precision]["precision"] == precision
        assert results[precision]["provenance"]["config"]["precision"] == precision
    a = results["fp32"]["snapshots"][0]["metrics"]
    b = results["bf16"]["snapshots"][0]["metrics"]
    assert b["n"] == a["n"] and b["roc_auc"] == pytest.approx(a["roc_auc"], abs=0.1)
