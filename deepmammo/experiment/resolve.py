"""Resolution: the committed solver files count iterations at the paper's scale, the paper
counts epochs. A run turns epochs into iterations for the LMDB it actually trains on and the
batch size of its train_val prototxt, and points the net's Data layers at its dataset."""
import copy
import fractions
import json
import math
import os

from deepmammo.caffe.formats.lmdb_io import count_records
from deepmammo.caffe.netstate import data_layers as phase_data_layers
from deepmammo.caffe.proto import caffe_pb2 as pb
from deepmammo.experiment.config import ExperimentError, variant_name

PHASES = {"TRAIN": pb.TRAIN, "TEST": pb.TEST}


# ------------------------------------------------------------------------------ nets, data
def data_layers(net, path):
    """{'TRAIN': layer, 'TEST': layer}: the first Data layer of each phase of a train_val net
    (Caffe's rule: a layer without include/exclude is in both)."""
    found = {}
    for name, phase in PHASES.items():
        layers = phase_data_layers(net, phase)
        if layers:
            found[name] = layers[0]
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


def check_dataset(dataset, paths, config=None):
    """Every file the Data layers need must be there, and the dataset must be the variant the
    config asks for (its build.json's padding and augmentation), else say what to do."""
    missing = sorted({p for entry in paths.values() for p in entry.values()
                      if not os.path.exists(p)})
    if missing:
        variant = variant_name(config) if config else os.path.basename(
            os.path.normpath(dataset))
        raise ExperimentError(
            f"dataset {dataset} is missing {', '.join(missing)}; build it first (`make "
            f"{config['experiment'] if config else 'EXPERIMENT'}` builds the {variant} variant "
            "it needs from CASES=..., or `deepmammo lmdb ... --out FOLDER`), or point dataset= "
            "at a folder that holds train_lmdb, val_lmdb and mean.binaryproto")
    if config:
        check_variant(dataset, config)


def _build_record(dataset):
    path = os.path.join(dataset, "build.json")
    if not os.path.isfile(path):
        return None, path
    try:
        with open(path, "r", encoding="utf-8") as f:
            return json.load(f), path
    except (OSError, ValueError) as exc:
        raise ExperimentError(f"{path}: cannot read the dataset's build record: {exc}") \
            from None


def check_variant(dataset, config):
    """The dataset's augmentation and its crops' padding must be the config's (a dataset
    without build.json, made by other tools, is taken as it is)."""
    record, path = _build_record(dataset)
    if record is None:
        return
    built = record.get("config") or record
    augment = built.get("augment")
    if augment is not None and augment != config["augment"]:
        raise ExperimentError(
            f"{path}: this dataset is augmented '{augment}', the experiment asks for "
            f"'{config['augment']}' (augment= in {config['config_file']}); point dataset= at "
            f"the {variant_name(config)} variant")
    padding = (built.get("crops_config") or {}).get("padding")
    if padding is not None and _same_padding(padding, config["padding"]) is False:
        raise ExperimentError(
            f"{path}: this dataset's crops are padded '{padding}', the experiment asks for "
            f"'{config['padding']}' (padding= in {config['config_file']}); point dataset= at "
            f"the {variant_name(config)} variant")


def _same_padding(a, b):
    """Whether two padding specs mean the same (None when either cannot be read)."""
    from deepmammo.prep.crops import Padding
    try:
        return str(Padding.parse(a)) == str(Padding.parse(b))
    except ValueError:
        return None


def resolve_net(net, paths, batch_size=None, test_batch_size=None):
    """A copy of `net` reading the dataset's files, with optional batch sizes."""
    net = copy.deepcopy(net)
    for name, phase in PHASES.items():
        for layer in phase_data_layers(net, phase):
            entry = paths[name]
            layer.data_param.source = os.path.abspath(entry["source"])
            if "mean_file" in entry:
                layer.transform_param.mean_file = os.path.abspath(entry["mean_file"])
            size = batch_size if name == "TRAIN" else test_batch_size
            if size:
                layer.data_param.batch_size = int(size)
    return net


def count_dataset(paths):
    """(training records, validation records) of the LMDBs the Data layers read."""
    train = count_records(paths["TRAIN"]["source"])
    val = count_records(paths["TEST"]["source"]) if "TEST" in paths else 0
    if train == 0:
        raise ExperimentError(f"{paths['TRAIN']['source']}: the training LMDB is empty")
    return train, val


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


def _convert(field, name, value, source):
    try:
        if field.type == field.TYPE_ENUM:
            if isinstance(value, str):
                return field.enum_type.values_by_name[value].number
            return field.enum_type.values_by_number[int(value)].number
        if field.type == field.TYPE_BOOL:
            if not isinstance(value, bool):
                raise TypeError
            return value
        if field.type == field.TYPE_STRING:
            if not isinstance(value, str):
                raise TypeError
            return value
        if field.cpp_type in (field.CPPTYPE_FLOAT, field.CPPTYPE_DOUBLE):
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise TypeError
        number = int(value)
        bits = 64 if field.cpp_type in (field.CPPTYPE_INT64, field.CPPTYPE_UINT64) else 32
        unsigned = field.cpp_type in (field.CPPTYPE_UINT32, field.CPPTYPE_UINT64)
        low, high = (0, 2 ** bits - 1) if unsigned else (-2 ** (bits - 1), 2 ** (bits - 1) - 1)
        if not low <= number <= high:
            raise ValueError
        return number
    except (KeyError, TypeError, ValueError, OverflowError):
        raise ExperimentError(f"{source}: solver field {name}: {value!r} is not a valid "
                              "value") from None


def set_solver_field(solver, name, value, source="config"):
    """Set any scalar or repeated SolverParameter field from a YAML value, type-checked."""
    field = pb.SolverParameter.DESCRIPTOR.fields_by_name.get(name)
    if field is None:
        raise ExperimentError(f"{source}: SolverParameter has no field {name!r}")
    if field.type == field.TYPE_MESSAGE:
        raise ExperimentError(f"{source}: solver field {name} is a message; edit the solver "
                              "file for it")
    if _is_repeated(field):
        values = value if isinstance(value, (list, tuple)) else [value]
        del getattr(solver, name)[:]
        getattr(solver, name).extend(_convert(field, name, v, source) for v in values)
    else:
        setattr(solver, name, _convert(field, name, value, source))


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


RESOLVED_FIELDS = ("max_iter", "snapshot", "stepsize", "test_iter", "test_interval",
                   "base_lr", "lr_policy", "weight_decay", "type", "random_seed")


def solver_value(solver, name):
    value = getattr(solver, name)
    return list(value) if name == "test_iter" else value
