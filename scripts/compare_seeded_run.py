"""Train a net from scratch in our engine and in real BVLC Caffe with the same random_seed and
print, iteration by iteration, how far the two runs are apart (docs/random-streams.md).

    python scripts/compare_seeded_run.py --dataset DIR [--net prototxt/levynet/train_val.prototxt]
        [--solver solvers/levynet.prototxt] [--iters 30] [--seed 1] [--batch 32]
        [--engines torch,caffe] [--set 'type: "SGD" momentum: 0.9'] [--out compare.json]

DIR holds what `deepmammo lmdb` writes (train_lmdb, val_lmdb, mean.binaryproto); the net's
Data layers are pointed at it. Before the first step each engine tests once (all of val_lmdb,
in batches), then both step one iteration at a time; each line gives both train losses, their
relative difference and the relative difference of all parameters together
(||ours - Caffe|| / ||Caffe||, L2; the JSON also has the worst single blob's). Also the seconds per iteration of each
engine. `--set` overrides solver fields (protobuf text), e.g. another update rule.
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

from deepmammo.caffe.formats.lmdb_io import count_records  # noqa: E402
from deepmammo.caffe.formats.prototxt import read_net, to_text  # noqa: E402
from deepmammo.caffe.solver import read_solver_param  # noqa: E402


def _prepare(args, folder):
    """The net with its Data layers on the dataset, and a solver that only steps."""
    net = read_net(os.path.join(ROOT, args.net))
    val_batch = None
    for layer in net.layer:
        if layer.type != "Data":
            continue
        train = any(rule.phase == 0 for rule in layer.include)
        name = "train_lmdb" if train else "val_lmdb"
        layer.data_param.source = os.path.join(args.dataset, name)
        if layer.transform_param.HasField("mean_file"):
            layer.transform_param.mean_file = os.path.join(args.dataset, "mean.binaryproto")
        if train and args.batch:
            layer.data_param.batch_size = args.batch
        if not train:
            val_batch = layer.data_param.batch_size
    net_path = os.path.join(folder, "train_val.prototxt")
    with open(net_path, "w") as fh:
        fh.write(to_text(net))
    solver, _ = read_solver_param(os.path.join(ROOT, args.solver))
    solver.net = net_path
    solver.max_iter = args.iters
    solver.random_seed = args.seed
    solver.test_interval = args.iters + 1  # tests are run here, before the first step
    solver.test_initialization = False
    solver.display = 0
    solver.snapshot = 0
    solver.snapshot_after_train = False
    solver.snapshot_prefix = os.path.join(folder, "snap")
    solver.solver_mode = solver.CPU
    if args.set:
        from google.protobuf import text_format
        text_format.Merge(args.set, solver)
    solver_path = os.path.join(folder, "solver.prototxt")
    with open(solver_path, "w") as fh:
        fh.write(to_text(solver))
    n_val = count_records(os.path.join(args.dataset, "val_lmdb"))
    return solver_path, max(1, -(-n_val // val_batch)) if val_batch else 0


def _params(net):
    return [np.array(b.data, copy=True) for blobs in net.params.values() for b in blobs]


def _test_loss(solver, iterations, share):
    net = solver.test_nets[0]
    share(net, solver.net)
    losses = []
    for _ in range(iterations):
        net.forward()
        losses.append(float(net.blobs["loss"].data))
    return float(np.mean(losses)) if losses else None


def _run(engine, solver_path, iters, test_iters):
    if engine == "caffe":
        from deepmammo.caffe.real import import_caffe
        caffe = import_caffe()
        caffe.set_mode_cpu()
        solver = caffe.get_solver(solver_path)
        share = lambda test, train: test.share_with(train)  # noqa: E731
    else:
        from deepmammo.caffe.solvers import get_solver
        solver = get_solver(solver_path)
        share = lambda test, train: test.share_trained_params(train)  # noqa: E731
    out = {"test_loss_0": _test_loss(solver, test_iters, share), "loss": [], "params": [],
           "seconds": []}
    for _ in range(iters):
        start = time.perf_counter()
        solver.step(1)
        out["seconds"].append(time.perf_counter() - start)
        out["loss"].append(float(solver.net.blobs["loss"].data))
        out["params"].append(_params(solver.net))
    return out


def _rel(a, b):
    b = b.reshape(a.shape)
    return float(np.linalg.norm(a - b) / max(float(np.linalg.norm(b)), 1e-30))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", required=True)
    p.add_argument("--net", default="prototxt/levynet/train_val.prototxt")
    p.add_argument("--solver", default="solvers/levynet.prototxt")
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--engines", default="torch,caffe")
    p.add_argument("--set", help="solver fields to override, in protobuf text format")
    p.add_argument("--out")
    args = p.parse_args(argv)
    engines = args.engines.split(",")
    with tempfile.TemporaryDirectory() as folder:
        solver_path, test_iters = _prepare(args, folder)
        runs = {e: _run(e, solver_path, args.iters, test_iters) for e in engines}
    for e in engines:
        secs = runs[e]["seconds"][1:] or runs[e]["seconds"]
        print(f"{e}: iteration-0 test loss {runs[e]['test_loss_0']:.6g}, "
              f"{np.median(secs):.3f} s per iteration (median)")
    report = {"args": vars(args), "engines": engines,
              "test_loss_0": {e: runs[e]["test_loss_0"] for e in engines},
              "seconds_median": {e: float(np.median(runs[e]["seconds"][1:]
                                                    or runs[e]["seconds"])) for e in engines}}
    if len(engines) == 2:
        a, b = (runs[e] for e in engines)
        rows = []
        print(f"{'iter':>4} {engines[0] + ' loss':>14} {engines[1] + ' loss':>14} "
              f"{'loss rel':>10} {'params rel':>10}")
        for i in range(args.iters):
            loss_rel = abs(a["loss"][i] - b["loss"][i]) / max(abs(b["loss"][i]), 1e-30)
            params_rel = _rel(np.concatenate([x.ravel() for x in a["params"][i]]),
                              np.concatenate([y.ravel() for y in b["params"][i]]))
            worst = max(_rel(x, y) for x, y in zip(a["params"][i], b["params"][i]))
            rows.append({"iter": i + 1, "loss": [a["loss"][i], b["loss"][i]],
                         "loss_rel": loss_rel, "params_rel": params_rel,
                         "worst_blob_rel": worst})
            print(f"{i + 1:>4} {a['loss'][i]:>14.7g} {b['loss'][i]:>14.7g} "
                  f"{loss_rel:>10.2e} {params_rel:>10.2e}")
        report["iterations"] = rows
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(report, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
