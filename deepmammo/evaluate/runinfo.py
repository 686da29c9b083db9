"""What a snapshot's run folder says about it: iteration, experiment, seed, and how far through
training it was (fraction of max_iter, epochs), read from the files the experiment runner writes
(runs/<experiment>/<timestamp>/config.yaml, solver.prototxt, provenance.json).

Repeated runs (one per training seed, optionally per data seed) are ordinary run folders,
runs/<experiment>/<timestamp>-seed<N>/, whose config.yaml and provenance.json carry `seed` (the
training seed), `data_seed` (when the data were re-split; else absent or null) and
`repeat_group` ("<experiment>/<timestamp>", shared by every run of one repeat; absent or null for
a single run). This module is the one reader of those keys."""
import glob
import json
import os
import re

import yaml

SNAPSHOT_RE = re.compile(r"_iter_(\d+)\.caffemodel(?:\.h5)?$")


def snapshot_iteration(path):
    """N of `<prefix>_iter_N.caffemodel`, or None for another name."""
    m = SNAPSHOT_RE.search(os.path.basename(path))
    return int(m.group(1)) if m else None


def expand_snapshots(patterns):
    """Files matching the glob patterns (or plain paths), by iteration then name."""
    if isinstance(patterns, str):
        patterns = [patterns]
    found = set()
    for pattern in patterns:
        matches = glob.glob(pattern)
        if not matches and os.path.isfile(pattern):
            matches = [pattern]
        found.update(m for m in matches if os.path.isfile(m))
    if not found:
        raise FileNotFoundError("no snapshot matches %s" % ", ".join(patterns))
    return sorted(found, key=lambda p: (snapshot_iteration(p) is None,
                                        snapshot_iteration(p) or 0, p))


def find_run_dir(path, levels=3):
    """The nearest folder at or above `path` holding config.yaml or provenance.json."""
    # realpath: runs/<exp>/latest is a link that moves on to the next run; results must name
    # the run folder they came from.
    folder = os.path.dirname(os.path.realpath(path)) if os.path.isfile(path) else \
        os.path.realpath(path)
    for _ in range(levels + 1):
        if any(os.path.isfile(os.path.join(folder, n))
               for n in ("config.yaml", "provenance.json")):
            return folder
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    return None


def resolve_recorded(path, run_dir):
    """A path a run recorded (relative to wherever its command ran: usually the checkout's
    root): as given, else relative to a folder above the run folder. None when not found."""
    if not path:
        return None
    if os.path.exists(path):
        return os.path.abspath(path)
    if os.path.isabs(path):
        return None
    folder = run_dir
    for _ in range(4):
        folder = os.path.dirname(folder)
        candidate = os.path.join(folder, path)
        if os.path.exists(candidate):
            return os.path.abspath(candidate)
    return None


def _solver_field(path, field):
    # A regex keeps this independent of the solver's other fields; solver files are flat.
    with open(path) as f:
        m = re.search(r"^\s*%s\s*:\s*([-+0-9.eE]+)" % field, f.read(), re.M)
    return float(m.group(1)) if m else None


def _find_key(tree, key):
    """The first value of `key` anywhere in nested dicts (configs nest sections freely)."""
    if isinstance(tree, dict):
        if key in tree:
            return tree[key]
        for value in tree.values():
            found = _find_key(value, key)
            if found is not None:
                return found
    return None


def run_info(run_dir):
    """Facts about a run folder; missing files give None fields, never an error."""
    info = {"run_dir": run_dir, "experiment": None, "config": None, "seed": None,
            "data_seed": None, "repeat_group": None,
            "max_iter": None, "epochs": None, "from_scratch": None, "provenance": None,
            "iters_per_epoch": None}
    if not run_dir:
        return info
    config_path = os.path.join(run_dir, "config.yaml")
    if os.path.isfile(config_path):
        with open(config_path) as f:
            config = yaml.safe_load(f) or {}
        if not isinstance(config, dict):
            raise ValueError("%s: expected a mapping at the top" % config_path)
        info["config"] = config
        info["seed"] = _find_key(config, "seed")
        info["epochs"] = _find_key(config, "epochs")
        info["from_scratch"] = _find_key(config, "from_scratch")
        info["experiment"] = _find_key(config, "experiment") or _find_key(config, "name")
    solver_path = os.path.join(run_dir, "solver.prototxt")
    if os.path.isfile(solver_path):
        max_iter = _solver_field(solver_path, "max_iter")
        info["max_iter"] = int(max_iter) if max_iter else None
    prov_path = os.path.join(run_dir, "provenance.json")
    if os.path.isfile(prov_path):
        with open(prov_path) as f:
            info["provenance"] = json.load(f)
    _repeat_keys(info)
    info["iters_per_epoch"] = _iters_per_epoch(run_dir, info["config"] or {})
    if not info["experiment"]:
        # runs/<experiment>/<timestamp>/: the folder above the timestamp names the experiment.
        info["experiment"] = os.path.basename(os.path.dirname(run_dir.rstrip("/")))
    return info


def _repeat_keys(info):
    """seed, data_seed and repeat_group at the top of config.yaml, else of provenance.json (or
    the config it records); `seed` keeps the value found anywhere in the config otherwise."""
    config = info["config"] if isinstance(info["config"], dict) else {}
    prov = info["provenance"] if isinstance(info["provenance"], dict) else {}
    prov_config = prov.get("config") if isinstance(prov.get("config"), dict) else {}
    for key in ("seed", "data_seed", "repeat_group"):
        for source in (config, prov, prov_config):
            if source.get(key) is not None:
                info[key] = source[key]
                break
    if info["repeat_group"] is not None:
        info["repeat_group"] = str(info["repeat_group"])


def seed_label(info):
    """How tables name a run of a repeat: 's<seed>', with '/d<data_seed>' when re-split."""
    label = "s%s" % info.get("seed") if info.get("seed") is not None else "s?"
    if info.get("data_seed") is not None:
        label += "/d%s" % info["data_seed"]
    return label


def _iters_per_epoch(run_dir, config):
    """Training records / TRAIN batch size, from the run's train_val prototxt (the copy in the
    run folder, else the config's) and its training LMDB; None when either is unavailable."""
    candidates = [os.path.join(run_dir, "train_val.prototxt")]
    if isinstance(config.get("train_val"), str):
        candidates.append(config["train_val"])
    path = next((c for c in candidates if os.path.isfile(c)), None)
    if path is None:
        return None
    try:
        from deepmammo.caffe.formats.lmdb_io import count_records
        from deepmammo.caffe.formats.prototxt import read_net
        from deepmammo.caffe.netstate import data_layers
        from deepmammo.caffe.proto import caffe_pb2
        for layer in data_layers(read_net(path), caffe_pb2.TRAIN):
            source, batch = layer.data_param.source, layer.data_param.batch_size
            for folder in (source, os.path.join(run_dir, source)):
                if batch and os.path.isdir(folder):
                    return count_records(folder) / float(batch)
    except (OSError, ValueError):
        return None  # a run folder we cannot read fully still reports what it can
    return None


def training_progress(iteration, info):
    """(fraction of max_iter, epochs) at a snapshot; None where the run does not say.

    Epochs come from the training set size and batch when known (iteration / iterations per
    epoch), else from the fraction of max_iter times the config's epochs.
    """
    if iteration is None:
        return None, None
    fraction = iteration / float(info["max_iter"]) if info.get("max_iter") else None
    if info.get("iters_per_epoch"):
        return fraction, iteration / info["iters_per_epoch"]
    epochs = info.get("epochs")
    try:
        epoch = fraction * float(epochs) if epochs is not None and fraction is not None \
            else None
    except (TypeError, ValueError):
        epoch = None
    return fraction, epoch
