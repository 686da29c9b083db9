"""The `deepmammo` command. Each stage registers its own subcommands (a module
`commands.py` in its folder with `register(subparsers)`), so this file stays an index."""
import argparse
import importlib
import sys
import traceback

from deepmammo.errors import CLIError

# One module per stage, in pipeline order, and the function that adds its subcommands.
COMMAND_MODULES = (
    ("deepmammo.sources.commands", "register"),
    ("deepmammo.prep.commands", "register"),
    ("deepmammo.caffe.commands", "register"),
    ("deepmammo.experiment.commands", "register"),
    ("deepmammo.evaluate.commands", "register"),
    ("deepmammo.classify.commands", "register"),
    ("deepmammo.export.commands", "register"),
    ("deepmammo.report.commands", "register"),
)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="deepmammo", description="DeepMammo: Caffe-faithful breast mass classification")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module, function in COMMAND_MODULES:
        getattr(importlib.import_module(module), function)(subparsers)
    return parser


def describe(exc):
    """What a user sees for an error we expect (see docs/errors.md): one line; a message
    written in several lines keeps them, each after the first indented."""
    if isinstance(exc, OSError) and exc.strerror:
        # "[Errno 28] No space left on device: 'x'" -> "x: No space left on device"
        where = exc.filename if exc.filename is not None else ""
        if exc.filename2 is not None:
            where = f"{where} -> {exc.filename2}"
        return f"{where}: {exc.strerror}" if where != "" else exc.strerror
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return "\n  ".join(lines) or type(exc).__name__


# What a user can cause: bad input (every reader raises a ValueError subclass naming the file),
# missing paths, no space, no permission. Anything else is a bug of ours and keeps its traceback.
USER_ERRORS = (CLIError, ValueError, OSError)


def main(argv=None):
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may also come after the options (`experiment CONFIG --dry-run
    # epochs=2`, the Makefile's OVERRIDES): argparse would refuse positionals there.
    if extra and hasattr(args, "overrides") and all(
            "=" in item and not item.startswith("-") for item in extra):
        args.overrides = list(args.overrides) + extra
    elif extra:
        parser.error("unrecognized arguments: " + " ".join(extra))
    from deepmammo.caffe.train_log import setup_logging
    setup_logging(args.verbose)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return args.func(args) or 0
    except USER_ERRORS as exc:
        if args.verbose:
            traceback.print_exc()
        print(f"deepmammo {args.command}: error: {describe(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.verbose:
            traceback.print_exc()
        print(f"deepmammo {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
