"""Paper-scale timing (`make bench-paper`): each experiment of `make paper`, timed for a slice
and projected to the whole run.

For every experiment config (configs/<name>.yaml, resolved as `deepmammo experiment` resolves
it: epochs -> max_iter, test_interval, test_iter) this times, on a synthetic dataset of the
paper's size (1,456 training crops; 36,400 augmented records, 182 validation and 182 test
records, 3x224x224 uint8, random pixels, mean file), from scratch (no ImageNet weights):

- training: `--iters` solver iterations (Data layer, forward, backward, update) after
  `--warmup` ones, at the config's batch size;
- the tests during training: `--eval-batches` forward passes of the TEST-phase net (Data
  layer from the validation LMDB, the config's test batch);
- evaluation: `deepmammo eval`'s work per snapshot (load the deploy net and the snapshot,
  `--eval-batches` batches through forward_probs).

It prints, per experiment, images/s of each, the GPU memory training took (CUDA), the
iterations of the full run, and the projected minutes: training (max_iter x batch / rate),
the tests (tests x test_iter x test batch / rate) and evaluation (snapshots x {val, test} x
(load + records / rate)); then the total for the paper. The data path is part of every
figure. A slice is short: projections from a few iterations on a shared CPU are rough.

    python scripts/bench_paper.py [--device cpu|cuda] [--gpu N] [--precision fp32|tf32|bf16]
        [--iters N] [--warmup N] [--eval-batches N] [--experiments levynet,...]
        [--data data/bench] [--baseline] [--out bench-paper.json]

--baseline trains as the engine did before (per-blob update, each iteration's loss read back
at once): the "before" of a before/after comparison on the same code.

The synthetic LMDBs are written once (about 5.5 GB at the paper's size) under --data and
reused; --aug-records / --noaug-records / --eval-records change their size.
"""
import argparse
import copy
import json
import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # the repository's deepmammo, when run as a script

from deepmammo import engine  # noqa: E402
from deepmammo import experiment as ex  # noqa: E402
from deepmammo.caffe.formats import binaryproto, datum, lmdb_io, prototxt  # noqa: E402
from deepmammo.caffe.timing import device_name  # noqa: E402
from deepmammo.experiment import resolve  # noqa: E402

AUG_RECORDS, NOAUG_RECORDS, EVAL_RECORDS = 36400, 1456, 182
SIZE = 224
EVAL_BATCH = 32          # deepmammo eval's default --batch-size
SLICES = {"cpu": {"iters": 2, "warmup": 1, "eval_batches": 1},
          "cuda": {"iters": 40, "warmup": 10, "eval_batches": 10}}


# ------------------------------------------------------------------------------ the data

def paper_experiments():
    """The configs that fill the paper's tables and figures (those with `paper:` rows)."""
    from deepmammo.experiment import experiment_configs
    return tuple(name for name, config in experiment_configs(os.path.join(ROOT, "configs"))
                 .items() if config.get("paper"))


def dataset_variant(config):
    """'aug' or 'noaug': which synthetic dataset stands for the config's (its `augment:`, or
    the name of its dataset folder)."""
    if config.get("augment"):
        return "noaug" if config["augment"] == "none" else "aug"
    return "noaug" if "noaug" in os.path.basename(os.path.normpath(config["dataset"])) else "aug"


def ensure_dataset(root, variant, train_records, eval_records, seed=0):
    """root/<variant>/{train,val,test}_lmdb and mean.binaryproto of random 3x224x224 records
    (grey replicated to 3 channels, as `deepmammo lmdb` writes them), written once."""
    from deepmammo.atomic import write_text
    write_mean = binaryproto.write_mean
    folder = os.path.join(root, variant)
    want = {"train": train_records, "val": eval_records, "test": eval_records, "size": SIZE,
            "seed": seed}
    record = os.path.join(folder, "bench.json")
    if os.path.isfile(record):
        with open(record) as f:
            if json.load(f) == want:
                return folder
    os.makedirs(folder, exist_ok=True)
    if os.path.exists(record):
        os.remove(record)      # written last: an interrupted rewrite is not taken as complete
    rng = np.random.RandomState(seed)
    # A pool of distinct images, cycled: random bytes for 36,400 records would take longer
    # than writing them, and the Data layer decodes each record alike whatever it holds.
    pool = [rng.randint(0, 256, (SIZE, SIZE), dtype=np.uint8) for _ in range(64)]
    write_mean(np.broadcast_to(np.mean(pool, axis=0, dtype=np.float64).astype(np.float32),
                               (3, SIZE, SIZE)), os.path.join(folder, "mean.binaryproto"))
    for split in ("train", "val", "test"):
        _write_records(os.path.join(folder, f"{split}_lmdb"), want[split], pool, split)
    write_text(record, json.dumps(want) + "\n")
    return folder


def _write_records(path, n, pool, split):
    from tqdm import tqdm

    values = [[datum.datum_to_bytes(datum.array_to_datum(
        np.broadcast_to(img, (3, SIZE, SIZE)), label=label)) for img in pool] for label in (0, 1)]
    with lmdb_io.LMDBWriter(path) as db:
        for i in tqdm(range(n), desc=f"bench {os.path.basename(os.path.dirname(path))} "
                                     f"{split}", unit="rec", leave=False):
            label = i % 2
            db.put(lmdb_io.lmdb_key(i, f"bench{i}"), values[label][(i // 2) % len(pool)])


# ------------------------------------------------------------------------------ the plan

def plan(name, data_root, records):
    """The experiment as `deepmammo experiment` would run it on the synthetic dataset:
    config, resolved train_val and solver, batch sizes and record counts."""
    read_net, read_solver = prototxt.read_net, prototxt.read_solver
    path = os.path.join(ROOT, "configs", f"{name}.yaml")
    variant = dataset_variant(ex.load_config(path))
    dataset = os.path.join(data_root, variant)
    config = ex.load_config(path, [("dataset", dataset)])
    net = read_net(os.path.join(ROOT, config["train_val"]))
    layers = resolve.data_layers(net, config["train_val"])
    train_batch = config.get("batch_size") or layers["TRAIN"].data_param.batch_size
    test_batch = config.get("test_batch_size") or layers["TEST"].data_param.batch_size
    paths = resolve.dataset_paths(dataset, net, config["train_val"])
    train_records, eval_records = records[variant], records["eval"]
    solver, _ = resolve.resolve_solver(read_solver(os.path.join(ROOT, config["solver"])),
                                       config, train_records, eval_records, train_batch,
                                       test_batch)
    return {"name": name, "config": config, "variant": variant, "dataset": dataset,
            "train_val": resolve.resolve_net(net, paths, config.get("batch_size"),
                                             config.get("test_batch_size")),
            "solver": solver, "train_batch": train_batch, "test_batch": test_batch,
            "train_records": train_records, "eval_records": eval_records,
            "deploy": os.path.join(ROOT, config["deploy"])}


def tests_during_training(solver):
    """How many times the solver tests in a full run (Caffe: every test_interval iterations,
    at 0 only with test_initialization, and after the last iteration when it falls on one)."""
    if not solver.test_interval or not len(solver.test_iter):
        return 0
    return solver.max_iter // solver.test_interval + (1 if solver.test_initialization else 0)


# ------------------------------------------------------------------------------ timing

def _sync(device):
    if device.type == "cuda":
        import torch
        torch.cuda.synchronize(device)


def time_training(p, folder, iters, warmup, baseline=False):
    """(train images/s, peak GPU bytes or None, the trained weights' path) for a slice of
    training."""
    import torch

    from deepmammo.caffe.solvers import create_solver
    from deepmammo.caffe.train_log import TrainLog
    to_text = prototxt.to_text
    net_path = os.path.join(folder, f"{p['name']}_train_val.prototxt")
    with open(net_path, "w") as f:
        f.write(to_text(p["train_val"]))
    param = copy.deepcopy(p["solver"])
    param.net = net_path
    # Tests are timed on their own; no snapshots inside the slice.
    del param.test_iter[:]
    param.test_interval = 0
    param.snapshot = 0
    param.snapshot_after_train = False
    param.snapshot_prefix = os.path.join(folder, p["name"])
    param.ClearField("weights")      # from scratch: no ImageNet weights here
    solver = create_solver(param, source=net_path, log=TrainLog(echo=False))
    solver.progress = False
    if baseline:           # the reference path: per-blob update, each loss read back at once
        solver.fused_update = solver.defer_losses = False
    device = solver.net.device
    try:
        solver.step(warmup)
        _sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        solver.step(iters)
        _sync(device)
        seconds = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
        weights = os.path.join(folder, f"{p['name']}.caffemodel")
        solver.net.save(weights)
    finally:
        solver.close()
    return iters * p["train_batch"] / seconds, peak, weights


def time_test_phase(p, folder, batches):
    """Images/s of the TEST-phase train_val net (what the solver's tests run)."""
    import deepmammo.caffe as caffe
    to_text = prototxt.to_text
    net_path = os.path.join(folder, f"{p['name']}_test.prototxt")
    with open(net_path, "w") as f:
        f.write(to_text(p["train_val"]))
    net = caffe.Net(net_path, caffe.TEST)
    try:
        net.forward()
        _sync(net.device)
        start = time.perf_counter()
        for _ in range(batches):
            net.forward()
        _sync(net.device)
        seconds = time.perf_counter() - start
    finally:
        net.close()
    return batches * p["test_batch"] / seconds


def time_evaluation(p, weights, batches):
    """(seconds to load the deploy net and a snapshot, images/s of forward_probs), as
    `deepmammo eval` spends them per snapshot."""
    import deepmammo.caffe as caffe
    from deepmammo.evaluate.predict import forward_probs
    read_mean = binaryproto.read_mean
    mean = read_mean(os.path.join(p["dataset"], "mean.binaryproto"))
    rng = np.random.RandomState(1)
    images = rng.randint(0, 256, (batches * EVAL_BATCH, 3, SIZE, SIZE)).astype(np.uint8)
    start = time.perf_counter()
    net = caffe.Net(p["deploy"], weights, caffe.TEST)
    load = time.perf_counter() - start
    forward_probs(net, images[:EVAL_BATCH], mean=mean, batch_size=EVAL_BATCH)   # warm-up
    _sync(net.device)
    start = time.perf_counter()
    forward_probs(net, images, mean=mean, batch_size=EVAL_BATCH)
    _sync(net.device)
    rate = len(images) / (time.perf_counter() - start)
    return load, rate


def project(p, train_rate, test_rate, load_s, eval_rate):
    """Projected seconds of the full experiment: training, its tests, the evaluation."""
    s = p["solver"]
    train = s.max_iter * p["train_batch"] / train_rate
    n_tests = tests_during_training(s)
    tests = n_tests * (s.test_iter[0] if len(s.test_iter) else 0) * p["test_batch"] / test_rate
    snapshots = int(p["config"]["snapshots"])
    evaluation = snapshots * 2 * (load_s + p["eval_records"] / eval_rate)
    return {"max_iter": s.max_iter, "tests": n_tests, "snapshots": snapshots,
            "train_s": train, "tests_s": tests, "eval_s": evaluation,
            "total_s": train + tests + evaluation}


def bench_experiment(name, args, data_root, records, folder):
    import torch
    p = plan(name, data_root, records)
    print(f"{name}: training slice ({args.warmup} + {args.iters} iterations at batch "
          f"{p['train_batch']}) ...", file=sys.stderr, flush=True)
    train_rate, peak, weights = time_training(p, folder, args.iters, args.warmup,
                                              args.baseline)
    print(f"{name}: tests and evaluation ({args.eval_batches} batches) ...", file=sys.stderr,
          flush=True)
    test_rate = time_test_phase(p, folder, args.eval_batches)
    load_s, eval_rate = time_evaluation(p, weights, args.eval_batches)
    if torch.cuda.is_available() and args.device == "cuda":
        torch.cuda.empty_cache()
    row = {"experiment": name, "net": p["train_val"].name, "dataset": p["variant"],
           "train_records": p["train_records"], "batch": p["train_batch"],
           "test_batch": p["test_batch"], "epochs": p["config"].get("epochs"),
           "train_img_s": train_rate, "test_img_s": test_rate, "eval_img_s": eval_rate,
           "eval_load_s": load_s, "gpu_peak_bytes": peak}
    row.update(project(p, train_rate, test_rate, load_s, eval_rate))
    return row


# ------------------------------------------------------------------------------ report

def format_table(rows, device, args):
    how = " (baseline: per-blob update, losses read back every iteration)" \
        if args.baseline else ""
    lines = [f"Paper-scale timing on {device}, precision {args.precision}{how}: "
             f"{args.warmup} + {args.iters} training iterations and {args.eval_batches} "
             "test/eval batches per experiment; minutes projected to the full run.", "",
             "| experiment | batch | records | epochs | iterations | train img/s | test img/s "
             "| eval img/s | GPU GiB | train min | tests min | eval min | total min |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        mem = f"{r['gpu_peak_bytes'] / 2 ** 30:.1f}" if r["gpu_peak_bytes"] else "-"
        lines.append(
            f"| {r['experiment']} | {r['batch']} | {r['train_records']} | {r['epochs']} | "
            f"{r['max_iter']} | {r['train_img_s']:.1f} | {r['test_img_s']:.1f} | "
            f"{r['eval_img_s']:.1f} | {mem} | {r['train_s'] / 60:.1f} | "
            f"{r['tests_s'] / 60:.1f} | {r['eval_s'] / 60:.1f} | {r['total_s'] / 60:.1f} |")
    total = sum(r["total_s"] for r in rows)
    lines.append(f"| **total** | | | | | | | | | {sum(r['train_s'] for r in rows) / 60:.1f} | "
                 f"{sum(r['tests_s'] for r in rows) / 60:.1f} | "
                 f"{sum(r['eval_s'] for r in rows) / 60:.1f} | **{total / 60:.1f}** |")
    return "\n".join(lines)


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=engine.DEVICES, default="cpu")
    ap.add_argument("--gpu", type=int, default=0, help="CUDA device index (with --device cuda)")
    ap.add_argument("--precision", choices=engine.PRECISIONS, default="fp32")
    ap.add_argument("--iters", type=int, help="timed training iterations (default: 2 on the "
                                              "CPU, 40 on CUDA)")
    ap.add_argument("--warmup", type=int, help="untimed iterations first (1 / 10)")
    ap.add_argument("--eval-batches", type=int, help="timed test and eval batches (1 / 10)")
    ap.add_argument("--experiments", help="comma-separated config names (default: the "
                                           "paper's experiments)")
    ap.add_argument("--data", default=os.path.join(ROOT, "data", "bench"),
                    help="where the synthetic LMDBs are kept (default data/bench)")
    ap.add_argument("--aug-records", type=int, default=AUG_RECORDS)
    ap.add_argument("--noaug-records", type=int, default=NOAUG_RECORDS)
    ap.add_argument("--eval-records", type=int, default=EVAL_RECORDS)
    ap.add_argument("--baseline", action="store_true",
                    help="train without the fused update and the deferred losses (per-blob "
                         "update, each iteration's loss read back): the reference figures")
    ap.add_argument("--out", help="also write the figures as JSON here")
    args = ap.parse_args(argv)
    for key, value in SLICES[args.device].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if min(args.iters, args.eval_batches) < 1 or args.warmup < 0:
        ap.error("--iters and --eval-batches must be at least 1, --warmup at least 0")
    args.experiments = args.experiments or ",".join(paper_experiments())
    unknown = [e for e in args.experiments.split(",")
               if not os.path.isfile(os.path.join(ROOT, "configs", f"{e}.yaml"))]
    if unknown:
        ap.error(f"no config for {', '.join(unknown)} (configs/<name>.yaml)")
    return args


def main(argv=None):
    args = parse_args(argv)
    import torch

    import deepmammo.caffe as caffe
    from deepmammo.caffe import mode
    if args.device == "cuda":
        if not torch.cuda.is_available():
            print("bench_paper: error: --device cuda: no CUDA device is visible to torch",
                  file=sys.stderr)
            return 2
        caffe.set_device(args.gpu)
        caffe.set_mode_gpu()
    try:
        engine.check("torch", args.device, args.precision)
    except engine.EngineError as exc:
        print(f"bench_paper: error: {exc}", file=sys.stderr)
        return 2
    mode.set_precision(args.precision)
    caffe.set_random_seed(1)
    records = {"aug": args.aug_records, "noaug": args.noaug_records, "eval": args.eval_records}
    experiments = args.experiments.split(",")
    variants = set()
    load_config = ex.load_config
    for name in experiments:
        variants.add(dataset_variant(load_config(os.path.join(ROOT, "configs",
                                                              f"{name}.yaml"))))
    for variant in sorted(variants):
        print(f"synthetic dataset {variant} ({records[variant]} training records) in "
              f"{args.data} ...", file=sys.stderr, flush=True)
        ensure_dataset(args.data, variant, records[variant], records["eval"])
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_paper_") as folder:
        for name in experiments:
            rows.append(bench_experiment(name, args, args.data, records, folder))
    device = device_name(args.gpu if args.device == "cuda" else None)
    print(format_table(rows, device, args))
    if args.out:
        from deepmammo.atomic import write_text
        from deepmammo.provenance import provenance
        config = {k: v for k, v in vars(args).items()}
        write_text(args.out, json.dumps({
            "device": device, "precision": args.precision, "baseline": args.baseline,
            "rows": rows,
            "total_minutes": sum(r["total_s"] for r in rows) / 60,
            "provenance": provenance(config=config, seed=1, inputs=[
                os.path.join(ROOT, "configs", f"{e}.yaml") for e in experiments])},
            indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
