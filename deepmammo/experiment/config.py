"""Experiment configs: one YAML file per experiment over configs/defaults.yaml, overridden
again from the command line with `key=value` (nanoGPT's way).

A config says everything about its experiment: nets and solver, the dataset variant
(`padding` and `augment`), the ImageNet weights by name (configs/weights.yaml holds their
sha1 and URL), epochs and seeds, and the rows and figures of the paper it feeds (`paper:`).
Every experiment is `configs/<name>.yaml`; the Makefile, the report and the tests list
experiments from that folder (`experiment_names`).
"""
import copy
import os
import re

import yaml

from deepmammo.caffe.proto import caffe_pb2 as pb
from deepmammo.engine import DEVICES, ENGINES, PRECISIONS, EngineError, check_combination
from deepmammo.textfile import TextFileError, read_text

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULTS_NAME = "defaults.yaml"
WEIGHTS_NAME = "weights.yaml"
# configs/ files that are not experiments.
NOT_EXPERIMENTS = (DEFAULTS_NAME, WEIGHTS_NAME)

ON_MISSING_WEIGHTS = ("error", "scratch")
AUGMENTATIONS = ("none", "paper", "code")
# Solver fields the run itself decides; a config cannot set them (it names the files instead).
RUNNER_FIELDS = ("net", "snapshot_prefix")
# `fixed:N` or `proportional:K` (paper 3.1), as `deepmammo crops --padding` takes it.
PADDING_RE = re.compile(r"^(fixed|proportional):\d+(\.\d+)?$")

# The type each key must have (None is allowed where the default is None). Keys whose value
# is a path or a name are strings; numbers accept ints where floats are expected.
_NUMBER = (int, float)
KEY_TYPES = {
    "experiment": str, "description": str, "train_val": str, "deploy": str, "solver": str,
    "dataset": str, "padding": str, "augment": str,
    "weights": str, "weights_dir": str, "from_scratch": bool, "if_weights_missing": str,
    "epochs": _NUMBER, "snapshots": int, "stepsize_epochs": _NUMBER,
    "test_interval_epochs": _NUMBER, "batch_size": int, "test_batch_size": int,
    "seed": int, "seeds": list, "repeat_group": str, "data_seed": int,
    "engine": str, "device": str, "precision": str, "gpu": (str, int), "runs_dir": str,
    "solver_params": dict, "paper": dict, "figures": list,
}


class ExperimentError(ValueError):
    """A config, dataset or weights problem, with what to do about it."""


def configs_dir(path=None):
    """The configs folder: `path`, else ./configs when run from a checkout, else the repo's."""
    for folder in (path, "configs", os.path.join(REPO_ROOT, "configs")):
        if folder and os.path.isfile(os.path.join(folder, DEFAULTS_NAME)):
            return folder
    raise ExperimentError(f"no configs folder with {DEFAULTS_NAME} (looked in ./configs and "
                          f"{os.path.join(REPO_ROOT, 'configs')})")


def experiment_names(folder=None):
    """Every experiment: the names of configs/<name>.yaml, sorted."""
    folder = configs_dir(folder)
    return sorted(os.path.splitext(n)[0] for n in os.listdir(folder)
                  if n.endswith(".yaml") and n not in NOT_EXPERIMENTS)


def experiment_configs(folder=None):
    """{name: config as written (no defaults merged)} for every experiment config."""
    folder = configs_dir(folder)
    return {name: read_yaml(os.path.join(folder, name + ".yaml"))
            for name in experiment_names(folder)}


# ------------------------------------------------------------------------------- reading
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


def read_yaml(path):
    """A YAML mapping from `path`; every problem is an ExperimentError naming the file."""
    if os.path.isdir(path):
        raise ExperimentError(f"{path}: is a folder, not a config file")
    try:
        text = read_text(path, "config")
    except FileNotFoundError:
        raise ExperimentError(f"{path}: no such config file") from None
    except TextFileError as exc:
        raise ExperimentError(str(exc)) from None
    except OSError as exc:
        raise ExperimentError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ExperimentError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ExperimentError(f"{path}: a config is a mapping of key: value, "
                              f"not a {type(data).__name__}")
    return data


def defaults_path(config_path):
    """defaults.yaml beside the config, else the repository's."""
    for folder in (os.path.dirname(os.path.abspath(config_path)),
                   os.path.join(REPO_ROOT, "configs")):
        path = os.path.join(folder, DEFAULTS_NAME)
        if os.path.isfile(path):
            return path
    raise ExperimentError(f"{config_path}: no {DEFAULTS_NAME} beside it nor in "
                          f"{os.path.join(REPO_ROOT, 'configs')}")


def is_solver_field(name):
    return name in pb.SolverParameter.DESCRIPTOR.fields_by_name


def _merge(config, key, value, source, known):
    """Set one key; a SolverParameter field name that is not a config key goes to
    solver_params, so `base_lr=1e-4` on the command line just works."""
    if not isinstance(key, str):
        raise ExperimentError(f"{source}: keys are names, got {key!r}")
    if key.startswith("solver_params."):
        config["solver_params"][key.split(".", 1)[1]] = value
    elif key in known:
        if key == "solver_params":
            if not isinstance(value, dict):
                raise ExperimentError(f"{source}: solver_params must be a mapping of solver "
                                      "field: value")
            config["solver_params"].update(value)
        else:
            config[key] = value
    elif is_solver_field(key):
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
    path = os.fspath(path)
    environ = os.environ if environ is None else environ
    dpath = defaults_path(path)
    defaults = read_yaml(dpath)
    known = set(defaults)
    config = copy.deepcopy(defaults)
    config["solver_params"] = dict(config.get("solver_params") or {})
    if os.path.abspath(dpath) != os.path.abspath(path):
        for key, value in read_yaml(path).items():
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
    config["config_file"] = path
    config["seeds"] = parse_seeds(config.get("seeds"), path)
    validate_config(config, f"{path} (with overrides)" if overrides else path)
    return config


def parse_seeds(value, source):
    """`seeds`: null, a list of ints, or "1,2,3" (the Makefile's SEEDS=1,2,3)."""
    if value is None or value == []:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    if isinstance(value, str):
        try:
            value = [int(s) for s in value.split(",") if s.strip()]
        except ValueError:
            raise ExperimentError(f"{source}: seeds must be whole numbers, e.g. seeds=1,2,3; "
                                  f"got {value!r}") from None
    if not isinstance(value, list) or not value or not all(
            isinstance(s, int) and not isinstance(s, bool) for s in value):
        raise ExperimentError(f"{source}: seeds must be a list of whole numbers, got {value!r}")
    if len(set(value)) != len(value):
        raise ExperimentError(f"{source}: seeds repeat a seed: {value}")
    return value


# ----------------------------------------------------------------------------- checking
def _check_types(config, source):
    for key, kind in KEY_TYPES.items():
        value = config.get(key)
        if value is None:
            continue
        if isinstance(value, bool) and kind is not bool:
            ok = False
        else:
            ok = isinstance(value, kind)
        if not ok:
            want = kind.__name__ if isinstance(kind, type) else \
                " or ".join(k.__name__ for k in kind)
            raise ExperimentError(f"{source}: {key} must be {_article(want)}, got "
                                  f"{value!r} ({type(value).__name__})")


def _article(name):
    names = {"str": "a string", "int": "a whole number", "float": "a number",
             "bool": "true or false", "list": "a list", "dict": "a mapping",
             "int or float": "a number", "str or int": "a string or a number"}
    return names.get(name, name)


def _positive(config, key, source):
    value = config.get(key)
    if value is not None and value <= 0:
        raise ExperimentError(f"{source}: {key} must be a positive number, got {value!r}")


def validate_config(config, source):
    """Types, ranges and choices of every key; solver_params names real solver fields."""
    _check_types(config, source)
    for key in ("train_val", "solver"):
        if not config.get(key):
            raise ExperimentError(f"{source}: {key} is not set")
    for key in ("epochs", "stepsize_epochs", "test_interval_epochs", "snapshots", "batch_size",
                "test_batch_size"):
        _positive(config, key, source)
    if config.get("snapshots") is None:
        raise ExperimentError(f"{source}: snapshots must be a positive number, got null")
    for key, allowed in (("engine", ENGINES), ("device", DEVICES), ("precision", PRECISIONS),
                         ("if_weights_missing", ON_MISSING_WEIGHTS),
                         ("augment", AUGMENTATIONS)):
        if config.get(key) not in allowed:
            raise ExperimentError(f"{source}: {key} must be one of {', '.join(allowed)}, "
                                  f"got {config.get(key)!r}")
    try:
        check_combination(config["engine"], config["device"], config["precision"])
    except EngineError as exc:
        raise ExperimentError(f"{source}: {exc}") from None
    if not PADDING_RE.match(config.get("padding") or ""):
        raise ExperimentError(f"{source}: padding must be fixed:N or proportional:K (paper "
                              f"3.1: fixed:50, proportional:2), got {config.get('padding')!r}")
    for field in config["solver_params"]:
        if field in RUNNER_FIELDS:
            raise ExperimentError(f"{source}: the run sets the solver's {field} itself "
                                  "(choose the net with train_val=, the folder with runs_dir=)")
        if not is_solver_field(field):
            raise ExperimentError(f"{source}: solver_params.{field}: SolverParameter has no "
                                  "such field")


def variant_name(config):
    """The dataset variant's folder name, from its padding and augmentation:
    proportional:2 + paper -> proportional2-paper (the Makefile asks experiment-info for it)."""
    return f"{config['padding'].replace(':', '')}-{config['augment']}"


def with_augmentation(config, augment):
    """The config under the Makefile's AUG=: `augment` replaces the augmentation of an
    experiment that augments (AUG=code: the authors'); one that trains on unaugmented data
    (augment none) keeps it. No `augment`: the config as it is."""
    if not augment or config["augment"] == "none":
        return config
    if augment not in AUGMENTATIONS:
        raise ExperimentError(f"AUG={augment}: augment must be one of "
                              f"{', '.join(AUGMENTATIONS)}")
    return dict(config, augment=augment)


# What `deepmammo experiment-info` says of a config, in this order.
INFO_FIELDS = ("experiment", "description", "padding", "augment", "variant", "dataset", "runs",
               "latest")


def experiment_info(config, datasets=None):
    """{field: value} of INFO_FIELDS: the experiment's name and description, its dataset variant
    (padding, augment, variant: the folder name), its dataset (DATASETS/<variant> when the
    datasets folder is given, as the Makefile lays them out; else the config's own, or ""),
    and where its runs go (runs: <runs_dir>/<experiment>; latest: the link to the newest)."""
    variant = variant_name(config)
    runs = os.path.join(config.get("runs_dir") or "runs", config["experiment"])
    return {"experiment": config["experiment"], "description": config.get("description") or "",
            "padding": config["padding"], "augment": config["augment"], "variant": variant,
            "dataset": os.path.join(datasets, variant) if datasets else
            (config.get("dataset") or ""),
            "runs": runs, "latest": os.path.join(runs, "latest")}
