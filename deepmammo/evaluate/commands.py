"""`deepmammo eval`: every snapshot of a run on a validation or test LMDB; `deepmammo eval-run`:
a run folder on its dataset's validation then test LMDBs, or on another archive's splits (see
cli.py)."""
import os

from deepmammo.engine import add_engine_argument, add_precision_argument
from deepmammo.evaluate.metrics import METRIC_NAMES
from deepmammo.prep.split import SPLITS


def register(subparsers):
    """Add this stage's subcommands to the `deepmammo` parser."""
    p = subparsers.add_parser(
        "eval", help="evaluate snapshots on an LMDB: metrics, patient-bootstrap CIs, predictions",
        description="Evaluate every snapshot on one LMDB (decisions at argmax, as in the paper). "
                    "For a test set, pass the validation results.json: the snapshot chosen on "
                    "validation is marked, and --threshold val applies validation thresholds.")
    p.add_argument("--model", required=True, help="deploy prototxt")
    p.add_argument("--snapshots", required=True, nargs="+",
                   help="caffemodel files or glob patterns (quote them), e.g. "
                        "'runs/x/*_iter_*.caffemodel'")
    p.add_argument("--lmdb", required=True, help="validation or test LMDB folder")
    mean = p.add_mutually_exclusive_group()
    mean.add_argument("--mean", help="mean.binaryproto of the training set (as mean_file)")
    mean.add_argument("--mean-value", type=float, nargs="+", help="per-channel mean (BGR)")
    p.add_argument("--scale", type=float, help="transform_param scale (default 1)")
    p.add_argument("--train-val", help="train_val prototxt: take mean, scale and crop from its "
                                       "TEST Data layer (what --mean/--scale do not set)")
    p.add_argument("--out", required=True, help="results.json to write")
    p.add_argument("--manifest", help="dataset manifest.csv (default: beside the LMDB)")
    p.add_argument("--crops", help="crops.csv, for patient ids the manifest lacks (default: "
                                   "found from the dataset's build.json)")
    p.add_argument("--split", choices=SPLITS,
                   help="which split the LMDB is (default: from the manifest or folder name)")
    add_engine_argument(p, help="our engine (torch) or real BVLC pycaffe (caffe)")
    p.add_argument("--gpu", type=int, help="GPU id (default: CPU)")
    add_precision_argument(p)
    p.add_argument("--tta", choices=("none", "mirror"), default="none",
                   help="test-time augmentation: average with the mirror image")
    p.add_argument("--val-results", help="validation results.json: selection and thresholds")
    p.add_argument("--threshold", choices=("argmax", "val"), default="argmax",
                   help="also score at the threshold fitted on validation (needs --val-results)")
    p.add_argument("--select-by", nargs="+", choices=METRIC_NAMES,
                   help="validation metrics that choose the snapshot, in order (default: "
                        "accuracy recall; a test evaluation takes what --val-results recorded)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap replicates (0: none)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--output", help="probability blob (default: 'prob' or the only output)")
    p.set_defaults(func=run_eval)

    q = subparsers.add_parser(
        "eval-run", help="evaluate a run folder on validation, then on test with validation's "
                         "choice (or on another archive's splits)",
        description="Every snapshot of RUN (RUN/*_iter_*.caffemodel, scored with "
                    "RUN/deploy.prototxt and the mean, scale and crop of "
                    "RUN/train_val.prototxt) on DATASET/val_lmdb -> RUN/eval/val.json, then "
                    "on DATASET/test_lmdb with the snapshot chosen on validation and the "
                    "thresholds fitted there -> RUN/eval/test.json: two `deepmammo eval` "
                    "calls, as `deepmammo experiment --evaluate` makes after training. With "
                    "--external NAME, DATASET is another archive's: each of --splits is "
                    "scored with RUN's validation choice -> RUN/eval/external-NAME-SPLIT.json.")
    q.add_argument("run", metavar="RUN", help="run folder (runs/<experiment>/latest or "
                                              "runs/<experiment>/<timestamp>)")
    q.add_argument("--dataset", help="dataset folder holding val_lmdb and test_lmdb (default: "
                                     "the run's own, from RUN/config.yaml)")
    add_engine_argument(q, help="our engine (torch) or real BVLC pycaffe (caffe)")
    q.add_argument("--gpu", type=int, help="GPU id (default: CPU)")
    add_precision_argument(q)
    q.add_argument("--select-by", nargs="+", choices=METRIC_NAMES,
                   help="validation metrics that choose the snapshot, in order (default: "
                        "accuracy recall)")
    q.add_argument("--external", metavar="NAME",
                   help="DATASET is another archive's: score its --splits into "
                        "RUN/eval/external-NAME-SPLIT.json")
    q.add_argument("--splits", nargs="+", choices=SPLITS, default=["test"],
                   help="with --external: the splits to score (default: test)")
    q.set_defaults(func=run_eval_run)


def run_eval(args):
    from deepmammo.evaluate.snapshots import evaluate
    results = evaluate(
        args.model, args.snapshots, args.lmdb, args.out, mean_path=args.mean,
        mean_value=args.mean_value, scale=args.scale, engine=args.engine,
        tta=None if args.tta == "none" else args.tta, manifest_path=args.manifest,
        val_results=args.val_results,
        threshold="val" if args.threshold == "val" else None,
        criteria=tuple(args.select_by) if args.select_by else None, n_boot=args.bootstrap, seed=args.seed,
        batch_size=args.batch_size, output=args.output, split=args.split, gpu=args.gpu,
        crops_path=args.crops, train_val=args.train_val, precision=args.precision)
    print(summary_table(results))
    return 0


def run_eval_run(args):
    from deepmammo.evaluate.runs import evaluate_external, evaluate_run
    dataset = args.dataset or _run_dataset(args.run)
    def show(results):
        print(summary_table(results), flush=True)

    common = {"engine": args.engine, "gpu": args.gpu, "precision": args.precision,
              "on_result": show}
    if args.external:
        if args.select_by:
            raise ValueError("--select-by: an external evaluation takes the choice RUN's "
                             "validation made")
        evaluate_external(args.run, dataset, args.external, args.splits, **common)
    else:
        evaluate_run(args.run, dataset, select_by=args.select_by, **common)
    return 0


def _run_dataset(run):
    """The dataset a run trained on, from its config.yaml."""
    import yaml
    path = os.path.join(run, "config.yaml")
    try:
        with open(path, encoding="utf-8") as f:
            dataset = (yaml.safe_load(f) or {}).get("dataset")
    except FileNotFoundError:
        dataset = None
    if not dataset:
        raise ValueError(f"{run}: no dataset named in {path}; give --dataset")
    return dataset


def summary_table(results):
    """A short text table of the results (a Results record), one snapshot a line."""
    names = [e.name for e in results.snapshots]
    title = "snapshot (%s)" % results.split
    width = max([len(title)] + [len(n) for n in names])  # names are never cut
    lines = ["%-*s %6s %6s %6s %6s %6s" % (width, title, "acc", "prec", "recall", "auc", "n")]
    selected = results.selected
    for name, e in zip(names, results.snapshots):
        m = e.metrics
        auc = "%.3f" % m["roc_auc"] if m["roc_auc"] is not None else "-"
        lines.append("%-*s %6.3f %6.3f %6.3f %6s %6d%s" % (
            width, name, m["accuracy"], m["precision"], m["recall"], auc, m["n"],
            "  <- chosen on validation" if name == selected.get("snapshot") else ""))
    if selected:
        lines.append("chosen on validation by %s: %s" % (", ".join(selected["criteria"]),
                                                         selected["snapshot"]))
    return "\n".join(lines)
