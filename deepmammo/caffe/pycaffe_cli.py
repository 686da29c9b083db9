"""`deepmammo pycaffe` and `deepmammo draw`: pycaffe's scripts on this engine.

    deepmammo pycaffe SCRIPT [ARGS...]       run a pycaffe script unchanged (`import caffe`
                                              is deepmammo.caffe), as `python SCRIPT ARGS`
    deepmammo pycaffe -m MODULE [ARGS...]    the same for `python -m MODULE`, e.g. pycaffe's
                                              tests: -m unittest discover -s DIR -p 'test_*.py'
    deepmammo draw NET.prototxt OUT.png [--rankdir LR] [--phase TRAIN|TEST|ALL] [--display_lrm]
                                              Caffe's python/draw_net.py

The script runs as __main__ with sys.argv set and its folder first on sys.path (for -m, the
current directory), like Python's own command line; its exceptions print Python's traceback
and exit with status 1, its sys.exit() status is the command's.
"""
import argparse
import ast
import contextlib
import importlib.util
import io
import os
import runpy
import shutil
import sys
import traceback


def register(subparsers):
    # Everything after `pycaffe` belongs to the script (or to -m MODULE), options included:
    # no option of ours is looked for there (prefix "+"), -h/--help alone excepted.
    p = subparsers.add_parser(
        "pycaffe", prefix_chars="+", add_help=False,
        usage="deepmammo pycaffe [-h] (SCRIPT | -m MODULE) [ARGS...]",
        help="run a pycaffe script unchanged (import caffe = deepmammo.caffe)",
        description="Run a pycaffe script (or, with -m, a module, as python -m) with `import "
                    "caffe` and its submodules (caffe.proto, caffe.io, caffe.draw, "
                    "caffe.net_spec, ...) answered by deepmammo's engine. Everything after "
                    "SCRIPT or -m MODULE is its sys.argv.")
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="SCRIPT [ARGS...]",
                   help="the script and its arguments, or -m MODULE and its arguments")
    p.set_defaults(func=cmd_pycaffe, pycaffe_parser=p)

    d = subparsers.add_parser(
        "draw", help="draw a net's graph (Caffe's python/draw_net.py)",
        description="Draw the graph of a net prototxt into an image (Graphviz's dot; the "
                    "format is the output file's extension: png, svg, pdf, raw, ...).")
    d.add_argument("input_net_proto_file", help="Input network prototxt file")
    d.add_argument("output_image_file", help="Output image file")
    d.add_argument("--rankdir", default="LR",
                   help="One of TB (top-bottom, i.e., vertical), RL (right-left, i.e., "
                        "horizontal), or another valid dot option (default: LR)")
    d.add_argument("--phase", default="ALL",
                   help="Which network phase to draw: TRAIN, TEST, or ALL (every layer, "
                        "whatever its phase; the default)")
    d.add_argument("--display_lrm", action="store_true",
                   help="show the learning rate multipliers of Convolution, Deconvolution "
                        "and InnerProduct layers")
    d.set_defaults(func=cmd_draw)


def _exit_status(code):
    """The process status of sys.exit(code), as Python's own command line makes it."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _print_script_traceback(exc):
    """Python's traceback for an exception of the script, without this runner's frames."""
    ours = {__file__, runpy.__file__, "<frozen runpy>"}
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename in ours:
        tb = tb.tb_next
    traceback.print_exception(type(exc), exc, tb)


def run_pycaffe(script=None, module=None, args=()):
    """Run a script file or a module as __main__ with the caffe alias; returns the exit
    status."""
    from deepmammo.caffe import alias
    from deepmammo.errors import CLIError
    alias.install()
    if module is not None:
        sys.argv = [module] + list(args)
        sys.path.insert(0, os.getcwd())
        try:
            found = importlib.util.find_spec(module)
        except ImportError:
            found = None
        if found is None:
            raise CLIError(f"No module named {module!r}")
    else:
        if not os.path.isfile(script):
            raise CLIError(f"{script}: no such script")
        sys.argv = [script] + list(args)
        sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    try:
        if module is not None:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        else:
            runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        return _exit_status(exc.code)
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        _print_script_traceback(exc)
        return 1
    return 0


def cmd_pycaffe(args):
    from deepmammo.errors import CLIError
    rest = list(args.args)
    if not rest:
        raise CLIError("give a SCRIPT to run (or -m MODULE)")
    if rest[0] in ("-h", "--help"):
        args.pycaffe_parser.print_help()
        return 0
    if rest[0].startswith("-m"):
        module = rest[0][2:] or (rest[1] if len(rest) > 1 else None)
        if not module:
            raise CLIError("-m needs a MODULE")
        return run_pycaffe(module=module, args=rest[1 if rest[0][2:] else 2:])
    if rest[0].startswith("-"):
        raise CLIError(f"unknown option {rest[0]} (give SCRIPT [ARGS...] or -m MODULE "
                       "[ARGS...])")
    return run_pycaffe(script=rest[0], args=rest[1:])


def cmd_draw(args):
    from google.protobuf import text_format

    from deepmammo.caffe import draw
    from deepmammo.caffe.proto import caffe_pb2
    from deepmammo.errors import CLIError
    phases = {"TRAIN": caffe_pb2.TRAIN, "TEST": caffe_pb2.TEST, "ALL": None}
    if args.phase not in phases:
        raise CLIError(f"Unknown phase: {args.phase} (TRAIN, TEST or ALL)")
    if not os.path.isfile(args.input_net_proto_file):
        raise CLIError(f"{args.input_net_proto_file}: no such prototxt file")
    if shutil.which("dot") is None:
        raise CLIError("Graphviz's `dot` is not on PATH (Debian/Ubuntu: apt-get install "
                       "graphviz)")
    net = caffe_pb2.NetParameter()
    with open(args.input_net_proto_file, "rb") as f:
        data = f.read()
    try:
        text_format.Merge(data.decode("utf-8"), net)
    except UnicodeDecodeError as exc:
        raise CLIError(f"{args.input_net_proto_file}: not UTF-8 text (byte {exc.start}: "
                       f"{data[exc.start:exc.start + 1]!r})") from None
    except text_format.ParseError as exc:
        raise CLIError(f"{args.input_net_proto_file}: {exc}") from None
    print(f"Drawing net to {args.output_image_file}")
    chatter = io.StringIO()
    try:
        with contextlib.redirect_stdout(chatter):
            draw.draw_net_to_file(net, args.output_image_file, args.rankdir,
                                  phases[args.phase], args.display_lrm)
    except AssertionError as exc:     # pydot: dot failed (e.g. an unknown output format)
        raise CLIError(f"dot failed: {_dot_stderr(chatter.getvalue()) or exc}") from None
    return 0


def _dot_stderr(text):
    """dot's own messages from pydot's report of a failed run (it prints them as b'...')."""
    messages = []
    for line in text.splitlines():
        line = line.strip()
        if line[:2] in ("b'", 'b"'):
            try:
                messages.append(ast.literal_eval(line).decode(errors="replace").strip())
            except (ValueError, SyntaxError):
                continue
    return "; ".join(m for m in messages if m)
