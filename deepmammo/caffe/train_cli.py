"""`deepmammo train` and `deepmammo test`: Caffe's command-line tool, on either engine.

    deepmammo train --solver S [--weights W | --snapshot X.solverstate] [--engine torch|caffe]
                    [--gpu N|N,M|all] [--precision fp32|tf32|bf16]
    deepmammo test --model M --weights W --iterations N [--engine torch|caffe] [--gpu N]

`train` is the library call deepmammo.caffe.train.train with the command line's options; see
there for the log and the records it writes. `--engine caffe` runs the same through real BVLC
pycaffe (CPU build).
"""
import json
import logging
import os

import numpy as np

from deepmammo.caffe.train import SIGNAL_EFFECTS, check_nets_for_caffe, train
from deepmammo.engine import add_engine_argument, add_precision_argument, gpu_device, pycaffe
from deepmammo.engine import check as check_engine

logger = logging.getLogger(__name__)


def register_train(subparsers):
    """Add `train` and `test` to the `deepmammo` parser."""
    p = subparsers.add_parser("train", help="train a net from a solver prototxt (caffe train)")
    p.add_argument("--solver", required=True, help="solver .prototxt")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--weights", help="caffemodel(s) to fine-tune from, comma-separated "
                                         "(replaces the solver's `weights`)")
    start.add_argument("--snapshot", help=".solverstate to resume from")
    add_engine_argument(p)
    p.add_argument("--gpu", help="GPU index, comma-separated indices, or 'all' "
                                 "(several: one worker per GPU, gradients averaged); "
                                 "default: CPU")
    p.add_argument("--log", help="training log in Caffe's format (default: train.log in the "
                                 "snapshot folder); the CSV goes beside it as train_log.csv")
    p.add_argument("--level", type=int, default=0, help="NetState level of the train net")
    p.add_argument("--stage", action="append", default=[], help="NetState stage (repeatable)")
    add_precision_argument(p)
    p.add_argument("--sigint-effect", choices=SIGNAL_EFFECTS, default="stop",
                   help="what Ctrl-C does (Caffe's default: stop, then snapshot)")
    p.add_argument("--sighup-effect", choices=SIGNAL_EFFECTS, default="snapshot")
    p.set_defaults(func=cmd_train)

    t = subparsers.add_parser("test", help="score a model over N batches (caffe test)")
    t.add_argument("--model", required=True, help="net .prototxt (TEST phase)")
    t.add_argument("--weights", required=True, help="caffemodel")
    t.add_argument("--iterations", type=int, default=50, help="batches to run (default 50)")
    add_engine_argument(t)
    t.add_argument("--gpu", help="GPU index (default: CPU)")
    t.add_argument("--level", type=int, default=0)
    t.add_argument("--stage", action="append", default=[])
    t.add_argument("--output", help="write the mean outputs as JSON here")
    t.set_defaults(func=cmd_test)


def cmd_train(args):
    return train(args.solver, weights=args.weights, snapshot=args.snapshot, engine=args.engine,
                 gpu=args.gpu, log=args.log, level=args.level, stage=args.stage,
                 sigint_effect=args.sigint_effect, sighup_effect=args.sighup_effect,
                 precision=args.precision)


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
        check_engine("caffe", gpu_device(args.gpu or None))
        # Caffe's parser would stop the process on a syntax error: name it with its line.
        check_nets_for_caffe([args.model], args.model)
        # In a child process: a CHECK failing in Caffe ends as an error naming the file.
        means, loss = real_child.run(_score_real_caffe, args.model, args.weights,
                                     args.iterations, args.level, list(args.stage),
                                     source=args.model)
    else:
        from deepmammo.caffe.formats.prototxt import read_net
        caffe = pycaffe("torch", args.gpu or None)
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
