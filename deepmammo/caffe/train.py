"""Caffe's `caffe train` as a library call, on either engine (`deepmammo train` wraps it).

    train("solver.prototxt", weights="init.caffemodel", gpu="0", precision="bf16")

`engine="caffe"` runs real BVLC Caffe's own `caffe train` in a child process (CPU build). The
training log is written in Caffe's format to `log` (default: train.log beside the snapshots)
with train_log.csv beside it. Its first line names the precision; train_run.json beside it
records the precision, the device and the provenance of the run (our engine).
"""
import contextlib
import json
import logging
import os
import signal
import tempfile

from tqdm.contrib.logging import logging_redirect_tqdm

from deepmammo.caffe.train_log import csv_path_for
from deepmammo.engine import (
    DEFAULT_ENGINE,
    DEFAULT_PRECISION,
    PRECISION_NOTES,
    gpu_device,
    pycaffe,
)
from deepmammo.engine import check as check_engine

logger = logging.getLogger(__name__)

# What SIGINT and SIGHUP may do during training (Caffe's SolverAction).
SIGNAL_EFFECTS = ("stop", "snapshot", "none")


def train(solver, weights=None, snapshot=None, engine=DEFAULT_ENGINE, gpu=None, log=None,
          level=0, stage=(), sigint_effect="stop", sighup_effect="snapshot",
          precision=DEFAULT_PRECISION):
    """Train the net of `solver` (a solver prototxt); returns 0.

    weights: caffemodel(s) to fine-tune from, comma-separated (replaces the solver's);
    snapshot: a .solverstate to resume from. gpu: an index, indices separated by commas, or
    'all' (several: one worker per GPU, gradients averaged); None: the CPU, unless the solver
    asks for its GPU. level, stage: the train net's NetState. sigint_effect, sighup_effect: one
    of SIGNAL_EFFECTS. What cannot run is refused before anything is written."""
    if not os.path.isfile(solver):
        raise FileNotFoundError(f"{solver}: no such solver file")
    if snapshot and not os.path.isfile(snapshot):
        raise FileNotFoundError(f"{snapshot}: no such solverstate file")
    gpus = gpu_list(gpu)
    if engine == "caffe":
        check_engine("caffe", "cuda" if gpus else "cpu", precision)
        param = _prepared_param(solver, weights, snapshot, level, stage)
        return _train_real_caffe(param, solver, snapshot, log)
    from deepmammo.caffe import distributed
    env = distributed.environment_rank()
    param = _prepared_param(solver, weights, snapshot, level, stage)
    if not gpus and param.HasField("solver_mode") and param.solver_mode == param.GPU:
        # Caffe's tool: without --gpu, a solver that asks for the GPU gets its device_id.
        import torch
        if torch.cuda.is_available():
            gpus = [param.device_id]
        else:
            logger.warning("%s asks for solver_mode GPU but no CUDA device is visible: "
                           "training on the CPU", solver)
    log_path = log or _default_log(param)
    workers = env[1] if env is not None else len(gpus)
    check_engine("torch", gpu_device(gpus[0]) if gpus else "cpu", precision, workers)
    if env is not None or len(gpus) > 1:
        _train_distributed(param, solver, snapshot, log_path, gpus, env)
        return 0
    pycaffe("torch", gpus[0] if gpus else None, precision)
    _train_one(param, solver, log_path, (sigint_effect, sighup_effect),
               {"solver": solver, "precision": precision, "weights": weights,
                "snapshot": snapshot})
    return 0


def gpu_list(spec):
    """[] (the CPU), or the GPU indices of `spec`: 'N', 'N,M,...' or 'all'."""
    if not spec:
        return []
    if spec == "all":
        import torch
        n = torch.cuda.device_count()
        if n == 0:
            raise ValueError("--gpu all: no CUDA device is visible")
        return list(range(n))
    try:
        return [int(s) for s in str(spec).split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--gpu {spec!r}: give an index, indices separated by commas, "
                         "or 'all'") from None


def _prepared_param(solver, weights, snapshot, level, stage):
    """The solver with the caller's overrides (weights, level, stages)."""
    from deepmammo.caffe.solver import read_solver_param
    param, _ = read_solver_param(solver)
    param.train_state.level = level
    param.train_state.stage.extend(stage)
    if snapshot:
        param.ClearField("weights")
    elif weights:
        param.ClearField("weights")
        param.weights.append(weights)
    return param


def _default_log(param):
    folder = os.path.dirname(param.snapshot_prefix) or "."
    return os.path.join(folder, "train.log")


def _train_distributed(param, solver, snapshot, log_path, gpus, env):
    """One worker per GPU (or this process as one worker of a launcher's group)."""
    from deepmammo.caffe import distributed
    job = {"solver": _write_temp_solver(param, solver), "gpus": gpus, "snapshot": snapshot,
           "log": log_path}
    try:
        if env is not None:
            rank, world, local = env
            if gpus:
                job["gpus"] = [gpus[local % len(gpus)]]
            distributed.run_worker(rank, world, job)
        else:
            logger.info("training on GPUs %s, one worker each", gpus)
            distributed.spawn(len(gpus), job)
    finally:
        os.remove(job["solver"])


def _train_one(param, solver_path, log_path, signal_effects, options):
    """Train in this process, on the device and in the precision set up (pycaffe)."""
    from deepmammo.caffe import mode
    from deepmammo.caffe.solvers import create_solver
    from deepmammo.caffe.train_log import TrainLog
    with TrainLog(log_path) as log, _signal_actions(*signal_effects) as request:
        log.info(f"Precision: {mode.precision()} ({PRECISION_NOTES[mode.precision()]})")
        _write_run_record(log, param, options)
        with create_solver(param, source=solver_path, log=log) as solver:
            solver.action_request = request
            logger.info("log: %s (CSV: %s); random stream: %s", log.path, log.csv_path,
                        solver.random_stream)
            # Log lines are printed above the progress bar, not through it.
            with logging_redirect_tqdm():
                solver.solve(options["snapshot"])


def run_record_path(log_path):
    """`train.log` -> `train_run.json`: how the training ran (precision, device), beside
    the log and its CSV."""
    root, _ = os.path.splitext(log_path)
    return root + "_run.json"


def _write_run_record(log, param, options):
    """train_run.json; `options`: the solver, precision, weights and snapshot asked for."""
    from deepmammo.atomic import write_text
    from deepmammo.caffe.mode import current_device
    from deepmammo.provenance import provenance
    if not log.path:
        return
    device = current_device()
    record = {"precision": options["precision"], "engine": "torch",
              "device": str(device) if device.type == "cpu" else
              f"{device} ({_cuda_name(device)})",
              "log": os.path.basename(log.path), "csv": os.path.basename(log.csv_path),
              "provenance": provenance(
                  config=options, seed=param.random_seed if param.random_seed >= 0 else None,
                  inputs=[options["solver"]])}
    write_text(run_record_path(log.path), json.dumps(record, indent=2) + "\n")


def _cuda_name(device):
    import torch
    return torch.cuda.get_device_name(device)


@contextlib.contextmanager
def _signal_actions(sigint_effect, sighup_effect):
    """Caffe's SignalHandler: SIGINT/SIGHUP become a requested stop or snapshot, which the
    solver acts on after the current iteration; the previous handlers come back after."""
    pending = []

    def handler(signum, frame):
        pending.append(sigint_effect if signum == signal.SIGINT else sighup_effect)

    signums = [signal.SIGINT] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    previous = {s: signal.signal(s, handler) for s in signums}
    try:
        yield lambda: pending.pop(0) if pending else "none"
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _write_temp_solver(param, source):
    """A solver prototxt holding the overrides, for workers and for real Caffe.

    It sits beside the original so that a missing snapshot_prefix derives the same way; the
    prefix is written out explicitly anyway."""
    from deepmammo.caffe.formats.prototxt import to_text
    folder = os.path.dirname(os.path.abspath(source))
    fd, path = tempfile.mkstemp(prefix=".deepmammo-solver-", suffix=".prototxt", dir=folder)
    with os.fdopen(fd, "w") as f:
        f.write(to_text(param))
    return path


def _train_real_caffe(param, solver, snapshot, log):
    """Real Caffe's own `caffe train` in a child process (deepmammo.caffe.real_train)."""
    from deepmammo.caffe.real_train import run_caffe_train
    param.solver_mode = param.CPU
    log_path = log or _default_log(param)
    net_folders = check_nets_for_caffe([param.net, param.train_net, *param.test_net], solver)
    path = _write_temp_solver(param, solver)
    try:
        logger.info("training with real Caffe: log %s (CSV: %s)", log_path,
                    csv_path_for(log_path))
        run_caffe_train(path, log_path, max_iter=param.max_iter, snapshot=snapshot,
                        source=solver, net_folders=net_folders)
    finally:
        os.remove(path)
    return 0


def check_nets_for_caffe(nets, source):
    """The folders of the net files `nets` (those named; `source` names them), each read as
    Caffe reads it (relative to the working directory) and parsed first, so that a net Caffe's
    parser would refuse is named with its line and column; a missing one is named with the
    file that names it."""
    from deepmammo.caffe.formats.prototxt import _parse, _read
    from deepmammo.caffe.proto import caffe_pb2 as pb
    folders = []
    for net in nets:
        if not net:
            continue
        if not os.path.isfile(net):
            raise FileNotFoundError(f"{source}: net file {net!r} not found (real Caffe opens "
                                    f"it relative to the working directory {os.getcwd()!r})")
        _parse(_read(net), pb.NetParameter(), net)
        folders.append(os.path.dirname(os.path.abspath(net)))
    return folders
