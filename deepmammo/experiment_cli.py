"""`deepmammo experiment CONFIG [key=value ...]`: one row of the paper's tables, as a run."""
from deepmammo.experiment import load_config, prepare_run, train


def register_experiment(subparsers):
    """Add the `experiment` subcommand to the `deepmammo` parser."""
    p = subparsers.add_parser(
        "experiment", help="train one experiment of the paper from its config",
        description="Merge configs/defaults.yaml, CONFIG and key=value overrides; resolve epochs "
                    "into iterations for the dataset's LMDB; write the resolved solver, "
                    "train_val, config and provenance into runs/<experiment>/<timestamp>/; "
                    "then train there (unless --dry-run). A key that is a solver field "
                    "(base_lr=1e-4, max_iter=100) overrides the solver file.")
    p.add_argument("config", help="experiment config, e.g. configs/googlenet-deeper.yaml")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides, e.g. epochs=2 dataset=data/datasets/large-aug")
    p.add_argument("--engine", choices=("torch", "caffe"),
                   help="torch: deepmammo's engine (default); caffe: real BVLC Caffe")
    p.add_argument("--device", choices=("cpu", "cuda"), help="where to train (default cpu)")
    p.add_argument("--dry-run", action="store_true",
                   help="write the resolved run folder and stop before training")
    p.set_defaults(func=run_experiment)
    return p


def run_experiment(args):
    overrides = list(args.overrides)
    if args.engine:
        overrides.append(("engine", args.engine))
    if args.device:
        overrides.append(("device", args.device))
    # ExperimentError is a ValueError: the command prints it without a traceback.
    config = load_config(args.config, overrides)
    run = prepare_run(config)
    how = run.resolution
    print(f"run folder: {run.folder}")
    print(f"  {how['train_records']} training records at batch {how['train_batch']}: "
          f"{how['iterations_per_epoch']:.2f} iterations per epoch")
    print(f"  solver: {run.solver_path}")
    if run.from_scratch:
        print("  FROM_SCRATCH: no ImageNet weights; every output of this run is marked so")
    if args.dry_run:
        return 0
    found = train(run)
    print(f"snapshots in {run.folder}: {', '.join(found) if found else 'none'}")
    return 0
