"""Experiments: a small YAML config over configs/defaults.yaml, overridden again from the
command line with `key=value` (nanoGPT's way), resolved into a self-contained run folder.

The committed solver files count iterations at the paper's scale; the paper counts epochs.
A run turns epochs into iterations for the LMDB it actually trains on and the batch size of
its train_val prototxt, and writes what it resolved into `runs/<experiment>/<timestamp>/`:

    solver.prototxt      the solver with max_iter, snapshot, stepsize, test_iter,
                         test_interval, net, snapshot_prefix, random_seed, solver_mode set
    train_val.prototxt   the net with its Data layers pointed at the dataset's folder
    deploy.prototxt      the deploy net, copied, for evaluation
    config.yaml          the merged config, exactly as used
    provenance.json      how the run was made (deepmammo.provenance), plus the resolution
    train.log            everything the engine printed while training
    <experiment>_iter_N.caffemodel / .solverstate   four snapshots at the quarter points

Nothing in prototxt/, solvers/ or configs/ is modified.
"""
import contextlib
import copy
import datetime
import fractions
import json
import logging
import math
import os
import sys
import threading

import yaml

from deepmammo.atomic import write_text
from deepmammo.caffe.formats.lmdb_io import count_records
from deepmammo.caffe.formats.prototxt import PrototxtError, read_net, read_solver, to_text
from deepmammo.caffe.proto import caffe_pb2 as pb
from deepmammo.provenance import file_sha1, provenance

log = logging.getLogger(__name__)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULTS_NAME = "defaults.yaml"

# The ImageNet weights the paper fine-tunes, as BVLC published them (models/*/readme.md).
KNOWN_WEIGHTS = {
    "bvlc_alexnet.caffemodel": {
        "sha1": "9116a64c0fbe4459d18f4bb6b56d647b63920377",
        "what": "BVLC AlexNet trained on ImageNet (233 MB)",
        "url": "http://dl.caffe.berkeleyvision.org/bvlc_alexnet.caffemodel",
    },
    "bvlc_googlenet.caffemodel": {
        "sha1": "405fc5acd08a3bb12de8ee5e23a96bec22f08204",
        "what": "BVLC GoogLeNet trained on ImageNet (51 MB)",
        "url": "http://dl.caffe.berkeleyvision.org/bvlc_googlenet.caffemodel",
    },
}

ENGINES = ("torch", "caffe")
DEVICES = ("cpu", "cuda")
ON_MISSING_WEIGHTS = ("error", "scratch")
# Solver fields the run itself decides; a config cannot set them (it names the files instead).
RUNNER_FIELDS = ("net", "snapshot_prefix")


class ExperimentError(ValueError):
    """A config, dataset or weights problem, with what to do about it."""


# ------------------------------------------------------------------------------------ config
def parse_value(text):
    """A command-line value: int, float (1e-4 included, which YAML 1.1 reads as a string),
    true/false/null, a YAML list or mapping, else the string itself."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_override(item):
    """`key=value` -> (key, value); `solver_params.base_lr=0.01` keeps its dotted key."""
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ExperimentError(f"override {item!r}: expected key=value (e.g. epochs=2)")
    return key, parse_value(value)


def _read_yaml(path):
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise ExperimentError(f"{path}: no such config file") from None
    except yaml.YAMLError as exc:
        raise ExperimentError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ExperimentError(f"{path}: a config is a mapping of key: value, "
                              f"not a {type(data).__name__}")
    return data


def defaults_path(config_path):
    """configs/defaults.yaml beside the config, else the repository's."""
    for folder in (os.path.dirname(os.path.abspath(config_path)),
                   os.path.join(REPO_ROOT, "configs")):
        path = os.path.join(folder, DEFAULTS_NAME)
        if os.path.isfile(path):
            return path
    raise ExperimentError(f"{config_path}: no {DEFAULTS_NAME} beside it nor in "
                          f"{os.path.join(REPO_ROOT, 'configs')}")


def _is_solver_field(name):
    return name in pb.SolverParameter.DESCRIPTOR.fields_by_name


def _merge(config, key, value, source, known):
    """Set one key; a SolverParameter field name that is not a config key goes to
    solver_params, so `base_lr=1e-4` on the command line just works."""
    if key.startswith("solver_params."):
        field = key.split(".", 1)[1]
        config["solver_params"][field] = value
    elif key in known:
        if key == "solver_params":
            if not isinstance(value, dict):
                raise ExperimentError(f"{source}: solver_params must be a mapping of solver "
                                      "field: value")
            config["solver_params"].update(value)
        else:
            config[key] = value
    elif _is_solver_field(key):
        config["solver_params"][key] = value
    else:
        raise ExperimentError(f"{source}: unknown key {key!r}; config keys are "
                              f"{', '.join(sorted(known))}, or any solver field "
                              "(e.g. base_lr, weight_decay)")


def load_config(path, overrides=(), environ=None):
    """The merged config: defaults.yaml < the experiment's YAML < environment < overrides.

    The environment variables WEIGHTS_DIR and FROM_SCRATCH (the Makefile's) stand for
    `weights_dir` and `from_scratch`; command-line overrides beat them.
    """
    environ = os.environ if environ is None else environ
    dpath = defaults_path(path)
    defaults = _read_yaml(dpath)
    known = set(defaults)
    config = copy.deepcopy(defaults)
    config["solver_params"] = dict(config.get("solver_params") or {})
    if os.path.abspath(dpath) != os.path.abspath(path):
        for key, value in _read_yaml(path).items():
            if key == "config_file":  # a run's saved config.yaml names its origin: rerunnable
                continue
            _merge(config, key, value, path, known)
    if environ.get("WEIGHTS_DIR"):
        config["weights_dir"] = environ["WEIGHTS_DIR"]
    if environ.get("FROM_SCRATCH", "").strip() not in ("", "0"):
        config["from_scratch"] = True
    for item in overrides:
        key, value = parse_override(item) if isinstance(item, str) else item
        _merge(config, key, value, "command line", known)
    if not config.get("experiment"):
        config["experiment"] = os.path.splitext(os.path.basename(path))[0]
    config["config_file"] = os.fspath(path)
    validate_config(config, f"{path} (with overrides)" if overrides else os.fspath(path))
    return config


def _positive(config, key, source, kind=(int, float), allow_none=True):
    value = config.get(key)
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, kind) or value <= 0:
        raise ExperimentError(f"{source}: {key} must be a positive number"
                              f"{' or null' if allow_none else ''}, got {value!r}")


def validate_config(config, source):
    for key in ("train_val", "solver", "dataset"):
        if not config.get(key):
            raise ExperimentError(f"{source}: {key} is not set")
    for key in ("epochs", "stepsize_epochs", "test_interval_epochs"):
        _positive(config, key, source)
    _positive(config, "snapshots", source, kind=int, allow_none=False)
    for key in ("batch_size", "test_batch_size"):
        _positive(config, key, source, kind=int)
    for key, allowed in (("engine", ENGINES), ("device", DEVICES),
                         ("if_weights_missing", ON_MISSING_WEIGHTS)):
        if config.get(key) not in allowed:
            raise ExperimentError(f"{source}: {key} must be one of {', '.join(allowed)}, "
                                  f"got {config.get(key)!r}")
    for field in config["solver_params"]:
        if field in RUNNER_FIELDS:
            raise ExperimentError(f"{source}: the run sets the solver's {field} itself "
                                  "(choose the net with train_val=, the folder with runs_dir=)")
        if not _is_solver_field(field):
            raise ExperimentError(f"{source}: solver_params.{field}: SolverParameter has no "
                                  "such field")


# ------------------------------------------------------------------------------ nets, data
def data_layers(net, path):
    """{'TRAIN': layer, 'TEST': layer}: the Data layers of a train_val net."""
    found = {}
    for layer in net.layer:
        if layer.type != "Data":
            continue
        phases = [pb.Phase.Name(rule.phase) for rule in layer.include if rule.HasField("phase")]
        for phase in phases or ["TRAIN", "TEST"]:
            found.setdefault(phase, layer)
    if "TRAIN" not in found:
        raise ExperimentError(f"{path}: no Data layer for the TRAIN phase")
    return found


def dataset_paths(dataset, net, net_path):
    """Where each Data layer of `net` reads from once pointed at `dataset`: the committed
    files read data/datasets/<variant>/{train_lmdb,val_lmdb,mean.binaryproto}; a run keeps
    the file names and swaps the folder."""
    paths = {}
    for phase, layer in data_layers(net, net_path).items():
        entry = {"source": os.path.join(dataset, os.path.basename(layer.data_param.source))}
        if layer.transform_param.mean_file:
            entry["mean_file"] = os.path.join(
                dataset, os.path.basename(layer.transform_param.mean_file))
        paths[phase] = entry
    return paths


def check_dataset(dataset, paths):
    """Every file the Data layers need must be there, else say how to build it."""
    missing = sorted({p for entry in paths.values() for p in entry.values()
                      if not os.path.exists(p)})
    if missing:
        variant = os.path.basename(os.path.normpath(dataset))
        raise ExperimentError(
            f"dataset {dataset} is missing {', '.join(missing)}; build it first "
            f"(`make data-{variant}` builds data/datasets/<cases>/{variant} and the experiment "
            f"targets pass it as dataset=; or deepmammo lmdb ... --out {dataset}) or point "
            "dataset= at a folder that holds train_lmdb, val_lmdb and mean.binaryproto")


def resolve_net(net, paths, batch_size=None, test_batch_size=None):
    """A copy of `net` reading the dataset's files, with optional batch sizes."""
    net = copy.deepcopy(net)
    for layer in net.layer:
        if layer.type != "Data":
            continue
        phases = [pb.Phase.Name(r.phase) for r in layer.include if r.HasField("phase")] \
            or ["TRAIN"]
        phase = phases[0]
        entry = paths[phase]
        layer.data_param.source = os.path.abspath(entry["source"])
        if "mean_file" in entry:
            layer.transform_param.mean_file = os.path.abspath(entry["mean_file"])
        size = batch_size if phase == "TRAIN" else test_batch_size
        if size:
            layer.data_param.batch_size = int(size)
    return net


# --------------------------------------------------------------------------------- solver
def iterations(epochs, records, batch):
    """Iterations that cover `epochs` passes over `records` at `batch` (rounded up)."""
    exact = fractions.Fraction(str(epochs)) * records / batch
    return max(1, math.ceil(exact))


def _round_iterations(epochs, records, batch):
    exact = fractions.Fraction(str(epochs)) * records / batch
    return max(1, int(exact + fractions.Fraction(1, 2)))


def _is_repeated(field):
    # protobuf 5.28+ has is_repeated (and 7 dropped label); older versions only label
    if hasattr(field, "is_repeated"):
        return field.is_repeated
    return field.label == field.LABEL_REPEATED


def set_solver_field(solver, name, value, source="config"):
    """Set any scalar or repeated SolverParameter field from a YAML value, type-checked."""
    field = pb.SolverParameter.DESCRIPTOR.fields_by_name.get(name)
    if field is None:
        raise ExperimentError(f"{source}: SolverParameter has no field {name!r}")
    if field.type == field.TYPE_MESSAGE:
        raise ExperimentError(f"{source}: solver field {name} is a message; edit the solver "
                              "file for it")

    def convert(v):
        try:
            if field.type == field.TYPE_ENUM:
                if isinstance(v, str):
                    return field.enum_type.values_by_name[v].number
                return field.enum_type.values_by_number[int(v)].number
            if field.type == field.TYPE_BOOL:
                if not isinstance(v, bool):
                    raise TypeError
                return v
            if field.type == field.TYPE_STRING:
                if not isinstance(v, str):
                    raise TypeError
                return v
            if field.cpp_type in (field.CPPTYPE_FLOAT, field.CPPTYPE_DOUBLE):
                if isinstance(v, bool):
                    raise TypeError
                return float(v)
            if isinstance(v, bool) or (isinstance(v, float) and not v.is_integer()):
                raise TypeError
            return int(v)
        except (KeyError, TypeError, ValueError):
            raise ExperimentError(f"{source}: solver field {name}: {v!r} is not a valid "
                                  f"value") from None

    if _is_repeated(field):
        values = value if isinstance(value, (list, tuple)) else [value]
        del getattr(solver, name)[:]
        getattr(solver, name).extend(convert(v) for v in values)
    else:
        setattr(solver, name, convert(value))


def resolve_solver(solver, config, train_records, val_records, train_batch, test_batch):
    """The solver for this run and a record of how each number was reached.

    Epochs become iterations for this dataset: max_iter covers `epochs` (rounded up to a
    multiple of `snapshots`, so the snapshots fall exactly on the quarter points), snapshot is
    max_iter / snapshots, stepsize and test_interval come from their epoch counts, test_iter
    covers the validation set once. A field named in solver_params wins over all of it.
    """
    solver = copy.deepcopy(solver)
    explicit = config.get("solver_params") or {}
    n = int(config["snapshots"])
    how = {"train_records": train_records, "val_records": val_records,
           "train_batch": train_batch, "test_batch": test_batch,
           "iterations_per_epoch": train_records / train_batch}

    if "max_iter" in explicit:  # the quarter snapshots follow an explicit max_iter too
        set_solver_field(solver, "max_iter", explicit["max_iter"], "solver_params.max_iter")
    elif config.get("epochs") is not None:
        raw = iterations(config["epochs"], train_records, train_batch)
        solver.max_iter = n * math.ceil(raw / n)
        how["max_iter"] = (f"{config['epochs']} epochs x {train_records} / {train_batch} "
                           f"-> {raw}, rounded up to a multiple of {n}")
    if "snapshot" not in explicit:
        solver.snapshot = max(1, math.ceil(solver.max_iter / n))
        how["snapshot"] = f"max_iter {solver.max_iter} / {n} snapshots"
    if config.get("stepsize_epochs") is not None and "stepsize" not in explicit:
        solver.stepsize = _round_iterations(config["stepsize_epochs"], train_records,
                                            train_batch)
        how["stepsize"] = f"{config['stepsize_epochs']} epochs"
    if config.get("test_interval_epochs") is not None and "test_interval" not in explicit:
        solver.test_interval = _round_iterations(config["test_interval_epochs"],
                                                 train_records, train_batch)
        how["test_interval"] = f"{config['test_interval_epochs']} epochs"
    if val_records and test_batch and "test_iter" not in explicit:
        del solver.test_iter[:]
        solver.test_iter.append(math.ceil(val_records / test_batch))
        how["test_iter"] = f"{val_records} validation records / batch {test_batch}, rounded up"
    for name, value in explicit.items():
        set_solver_field(solver, name, value, source=f"solver_params.{name}")
        how[name] = "set by the config"
    if config.get("seed") is not None and "random_seed" not in explicit:
        solver.random_seed = int(config["seed"])
    if "solver_mode" not in explicit:
        solver.solver_mode = pb.SolverParameter.GPU if config["device"] == "cuda" \
            else pb.SolverParameter.CPU
    return solver, how


# -------------------------------------------------------------------------------- weights
def weights_message(name, weights_dir, reason):
    info = KNOWN_WEIGHTS.get(name, {})
    lines = [f"ImageNet weights {reason}: {os.path.join(weights_dir, name)}."]
    if info:
        lines.append(f"Put {name} ({info['what']}, sha1 {info['sha1']}) into {weights_dir}/ "
                     f"(BVLC publishes it at {info['url']}),")
    else:
        lines.append(f"Put {name} into {weights_dir}/,")
    lines.append("or name the folder that holds it with WEIGHTS_DIR=... (weights_dir=...), or "
                 "train without ImageNet weights with FROM_SCRATCH=1 (from_scratch=true); "
                 "such a run is marked FROM_SCRATCH in every output.")
    return "\n".join(lines)


def find_weights(config, check_sha1=True):
    """(path or None, from_scratch flag) for this run's initial weights.

    A net with no `weights` (LevyNet) starts from its fillers by design and is not marked.
    """
    name = config.get("weights")
    if not name:
        return None, False
    if config.get("from_scratch"):
        return None, True
    weights_dir = config.get("weights_dir") or "weights"
    path = os.path.join(weights_dir, name)
    if not os.path.isfile(path):
        message = weights_message(name, weights_dir, "not found")
        if config.get("if_weights_missing") == "scratch":
            log.warning("%s\nGoing on FROM_SCRATCH.", message)
            return None, True
        raise ExperimentError(message)
    expected = KNOWN_WEIGHTS.get(name, {}).get("sha1")
    if check_sha1 and expected:
        actual = file_sha1(path)
        if actual != expected:
            raise ExperimentError(weights_message(
                name, weights_dir, f"have the wrong sha1 ({actual}, expected {expected})"))
    return path, False


# -------------------------------------------------------------------------------- the run
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


def _timestamp():
    return datetime.datetime.now().strftime("%Y%m%d-%H%M%S")


def _new_run_folder(runs_dir, experiment, from_scratch):
    base = os.path.join(runs_dir, experiment)
    stem = _timestamp() + ("-from-scratch" if from_scratch else "")
    folder, k = os.path.join(base, stem), 1
    while os.path.exists(folder):
        k += 1
        folder = os.path.join(base, f"{stem}-{k}")
    os.makedirs(folder)
    return folder


def _point_latest(folder):
    """runs/<experiment>/latest -> the newest run (a relative link, replaced atomically)."""
    link = os.path.join(os.path.dirname(folder), "latest")
    tmp = link + ".tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    try:
        os.symlink(os.path.basename(folder), tmp)
        os.replace(tmp, link)
    except OSError as exc:  # e.g. a file system without links: the run itself is complete
        log.warning("could not point %s at %s: %s", link, folder, exc)


def _header(lines):
    return "".join(f"# {line}\n" for line in lines)


def prepare_run(config, check_sha1=True):
    """Resolve the config against its dataset and weights and write the run folder."""
    train_val_src, solver_src = config["train_val"], config["solver"]
    try:
        net = read_net(train_val_src)
        solver = read_solver(solver_src)
    except (PrototxtError, FileNotFoundError) as exc:
        raise ExperimentError(str(exc)) from None
    if config.get("deploy") and not os.path.isfile(config["deploy"]):
        raise ExperimentError(f"deploy {config['deploy']}: no such prototxt file")
    layers = data_layers(net, train_val_src)
    train_batch = config.get("batch_size") or layers["TRAIN"].data_param.batch_size
    test_batch = config.get("test_batch_size") or (
        layers["TEST"].data_param.batch_size if "TEST" in layers else None)

    paths = dataset_paths(config["dataset"], net, train_val_src)
    check_dataset(config["dataset"], paths)
    train_records = count_records(paths["TRAIN"]["source"])
    val_records = count_records(paths["TEST"]["source"]) if "TEST" in paths else 0
    if train_records == 0:
        raise ExperimentError(f"{paths['TRAIN']['source']}: the training LMDB is empty")
    if test_batch and 0 < val_records < test_batch and not config.get("test_batch_size"):
        # a TEST batch larger than the validation set would count records twice (the Data
        # layer wraps around): test the whole set in one batch instead
        test_batch = val_records
        config = dict(config, test_batch_size=val_records)

    weights, from_scratch = find_weights(config, check_sha1=check_sha1)
    config = dict(config, from_scratch=from_scratch)
    resolved, how = resolve_solver(solver, config, train_records, val_records, train_batch,
                                   test_batch)

    folder = _new_run_folder(config["runs_dir"], config["experiment"], from_scratch)
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
        + to_text(resolve_net(net, paths, config.get("batch_size"),
                              config.get("test_batch_size"))))
    write_text(solver_path, _header(
        [f"Resolved by `deepmammo experiment` ({config['experiment']}) from {solver_src}",
         f"for {train_records} training records at batch {train_batch}:"]
        + [f"  {k}: {v}" for k, v in how.items() if k in RESOLVED_FIELDS] + mark)
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
        "from_scratch": from_scratch,
        "weights": {"path": weights, "sha1": KNOWN_WEIGHTS.get(
            os.path.basename(weights), {}).get("sha1") if weights else None},
        "dataset": {"folder": config["dataset"], "train_records": train_records,
                    "val_records": val_records},
        "resolution": how,
        "solver": {k: _solver_value(resolved, k) for k in RESOLVED_FIELDS},
    })
    write_text(os.path.join(folder, "provenance.json"), json.dumps(record, indent=2) + "\n")
    _point_latest(folder)
    return Run(folder, config, solver_path, train_val_path, deploy_path, weights, from_scratch,
               how, snapshot_prefix)


RESOLVED_FIELDS = ("max_iter", "snapshot", "stepsize", "test_iter", "test_interval",
                   "base_lr", "lr_policy", "weight_decay", "type", "random_seed")


def _solver_value(solver, name):
    value = getattr(solver, name)
    return list(value) if name == "test_iter" else value


# ------------------------------------------------------------------------------- training
@contextlib.contextmanager
def tee_stderr(path):
    """Copy everything written to file descriptor 2 (glog, logging, progress bars) into
    `path` while still showing it: real Caffe logs from C++, so sys.stderr is not enough."""
    sys.stderr.flush()
    saved = os.dup(2)
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)

    def pump():
        with open(path, "ab") as out:
            while True:
                chunk = os.read(read_fd, 65536)
                if not chunk:
                    break
                out.write(chunk)
                out.flush()
                os.write(saved, chunk)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's last write end: the pump sees end of file
        thread.join()
        os.close(read_fd)
        os.close(saved)


def train_arguments(run):
    """`deepmammo train` arguments for this run: the solver engine's own command does the
    training (both engines, GPUs, Caffe-format log and CSV, signals)."""
    config = run.config
    argv = ["train", "--solver", run.solver_path, "--engine", config["engine"],
            "--log", os.path.join(run.folder, "train.log")]
    if run.weights:
        argv += ["--weights", run.weights]
    if config["device"] == "cuda":
        if config["engine"] == "caffe":
            raise ExperimentError("the real Caffe built by `make caffe` is CPU-only; use "
                                  "--engine torch for --device cuda")
        argv += ["--gpu", str(config.get("gpu") or "0")]
    return argv


def snapshots(run):
    folder = os.path.dirname(run.snapshot_prefix)
    stem = os.path.basename(run.snapshot_prefix) + "_iter_"
    found = [f for f in os.listdir(folder) if f.startswith(stem) and f.endswith(".caffemodel")]
    return sorted(found, key=lambda f: int(f[len(stem):-len(".caffemodel")]))


def train(run):
    """Train the prepared run (`deepmammo train` on its resolved solver) and record the
    snapshots it left in provenance.json."""
    import argparse

    from deepmammo.caffe.train_cli import register_train

    config = run.config
    parser = argparse.ArgumentParser(prog="deepmammo")
    register_train(parser.add_subparsers(dest="command"))
    args = parser.parse_args(train_arguments(run))
    log.info("experiment %s: training %s with engine %s on %s%s", config["experiment"],
             run.solver_path, config["engine"], config["device"],
             " (FROM_SCRATCH)" if run.from_scratch else "")
    started = datetime.datetime.now(datetime.timezone.utc)
    if config["engine"] == "caffe":
        # real Caffe logs from C++ to stderr: keep a copy as the run's log
        with tee_stderr(args.log):
            args.func(args)
    else:
        args.func(args)  # our engine writes train.log (and train_log.csv) itself
    seconds = (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds()
    found = snapshots(run)
    record_path = os.path.join(run.folder, "provenance.json")
    with open(record_path, "r", encoding="utf-8") as f:
        record = json.load(f)
    record["training"] = {"started": started.isoformat(timespec="seconds"),
                          "seconds": round(seconds, 1), "engine": config["engine"],
                          "device": config["device"], "snapshots": found}
    write_text(record_path, json.dumps(record, indent=2) + "\n")
    return found
