"""Device check of the solvers: each solver type trained on CUDA follows the CPU trajectory (our
engine on both), and a snapshot taken on CUDA restores on the CPU and continues identically.
Then the fast paths of the solver:

- fused update: the fused (torch._foreach_*, multi-tensor kernels on CUDA) and the per-blob
  update on CUDA agree to 1e-6 relative over the trajectory (on the CPU the tests require
  them bit-identical);
- no host synchronisation inside an iteration: training with display 0 under
  torch.cuda.set_sync_debug_mode("warn") lists every synchronising call and where it is made;
  one from the solver or the net fails the check (the layers' and the Data layer's are
  reported);
- precision: tf32 and bf16 train on CUDA, keep float32 weights and solver state, and stay near
  the fp32 trajectory (the relative difference is printed: the accuracy side of the
  trade-off).

    python scripts/check_solver_gpu.py [--gpu 0] [--steps 12]

Prints one line per check and exits non-zero when one fails (fp32 trajectories: 1e-4
relative; cuBLAS and the CPU sum in other orders).
"""
import argparse
import os
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import deepmammo.caffe as caffe  # noqa: E402
from deepmammo.caffe.scenario import make_data, params_of, write_solver  # noqa: E402
from deepmammo.caffe.solvers import get_solver  # noqa: E402

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
        failed |= not check_fused(root, net, init, args.steps, gpu_index)
        failed |= not check_no_sync(root, net, init, gpu_index)
        failed |= not check_precisions(root, net, init, args.steps, gpu_index)
    return 1 if failed else 0


def _use(gpu):
    if gpu is None:
        caffe.set_mode_cpu()
    else:
        caffe.set_device(gpu)
        caffe.set_mode_gpu()


def check_fused(root, net, init, steps, gpu):
    """Fused against per-blob update on the device, every solver type."""
    ok = True
    for kind, body in SCHEDULES.items():
        path = write_solver(root, f"fused_{kind}", body + f" max_iter: {steps} display: 0",
                            net, weights=init)
        runs = {}
        for fused in (True, False):
            _use(gpu)
            with get_solver(path) as solver:
                solver.fused_update = fused
                out = []
                for _ in range(steps):
                    solver.step(1)
                    out.append(params_of(solver.net))
            runs[fused] = out
        caffe.set_mode_cpu()
        worst = max(rel_diff(a, b) for a, b in zip(runs[True], runs[False]))
        good = worst <= 1e-6
        ok &= good
        print(f"fused    {kind:9s} fused vs per-blob update over {steps} steps: max relative "
              f"difference {worst:.2e} {'ok' if good else 'FAIL'}")
    return ok


def check_no_sync(root, net, init, gpu, iters=10):
    """Synchronising CUDA calls made while training between two displays."""
    import warnings

    import torch
    if gpu is None:
        print("sync     skipped on the CPU (dry run)")
        return True
    body = SCHEDULES["SGD"] + " max_iter: 100 display: 0"
    path = write_solver(root, "nosync", body, net, weights=init)
    _use(gpu)
    with get_solver(path) as solver:
        solver.progress = False
        solver.step(2)                      # warm-up: allocations, cuDNN choices
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                solver.step(iters)
            finally:
                torch.cuda.set_sync_debug_mode("default")
    caffe.set_mode_cpu()
    places = {}
    for w in caught:
        if "synchroniz" in str(w.message):
            where = f"{os.path.relpath(w.filename, ROOT)}:{w.lineno}"
            places[where] = places.get(where, 0) + 1
    # The step's one read-back of the losses at its end is expected (display 0: nothing
    # reads them before); anything in the solver or net that repeats is per iteration.
    ours = [p for p, count in places.items() if count > 1 and os.path.basename(
        p.split(":")[0]) in ("solver.py", "solvers.py", "net.py")]
    for where, count in sorted(places.items()):
        print(f"sync     {count:4d} synchronising call(s) in {iters} iterations at {where}")
    print(f"sync     solver and net: {len(ours)} place(s) that synchronise inside an "
          f"iteration {'ok' if not ours else 'FAIL'}")
    return not ours


def check_precisions(root, net, init, steps, gpu):
    """tf32 and bf16 against fp32 on the device (Adam, the paper's LevyNet/AlexNet rule)."""
    import torch

    from deepmammo.caffe import mode
    if gpu is None:
        print("precision skipped on the CPU (dry run; tests/test_engine_precision.py covers "
              "bf16 on the CPU)")
        return True
    path = write_solver(root, "precision", SCHEDULES["Adam"] +
                        f" max_iter: {steps} display: 0", net, weights=init)
    runs, ok = {}, True
    for precision in ("fp32", "tf32", "bf16"):
        mode.set_precision(precision)
        _use(gpu)
        with get_solver(path) as solver:
            solver.step(steps)
            floats = all(h.dtype == torch.float32 for h in solver.history) and all(
                b.tdata.dtype == torch.float32 for b in solver.net.learnable_params)
            runs[precision] = params_of(solver.net)
        ok &= floats
        if precision != "fp32":
            print(f"precision {precision}: float32 weights and history: {floats}; relative "
                  f"difference to fp32 after {steps} steps "
                  f"{rel_diff(runs[precision], runs['fp32']):.2e} {'ok' if floats else 'FAIL'}")
    mode.set_precision("fp32")
    caffe.set_mode_cpu()
    return ok


if __name__ == "__main__":
    sys.exit(main())
