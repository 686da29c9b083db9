"""Training and testing throughput of both engines on the paper's nets (`make bench`).

One table: images/s for training (forward, backward and the solver update) and for testing
(forward), for LevyNet (batch 64), AlexNet (128) and GoogLeNet without auxiliary heads (32), on
our engine and on real BVLC Caffe (CPU build), the ratio ours/Caffe, and the GFLOP/s each reached.
The nets are the project's train_val prototxt files with their Data layers replaced by Input
layers holding random 3x224x224 images and labels, so that no dataset is needed and only the
engines are timed. Few iterations: this is meant to run on a 2-core machine.

    python scripts/bench_train.py [--iters 2] [--models levynet,alexnet,googlenet]
                                  [--gpu N] [--engines torch,caffe] [--out bench.json]

FLOPs: multiply-adds x 2 of Convolution and InnerProduct layers per image (forward); training
counts 3x forward (the backward pass computes gradients for inputs and weights).
"""
import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from deepmammo.caffe.formats.prototxt import read_net, to_text  # noqa: E402
from deepmammo.caffe.proto import caffe_pb2 as pb  # noqa: E402
from deepmammo.caffe.timing import device_name  # noqa: E402

MODELS = {
    "levynet": ("LevyNet", "prototxt/levynet/train_val.prototxt", 64),
    "alexnet": ("AlexNet", "prototxt/alexnet_finetune/train_val.prototxt", 128),
    "googlenet": ("GoogLeNet (no aux)", "prototxt/googlenet_deeper/train_val.prototxt", 32),
}
SOLVER = """net: "{net}"
type: "SGD" base_lr: 1e-7 momentum: 0.9 weight_decay: 5e-4 lr_policy: "fixed"
max_iter: 100000 display: 0 snapshot: 0 solver_mode: CPU random_seed: 1
"""


def bench_net(path, batch, phase):
    """The model's net with Input layers (data, label) instead of Data layers, for `phase`."""
    src = read_net(os.path.join(ROOT, path))
    net = pb.NetParameter(name=src.name)
    net.state.phase = phase
    inp = net.layer.add(name="data", type="Input")
    inp.top.extend(["data", "label"])
    inp.input_param.shape.add(dim=[batch, 3, 224, 224])
    inp.input_param.shape.add(dim=[batch])
    for layer in src.layer:
        if layer.type == "Data":
            continue
        net.layer.add().CopyFrom(layer)
    return net


def forward_flops(caffe_net):
    """Forward FLOPs per image of a pycaffe-style net (ours or real Caffe's)."""
    total = 0
    batch = caffe_net.blobs["data"].data.shape[0]
    for name, layer in caffe_net.layer_dict.items():
        if layer.type not in ("Convolution", "InnerProduct"):
            continue
        weights = int(np.prod(caffe_net.params[name][0].data.shape))
        top = caffe_net.top_names[name][0]
        shape = caffe_net.blobs[top].data.shape
        spatial = int(np.prod(shape[2:])) if layer.type == "Convolution" else 1
        total += 2 * weights * spatial
    return total, batch


def fill_inputs(net, seed=0):
    rng = np.random.RandomState(seed)
    data = net.blobs["data"].data
    data[...] = rng.randn(*data.shape).astype(np.float32) * 50
    label = net.blobs["label"].data
    label[...] = rng.randint(0, 2, size=label.shape)


def time_engine(engine, solver_path, test_path, iters, gpu):
    """(train images/s, test images/s, batch) of one engine."""
    if engine == "caffe":
        from deepmammo.caffe.real import import_caffe
        caffe = import_caffe()
        solver = caffe.get_solver(solver_path)
        test_net = caffe.Net(test_path, caffe.TEST)
    else:
        import deepmammo.caffe as caffe
        from deepmammo.caffe.solvers import get_solver
        if gpu is not None:
            caffe.set_device(gpu)
            caffe.set_mode_gpu()
        solver = get_solver(solver_path)
        solver.progress = False
        test_net = caffe.Net(test_path, caffe.TEST)
    fill_inputs(solver.net)
    fill_inputs(test_net)
    batch = solver.net.blobs["data"].data.shape[0]
    solver.step(1)                       # warm-up: allocations, first-call costs
    _sync(engine, gpu)
    t0 = time.perf_counter()
    solver.step(iters)
    _sync(engine, gpu)
    train = batch * iters / (time.perf_counter() - t0)
    test_net.forward()
    _sync(engine, gpu)
    t0 = time.perf_counter()
    for _ in range(iters):
        test_net.forward()
    _sync(engine, gpu)
    test = test_net.blobs["data"].data.shape[0] * iters / (time.perf_counter() - t0)
    return train, test, batch


def _sync(engine, gpu):
    if engine == "torch" and gpu is not None:
        import torch
        torch.cuda.synchronize()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iters", type=int, default=2, help="timed iterations per figure")
    ap.add_argument("--models", default="levynet,alexnet,googlenet")
    ap.add_argument("--engines", default="torch,caffe")
    ap.add_argument("--gpu", type=int, help="run our engine on this GPU (Caffe stays on CPU)")
    ap.add_argument("--out", help="also write the figures as JSON here")
    args = ap.parse_args(argv)
    engines = args.engines.split(",")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        for key in args.models.split(","):
            title, path, batch = MODELS[key]
            if not os.path.isfile(os.path.join(ROOT, path)):
                print(f"skipping {title}: {path} is missing", file=sys.stderr)
                continue
            train_path = os.path.join(tmp, f"{key}_train.prototxt")
            test_path = os.path.join(tmp, f"{key}_test.prototxt")
            with open(train_path, "w") as f:
                f.write(to_text(bench_net(path, batch, pb.TRAIN)))
            with open(test_path, "w") as f:
                f.write(to_text(bench_net(path, batch, pb.TEST)))
            solver_path = os.path.join(tmp, f"{key}_solver.prototxt")
            with open(solver_path, "w") as f:
                f.write(SOLVER.format(net=train_path))
            import deepmammo.caffe as ours
            shapes_net = ours.Net(test_path, ours.TEST, device="cpu")
            flops, _ = forward_flops(shapes_net)
            del shapes_net
            row = {"model": title, "batch": batch, "gflop_per_image": flops / 1e9}
            for engine in engines:
                print(f"{title}: {engine} ...", file=sys.stderr, flush=True)
                train, test, _ = time_engine(engine, solver_path, test_path, args.iters,
                                             args.gpu if engine == "torch" else None)
                row[engine] = {"train_img_s": train, "test_img_s": test,
                               "train_gflop_s": train * 3 * flops / 1e9,
                               "test_gflop_s": test * flops / 1e9}
            rows.append(row)
    devices = {e: device_name(args.gpu if e == "torch" else None) for e in engines}
    print(format_table(rows, engines, devices, args.iters))
    if args.out:
        from deepmammo.atomic import write_text
        write_text(args.out, json.dumps({"rows": rows, "devices": devices,
                                         "iters": args.iters}, indent=2))
    return 0


def format_table(rows, engines, devices, iters):
    lines = [f"Training (forward+backward+update) and testing (forward) images/s, "
             f"{iters} timed iterations each.",
             "; ".join(f"{'ours' if e == 'torch' else 'Caffe'}: {d}" for e, d in devices.items()),
             "",
             "| net | batch | GFLOP/img | engine | train img/s | train GFLOP/s | test img/s "
             "| test GFLOP/s |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        for engine in engines:
            r = row[engine]
            lines.append(f"| {row['model']} | {row['batch']} | {row['gflop_per_image']:.2f} | "
                         f"{'ours' if engine == 'torch' else 'Caffe'} | {r['train_img_s']:.1f} | "
                         f"{r['train_gflop_s']:.1f} | {r['test_img_s']:.1f} | "
                         f"{r['test_gflop_s']:.1f} |")
        if "torch" in row and "caffe" in row:
            tr = row["torch"]["train_img_s"] / row["caffe"]["train_img_s"]
            te = row["torch"]["test_img_s"] / row["caffe"]["test_img_s"]
            lines.append(f"| {row['model']} | | | ratio ours/Caffe | {tr:.2f}x | | {te:.2f}x | |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
