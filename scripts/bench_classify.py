"""Classify benchmark: `deepmammo classify` throughput (masses/s from full mammograms, and from
crops) beside `deepmammo eval`'s records/s, on the same net, the same masses, the same device.

    python scripts/bench_classify.py                  # LevyNet, 60 patients, 1200x800 images
    python scripts/bench_classify.py --quick          # a small run to check the script
    python scripts/bench_classify.py --net googlenet_deeper --size 4696x3024

A synthetic DDSM archive is written, ingested, cropped (proportional:2), split and built into
LMDBs (augment none: one record per mass), and a run folder is prepared for the net
(`deepmammo experiment --dry-run`) with a snapshot of random weights (not timed). Then, timed:
  eval        every LMDB (train, val, test) evaluated by `deepmammo eval`'s code: records/s
  crops       `classify` of the crops folder: PNG read, grey mapping, resize, forward
  mammograms  `classify` of the cases table: .LJPEG decode, mask, crop, grey, resize, forward
The three run in turn, --rounds times; the best of each is reported. The last line is a
JSON summary.
"""
import argparse
import glob
import json
import logging
import os
import shutil
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

from deepmammo.engine import DEVICES  # noqa: E402


def build_world(folder, patients, size, seed=0):
    from deepmammo.prep.build import build_lmdbs
    from deepmammo.prep.crops import build_crops, read_crops
    from deepmammo.prep.split import make_split, write_split
    from deepmammo.sources.ingestion import ingest
    from deepmammo.sources.synth import make_archive
    archive = os.path.join(folder, "synth")
    make_archive("ddsm", archive, patients=patients, seed=seed, size=size)
    cases = os.path.join(folder, "cases", "cases.csv")
    ingest("ddsm", archive, cases)
    crops = os.path.join(folder, "crops")
    build_crops(cases, crops, padding="proportional:2")
    splits = os.path.join(folder, "splits.csv")
    assignment = make_split(read_crops(crops), seed=seed)
    write_split(read_crops(crops), assignment, splits, {"seed": seed})
    dataset = os.path.join(folder, "dataset")
    build_lmdbs(crops, splits, dataset, augment="none", seed=seed)
    return cases, crops, dataset


def make_run(folder, net, dataset):
    """A dry-run folder of the net on the dataset, with a snapshot of random weights."""
    import deepmammo.caffe as caffe
    from deepmammo.experiment.config import load_config
    from deepmammo.experiment.rundir import prepare_run
    configs = {"levynet": "levynet", "levynet_code": "levynet-code",
               "alexnet_finetune": "alexnet-noaug-large", "googlenet_shallow":
               "googlenet-shallow", "googlenet_deeper": "googlenet-deeper"}
    config = load_config(os.path.join(ROOT, "configs", configs[net] + ".yaml"),
                         [f"dataset={dataset}", f"runs_dir={folder}", "from_scratch=true",
                          "augment=none"], environ={})
    cwd = os.getcwd()
    os.chdir(ROOT)   # the configs name prototxt/ and solvers/ from the checkout's root
    try:
        run = prepare_run(config, dry_run=True)
    finally:
        os.chdir(cwd)
    model = caffe.Net(run.deploy_path, caffe.TEST)
    rng = np.random.RandomState(0)
    for name, blobs in model.params.items():
        if model.layer_dict[name].type == "BatchNorm":
            blobs[1].data[...] = 1.0
            blobs[2].data[...] = 1.0
            continue
        for b in blobs:
            fan = int(np.prod(b.data.shape[1:])) if b.data.ndim > 1 else 100
            b.data[...] = rng.normal(0, 1.0 / np.sqrt(fan), b.data.shape)
    model.save(os.path.join(run.folder, "bench_iter_1.caffemodel"))
    return run.folder


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--net", default="levynet")
    parser.add_argument("--patients", type=int, default=60)
    parser.add_argument("--size", default="1200x800", help="ROWSxCOLS of each mammogram")
    parser.add_argument("--device", choices=DEVICES, default="cpu")
    parser.add_argument("--workers", type=int, help="classify's preparing processes")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (best reported)")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.quick:
        args.patients, args.size = 12, "600x400"
    size = tuple(int(v) for v in args.size.lower().split("x"))
    from deepmammo.classify import inputs
    from deepmammo.classify.classify import classify
    from deepmammo.classify.model import TrainedRun
    from deepmammo.evaluate.snapshots import evaluate
    gpu = 0 if args.device == "cuda" else None
    folder = tempfile.mkdtemp(prefix="bench_classify_")
    try:
        cases, crops, dataset = build_world(folder, args.patients, size)
        run_dir = make_run(folder, args.net, dataset)
        run = TrainedRun(run_dir)
        snapshot = run.snapshot
        lmdbs = [os.path.join(dataset, f"{s}_lmdb") for s in ("train", "val", "test")]

        def do_eval():
            for i, lmdb in enumerate(lmdbs):
                evaluate(run.deploy, [snapshot], lmdb, os.path.join(folder, f"e{i}.json"),
                         train_val=run.train_val, n_boot=0, gpu=gpu)

        n = len(glob.glob(os.path.join(crops, "images", "*.png")))
        runs = {"eval": do_eval,
                "crops": lambda: classify(run, inputs.crops_tasks(crops, run.recipe),
                                          gpu=gpu, workers=args.workers)[0],
                "full": lambda: classify(run, inputs.cases_tasks(cases), gpu=gpu,
                                         workers=args.workers)[0]}
        best, out = {}, {}
        # interleaved rounds, the best of each: a busy machine slows all three alike
        for _ in range(args.rounds):
            for name, fn in runs.items():
                t0 = time.perf_counter()
                out[name] = fn()
                best[name] = min(best.get(name, float("inf")), time.perf_counter() - t0)
        t_eval, t_crops, t_full = best["eval"], best["crops"], best["full"]
        rows, rows_full = out["crops"], out["full"]
        assert len(rows) == len(rows_full) == n, (len(rows), len(rows_full), n)
        assert not any(r["error"] for r in rows + rows_full)
        summary = {"net": args.net, "device": args.device, "masses": n,
                   "image_size": list(size),
                   "eval_records_per_s": round(n / t_eval, 2),
                   "classify_crops_masses_per_s": round(n / t_crops, 2),
                   "classify_mammograms_masses_per_s": round(n / t_full, 2),
                   "crops_vs_eval": round(t_eval / t_crops, 3)}
        print(f"classify benchmark: {args.net} on {args.device}, {n} masses "
              f"({size[0]}x{size[1]} mammograms)")
        print(f"  eval (LMDB records)           {summary['eval_records_per_s']:8.2f} "
              "records/s")
        print(f"  classify from crops           {summary['classify_crops_masses_per_s']:8.2f} "
              f"masses/s  ({summary['crops_vs_eval']:.2f}x eval)")
        print(f"  classify from mammograms      "
              f"{summary['classify_mammograms_masses_per_s']:8.2f} masses/s")
        print(json.dumps(summary))
        return summary
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
