"""`import caffe` answered by deepmammo.caffe, so pycaffe scripts and tests run unchanged.

    from deepmammo.caffe import alias
    alias.install()
    import caffe                                  # deepmammo.caffe
    from caffe.proto import caffe_pb2             # deepmammo.caffe.proto.caffe_pb2
    import caffe.draw, caffe.io, caffe.net_spec   # deepmammo.caffe.draw, ...

A finder placed first on sys.meta_path maps `caffe` to `deepmammo.caffe` and `caffe.X.Y` to
`deepmammo.caffe.X.Y` (`caffe._caffe`, pycaffe's compiled module, to deepmammo.caffe.pycaffe).
Each name is the very module object of deepmammo (one object per module: `caffe.io is
deepmammo.caffe.io`), imported on first use like any module. A real pycaffe on sys.path is not
reached while the alias is installed. `deepmammo pycaffe SCRIPT` runs scripts with it.
"""
import importlib
import importlib.abc
import importlib.util
import sys

ALIAS = "caffe"
TARGET = "deepmammo.caffe"
# pycaffe names whose module here has another name.
RENAMED = {"caffe._caffe": "deepmammo.caffe.pycaffe"}


def target_name(fullname):
    """The deepmammo module that answers `fullname` (caffe or caffe.*), else None."""
    if fullname in RENAMED:
        return RENAMED[fullname]
    if fullname == ALIAS:
        return TARGET
    if fullname.startswith(ALIAS + "."):
        return TARGET + fullname[len(ALIAS):]
    return None


class _AliasLoader(importlib.abc.Loader):
    """Hands the import system an already-imported module under the alias name."""

    def __init__(self, module):
        self.module = module
        self.spec = module.__spec__

    def create_module(self, spec):
        return self.module

    def exec_module(self, module):
        # The import system gave the module the alias's spec: it keeps its own.
        module.__spec__ = self.spec


class AliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        name = target_name(fullname)
        if name is None:
            return None
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
                return None       # no such module here: "No module named 'caffe.x'"
            raise
        return importlib.util.spec_from_loader(
            fullname, _AliasLoader(module), is_package=hasattr(module, "__path__"))


_FINDER = AliasFinder()


def _aliased_names():
    return [n for n in sys.modules if n == ALIAS or n.startswith(ALIAS + ".")]


def install():
    """Answer `import caffe` with deepmammo.caffe from now on (idempotent). Refuses when
    another `caffe` (real pycaffe) is already imported in this process."""
    if _FINDER in sys.meta_path:
        return
    for name in _aliased_names():
        mine = target_name(name)
        if sys.modules[name] is not sys.modules.get(mine):
            raise RuntimeError(f"module {name!r} is already imported from "
                               f"{getattr(sys.modules[name], '__file__', '?')}: the caffe alias "
                               "must be installed before any other caffe is imported")
    sys.meta_path.insert(0, _FINDER)
