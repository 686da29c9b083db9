"""Caffe's own tools as `deepmammo` subcommands, with Caffe's arguments (docs/tools.md):

    deepmammo upgrade-net IN OUT [--binary]       upgrade_net_proto_text / _binary
    deepmammo upgrade-net-binary IN OUT           upgrade_net_proto_binary
    deepmammo upgrade-solver IN OUT               upgrade_solver_proto_text
    deepmammo compute-mean DB [OUT] [--backend lmdb]                       compute_image_mean
    deepmammo convert-imageset ROOT LISTFILE DB [--gray] [--shuffle] [--resize_height H]
              [--resize_width W] [--check_size] [--encoded] [--encode_type T] [--backend lmdb]
              [--seed S]                                                    convert_imageset
    deepmammo extract-features WEIGHTS MODEL BLOBS DBS NUM_BATCHES [lmdb] [CPU|GPU] [DEVICE]
                                                                            extract_features
    deepmammo device-query [--gpu all|N[,M]]                                caffe device_query

Outputs are written under a temporary name and renamed when complete. A failure prints one
line naming the file (`deepmammo CMD: error: FILE: what`) and exits with status 2.
"""
import argparse
import logging
import os

log = logging.getLogger(__name__)

# The databases Caffe's tools take with --backend; ours reads and writes LMDB only.
BACKENDS = ("lmdb",)


def _flag(value):
    """gflags' boolean values: true/false (also 1/0, yes/no)."""
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "y", "t"):
        return True
    if text in ("false", "0", "no", "n", "f"):
        return False
    raise argparse.ArgumentTypeError(f"{value!r} is not a boolean (true or false)")


def _bool_option(parser, name, text):
    parser.add_argument(name, action="store_true", help=text + " (also --NAME=true|false)")


def _accept_gflags(parser):
    """Let `parser` take the command lines written for Caffe's gflags tools as well:
    `-flag` for `--flag`, and for boolean flags `--flag=true|false` and `--noflag`."""
    booleans = {a.option_strings[0][2:] for a in parser._actions
                if isinstance(a, argparse._StoreTrueAction) and a.option_strings}
    longs = {s[2:] for a in parser._actions for s in a.option_strings if s.startswith("--")}
    original = parser.parse_known_args

    def parse_known_args(args=None, namespace=None):
        rewritten = []
        for arg in args if args is not None else []:
            if arg.startswith("-") and not arg.startswith("--") and \
                    arg[1:].split("=", 1)[0] in longs:
                arg = "-" + arg
            name, eq, value = arg[2:].partition("=")
            if arg.startswith("--") and name in booleans and eq:
                try:
                    on = _flag(value)
                except argparse.ArgumentTypeError as exc:
                    parser.error(f"--{name}: {exc}")
                if on:
                    rewritten.append("--" + name)
                continue
            if arg.startswith("--no") and arg[4:] in booleans:
                continue
            rewritten.append(arg)
        return original(rewritten if args is not None else args, namespace)

    parser.parse_known_args = parse_known_args
    return parser


def register_tools(subparsers):
    """Add Caffe's tools to the `deepmammo` parser."""
    for name, binary in (("upgrade-net", False), ("upgrade-net-binary", True)):
        tool = "upgrade_net_proto_binary" if binary else "upgrade_net_proto_text"
        p = subparsers.add_parser(
            name, help=f"upgrade an old net to the current format (Caffe's {tool})",
            description="Read a net in any of Caffe's old formats (V0, V1, the deprecated "
                        "input fields, old BatchNorm param specs) and write it in the current "
                        "format, as Caffe's upgrade tools do. A net already current is copied.")
        p.add_argument("input", help="old net (.prototxt" + (", .caffemodel)" if binary else
                                                            "; --binary: .caffemodel)"))
        p.add_argument("output", help="upgraded net, written atomically")
        if not binary:
            p.add_argument("--binary", action="store_true",
                           help="binary NetParameter files (.caffemodel), as "
                                "upgrade_net_proto_binary")
        p.set_defaults(func=cmd_upgrade_net, binary=binary)

    p = subparsers.add_parser(
        "upgrade-solver", help="upgrade a solver's solver_type enum to type "
                               "(Caffe's upgrade_solver_proto_text)")
    p.add_argument("input", help="old solver .prototxt")
    p.add_argument("output", help="upgraded solver .prototxt, written atomically")
    p.set_defaults(func=cmd_upgrade_solver)

    p = subparsers.add_parser(
        "compute-mean", help="mean image of an LMDB (Caffe's compute_image_mean)",
        description="Sum every Datum of the database (raw or encoded) in key order and write "
                    "the mean image as a .binaryproto, with the per-channel means.")
    p.add_argument("db", help="LMDB folder of Datum records")
    p.add_argument("output", nargs="?", help="mean .binaryproto (optional, as in Caffe)")
    p.add_argument("--backend", choices=BACKENDS, default="lmdb")
    p.set_defaults(func=cmd_compute_mean)
    _accept_gflags(p)

    p = subparsers.add_parser(
        "convert-imageset", help="images + list file -> LMDB of Datum (Caffe's "
                                 "convert_imageset)",
        description="LISTFILE holds lines `relative/path label`; each image ROOT + path is "
                    "stored as a Datum (BGR, channels first) under the key %08d_path.")
    p.add_argument("root", help="folder the list's paths are relative to (joined as Caffe "
                                "joins them, so end it with /)")
    p.add_argument("listfile", help="text file of `path label` lines")
    p.add_argument("db", help="LMDB folder to create (must not exist)")
    _bool_option(p, "--gray", "read images as grey (one channel)")
    _bool_option(p, "--shuffle", "shuffle the lines first (Caffe's random stream)")
    p.add_argument("--seed", type=int, help="seed Caffe's random stream for --shuffle (ours: "
                                            "Caffe's tool never seeds it, so its order differs "
                                            "from run to run)")
    p.add_argument("--resize_height", type=int, default=0, help="height to resize to")
    p.add_argument("--resize_width", type=int, default=0, help="width to resize to (both "
                                                                "given: cv::resize linear)")
    _bool_option(p, "--check_size", "check that all images have the same size")
    _bool_option(p, "--encoded", "store the encoded image in the Datum")
    p.add_argument("--encode_type", default="", help="encode as this type (png, jpg, ...)")
    p.add_argument("--backend", choices=BACKENDS, default="lmdb")
    p.set_defaults(func=cmd_convert_imageset)
    _accept_gflags(p)

    p = subparsers.add_parser(
        "extract-features", help="blobs of a net over N batches -> LMDB of Datum "
                                 "(Caffe's extract_features)",
        description="Caffe's argument order: the trained weights first, then the net. BLOBS "
                    "and DBS are comma-separated lists of the same length.")
    p.add_argument("weights", help="trained .caffemodel")
    p.add_argument("model", help="net .prototxt (TEST phase) whose data layer feeds it")
    p.add_argument("blobs", help="blob name(s), comma-separated")
    p.add_argument("dbs", help="LMDB folder(s) to create, comma-separated")
    p.add_argument("num_batches", type=int, help="forward passes to run")
    p.add_argument("rest", nargs="*", metavar="[lmdb] [CPU|GPU] [DEVICE_ID]",
                   help="database type (lmdb), mode and GPU index, as Caffe's tool takes them")
    p.set_defaults(func=cmd_extract_features)

    p = subparsers.add_parser("device-query", help="the GPUs torch sees (caffe device_query)")
    p.add_argument("--gpu", default="all", help="'all' (default) or comma-separated indices")
    p.set_defaults(func=cmd_device_query)


# ------------------------------------------------------------------------------------ upgrade

def cmd_upgrade_net(args):
    from deepmammo.atomic import check_output_file, write_bytes
    from deepmammo.caffe.formats.caffemodel import _read_bytes, parse_message
    from deepmammo.caffe.formats.prototxt import _parse, _read, to_text
    from deepmammo.caffe.formats.upgrade import net_needs_upgrade, upgrade_net
    from deepmammo.caffe.proto import caffe_pb2 as pb
    check_output_file(args.output)
    if args.binary:
        net = parse_message(_read_bytes(args.input, "NetParameter"), pb.NetParameter(),
                            args.input, "binary NetParameter")
    else:
        net = _parse(_read(args.input), pb.NetParameter(), args.input)
    if net_needs_upgrade(net):
        upgrade_net(net, args.input)
    else:
        log.warning("File already in latest proto format: %s", args.input)
    if args.binary:
        write_bytes(args.output, net.SerializeToString())
    else:
        from deepmammo.atomic import write_text
        write_text(args.output, to_text(net))
    log.info("Wrote upgraded NetParameter %s proto to %s", "binary" if args.binary else "text",
             args.output)
    return 0


def cmd_upgrade_solver(args):
    from deepmammo.atomic import check_output_file, write_text
    from deepmammo.caffe.formats.prototxt import _parse, _read, to_text
    from deepmammo.caffe.formats.upgrade import solver_needs_upgrade, upgrade_solver
    from deepmammo.caffe.proto import caffe_pb2 as pb
    check_output_file(args.output)
    solver = _parse(_read(args.input), pb.SolverParameter(), args.input)
    if solver_needs_upgrade(solver):
        upgrade_solver(solver, args.input)
    else:
        log.warning("File already in latest proto format: %s", args.input)
    write_text(args.output, to_text(solver))
    log.info("Wrote upgraded SolverParameter text proto to %s", args.output)
    return 0


# ------------------------------------------------------------------------------- image tools

def cmd_compute_mean(args):
    from deepmammo.caffe.imageset import compute_image_mean
    if args.output:
        from deepmammo.atomic import check_output_file
        check_output_file(args.output)
    mean, channel_means = compute_image_mean(args.db)
    if args.output:
        from deepmammo.caffe.formats.binaryproto import write_mean
        log.info("Write to %s", args.output)
        write_mean(mean, args.output)
    log.info("Number of channels: %d", len(channel_means))
    for c, value in enumerate(channel_means):
        print(f"mean_value channel [{c}]: {value:.9g}")
    return 0


def cmd_convert_imageset(args):
    from deepmammo.caffe.imageset import convert_imageset
    count = convert_imageset(
        args.root, args.listfile, args.db, gray=args.gray, shuffle=args.shuffle, seed=args.seed,
        resize_height=args.resize_height, resize_width=args.resize_width,
        check_size=args.check_size, encoded=args.encoded, encode_type=args.encode_type)
    print(f"{args.db}: {count} images")
    return 0


def cmd_extract_features(args):
    from deepmammo.caffe.features import FeaturesError, extract_features
    rest = list(args.rest)
    if rest and rest[0] not in ("CPU", "GPU"):
        db_type = rest.pop(0)
        if db_type != "lmdb":
            raise FeaturesError(f"database type {db_type!r}: only lmdb is written here")
    mode = rest.pop(0) if rest else "CPU"
    gpu = None
    if mode == "GPU":
        gpu = int(rest.pop(0)) if rest else 0
        if gpu < 0:
            raise FeaturesError(f"device id {gpu}: give a GPU index >= 0")
    elif mode != "CPU":
        raise FeaturesError(f"{mode!r}: the mode is CPU or GPU")
    if rest:
        raise FeaturesError(f"unexpected arguments after the mode: {' '.join(rest)}")
    for path, what in ((args.weights, "weights"), (args.model, "model")):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such {what} file")
    if args.weights.endswith((".prototxt", ".pt")) and args.model.endswith(".caffemodel"):
        raise FeaturesError(f"{args.weights}: the weights come first and the net second, in "
                            "Caffe's order: extract-features WEIGHTS MODEL ...")
    counts = extract_features(args.weights, args.model, args.blobs.split(","),
                              args.dbs.split(","), args.num_batches, gpu=gpu)
    for db, count in zip(args.dbs.split(","), counts):
        print(f"{db}: {count} items")
    return 0


# ------------------------------------------------------------------------------ device query

def device_lines(index):
    """Caffe's DeviceQuery lines for one CUDA device, from what torch reports of it."""
    import torch
    p = torch.cuda.get_device_properties(index)
    lines = [("Device id", index), ("Major revision number", p.major),
             ("Minor revision number", p.minor), ("Name", p.name),
             ("Total global memory", p.total_memory)]
    for label, attr in (("Total shared memory per block", "shared_memory_per_block"),
                        ("Registers per multiprocessor", "regs_per_multiprocessor"),
                        ("Warp size", "warp_size"),
                        ("Maximum threads per block", "max_threads_per_block"),
                        ("Clock rate", "clock_rate"),
                        ("L2 cache size", "L2_cache_size")):
        if hasattr(p, attr):
            lines.append((label, getattr(p, attr)))
    lines.append(("Number of multiprocessors", p.multi_processor_count))
    return [f"{label + ':':<31}{value}" for label, value in lines]


def cmd_device_query(args):
    import torch
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if args.gpu == "all":
        indices = list(range(count))
    else:
        try:
            indices = [int(s) for s in args.gpu.split(",") if s.strip()]
        except ValueError:
            raise ValueError(f"--gpu {args.gpu!r}: give 'all' or indices separated by "
                             "commas") from None
    log.info("Querying GPUs %s", args.gpu)
    if not count:
        if args.gpu != "all":
            raise ValueError(f"--gpu {args.gpu}: no CUDA device is visible to torch")
        print("No cuda device present.")
        print(f"CPU: {torch.get_num_threads()} threads for torch")
        return 0
    for index in indices:
        if not 0 <= index < count:
            raise ValueError(f"--gpu {index}: torch sees {count} CUDA device(s)")
        print("\n".join(device_lines(index)))
    return 0
