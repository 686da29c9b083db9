"""This stage's subcommands for the `deepmammo` command (see deepmammo/cli.py):
`deepmammo experiment CONFIG [key=value ...]`, `deepmammo experiments` and
`deepmammo experiment-info CONFIG [--field F ...]` (what the Makefile asks of a config).
argparse lives here; the work is done by the library functions of this package."""
import os
import sys

from deepmammo.engine import add_device_argument, add_engine_argument
from deepmammo.evaluate.metrics import METRIC_NAMES
from deepmammo.experiment.config import INFO_FIELDS


def register(subparsers):
    """Add the `experiment` and `experiments` subcommands to the `deepmammo` parser."""
    p = subparsers.add_parser(
        "experiment", help="train (and evaluate) one experiment from its config",
        description="Merge configs/defaults.yaml, CONFIG and key=value overrides; resolve epochs "
                    "into iterations for the dataset's LMDB; write the resolved solver, "
                    "train_val, config and provenance into runs/<experiment>/<timestamp>/; "
                    "then train there (unless --dry-run) and with --evaluate score every "
                    "snapshot on validation and test. A key that is a solver field "
                    "(base_lr=1e-4, max_iter=100) overrides the solver file; seeds=1,2,3 makes "
                    "one run per training seed.")
    p.add_argument("config", help="experiment config, e.g. configs/googlenet-deeper.yaml")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides, e.g. epochs=2 dataset=data/datasets/x/seed0/...")
    add_engine_argument(p, default=None,
                        help="torch: deepmammo's engine (default); caffe: real BVLC Caffe")
    add_device_argument(p, help="where to train (default cpu)")
    p.add_argument("--dry-run", action="store_true",
                   help="write the resolved run folder (named ...-dry-run) and stop before "
                        "training; runs/<experiment>/latest is left alone")
    p.add_argument("--evaluate", action="store_true",
                   help="after training, evaluate every snapshot on val and test "
                        "(eval/val.json, eval/test.json in the run folder)")
    p.add_argument("--select-by", nargs="+", choices=METRIC_NAMES,
                   help="validation metrics that choose the snapshot (default: accuracy, "
                        "recall)")
    p.set_defaults(func=cmd_experiment)

    q = subparsers.add_parser(
        "experiments", help="list the experiments (configs/*.yaml) and their dataset variants")
    q.add_argument("--configs", help="configs folder (default ./configs, else the repo's)")
    q.set_defaults(func=cmd_experiments)

    r = subparsers.add_parser(
        "experiment-info", help="what a config says of its dataset variant, dataset and runs "
                                "(the Makefile asks this)",
        description="Merge configs/defaults.yaml, CONFIG and key=value overrides and print "
                    f"its {', '.join(INFO_FIELDS)}: with --field, each value asked for on a "
                    "line of its own; without, every field as `field: value`. variant is the "
                    "dataset's folder name (<padding without the colon>-<augment>); runs is "
                    "<runs_dir>/<experiment>, latest the link to its newest run. --make "
                    "writes them as make variables, FIELD.NAME := VALUE (NAME: the config "
                    "file's name), for the Makefile to include.")
    r.add_argument("config", help="experiment config, e.g. configs/levynet.yaml")
    r.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    r.add_argument("--field", action="append", choices=INFO_FIELDS,
                   help="print this field's value (repeatable; default: every field)")
    r.add_argument("--aug", help="the Makefile's AUG: replaces the augmentation of an "
                                 "experiment that augments (code: the authors')")
    r.add_argument("--datasets", metavar="DIR",
                   help="datasets folder: dataset is DIR/<variant>, as the Makefile lays "
                        "datasets out (default: the config's dataset)")
    r.add_argument("--make", action="store_true",
                   help="print FIELD.NAME := VALUE lines for make's include")
    r.set_defaults(func=cmd_experiment_info)
    return p


def cmd_experiment(args):
    from deepmammo.experiment import load_config, run_experiment
    overrides = list(args.overrides)
    if args.engine:
        overrides.append(("engine", args.engine))
    if args.device:
        overrides.append(("device", args.device))
    # ExperimentError is a ValueError: the command prints it without a traceback.
    config = load_config(args.config, overrides)
    def done(run):
        found = run.snapshots()
        print(f"snapshots in {run.folder}: {', '.join(found) if found else 'none'}")
        if args.evaluate:
            _print_evaluation(run)
        sys.stdout.flush()  # in order with the log lines on stderr, also through a pipe

    run_experiment(config, dry_run=args.dry_run, evaluate_runs=args.evaluate,
                   select_by=args.select_by, on_run=_print_run, on_done=done)
    return 0


def _print_evaluation(run):
    from deepmammo.evaluate.commands import summary_table
    from deepmammo.evaluate.records import Results
    from deepmammo.evaluate.runs import evaluation_paths
    for path in evaluation_paths(run.folder):
        print(summary_table(Results.load(path)))


def _print_run(run):
    how = run.resolution
    print(f"run folder: {run.folder}" + (f" (seed {run.config['seed']}, group "
                                          f"{run.config['repeat_group']})"
                                          if run.config.get("repeat_group") else ""))
    print(f"  {how['train_records']} training records at batch {how['train_batch']}: "
          f"{how['iterations_per_epoch']:.2f} iterations per epoch")
    print(f"  solver: {run.solver_path}")
    if run.from_scratch:
        print("  FROM_SCRATCH: no ImageNet weights; every output of this run is marked so")
    sys.stdout.flush()


def cmd_experiments(args):
    from deepmammo.experiment import experiment_configs, load_config, variant_name
    from deepmammo.experiment.config import configs_dir
    folder = configs_dir(args.configs)
    for name in experiment_configs(folder):
        config = load_config(os.path.join(folder, name + ".yaml"), environ={})
        print(f"{name:24s} {variant_name(config):22s} {config.get('description') or ''}")
    return 0


def cmd_experiment_info(args):
    from deepmammo.experiment.config import experiment_info, load_config, with_augmentation
    config = with_augmentation(load_config(args.config, args.overrides), args.aug)
    info = experiment_info(config, args.datasets)
    fields = args.field or INFO_FIELDS
    if args.make:
        name = os.path.splitext(os.path.basename(args.config))[0]
        for field in fields:
            print(f"{field}.{name} := {_make_text(info[field])}")
    elif args.field:
        for field in fields:
            print(info[field])
    else:
        for field in fields:
            print(f"{field}: {info[field]}")
    return 0


def _make_text(value):
    """A value as make reads it literally on the right of :=."""
    return str(value).replace("$", "$$").replace("#", "\\#")
