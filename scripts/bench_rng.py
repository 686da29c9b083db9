"""What Caffe's random streams cost (docs/random-streams.md): each draw the engine makes, with
Caffe's numbers (deepmammo.caffe.rng) and with torch's own generator for comparison, and the
parts of training that draw.

    python scripts/bench_rng.py [--repeat 3] [--device cuda] [--out bench_rng.json]

Rows: millions of values per second for the filler distributions (uniform, gaussian), one
Dropout forward on AlexNet's fc6 at batch 128 (128 x 4096 values, ms; on `--device`, where
Caffe's mask is drawn on the CPU and copied), and building AlexNet's train net (every filler,
seconds). The best of `--repeat` runs.
"""
import argparse
import json
import os
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from deepmammo.caffe import rng  # noqa: E402


def _best(fn, repeat):
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _alexnet_deploy():
    """AlexNet's layers behind an Input layer (no dataset needed), for construction time."""
    from deepmammo.caffe.formats.prototxt import read_net
    from deepmammo.caffe.proto import caffe_pb2 as pb
    src = read_net(os.path.join(ROOT, "prototxt/alexnet_finetune/train_val.prototxt"))
    net = pb.NetParameter(name=src.name)
    inp = net.layer.add(name="data", type="Input")
    inp.top.extend(["data", "label"])
    inp.input_param.shape.add(dim=[1, 3, 227, 227])
    inp.input_param.shape.add(dim=[1])
    for layer in src.layer:
        if layer.type != "Data" and not any(r.phase == pb.TEST for r in layer.include):
            net.layer.add().CopyFrom(layer)
    return net


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--device", default="cpu", help="where the Dropout rows run (cpu, cuda)")
    p.add_argument("--out")
    args = p.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    n = 10_000_000
    s = rng.CaffeRNG(1)
    g = torch.Generator().manual_seed(1)
    rows = {}
    rows["uniform, Caffe's stream (M values/s)"] = n / 1e6 / _best(
        lambda: s.uniform(n, -0.1, 0.1), args.repeat)
    rows["uniform, torch (M values/s)"] = n / 1e6 / _best(
        lambda: torch.empty(n).uniform_(-0.1, 0.1, generator=g), args.repeat)
    rows["gaussian, Caffe's stream (M values/s)"] = n / 1e6 / _best(
        lambda: s.gaussian(n, 0.0, 0.01), args.repeat)
    rows["gaussian, torch (M values/s)"] = n / 1e6 / _best(
        lambda: torch.empty(n).normal_(0.0, 0.01, generator=g), args.repeat)
    from deepmammo.caffe.layers.activation import Dropout
    from deepmammo.caffe.proto import caffe_pb2 as pb
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    x = torch.randn((128, 4096), device=device)
    drop = Dropout(pb.LayerParameter(name="drop6", type="Dropout", bottom=["fc6"], top=["fc6"]),
                   pb.TRAIN, device, "bench")
    gd = torch.Generator(device=device).manual_seed(1)

    def caffe_mask():
        drop.forward([x], [])
        sync()

    def torch_mask():
        _ = x * (torch.rand(x.shape, generator=gd, device=device) >= 0.5).to(x.dtype) * 2.0
        sync()

    caffe_mask()
    rows[f"Dropout fc6 batch 128 on {device.type}, Caffe's mask (ms)"] = 1e3 * _best(
        caffe_mask, args.repeat)
    rows[f"Dropout fc6 batch 128 on {device.type}, torch mask (ms)"] = 1e3 * _best(
        torch_mask, args.repeat)
    from deepmammo.caffe.net import Net
    alexnet = _alexnet_deploy()
    rng.set_random_seed(1)
    rows["AlexNet train net construction, Caffe's stream (s)"] = _best(
        lambda: Net(alexnet, 0), args.repeat)
    width = max(len(k) for k in rows)
    for k, v in rows.items():
        print(f"{k:<{width}}  {v:10.2f}")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(rows, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
