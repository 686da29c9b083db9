"""The engine on CUDA: the same nets give the same numbers as on the CPU (fp32, TF32 off), the
numpy views stay coherent with the device tensors, and timings of the benchmark nets in each
precision (fp32, tf32, bf16).

    python3 scripts/check_engine_cuda.py [--device cuda:0] [--iterations 10] [--no-bench]

Exits non-zero when a check fails. Real Caffe is not needed (it has no CUDA build here): the
CPU engine, itself cross-checked against real Caffe by the tests, is the reference.
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

TOL = 2e-5


# ----------------------------------------------------------------------------- the nets checked
# The layer variants the CPU engine is cross-checked on against real Caffe in the tests, here
# run on the device against the CPU engine.

def input_layer(name, shape):
    dims = " ".join(f"dim: {d}" for d in shape)
    return (f'layer {{ name: "{name}" type: "Input" top: "{name}" '
            f'input_param {{ shape {{ {dims} }} }} }}\n')


def layer_net(body, shape=(2, 3, 9, 9), force_backward=True, extra_inputs=""):
    """A net of an Input `data` of `shape`, more inputs, then `body`."""
    head = f'name: "t"\nforce_backward: {"true" if force_backward else "false"}\n'
    return head + input_layer("data", shape) + extra_inputs + body


def labels_input(shape):
    return input_layer("label", shape)


CONV = {
    "basic": 'num_output: 4 kernel_size: 3 pad: 1',
    "stride_rect": 'num_output: 3 kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 0',
    "group": 'num_output: 4 kernel_size: 3 group: 3 pad: 2 stride: 2',
    "dilation": 'num_output: 2 kernel_size: 3 dilation: 2',
    "no_bias": 'num_output: 2 kernel_size: 1 bias_term: false',
    "two_values": 'num_output: 2 kernel_size: 3 kernel_size: 1 pad: 1 pad: 0 stride: 2 stride: 1',
}


POOL = {
    # ceil rounding gives an extra, partial last window
    "max_ceil": ("MAX", "kernel_size: 3 stride: 2", (2, 2, 8, 8)),
    "ave_ceil": ("AVE", "kernel_size: 3 stride: 2", (2, 2, 8, 8)),
    "ave_pad": ("AVE", "kernel_size: 3 stride: 2 pad: 1", (2, 2, 9, 9)),
    "max_pad": ("MAX", "kernel_size: 3 stride: 2 pad: 1", (2, 2, 8, 8)),
    # pad > kernel/2: PyTorch refuses it, Caffe allows it
    "max_pad_gt_half": ("MAX", "kernel_size: 3 stride: 2 pad: 2", (2, 2, 9, 9)),
    "ave_pad_gt_half": ("AVE", "kernel_size: 3 stride: 2 pad: 2", (2, 2, 9, 9)),
    # pad > 0 and the last window would start beyond H + pad: dropped
    "ave_drop_last": ("AVE", "kernel_size: 2 stride: 2 pad: 1", (1, 2, 6, 6)),
    "max_rect": ("MAX", "kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 0",
                 (2, 2, 7, 6)),
    "ave_rect": ("AVE", "kernel_h: 2 kernel_w: 3 stride_h: 1 stride_w: 2 pad_h: 0 pad_w: 1",
                 (2, 2, 7, 6)),
    "max_global": ("MAX", "global_pooling: true", (2, 3, 5, 4)),
    "ave_global": ("AVE", "global_pooling: true", (2, 3, 5, 4)),
    "max_floor": ("MAX", "kernel_size: 3 stride: 2 round_mode: FLOOR", (2, 2, 8, 8)),
    "ave_floor_pad": ("AVE", "kernel_size: 3 stride: 2 pad: 1 round_mode: FLOOR", (2, 2, 8, 8)),
    "ave_googlenet": ("AVE", "kernel_size: 7 stride: 1", (1, 2, 7, 7)),
}


LRN = {
    "across_default": "",
    "across_params": "local_size: 3 alpha: 0.5 beta: 0.6 k: 2",
    "within": "norm_region: WITHIN_CHANNEL local_size: 3 alpha: 0.7 beta: 0.8",
    "within_5": "norm_region: WITHIN_CHANNEL local_size: 5 alpha: 2.0",
}


INCEPTION = '''
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 8 kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "norm1" type: "LRN" bottom: "pool1" top: "norm1" lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 } }
layer { name: "i/1x1" type: "Convolution" bottom: "norm1" top: "i/1x1" convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "i/relu_1x1" type: "ReLU" bottom: "i/1x1" top: "i/1x1" }
layer { name: "i/3x3_reduce" type: "Convolution" bottom: "norm1" top: "i/3x3_reduce" convolution_param { num_output: 3 kernel_size: 1 } }
layer { name: "i/relu_3x3_reduce" type: "ReLU" bottom: "i/3x3_reduce" top: "i/3x3_reduce" }
layer { name: "i/3x3" type: "Convolution" bottom: "i/3x3_reduce" top: "i/3x3" convolution_param { num_output: 5 kernel_size: 3 pad: 1 } }
layer { name: "i/relu_3x3" type: "ReLU" bottom: "i/3x3" top: "i/3x3" }
layer { name: "i/5x5_reduce" type: "Convolution" bottom: "norm1" top: "i/5x5_reduce" convolution_param { num_output: 2 kernel_size: 1 } }
layer { name: "i/relu_5x5_reduce" type: "ReLU" bottom: "i/5x5_reduce" top: "i/5x5_reduce" }
layer { name: "i/5x5" type: "Convolution" bottom: "i/5x5_reduce" top: "i/5x5" convolution_param { num_output: 3 kernel_size: 5 pad: 2 } }
layer { name: "i/relu_5x5" type: "ReLU" bottom: "i/5x5" top: "i/5x5" }
layer { name: "i/pool" type: "Pooling" bottom: "norm1" top: "i/pool" pooling_param { pool: MAX kernel_size: 3 stride: 1 pad: 1 } }
layer { name: "i/pool_proj" type: "Convolution" bottom: "i/pool" top: "i/pool_proj" convolution_param { num_output: 2 kernel_size: 1 } }
layer { name: "i/relu_pool_proj" type: "ReLU" bottom: "i/pool_proj" top: "i/pool_proj" }
layer { name: "i/output" type: "Concat" bottom: "i/1x1" bottom: "i/3x3" bottom: "i/5x5" bottom: "i/pool_proj" top: "i/output" }
layer { name: "pool5" type: "Pooling" bottom: "i/output" top: "pool5" pooling_param { pool: AVE kernel_size: 4 stride: 1 } }
layer { name: "drop" type: "Dropout" bottom: "pool5" top: "pool5" dropout_param { dropout_ratio: 0.4 } include { phase: TEST } }
layer { name: "classifier" type: "InnerProduct" bottom: "pool5" top: "classifier" inner_product_param { num_output: 3 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "classifier" bottom: "label" top: "loss" }
layer { name: "acc" type: "Accuracy" bottom: "classifier" bottom: "label" top: "acc" include { phase: TEST } }
layer { name: "acc5" type: "Accuracy" bottom: "classifier" bottom: "label" top: "acc5" accuracy_param { top_k: 2 } include { phase: TEST } }
'''


SMALL = '''name: "small"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 6 dim: 6 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
        convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "gaussian" std: 0.1 }
                            bias_filler { type: "constant" value: 0.2 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "fc" type: "InnerProduct" bottom: "conv1" top: "fc"
        inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
'''


def data_net(source, transform, batch=2):
    return f'''name: "d"
layer {{ name: "data" type: "Data" top: "data" top: "label"
        transform_param {{ {transform} }}
        data_param {{ source: "{source}" batch_size: {batch} backend: LMDB }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param {{ num_output: 2 }} }}
'''


def rel(a, b):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    fin = np.isfinite(b)
    if not np.array_equal(fin, np.isfinite(a)):
        return float("inf")
    if not fin.any():
        return 0.0
    return float(np.abs(a[fin] - b[fin]).max() / max(np.abs(b[fin]).max(), 1e-6))


def build_pair(text, phase, device):
    import deepmammo.caffe as caffe
    from deepmammo.caffe.net import Net
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "net.prototxt")
        with open(path, "w") as f:
            f.write(text)
        caffe.set_random_seed(0)
        ref = Net(path, phase, device="cpu")
        caffe.set_random_seed(0)
        dev = Net(path, phase, device=device)
    return ref, dev


def compare(name, text, phase, device, inputs=None):
    ref, dev = build_pair(text, phase, device)
    rs = np.random.RandomState(0)
    for lname, blobs in ref.params.items():
        for k, blob in enumerate(blobs):
            values = rs.randn(*blob.shape).astype(np.float32) * 0.3
            if ref.layer_dict[lname].type == "BatchNorm":
                values = np.abs(values) + 0.5
            blob.data[...] = values
            dev.params[lname][k].data[...] = values
    for n in ref.inputs:
        x = (inputs or {}).get(n)
        if x is None:
            x = np.asarray(rs.randn(*ref.blobs[n].shape), np.float32)
        ref.blobs[n].data[...] = x
        dev.blobs[n].data[...] = x
    ref.forward()
    dev.forward()
    for n in ref.outputs:
        if not ref.blob_loss_weights[n]:
            d = np.asarray(rs.randn(*ref.blobs[n].shape), np.float32)
            ref.blobs[n].diff[...] = d
            dev.blobs[n].diff[...] = d
    ref.backward()
    dev.backward()
    worst = 0.0
    where = ""
    for n in ref.blobs:
        for kind in ("data", "diff"):
            e = rel(getattr(dev.blobs[n], kind), getattr(ref.blobs[n], kind))
            if e > worst:
                worst, where = e, f"{kind}:{n}"
    for lname in ref.params:
        for k in range(len(ref.params[lname])):
            for kind in ("data", "diff"):
                e = rel(getattr(dev.params[lname][k], kind), getattr(ref.params[lname][k], kind))
                if e > worst:
                    worst, where = e, f"param_{kind}:{lname}/{k}"
    ok = worst < TOL
    print(f"{'ok  ' if ok else 'FAIL'} {name:28s} worst {worst:.2e} at {where}", flush=True)
    return ok


def coherence(device):
    """numpy writes reach the device; device (solver-style) writes reach numpy."""
    import torch

    import deepmammo.caffe as caffe
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "small.prototxt")
        with open(path, "w") as f:
            f.write(SMALL)
        net = caffe.Net(path, caffe.TEST, device=device)
    ok = True
    x = np.random.RandomState(1).randn(2, 3, 6, 6).astype(np.float32)
    net.blobs["data"].data[...] = x
    out1 = net.forward()["prob"].copy()
    w = net.params["fc"][0]
    w.data[...] *= 2                                   # numpy write -> device
    out2 = net.forward()["prob"].copy()
    ok &= not np.allclose(out1, out2)
    with torch.no_grad():
        w.tdata.mul_(0.5)                              # device write -> numpy
    ok &= bool(np.allclose(net.forward()["prob"], out1, rtol=1e-5, atol=1e-7))
    w.tdiff.fill_(3.0)
    ok &= bool((w.diff == 3.0).all())
    net.blobs["data"].reshape(4, 3, 6, 6)
    net.reshape()
    net.blobs["data"].data[...] = np.concatenate([x, x])
    ok &= net.forward()["prob"].shape == (4, 3)
    ok &= net.device.type == torch.device(device).type
    print(f"{'ok  ' if ok else 'FAIL'} numpy/device coherence", flush=True)
    return bool(ok)


def data_layer(device):
    from deepmammo.caffe.formats.datum import array_to_datum
    from deepmammo.caffe.formats.lmdb_io import LMDBWriter, lmdb_key
    rs = np.random.RandomState(3)
    images = rs.randint(0, 256, size=(5, 3, 8, 7)).astype(np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        db = os.path.join(tmp, "db")
        with LMDBWriter(db) as w:
            for i in range(5):
                w.put_datum(lmdb_key(i, str(i)), array_to_datum(images[i], label=i))
        text = data_net(db, "crop_size: 5 mean_value: 120 scale: 0.5")
        ref, dev = build_pair(text, 1, device)
        ok = True
        for _ in range(3):
            ref.forward()
            dev.forward()
            ok &= rel(dev.blobs["data"].data, ref.blobs["data"].data) < TOL
            ok &= bool(np.array_equal(dev.blobs["label"].data, ref.blobs["label"].data))
        ref.close()
        dev.close()
    print(f"{'ok  ' if ok else 'FAIL'} Data layer (LMDB, TEST batches)", flush=True)
    return bool(ok)


def bench(device, iterations):
    import torch
    from bench_engine import BATCH, write_bench_nets

    import deepmammo.caffe as caffe
    from deepmammo.caffe import mode
    from deepmammo.caffe.timing import conv_ip_flops, time_net
    paths = write_bench_nets()
    name = torch.cuda.get_device_name(torch.device(device))
    for net_name, path in paths.items():
        for precision in ("fp32", "tf32", "bf16"):
            mode.set_precision(precision)
            net = caffe.Net(path, caffe.TRAIN, device=device)
            flops = conv_ip_flops(net)
            r = time_net(net, iterations)
            torch.cuda.synchronize()
            t = time.perf_counter()
            for _ in range(iterations):
                net.clear_param_diffs()
                net.forward_backward()
            torch.cuda.synchronize()
            free = (time.perf_counter() - t) / iterations
            with torch.no_grad():
                torch.cuda.synchronize()
                t = time.perf_counter()
                for _ in range(iterations):
                    net.forward()
                torch.cuda.synchronize()
                fwd = (time.perf_counter() - t) / iterations
            fb = r["forward_backward_ms"] / 1000
            print(f"{net_name:10s} {precision} {name}: fwd+bwd "
                  f"{r['forward_backward_ms']:.1f} ms = {BATCH / fb:.0f} img/s, "
                  f"{(flops[0] + flops[1]) / fb / 1e12:.2f} TFLOP/s (caffe-time style, each "
                  f"layer synced); unsynced fwd+bwd {free * 1000:.1f} ms = {BATCH / free:.0f} "
                  f"img/s, {(flops[0] + flops[1]) / free / 1e12:.2f} TFLOP/s; forward only "
                  f"(no grad) {BATCH / fwd:.0f} img/s", flush=True)
            del net
    mode.set_precision("fp32")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda:0")
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--no-bench", action="store_true")
    args = ap.parse_args()
    import torch
    print("torch", torch.__version__, "device", args.device,
          torch.cuda.get_device_name(0) if torch.cuda.is_available() else "", flush=True)
    ok = True
    labels = {"label": np.array([0, 2, 1, 2], np.float32)}
    inception = layer_net(INCEPTION, (4, 3, 17, 17), force_backward=True,
                          extra_inputs=labels_input((4,)))
    ok &= compare("inception TRAIN", inception, 0, args.device, labels)
    ok &= compare("inception TEST", layer_net(INCEPTION, (4, 3, 17, 17), force_backward=False,
                                              extra_inputs=labels_input((4,))), 1, args.device,
                  labels)
    for v, spec in CONV.items():
        shape = (2, 6, 9, 9) if v == "group" else (2, 3, 9, 9)
        body = (f'layer {{ name: "c" type: "Convolution" bottom: "data" top: "c" '
                f'convolution_param {{ {spec.replace("group: 3", "group: 2")} }} }}')
        ok &= compare(f"conv {v}", layer_net(body, shape), 1, args.device)
    for v, (method, spec, shape) in POOL.items():
        body = (f'layer {{ name: "p" type: "Pooling" bottom: "data" top: "p" '
                f'pooling_param {{ pool: {method} {spec} }} }}')
        ok &= compare(f"pool {v}", layer_net(body, shape), 1, args.device)
    for v, spec in LRN.items():
        body = f'layer {{ name: "n" type: "LRN" bottom: "data" top: "n" lrn_param {{ {spec} }} }}'
        ok &= compare(f"lrn {v}", layer_net(body, (2, 7, 6, 5)), 1, args.device)
    bn = ('layer { name: "bn" type: "BatchNorm" bottom: "data" top: "bn" }\n'
          'layer { name: "sc" type: "Scale" bottom: "bn" top: "bn" '
          'scale_param { bias_term: true } }')
    ok &= compare("batchnorm TRAIN", layer_net(bn, (3, 4, 5, 5)), 0, args.device)
    ok &= coherence(args.device)
    ok &= data_layer(args.device)
    if not args.no_bench and args.device.startswith("cuda"):
        bench(args.device, args.iterations)
    print("ALL OK" if ok else "SOME CHECKS FAILED", flush=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
