"""Layer type `Python`: a layer written in Python by the user, as pycaffe runs it.

    layer { name: "mul" type: "Python" bottom: "data" top: "mul"
            python_param { module: "my_layers" layer: "MulLayer" param_str: "10" } }

    # my_layers.py
    import caffe                      # or: import deepmammo.caffe as caffe
    class MulLayer(caffe.Layer):
        def setup(self, bottom, top):
            self.k = float(self.param_str)
        def reshape(self, bottom, top):
            top[0].reshape(*bottom[0].data.shape)
        def forward(self, bottom, top):
            top[0].data[...] = self.k * bottom[0].data
        def backward(self, top, propagate_down, bottom):
            if propagate_down[0]:
                bottom[0].diff[...] = self.k * top[0].diff

As in Caffe, the class is `<module>.<layer>(layer_param)`; before setup it gets `param_str` and
`phase` (0 TRAIN, 1 TEST); `bottom` and `top` are the net's own Blobs (numpy `.data`/`.diff`,
`.reshape(*shape)`, `.count`, `.num`, ...), so writes land in the net; `reshape` runs before
every forward; backward gets `propagate_down` (one bool per bottom) and writes the bottom diffs
and the diffs of its own `self.blobs` (`self.blobs.add_blob(*shape)` in setup makes a
parameter blob the net saves, loads, shares and the solver updates). loss_weight works as for
any layer: the loss is loss_weight x the sum of the top, and the top's diff holds the weight
when backward starts.

The module is imported by name from sys.path (PYTHONPATH), as Caffe does; failing that, from the
current directory and then from the prototxt's folder (the folder found stays on sys.path, at
its end, so the module's own imports of its neighbours work too). A module written for pycaffe
says `import caffe`: unless another `caffe` is already imported, that name is made to mean
deepmammo.caffe first (deepmammo/caffe/alias.py), as under `deepmammo pycaffe`.
"""
import importlib
import os
import sys

from deepmammo.caffe.blob import Blob
from deepmammo.caffe.layers.base import Layer as EngineLayer
from deepmammo.caffe.layers.base import register

__all__ = ["Layer", "BlobVec", "PythonLayer"]


class BlobVec(list):
    """pycaffe's BlobVec: a layer's parameter Blobs; `add_blob(*shape)` appends a zero Blob."""

    def __init__(self, blobs=(), device="cpu", owner=""):
        super().__init__(blobs)
        self.device = device
        self.owner = owner

    def add_blob(self, *shape, **kwargs):
        if kwargs:
            raise RuntimeError("BlobVec.add_blob takes no kwargs")
        self.append(Blob(shape, self.device, name=f"{self.owner}/{len(self)}"))


class Layer:
    """pycaffe's caffe.Layer: subclass it and define setup, reshape, forward, backward."""

    type = "Python"

    def __init__(self, param=None):
        self.layer_param = param

    @property
    def blobs(self):
        """The layer's parameter Blobs (read-only attribute, as pycaffe's)."""
        try:
            return self.__dict__["_blobs"]
        except KeyError:   # a subclass __init__ that skipped ours still gets its BlobVec
            self.__dict__["_blobs"] = BlobVec()
            return self.__dict__["_blobs"]

    def setup(self, bottom, top):
        """Called once, after param_str and phase are set."""

    def reshape(self, bottom, top):
        raise NotImplementedError(f"{type(self).__name__}: a Python layer must define "
                                  "reshape(bottom, top)")

    # forward(bottom, top) and backward(top, propagate_down, bottom) are the subclass's: one
    # that is missing is an AttributeError when the net needs it, as in pycaffe.


def _missing(exc, name):
    """True when ModuleNotFoundError `exc` is about `name` itself (or a package above it),
    not about something the module imports."""
    return exc.name is not None and (name == exc.name or name.startswith(exc.name + "."))


def _search_dirs(source):
    """The extra places a layer module is looked for, in order: the current directory and the
    prototxt's folder."""
    dirs = [os.getcwd()]
    if source and os.path.isfile(source):
        dirs.append(os.path.dirname(os.path.abspath(source)))
    return list(dict.fromkeys(dirs))


def _on_sys_path(directory):
    for entry in sys.path:
        if os.path.abspath(entry or os.curdir) == directory:
            return True
    return False


def import_layer_module(name, source, error):
    """Import python_param.module `name` as Caffe does, then from the current directory and
    the prototxt's folder; `error(message)` makes the exception for a module not found."""
    if not name:
        raise error("python_param.module is not set")
    if "caffe" not in sys.modules:
        from deepmammo.caffe import alias
        alias.install()
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if not _missing(exc, name):
            raise
    for directory in _search_dirs(source):
        if _on_sys_path(directory):
            continue
        sys.path.append(directory)
        importlib.invalidate_caches()
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as exc:
            sys.path.remove(directory)
            if not _missing(exc, name):
                raise
    searched = [os.path.abspath(p or os.curdir) for p in sys.path]
    searched += [d for d in _search_dirs(source) if d not in searched]
    raise error(f"python_param.module {name!r} not found (searched: "
                f"{', '.join(dict.fromkeys(searched))}); put {name}.py beside the prototxt, in "
                "the current directory or on PYTHONPATH")


@register
class PythonLayer(EngineLayer):
    """The net's side of a user's Python layer: calls its methods on the net's own Blobs.

    Attributes the net does not know are the user layer's (`net.layers[i].my_field`)."""

    TYPE = "Python"
    FIELDS = {"python_param": {"module", "layer", "param_str", "share_in_parallel"}}
    AUTOGRAD = False         # the user's backward writes the diffs
    PARAM_GRADS = False      # ... of its own blobs too
    WORKS_ON_BLOBS = True    # see bind()

    def __init__(self, param, phase, device, where):
        super().__init__(param, phase, device, where)
        self.user = None
        self.bottom_blobs, self.top_blobs = [], []

    def bind(self, net, bottom_blobs, top_blobs):
        """Called by the net before setup with its Blobs: import the module, make the user's
        layer, give it param_str and phase."""
        pp = self.layer_param.python_param
        module = import_layer_module(pp.module, net.source, self.error)
        if not hasattr(module, pp.layer):
            raise self.error(f"module {pp.module!r} ({getattr(module, '__file__', '?')}) has no "
                             f"layer class {pp.layer!r}")
        make = getattr(module, pp.layer)
        if isinstance(make, type) and not issubclass(make, Layer):
            raise self.error(self._not_a_layer(f"{pp.module}.{pp.layer}"))
        user = make(self.layer_param)       # as Caffe: the class, called with the parameters
        if not isinstance(user, Layer):
            raise self.error(self._not_a_layer(f"{pp.module}.{pp.layer}(param)"))
        blobs = user.blobs
        blobs.device = self.device
        blobs.owner = self.name
        user.param_str = pp.param_str
        user.phase = int(self.phase)
        self.user = user
        self.blobs = blobs
        self.bottom_blobs, self.top_blobs = list(bottom_blobs), list(top_blobs)

    @staticmethod
    def _not_a_layer(what):
        other = sys.modules.get("caffe")
        hint = ""
        if other is not None and other.__name__ != "deepmammo.caffe":
            hint = (f"; `caffe` in this process is {getattr(other, '__file__', other)}, not "
                    "deepmammo.caffe: run the script with `deepmammo pycaffe`")
        return f"{what} is not a caffe.Layer (deepmammo.caffe.Layer){hint}"

    def setup(self, bottom_shapes):
        self.user.setup(self.bottom_blobs, self.top_blobs)

    def reshape(self, bottom_shapes):
        before = [b.shape for b in self.top_blobs]
        self.user.reshape(self.bottom_blobs, self.top_blobs)
        # A top that changed shape lost its diff; a loss top's diff holds its loss weight.
        for blob, shape, weight in zip(self.top_blobs, before, self.layer_param.loss_weight):
            if weight and blob.shape != shape:
                blob.tdiff.fill_(weight)
        return None          # the user shaped the tops

    def forward(self, bottoms, params):
        self.user.forward(self.bottom_blobs, self.top_blobs)
        return [blob.tdata for blob in self.top_blobs]

    def backward(self, tops, top_diffs, bottoms, params, need_bottom, need_param):
        self.user.backward(self.top_blobs, [bool(n) for n in need_bottom], self.bottom_blobs)
        bottom_diffs = [blob.tdiff if need else None
                        for blob, need in zip(self.bottom_blobs, need_bottom)]
        return bottom_diffs, [None] * len(self.blobs)

    def __getattr__(self, name):
        user = self.__dict__.get("user")
        if user is None or name.startswith("__"):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return getattr(user, name)
