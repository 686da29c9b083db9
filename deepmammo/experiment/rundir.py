"""The run folder: a self-contained record of one training run.

    runs/<experiment>/<timestamp>[-from-scratch][-seed<N>]/
      solver.prototxt      the solver with max_iter, snapshot, stepsize, test_iter,
                           test_interval, net, snapshot_prefix, random_seed, solver_mode set
      train_val.prototxt   the net with its Data layers pointed at the dataset's folder
      deploy.prototxt      the deploy net, copied, for evaluation
      config.yaml          the merged config, exactly as used (rerunnable)
      provenance.json      how the run was made (deepmammo.provenance), plus the resolution
      train.log            the training log in Caffe's format, train_log.csv beside it
      <experiment>_iter_N.caffemodel / .solverstate   snapshots at the quarter points
      eval/val.json, eval/test.json                  every snapshot evaluated

runs/<experiment>/latest names the newest run that trained (a dry run leaves it alone).
Nothing in prototxt/, solvers/ or configs/ is modified.
"""
import contextlib
import datetime
import json
import logging
import os

import yaml

from deepmammo.atomic import write_text
from deepmammo.caffe.formats.prototxt import PrototxtError, read_net, read_solver, to_text
from deepmammo.experiment import resolve
from deepmammo.experiment.config import ExperimentError
from deepmammo.experiment.weights import find_weights, weights_sha1
from deepmammo.provenance import provenance

log = logging.getLogger(__name__)

FROM_SCRATCH_NOTE = ("FROM_SCRATCH: trained without the ImageNet weights this experiment "
                     "fine-tunes; not the paper's setting.")


class Run:
    """A prepared run folder: its paths and what was resolved."""

    def __init__(self, folder, config, solver_path, train_val_path, deploy_path, weights,
                 from_scratch, resolution, snapshot_prefix):
        self.folder = folder
        self.config = config
        self.solver_path = solver_path
        self.train_val_path = train_val_path
        self.deploy_path = deploy_path
        self.weights = weights
        self.from_scratch = from_scratch
        self.resolution = resolution
        self.snapshot_prefix = snapshot_prefix

    @property
    def log_path(self):
        return os.path.join(self.folder, "train.log")

    @property
    def dataset(self):
        return self.config["dataset"]

    def snapshots(self):
        """The run's snapshot files (names), by iteration."""
        from deepmammo.evaluate.runinfo import snapshot_iteration
        folder = os.path.dirname(self.snapshot_prefix)
        stem = os.path.basename(self.snapshot_prefix) + "_iter_"
        found = [f for f in os.listdir(folder)
                 if f.startswith(stem) and snapshot_iteration(f) is not None]
        return sorted(found, key=snapshot_iteration)

    def __repr__(self):
        return f"Run({self.folder})"


def timestamp():
    return datetime.datetime.now().strftime("%Y%m%d-%H%M%S")


def new_run_folder(runs_dir, experiment, stem):
    """runs/<experiment>/<stem>, with -2, -3 ... when that name is taken."""
    base = os.path.join(runs_dir, experiment)
    folder, k = os.path.join(base, stem), 1
    while os.path.exists(folder):
        k += 1
        folder = os.path.join(base, f"{stem}-{k}")
    os.makedirs(folder)
    return folder


def point_latest(folder):
    """runs/<experiment>/latest -> `folder` (a relative link, replaced atomically)."""
    link = os.path.join(os.path.dirname(folder), "latest")
    tmp = f"{link}.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    try:
        os.symlink(os.path.basename(folder), tmp)
        os.replace(tmp, link)
    except OSError as exc:  # e.g. a file system without links: the run itself is complete
        log.warning("could not point %s at %s: %s", link, folder, exc)


def _header(lines):
    return "".join(f"# {line}\n" for line in lines)


def _run_stem(config, from_scratch, stamp=None):
    stem = stamp or timestamp()
    if from_scratch:
        stem += "-from-scratch"
    if config.get("repeat_group"):
        stem += f"-seed{config['seed']}"  # data seeds of a group: -2, -3 (data_seed recorded)
    if config.get("dry_run"):
        stem += "-dry-run"
    return stem


def prepare_run(config, check_sha1=True, dry_run=False, stamp=None):
    """Resolve the config against its dataset and weights and write the run folder.

    A dry run writes the same folder (named ...-dry-run) but never moves `latest`.
    """
    if not config.get("dataset"):
        raise ExperimentError(f"{config['config_file']}: dataset is not set: pass dataset="
                              "FOLDER (the make target passes the variant it builds)")
    train_val_src, solver_src = config["train_val"], config["solver"]
    try:
        net = read_net(train_val_src)
        solver = read_solver(solver_src)
    except (PrototxtError, FileNotFoundError) as exc:
        raise ExperimentError(str(exc)) from None
    if config.get("deploy") and not os.path.isfile(config["deploy"]):
        raise ExperimentError(f"deploy {config['deploy']}: no such prototxt file")
    layers = resolve.data_layers(net, train_val_src)
    train_batch = config.get("batch_size") or layers["TRAIN"].data_param.batch_size
    test_batch = config.get("test_batch_size") or (
        layers["TEST"].data_param.batch_size if "TEST" in layers else None)

    paths = resolve.dataset_paths(config["dataset"], net, train_val_src)
    resolve.check_dataset(config["dataset"], paths, config)
    train_records, val_records = resolve.count_dataset(paths)
    if test_batch and 0 < val_records < test_batch and not config.get("test_batch_size"):
        # a TEST batch larger than the validation set would count records twice (the Data
        # layer wraps around): test the whole set in one batch instead
        test_batch = val_records
        config = dict(config, test_batch_size=val_records)

    weights, from_scratch = find_weights(config, check_sha1=check_sha1)
    config = dict(config, from_scratch=from_scratch)
    resolved, how = resolve.resolve_solver(solver, config, train_records, val_records,
                                           train_batch, test_batch)

    folder = new_run_folder(config["runs_dir"], config["experiment"],
                            _run_stem(dict(config, dry_run=dry_run), from_scratch, stamp))
    name = config["experiment"] + ("-from-scratch" if from_scratch else "")
    train_val_path = os.path.join(folder, "train_val.prototxt")
    solver_path = os.path.join(folder, "solver.prototxt")
    deploy_path = os.path.join(folder, "deploy.prototxt") if config.get("deploy") else None
    snapshot_prefix = os.path.join(os.path.abspath(folder), name)
    resolved.net = os.path.abspath(train_val_path)
    resolved.snapshot_prefix = snapshot_prefix

    mark = [FROM_SCRATCH_NOTE] if from_scratch else []
    write_text(train_val_path, _header(
        [f"Resolved by `deepmammo experiment` ({config['experiment']}) from {train_val_src}:",
         f"Data layers read {config['dataset']}."] + mark)
        + to_text(resolve.resolve_net(net, paths, config.get("batch_size"),
                                      config.get("test_batch_size"))))
    write_text(solver_path, _header(
        [f"Resolved by `deepmammo experiment` ({config['experiment']}) from {solver_src}",
         f"for {train_records} training records at batch {train_batch}:"]
        + [f"  {k}: {v}" for k, v in how.items() if k in resolve.RESOLVED_FIELDS] + mark)
        + to_text(resolved))
    if deploy_path:
        with open(config["deploy"], "r", encoding="utf-8") as f:
            text = f.read()
        write_text(deploy_path, _header(
            [f"Copied by `deepmammo experiment` ({config['experiment']}) from "
             f"{config['deploy']}."] + mark) + text)
    write_text(os.path.join(folder, "config.yaml"), _header(mark) + yaml.safe_dump(
        config, sort_keys=False, default_flow_style=False))
    if from_scratch:
        write_text(os.path.join(folder, "FROM_SCRATCH"), FROM_SCRATCH_NOTE + "\n")

    inputs = [train_val_src, solver_src] + [p for e in paths.values()
                                            for k, p in e.items() if k == "mean_file"]
    inputs += [p for p in (config.get("deploy"), os.path.join(config["dataset"], "build.json"))
               if p]
    record = provenance(config=config, seed=config.get("seed"), inputs=inputs)
    record.update({
        "experiment": config["experiment"],
        "seed": config.get("seed"),
        "data_seed": config.get("data_seed"),
        "repeat_group": config.get("repeat_group"),
        "dry_run": bool(dry_run),
        "from_scratch": from_scratch,
        "weights": {"path": weights, "sha1": weights_sha1(weights)},
        "dataset": {"folder": config["dataset"], "train_records": train_records,
                    "val_records": val_records},
        "resolution": how,
        "solver": {k: resolve.solver_value(resolved, k) for k in resolve.RESOLVED_FIELDS},
    })
    write_text(os.path.join(folder, "provenance.json"), json.dumps(record, indent=2) + "\n")
    if not dry_run:
        point_latest(folder)
    return Run(folder, config, solver_path, train_val_path, deploy_path, weights, from_scratch,
               how, snapshot_prefix)


def update_provenance(run, key, value):
    """Add one section to the run's provenance.json (rewritten under a temporary name)."""
    path = os.path.join(run.folder, "provenance.json")
    with open(path, "r", encoding="utf-8") as f:
        record = json.load(f)
    record[key] = value
    write_text(path, json.dumps(record, indent=2) + "\n")
