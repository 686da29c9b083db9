"""Device check of the solvers: each solver type trained on CUDA follows the CPU trajectory (our
engine on both), and a snapshot taken on CUDA restores on the CPU and continues identically.

    python scripts/check_solver_gpu.py [--gpu 0] [--steps 12]

Prints one line per solver type with the largest relative difference over the trajectory and
exits non-zero when one exceeds 1e-4 (fp32 on both; cuBLAS and the CPU sum in other orders).
"""
import argparse
import os
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

import deepmammo.caffe as caffe  # noqa: E402
from deepmammo.caffe.solvers import get_solver  # noqa: E402

from solver_scenario import make_data, params_of, write_solver  # noqa: E402

SCHEDULES = {
    "SGD": 'type: "SGD" base_lr: 0.1 momentum: 0.9 lr_policy: "step" gamma: 0.5 stepsize: 4 '
           "weight_decay: 0.01 iter_size: 2",
    "Nesterov": 'type: "Nesterov" base_lr: 0.1 momentum: 0.9 lr_policy: "inv" gamma: 0.1 '
                "power: 0.75 clip_gradients: 0.5",
    "AdaGrad": 'type: "AdaGrad" base_lr: 0.1 lr_policy: "exp" gamma: 0.9 '
               'weight_decay: 0.01 regularization_type: "L1"',
    "RMSProp": 'type: "RMSProp" base_lr: 0.01 lr_policy: "multistep" gamma: 0.5 stepvalue: 3 '
               "rms_decay: 0.95",
    "AdaDelta": 'type: "AdaDelta" base_lr: 1.0 momentum: 0.95 delta: 1e-6 lr_policy: "fixed"',
    "Adam": 'type: "Adam" base_lr: 0.01 momentum: 0.9 lr_policy: "poly" power: 0.5 '
            "weight_decay: 0.01",
}


def rel_diff(a, b):
    worst = 0.0
    for name in a:
        for x, y in zip(a[name], b[name]):
            worst = max(worst, float(np.max(np.abs(x - y) / (np.abs(y) + 1e-6))))
    return worst


def trajectory(path, steps, gpu):
    if gpu is None:
        caffe.set_mode_cpu()
    else:
        caffe.set_device(gpu)
        caffe.set_mode_gpu()
    out = []
    with get_solver(path) as solver:
        for _ in range(steps):
            solver.step(1)
            out.append(params_of(solver.net))
        if gpu is not None:
            assert solver.net.device.type == "cuda", solver.net.device
        solver.snapshot()
    caffe.set_mode_cpu()
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gpu", type=int, default=0, help="-1: CPU against CPU (a dry run)")
    ap.add_argument("--steps", type=int, default=12)
    args = ap.parse_args(argv)
    import torch
    gpu = None if args.gpu < 0 else args.gpu
    print("device:", "CPU (dry run)" if gpu is None else torch.cuda.get_device_name(gpu))
    failed = False
    with tempfile.TemporaryDirectory() as root:
        net = make_data(root)
        caffe.set_random_seed(5)
        init = os.path.join(root, "init.caffemodel")
        first = caffe.Net(net, caffe.TRAIN)
        first.save(init)
        first.close()   # its Data layer holds the LMDB open
        gpu_index = gpu
        for kind, body in SCHEDULES.items():
            body += f" max_iter: {args.steps} display: 0"
            path = write_solver(root, kind, body, net, weights=init)
            cpu = trajectory(path, args.steps, None)
            gpu = trajectory(path, args.steps, gpu_index)
            worst = max(rel_diff(g, c) for g, c in zip(gpu, cpu))
            # The CUDA snapshot restored on the CPU continues like the CPU run restored from it.
            state = os.path.join(root, f"{kind}_iter_{args.steps}.solverstate")
            with get_solver(path) as resumed:
                resumed.restore(state)
                back = rel_diff(params_of(resumed.net), gpu[-1])
            ok = worst < 1e-4 and back == 0.0
            failed |= not ok
            print(f"{kind:9s} max relative difference CUDA vs CPU over {args.steps} steps: "
                  f"{worst:.2e}; CUDA snapshot restored on CPU: {back:.1e} "
                  f"{'ok' if ok else 'FAIL'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
