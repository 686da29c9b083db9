"""Which engine runs a net, where, and in which arithmetic: the names every command and config
offers, the one check of what can run together, and pycaffe's API set up to run it.

    caffe = engine.pycaffe("torch", gpu=0, precision="bf16")
    net = caffe.Net(deploy, weights, caffe.TEST)

Engines: `torch` is deepmammo.caffe (ours, on the CPU or a CUDA GPU); `caffe` is real BVLC
pycaffe as `make caffe` builds it, which has the CPU and fp32 only. Precisions are our engine's
arithmetic: fp32 (float32 throughout, Caffe's numbers; the default), tf32 (TF32 tensor cores
for convolutions and matrix products; NVIDIA GPUs only) and bf16 (each layer's forward under
bfloat16 autocast, float32 weights, gradients and solver state; CPU and CUDA).

This module imports neither torch nor an engine until a check or pycaffe() needs one, so the
command line can offer its choices at no cost.
"""
ENGINES = ("torch", "caffe")
DEVICES = ("cpu", "cuda")
PRECISIONS = ("fp32", "tf32", "bf16")
DEFAULT_ENGINE = "torch"
DEFAULT_DEVICE = "cpu"
DEFAULT_PRECISION = "fp32"

# One line per precision, for logs and records.
PRECISION_NOTES = {
    "fp32": "float32 throughout, Caffe's numbers",
    "tf32": "TF32 tensor-core convolutions and matrix products; not Caffe's numbers",
    "bf16": "bfloat16 autocast in forward; float32 weights, gradients and solver state; "
            "not Caffe's numbers",
}


class EngineError(ValueError):
    """An engine, device and precision that cannot run together; the message says what to use
    instead."""


class PrecisionError(EngineError):
    """A precision this engine or device cannot run."""


# ----------------------------------------------------------------------------- the checks

def device_type(device):
    """'cpu' or 'cuda' of a device given as 'cpu', 'cuda', 'cuda:1' or a torch.device."""
    return getattr(device, "type", None) or str(device).split(":", 1)[0]


def check_names(engine=DEFAULT_ENGINE, device=DEFAULT_DEVICE, precision=DEFAULT_PRECISION):
    """Refuse a name that is none of ENGINES, DEVICES or PRECISIONS."""
    if engine not in ENGINES:
        raise EngineError(f"unknown engine {engine!r} (one of {', '.join(ENGINES)})")
    if device_type(device) not in DEVICES:
        raise EngineError(f"unknown device {device!r} (one of {', '.join(DEVICES)})")
    if precision not in PRECISIONS:
        raise PrecisionError(f"unknown precision {precision!r} (one of {', '.join(PRECISIONS)})")


def check_combination(engine=DEFAULT_ENGINE, device=DEFAULT_DEVICE,
                      precision=DEFAULT_PRECISION, workers=1):
    """Refuse what can run on no machine: real Caffe off the CPU or outside fp32, tf32 off
    CUDA, a precision other than fp32 across several workers. Needs no GPU to answer (a
    config is checked with it on any machine)."""
    check_names(engine, device, precision)
    kind = device_type(device)
    if engine == "caffe" and kind != "cpu":
        raise EngineError("real Caffe (the build of `make caffe`) runs on the CPU only; "
                          "use the CPU, or engine torch for CUDA")
    if engine == "caffe" and precision != "fp32":
        raise PrecisionError(f"precision {precision}: real Caffe computes in fp32 only; "
                             "use engine torch")
    if precision == "tf32" and kind != "cuda":
        raise PrecisionError("precision tf32 needs a CUDA GPU (TF32 is the tensor-core format "
                             "of NVIDIA GPUs from Ampere on); on the CPU use fp32 (Caffe's "
                             "numbers) or bf16")
    if precision != "fp32" and workers > 1:
        raise PrecisionError(f"precision {precision}: training on several GPUs runs in fp32 "
                             "only for now; give one GPU")


def check(engine=DEFAULT_ENGINE, device=DEFAULT_DEVICE, precision=DEFAULT_PRECISION,
          workers=1):
    """Refuse, before any work, what this machine cannot run: check_combination, then the
    device itself (bf16 on a GPU without bfloat16 arithmetic)."""
    check_combination(engine, device, precision, workers)
    if precision == "bf16" and device_type(device) == "cuda":
        import torch
        if torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
            raise PrecisionError(f"precision bf16: {torch.cuda.get_device_name(device)} has "
                                 "no bfloat16 arithmetic; use fp32 or tf32")


def gpu_device(gpu):
    """The device of a GPU index (None: the CPU)."""
    return DEFAULT_DEVICE if gpu is None else f"cuda:{int(gpu)}"


# ------------------------------------------------------------------------------ pycaffe

def caffe_module(engine):
    """pycaffe's API as it is: our engine (`torch`) or real BVLC Caffe (`caffe`)."""
    check_names(engine)
    if engine == "caffe":
        from deepmammo.caffe.real import import_caffe
        return import_caffe()
    import deepmammo.caffe as caffe
    return caffe


def pycaffe(engine=DEFAULT_ENGINE, gpu=None, precision=DEFAULT_PRECISION):
    """pycaffe's API on `engine`, set up for the nets built from now on: on GPU `gpu` (an index;
    None: the CPU) in `precision`. What cannot run is refused first (check)."""
    check(engine, gpu_device(gpu), precision)
    caffe = caffe_module(engine)
    if gpu is None:
        caffe.set_mode_cpu()
    else:
        _check_gpu_index(int(gpu))
        caffe.set_device(int(gpu))
        caffe.set_mode_gpu()
    if engine == "torch":
        from deepmammo.caffe import mode
        mode.set_precision(precision)
    return caffe


def _check_gpu_index(index):
    import torch
    if not torch.cuda.is_available():
        raise EngineError(f"--gpu {index}: no CUDA device is visible to torch")
    if not 0 <= index < torch.cuda.device_count():
        raise EngineError(f"--gpu {index}: only {torch.cuda.device_count()} CUDA device(s)")


# ------------------------------------------------------------------- the command line

def add_engine_argument(parser, default=DEFAULT_ENGINE, help=None):
    """--engine torch|caffe."""
    parser.add_argument("--engine", choices=ENGINES, default=default, help=help)


def add_device_argument(parser, default=None, help=None):
    """--device cpu|cuda."""
    parser.add_argument("--device", choices=DEVICES, default=default, help=help)


def add_precision_argument(parser):
    """--precision fp32|tf32|bf16."""
    parser.add_argument("--precision", choices=PRECISIONS, default=DEFAULT_PRECISION,
                        help="arithmetic of our engine: fp32 (default, Caffe's numbers), tf32 "
                             "(CUDA tensor cores) or bf16 (autocast; float32 weights and "
                             "solver state); see docs/performance.md")
