"""`deepmammo train` and `deepmammo test`: Caffe's command-line tool, on either engine.

    deepmammo train --solver S [--weights W | --snapshot X.solverstate] [--engine torch|caffe]
                    [--gpu N|N,M|all] [--precision fp32|tf32|bf16]
    deepmammo test --model M --weights W --iterations N [--engine torch|caffe] [--gpu N]

`--engine caffe` runs the same through real BVLC pycaffe (CPU build). The training log is
written in Caffe's format to `--log` (default: train.log beside the snapshots) with
train_log.csv beside it. Its first line names the precision; train_run.json beside it records
the precision, the device and the provenance of the run (our engine).
"""
import argparse
import contextlib
import json
import logging
import os
import signal
import tempfile

import numpy as np
from tqdm.contrib.logging import logging_redirect_tqdm

from deepmammo.caffe.train_log import csv_path_for

logger = logging.getLogger(__name__)

ENGINES = ("torch", "caffe")


def register_train(subparsers):
    """Add `train` and `test` to the `deepmammo` parser."""
    p = subparsers.add_parser("train", help="train a net from a solver prototxt (caffe train)")
    p.add_argument("--solver", required=True, help="solver .prototxt")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--weights", help="caffemodel(s) to fine-tune from, comma-separated "
                                         "(replaces the solver's `weights`)")
    start.add_argument("--snapshot", help=".solverstate to resume from")
    p.add_argument("--engine", choices=ENGINES, default="torch")
    p.add_argument("--gpu", help="GPU index, comma-separated indices, or 'all' "
                                 "(several: one worker per GPU, gradients averaged); "
                                 "default: CPU")
    p.add_argument("--log", help="training log in Caffe's format (default: train.log in the "
                                 "snapshot folder); the CSV goes beside it as train_log.csv")
    p.add_argument("--level", type=int, default=0, help="NetState level of the train net")
    p.add_argument("--stage", action="append", default=[], help="NetState stage (repeatable)")
    add_precision_argument(p)
    p.add_argument("--sigint-effect", choices=("stop", "snapshot", "none"), default="stop",
                   help="what Ctrl-C does (Caffe's default: stop, then snapshot)")
    p.add_argument("--sighup-effect", choices=("stop", "snapshot", "none"), default="snapshot")
    p.set_defaults(func=cmd_train)

    t = subparsers.add_parser("test", help="score a model over N batches (caffe test)")
    t.add_argument("--model", required=True, help="net .prototxt (TEST phase)")
    t.add_argument("--weights", required=True, help="caffemodel")
    t.add_argument("--iterations", type=int, default=50, help="batches to run (default 50)")
    t.add_argument("--engine", choices=ENGINES, default="torch")
    t.add_argument("--gpu", help="GPU index (default: CPU)")
    t.add_argument("--level", type=int, default=0)
    t.add_argument("--stage", action="append", default=[])
    t.add_argument("--output", help="write the mean outputs as JSON here")
    t.set_defaults(func=cmd_test)


def add_precision_argument(parser):
    """--precision fp32|tf32|bf16 (train and eval share it)."""
    from deepmammo.caffe.mode import PRECISIONS
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="arithmetic of our engine: fp32 (default, Caffe's numbers), tf32 "
                             "(CUDA tensor cores) or bf16 (autocast; float32 weights and "
                             "solver state); see docs/performance.md")


def check_precision_request(precision, engine, gpus):
    """Refuse, before anything is written, a precision this engine and device cannot run."""
    from deepmammo.caffe.mode import PrecisionError, check_precision
    if precision == "fp32":
        return
    if engine == "caffe":
        raise PrecisionError(f"--precision {precision}: real Caffe computes in fp32 only; "
                             "use --engine torch")
    check_precision(precision, "cuda" if gpus else "cpu")


# ---------------------------------------------------------------------------------- train

# `deepmammo train`'s options and their defaults, for callers that are not the command line.
TRAIN_OPTIONS = {"weights": None, "snapshot": None, "engine": "torch", "gpu": None, "log": None,
                 "level": 0, "stage": (), "sigint_effect": "stop", "sighup_effect": "snapshot",
                 "precision": "fp32"}


def train(solver, **options):
    """`deepmammo train --solver SOLVER ...` as a library call: keyword arguments are the
    command's options (TRAIN_OPTIONS). Raises what the command would print."""
    unknown = sorted(set(options) - set(TRAIN_OPTIONS))
    if unknown:
        raise TypeError(f"train(): unknown options {', '.join(unknown)}")
    values = dict(TRAIN_OPTIONS, **options)
    values["stage"] = list(values["stage"])
    return cmd_train(argparse.Namespace(solver=solver, **values))


def _gpu_list(spec):
    if not spec:
        return []
    if spec == "all":
        import torch
        n = torch.cuda.device_count()
        if n == 0:
            raise ValueError("--gpu all: no CUDA device is visible")
        return list(range(n))
    try:
        return [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--gpu {spec!r}: give an index, indices separated by commas, "
                         "or 'all'") from None


def _prepared_param(args):
    """The solver with the command line's overrides (weights, level, stages)."""
    from deepmammo.caffe.solver import read_solver_param
    param, _ = read_solver_param(args.solver)
    param.train_state.level = args.level
    param.train_state.stage.extend(args.stage)
    if args.snapshot:
        param.ClearField("weights")
    elif args.weights:
        param.ClearField("weights")
        param.weights.append(args.weights)
    return param


def _default_log(param):
    folder = os.path.dirname(param.snapshot_prefix) or "."
    return os.path.join(folder, "train.log")


def cmd_train(args):
    if not os.path.isfile(args.solver):
        raise FileNotFoundError(f"{args.solver}: no such solver file")
    if args.snapshot and not os.path.isfile(args.snapshot):
        raise FileNotFoundError(f"{args.snapshot}: no such solverstate file")
    precision = getattr(args, "precision", "fp32")
    if args.engine == "caffe":
        check_precision_request(precision, "caffe", [])
        return _train_real_caffe(args)
    from deepmammo.caffe import distributed
    env = distributed.environment_rank()
    gpus = _gpu_list(args.gpu)
    param = _prepared_param(args)
    if not gpus and param.HasField("solver_mode") and param.solver_mode == param.GPU:
        # Caffe's tool: without --gpu, a solver that asks for the GPU gets its device_id.
        import torch
        if torch.cuda.is_available():
            gpus = [param.device_id]
        else:
            logger.warning("%s asks for solver_mode GPU but no CUDA device is visible: "
                           "training on the CPU", args.solver)
    log_path = args.log or _default_log(param)
    check_precision_request(precision, "torch", gpus)
    if precision != "fp32" and (env is not None or len(gpus) > 1):
        raise ValueError(f"--precision {precision}: training on several GPUs runs in fp32 "
                         "only for now; give one --gpu")
    if env is not None or len(gpus) > 1:
        job = {"solver": _write_temp_solver(param, args.solver), "gpus": gpus,
               "snapshot": args.snapshot, "log": log_path}
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
        return 0
    if gpus:
        _use_gpu(gpus[0])
    from deepmammo.caffe import mode
    mode.set_precision(precision)
    return _train_one(param, args, log_path)


def _train_one(param, args, log_path):
    from deepmammo.caffe import mode
    from deepmammo.caffe.solvers import create_solver
    from deepmammo.caffe.train_log import TrainLog
    with TrainLog(log_path) as log, _signal_actions(args.sigint_effect,
                                                     args.sighup_effect) as request:
        log.info(f"Precision: {mode.precision()} ({PRECISION_NOTES[mode.precision()]})")
        _write_run_record(log, param, args, mode.precision())
        with create_solver(param, source=args.solver, log=log) as solver:
            solver.action_request = request
            logger.info("log: %s (CSV: %s); random stream: %s", log.path, log.csv_path,
                        solver.random_stream)
            # Log lines are printed above the progress bar, not through it.
            with logging_redirect_tqdm():
                solver.solve(args.snapshot)
    return 0


PRECISION_NOTES = {
    "fp32": "float32 throughout, Caffe's numbers",
    "tf32": "TF32 tensor-core convolutions and matrix products; not Caffe's numbers",
    "bf16": "bfloat16 autocast in forward; float32 weights, gradients and solver state; "
            "not Caffe's numbers",
}


def run_record_path(log_path):
    """`train.log` -> `train_run.json`: how the training ran (precision, device), beside
    the log and its CSV."""
    root, _ = os.path.splitext(log_path)
    return root + "_run.json"


def _write_run_record(log, param, args, precision):
    from deepmammo.atomic import write_text
    from deepmammo.caffe.mode import current_device
    from deepmammo.provenance import provenance
    if not log.path:
        return
    device = current_device()
    record = {"precision": precision, "engine": "torch",
              "device": str(device) if device.type == "cpu" else
              f"{device} ({_cuda_name(device)})",
              "log": os.path.basename(log.path), "csv": os.path.basename(log.csv_path),
              "provenance": provenance(
                  config={"solver": args.solver, "precision": precision,
                          "weights": args.weights, "snapshot": args.snapshot},
                  seed=param.random_seed if param.random_seed >= 0 else None,
                  inputs=[args.solver])}
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


def _train_real_caffe(args):
    """Real Caffe's own `caffe train` in a child process (deepmammo.caffe.real_train)."""
    from deepmammo.caffe.real_train import run_caffe_train
    gpus = _gpu_list(args.gpu)
    if gpus:
        raise ValueError("--engine caffe: the real Caffe build here is CPU-only; drop --gpu")
    param = _prepared_param(args)
    param.solver_mode = param.CPU
    log_path = args.log or _default_log(param)
    net_folders = _check_nets_for_caffe(param, args.solver)
    path = _write_temp_solver(param, args.solver)
    try:
        logger.info("training with real Caffe: log %s (CSV: %s)", log_path,
                    csv_path_for(log_path))
        run_caffe_train(path, log_path, max_iter=param.max_iter, snapshot=args.snapshot,
                        source=args.solver, net_folders=net_folders)
    finally:
        os.remove(path)
    return 0


def _check_nets_for_caffe(param, solver):
    """The folders of the solver's net files, each read as Caffe reads it (relative to the
    working directory) and parsed first, so that a net Caffe's parser would refuse is named
    with its line and column; a missing one is named with the solver that names it."""
    from deepmammo.caffe.formats.prototxt import _parse, _read
    from deepmammo.caffe.proto import caffe_pb2 as pb
    folders = []
    for net in [param.net, param.train_net, *param.test_net]:
        if not net:
            continue
        if not os.path.isfile(net):
            raise FileNotFoundError(f"{solver}: net file {net!r} not found (real Caffe opens "
                                    f"it relative to the working directory {os.getcwd()!r})")
        _parse(_read(net), pb.NetParameter(), net)
        folders.append(os.path.dirname(os.path.abspath(net)))
    return folders


def _use_gpu(index):
    import torch

    import deepmammo.caffe as caffe
    if not torch.cuda.is_available():
        raise ValueError(f"--gpu {index}: no CUDA device is visible to torch")
    if not 0 <= index < torch.cuda.device_count():
        raise ValueError(f"--gpu {index}: only {torch.cuda.device_count()} CUDA device(s)")
    caffe.set_device(index)
    caffe.set_mode_gpu()


# ----------------------------------------------------------------------------------- test

def score(net, iterations, log=None):
    """Caffe's `test` command: mean of every output over `iterations` forward passes.

    `net` is ours or pycaffe's; returns (mean outputs {name: value}, mean loss)."""
    totals, loss = {}, 0.0
    # pycaffe's blob_loss_weights: the loss weight of every blob (0 for a non-loss blob)
    weights = dict(net.blob_loss_weights)
    for i in range(iterations):
        out = net.forward()
        for name in sorted(out):
            values = np.asarray(out[name], dtype=np.float32).ravel()
            for k, v in enumerate(values):
                key = name if values.size == 1 else f"{name}_{k}"
                totals[key] = totals.get(key, 0.0) + float(v)
                if log:
                    log(f"Batch {i}, {name} = {v:g}")
            loss += weights.get(name, 0.0) * float(values.sum())
    means = {k: v / iterations for k, v in totals.items()}
    return means, loss / iterations


def cmd_test(args):
    for path, what in ((args.model, "model"), (args.weights, "weights")):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such {what} file")
    if args.iterations < 1:
        raise ValueError("--iterations must be at least 1")
    if args.engine == "caffe":
        from deepmammo.caffe import real_child
        # Caffe's parser would stop the process on a syntax error: name it with its line.
        _check_nets_for_caffe(argparse.Namespace(net=args.model, train_net="", test_net=[]),
                              args.model)
        # In a child process: a CHECK failing in Caffe ends as an error naming the file.
        means, loss = real_child.run(_score_real_caffe, args.model, args.weights,
                                     args.iterations, args.level, list(args.stage),
                                     source=args.model)
    else:
        import deepmammo.caffe as caffe
        from deepmammo.caffe.formats.prototxt import read_net
        if args.gpu:
            _use_gpu(int(args.gpu))
        net_param = read_net(args.model)
        net_param.state.phase = caffe.TEST
        net_param.state.level = args.level
        net_param.state.stage.extend(args.stage)
        from deepmammo.caffe.solver import build_net
        net = build_net(net_param, args.model)
        net.copy_from(args.weights)
        means, loss = score(net, args.iterations, log=logger.debug)
    logger.info("Loss: %g", loss)
    for name, value in means.items():
        print(f"{name} = {value:g}")
    if args.output:
        from deepmammo.atomic import write_text
        write_text(args.output, json.dumps({"outputs": means, "loss": loss,
                                            "iterations": args.iterations}, indent=2))
    return 0


def _score_real_caffe(model, weights, iterations, level, stages):
    """`score` of the TEST net of `model` with `weights`, in real pycaffe (run in a child
    process by cmd_test)."""
    import sys

    from deepmammo.caffe.real import import_caffe
    from deepmammo.caffe.real_child import open_net
    # A Python layer's module is imported as with `caffe train`: from the working folder or
    # the net's folder too.
    for folder in (os.path.dirname(os.path.abspath(model)), os.getcwd()):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    caffe = import_caffe()
    net = open_net(caffe, model, weights, caffe.TEST, level=level, stages=stages)
    return score(net, iterations, log=logger.debug)
