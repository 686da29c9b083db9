"""`deepmammo time`: Caffe's `caffe time` on our engine: per-layer forward and backward
milliseconds averaged over iterations, and the totals, printed in caffe time's layout.

As `caffe time`, the net is built in the TRAIN phase, one forward-backward runs first
(warm-up, not counted), then each iteration times every layer's forward in order and every
layer's backward in reverse order. On CUDA each layer is synchronised before its clock stops.
"""
import logging
import os
import platform
import time

import torch

log = logging.getLogger(__name__)


def device_name(gpu=None):
    """What the figures were measured on: the CUDA card's name, else the CPU model and cores."""
    if gpu is not None:
        return torch.cuda.get_device_name(gpu)
    name = platform.processor() or "CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores"


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def conv_ip_flops(net):
    """Forward FLOPs (2 x multiply-adds) of the Convolution and InnerProduct layers, and the
    backward's: weight gradient always, data gradient where the layer's bottom needs it."""
    forward = backward = 0
    for i, layer in enumerate(net.layers):
        if not hasattr(layer, "flops"):
            continue
        bottoms = [net.blobs[n].shape for n in net._layer_bottoms[i]]
        tops = [net.blobs[n].shape for n in net._layer_tops[i]]
        f = layer.flops(bottoms, tops)
        forward += f
        if net.layer_need_backward(i):
            backward += f * (1 + int(any(net._bottom_need_backward[i])))
    return forward, backward


def time_net(net, iterations=50, progress=None):
    """Per-layer average forward/backward ms: {'layers': [(name, type, fwd, bwd)],
    'forward_ms', 'backward_ms', 'forward_backward_ms', 'total_ms'}."""
    device = net.device
    n = len(net.layers)
    net.forward_backward()            # warm-up: allocations, algorithm choices
    _sync(device)
    fwd = [0.0] * n
    bwd = [0.0] * n
    total_fwd = total_bwd = 0.0
    start_all = time.perf_counter()
    for it in range(iterations):
        t0 = time.perf_counter()
        for i in range(n):
            s = time.perf_counter()
            net.forward_layer(i)
            _sync(device)
            fwd[i] += time.perf_counter() - s
        t1 = time.perf_counter()
        for i in range(n - 1, -1, -1):
            s = time.perf_counter()
            net.backward_layer(i)
            _sync(device)
            bwd[i] += time.perf_counter() - s
        t2 = time.perf_counter()
        total_fwd += t1 - t0
        total_bwd += t2 - t1
        if progress:
            progress(it)
    total = time.perf_counter() - start_all
    ms = 1000.0 / iterations
    return {
        "layers": [(name, layer.type, fwd[i] * ms, bwd[i] * ms)
                   for i, (name, layer) in enumerate(zip(net._layer_names, net.layers))],
        "forward_ms": total_fwd * ms,
        "backward_ms": total_bwd * ms,
        "forward_backward_ms": (total_fwd + total_bwd) * ms,
        "total_ms": total * 1000.0,
        "iterations": iterations,
    }


def format_report(result):
    """caffe time's summary lines."""
    lines = ["Average time per layer: "]
    for name, _, f, b in result["layers"]:
        lines.append(f"{name:>20}\tforward: {f:.5g} ms.")
        lines.append(f"{name:>20}\tbackward: {b:.5g} ms.")
    lines.append(f"Average Forward pass: {result['forward_ms']:.5g} ms.")
    lines.append(f"Average Backward pass: {result['backward_ms']:.5g} ms.")
    lines.append(f"Average Forward-Backward: {result['forward_backward_ms']:.5g} ms.")
    lines.append(f"Total Time: {result['total_ms']:.5g} ms.")
    return "\n".join(lines)
