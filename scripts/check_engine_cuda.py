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
sys.path.insert(0, os.path.join(ROOT, "tests"))

TOL = 2e-5


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
    from test_engine_net import SMALL

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
    from test_engine_net import _data_net

    from deepmammo.caffe.formats.datum import array_to_datum
    from deepmammo.caffe.formats.lmdb_io import LMDBWriter, lmdb_key
    rs = np.random.RandomState(3)
    images = rs.randint(0, 256, size=(5, 3, 8, 7)).astype(np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        db = os.path.join(tmp, "db")
        with LMDBWriter(db) as w:
            for i in range(5):
                w.put_datum(lmdb_key(i, str(i)), array_to_datum(images[i], label=i))
        text = _data_net(db, "crop_size: 5 mean_value: 120 scale: 0.5")
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
    from test_engine_layers import CONV, INCEPTION, LRN, POOL, _labels_input, _net
    print("torch", torch.__version__, "device", args.device,
          torch.cuda.get_device_name(0) if torch.cuda.is_available() else "", flush=True)
    ok = True
    labels = {"label": np.array([0, 2, 1, 2], np.float32)}
    inception = _net(INCEPTION, (4, 3, 17, 17), force_backward=True,
                     extra_inputs=_labels_input((4,)))
    ok &= compare("inception TRAIN", inception, 0, args.device, labels)
    ok &= compare("inception TEST", _net(INCEPTION, (4, 3, 17, 17), force_backward=False,
                                         extra_inputs=_labels_input((4,))), 1, args.device, labels)
    for v, spec in CONV.items():
        shape = (2, 6, 9, 9) if v == "group" else (2, 3, 9, 9)
        body = (f'layer {{ name: "c" type: "Convolution" bottom: "data" top: "c" '
                f'convolution_param {{ {spec.replace("group: 3", "group: 2")} }} }}')
        ok &= compare(f"conv {v}", _net(body, shape), 1, args.device)
    for v, (method, spec, shape) in POOL.items():
        body = (f'layer {{ name: "p" type: "Pooling" bottom: "data" top: "p" '
                f'pooling_param {{ pool: {method} {spec} }} }}')
        ok &= compare(f"pool {v}", _net(body, shape), 1, args.device)
    for v, spec in LRN.items():
        body = f'layer {{ name: "n" type: "LRN" bottom: "data" top: "n" lrn_param {{ {spec} }} }}'
        ok &= compare(f"lrn {v}", _net(body, (2, 7, 6, 5)), 1, args.device)
    bn = ('layer { name: "bn" type: "BatchNorm" bottom: "data" top: "bn" }\n'
          'layer { name: "sc" type: "Scale" bottom: "bn" top: "bn" '
          'scale_param { bias_term: true } }')
    ok &= compare("batchnorm TRAIN", _net(bn, (3, 4, 5, 5)), 0, args.device)
    ok &= coherence(args.device)
    ok &= data_layer(args.device)
    if not args.no_bench and args.device.startswith("cuda"):
        bench(args.device, args.iterations)
    print("ALL OK" if ok else "SOME CHECKS FAILED", flush=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
