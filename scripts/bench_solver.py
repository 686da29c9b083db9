"""The solver's update alone: fused (torch._foreach_*) against per-blob, on a paper net's blobs.

Times `apply_update()` (clipping, normalisation, weight decay, the rule, w -= step) over the
learnable blobs of AlexNet, GoogLeNet or LevyNet with random gradients, alternating the two
paths round by round so that a busy machine slows both alike, and prints the median and the
spread (min-max) in milliseconds per update.

    python scripts/bench_solver.py [--model alexnet] [--types SGD,Adam] [--rounds 7]
                                   [--gpu N]
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "scripts"))

from bench_train import MODELS, bench_net  # noqa: E402

SOLVER = """net: "{net}"
type: "{type}" base_lr: 0.01 momentum: {momentum} weight_decay: 5e-4 lr_policy: "fixed"
max_iter: 1000 display: 0 snapshot: 0 random_seed: 1
"""


def time_updates(solver, fused, rounds_of):
    import torch
    solver.fused_update = fused
    device = solver.net.device
    times = []
    for _ in range(rounds_of):
        for blob in solver.net.learnable_params:
            blob.tdiff.normal_(0, 1e-3)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        solver.apply_update()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=sorted(MODELS), default="alexnet")
    ap.add_argument("--types", default="SGD,Adam")
    ap.add_argument("--rounds", type=int, default=7, help="alternating rounds per path")
    ap.add_argument("--gpu", type=int)
    args = ap.parse_args(argv)
    from bench_paper import formats

    import deepmammo.caffe as caffe
    from deepmammo.caffe.proto import caffe_pb2 as pb
    from deepmammo.caffe.solvers import get_solver
    to_text = formats("prototxt").to_text
    if args.gpu is not None:
        caffe.set_device(args.gpu)
        caffe.set_mode_gpu()
    title, path, batch = MODELS[args.model]
    with tempfile.TemporaryDirectory(prefix="bench_solver_") as tmp:
        net_path = os.path.join(tmp, "net.prototxt")
        with open(net_path, "w") as f:
            f.write(to_text(bench_net(path, 1, pb.TRAIN)))
        for kind in args.types.split(","):
            solver_path = os.path.join(tmp, f"{kind}.prototxt")
            with open(solver_path, "w") as f:
                f.write(SOLVER.format(net=net_path, type=kind,
                                      momentum=0.0 if kind in ("AdaGrad", "RMSProp") else 0.9))
            with get_solver(solver_path) as solver:
                params = solver.net.learnable_params
                count = sum(b.count for b in params)
                time_updates(solver, True, 1)        # warm-up both paths
                time_updates(solver, False, 1)
                got = {True: [], False: []}
                for _ in range(args.rounds):
                    for fused in (True, False):
                        got[fused] += time_updates(solver, fused, 1)
            for fused in (False, True):
                ms = [t * 1000 for t in got[fused]]
                print(f"{title} ({len(params)} blobs, {count / 1e6:.1f}M values) {kind:8s} "
                      f"{'fused   ' if fused else 'per-blob'}: median {statistics.median(ms):.1f} "
                      f"ms per update (min {min(ms):.1f}, max {max(ms):.1f}, "
                      f"{args.rounds} rounds)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
