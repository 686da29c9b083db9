"""Find and import real BVLC Caffe (pycaffe) as built by `make caffe`.

The build lives outside the repository (scripts/build_caffe.sh), in
`$DEEPMAMMO_CACHE/caffe-<version>-py<X.Y>/` (default cache: ~/.cache/deepmammo), or wherever
DEEPMAMMO_CAFFE points. Real pycaffe registers its protobuf messages under package `caffe`;
ours are under `deepmammo_caffe`, so both load in one process.
"""
import glob
import os
import sys

CAFFE_VERSION = "1.0.0+git20180821.99bd997-8"


class CaffeNotBuilt(RuntimeError, FileNotFoundError):
    """No finished build: a user's error (`make caffe` fixes it), reported in one line."""


def _cache_dir():
    return os.environ.get("DEEPMAMMO_CACHE", os.path.expanduser("~/.cache/deepmammo"))


def find_build():
    """The folder of a finished real-Caffe build, or raise CaffeNotBuilt saying how to make one."""
    explicit = os.environ.get("DEEPMAMMO_CAFFE")
    if explicit:
        candidates = [explicit]
    else:
        tag = "".join(c if c.isalnum() or c == "." else "_" for c in CAFFE_VERSION)
        pyver = "%d.%d" % sys.version_info[:2]
        candidates = [os.path.join(_cache_dir(), f"caffe-{tag}-py{pyver}")]
        candidates += sorted(glob.glob(os.path.join(_cache_dir(), "caffe-*")))
    for path in candidates:
        if os.path.isfile(os.path.join(path, ".complete")):
            return path
    raise CaffeNotBuilt(
        "real BVLC Caffe is not built (looked in %s); run `make caffe`" % ", ".join(candidates))


def import_caffe():
    """Import real pycaffe (CPU mode, quiet logging) and return the module."""
    if "caffe" in sys.modules and hasattr(sys.modules["caffe"], "Net"):
        return sys.modules["caffe"]
    build = find_build()
    os.environ.setdefault("GLOG_minloglevel", "2")
    python_dir = os.path.join(build, "src", "python")
    if python_dir not in sys.path:
        sys.path.insert(0, python_dir)
    import caffe  # noqa: E402  (real pycaffe, from the build)
    caffe.set_mode_cpu()
    return caffe


def caffe_tool(name="caffe"):
    """Path of one of the build's command-line tools: `caffe`, or upgrade_net_proto_text,
    upgrade_net_proto_binary, upgrade_solver_proto_text, extract_features."""
    return os.path.join(find_build(), "build", "tools", name)
