"""Subcommands of this stage for the `deepmammo` command (see deepmammo/cli.py).

    deepmammo parse-log LOG [OUT_DIR]
    deepmammo pycaffe SCRIPT [ARGS...] | -m MODULE [ARGS...]   (see pycaffe_cli.py)
    deepmammo draw NET.prototxt OUT.png [--rankdir] [--phase] [--display_lrm]
    deepmammo time --model M [--engine torch|caffe] [--gpu N] [--iterations K]
                   [--threads T] [--precision fp32|tf32|bf16] [--json OUT]

Caffe's `caffe time`: per-layer forward and backward milliseconds and the totals, for the
TRAIN-phase net of M. `--engine caffe` runs real BVLC Caffe's own `caffe time` (CPU build).
`--precision` as for train and eval (`--tf32` is `--precision tf32`): tf32 and bf16 are faster
and not fp32-faithful, reported apart.
"""
import json
import logging
import os
import re
import subprocess

from deepmammo.engine import add_engine_argument, add_precision_argument, gpu_device
from deepmammo.engine import check as check_engine
from deepmammo.errors import CLIError

log = logging.getLogger(__name__)


def register(subparsers):
    """Add this stage's subcommands to the `deepmammo` parser."""
    from deepmammo.caffe.tools_cli import register_tools
    from deepmammo.caffe.train_cli import register_train
    register_train(subparsers)
    from deepmammo.caffe.pycaffe_cli import register as register_pycaffe
    register_pycaffe(subparsers)    # pycaffe, draw
    register_tools(subparsers)

    p = subparsers.add_parser("time", help="per-layer forward/backward timing (caffe time)")
    p.add_argument("--model", required=True, help="net .prototxt (built in the TRAIN phase)")
    add_engine_argument(p)
    p.add_argument("--gpu", type=int, help="CUDA device index (default: CPU)")
    p.add_argument("--iterations", type=int, default=50, help="timed iterations (default 50)")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's)")
    p.add_argument("--phase", choices=("TRAIN", "TEST"), default="TRAIN")
    add_precision_argument(p)
    p.add_argument("--tf32", dest="precision", action="store_const", const="tf32",
                   help="the same as --precision tf32")
    p.add_argument("--json", help="also write the figures as JSON here")
    p.set_defaults(func=cmd_time)

    q = subparsers.add_parser(
        "parse-log", help="training log -> CSV tables (Caffe's tools/extra/parse_log.py)",
        description="Read a training log of either engine (glog lines, `I1130 ...` or "
                    "`I20261130 ...`) and write OUT_DIR/<log name>.train and .test: NumIters, "
                    "Seconds, LearningRate and every net output, as Caffe's parse_log.py does.")
    q.add_argument("logfile", help="training log (train.log, or stderr saved with 2>&1 | tee)")
    q.add_argument("output_dir", nargs="?", default=None,
                   help="where the CSVs go (default: beside the log)")
    q.set_defaults(func=cmd_parse_log)


def cmd_parse_log(args):
    from deepmammo.caffe.parse_log import parse_log, save_csv_files
    if not os.path.isfile(args.logfile):
        raise FileNotFoundError(f"{args.logfile}: no such log file")
    train, test = parse_log(args.logfile)
    out_dir = args.output_dir or os.path.dirname(os.path.abspath(args.logfile))
    for path, rows in zip(save_csv_files(args.logfile, out_dir, train, test), (train, test)):
        print(f"{path}: {len(rows)} rows")
    return 0


def cmd_time(args):
    if args.iterations <= 0:
        raise CLIError("--iterations must be positive")
    if not os.path.isfile(args.model):
        raise CLIError(f"{args.model}: no such model file")
    check_engine(args.engine, gpu_device(args.gpu), args.precision)
    if args.engine == "caffe":
        result = run_caffe_time(args.model, args.iterations)
    else:
        result = run_torch_time(args)
    if args.json:
        from deepmammo.atomic import write_text
        from deepmammo.provenance import provenance
        config = {k: v for k, v in vars(args).items() if k != "func"}
        result["provenance"] = provenance(config, None, [args.model])
        write_text(args.json, json.dumps(result, indent=2, default=str))
    return 0


def run_torch_time(args):
    import torch

    from deepmammo.caffe.timing import format_report, time_net
    from deepmammo.engine import pycaffe
    if args.threads:
        torch.set_num_threads(args.threads)
    caffe = pycaffe("torch", args.gpu, args.precision)
    phase = caffe.TRAIN if args.phase == "TRAIN" else caffe.TEST
    net = caffe.Net(args.model, phase)
    try:
        result = time_net(net, args.iterations)
    finally:
        net.close()
    print(format_report(result))
    result["device"] = str(net.device) if net.device.type == "cpu" else \
        torch.cuda.get_device_name(net.device)
    result["threads"] = torch.get_num_threads()
    result["engine"] = "torch"
    return result


_CAFFE_LINE = re.compile(r"\] (.*)$")


def run_caffe_time(model, iterations, echo=True):
    """Run real Caffe's `caffe time` (on the CPU) and return its per-layer and total figures."""
    from deepmammo.caffe.real import caffe_tool
    from deepmammo.caffe.real_log import failure_summary, signal_name
    from deepmammo.caffe.real_train import python_path
    env = dict(os.environ, GLOG_logtostderr="1", GLOG_minloglevel="0",
               PYTHONPATH=python_path([os.path.dirname(os.path.abspath(model))]))
    cmd = [caffe_tool(), "time", "-model", model, "-iterations", str(iterations)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        what = failure_summary(proc.stderr.splitlines(), signal_name(proc.returncode))
        raise CLIError(f"{model}: real Caffe's `caffe time` stopped: {what}")
    messages = [m.group(1) for m in map(_CAFFE_LINE.search, proc.stderr.splitlines()) if m]
    start = next((i for i, m in enumerate(messages) if m.startswith("Average time per layer")), 0)
    report = messages[start:]
    if echo:
        print("\n".join(report))
    result = {"engine": "caffe", "layers": [], "iterations": iterations}
    per_layer = {}
    for m in report:
        hit = re.match(r"\s*(\S+)\s+(forward|backward): ([\d.e+-]+) ms", m)
        if hit:
            per_layer.setdefault(hit.group(1), {})[hit.group(2)] = float(hit.group(3))
        for key, label in (("forward_ms", "Average Forward pass"),
                           ("backward_ms", "Average Backward pass"),
                           ("forward_backward_ms", "Average Forward-Backward"),
                           ("total_ms", "Total Time")):
            if m.startswith(label):
                result[key] = float(re.search(r"([\d.e+-]+) ms", m).group(1))
    result["layers"] = [(n, None, v.get("forward", 0.0), v.get("backward", 0.0))
                        for n, v in per_layer.items()]
    # caffe's own Forward-Backward figure is whole milliseconds of its iteration timer; the
    # sum of its forward and backward passes is the same quantity at full resolution.
    result["caffe_forward_backward_ms"] = result.get("forward_backward_ms")
    if "forward_ms" in result and "backward_ms" in result:
        result["forward_backward_ms"] = result["forward_ms"] + result["backward_ms"]
    return result
