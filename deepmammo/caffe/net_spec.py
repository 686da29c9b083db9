"""pycaffe's net specification (`caffe.NetSpec`, `caffe.layers`, `caffe.params`,
`caffe.to_proto`): nets written as Python expressions, turned into our schema's NetParameter.

    n = caffe.NetSpec()
    n.data, n.label = L.DummyData(shape=[dict(dim=[8, 1, 28, 28]), dict(dim=[8])], ntop=2)
    n.conv1 = L.Convolution(n.data, kernel_size=5, num_output=20)
    n.relu1 = L.ReLU(n.conv1, in_place=True)
    print(n.to_proto())

`L.<Type>(*bottoms, **fields)` makes a Function (one layer) whose outputs are Tops. Keyword
fields go, in the order given, into the layer's own `<type>_param` message when it has such a
field, else onto the LayerParameter itself; names ending in `param` always go onto the
LayerParameter. Values map onto protobuf by their Python type: a dict fills a message, a list
fills a repeated field (a list of dicts adds one message per dict), and a single value given
for a repeated field becomes a one-element list. `ntop=K` sets the number of tops (0 gives back
the Function itself), `in_place=True` names the tops after the bottoms.

Naming is pycaffe's, so the text of `to_proto()` is the same for the same script: a top is
named by the NetSpec attribute it was assigned to, else `<Type><k>` with one counter per type
and per to_proto() call, counted in the order the graph is walked (bottoms first); a layer is
named after its first top (an in-place layer too, although its top blob is its bottom's).
"""
import collections

from deepmammo.caffe.proto import caffe_pb2

__all__ = ["NetSpec", "Top", "Function", "Layers", "Parameters", "layers", "params", "to_proto",
           "assign_proto", "param_name_dict"]


def param_name_dict():
    """{layer type: field prefix} from LayerParameter's `*_param` fields, by their message
    names: e.g. 'Convolution' -> 'convolution', 'Transformation' -> 'transform'."""
    out = {}
    for field in caffe_pb2.LayerParameter.DESCRIPTOR.fields:
        if field.name.endswith("_param") and field.message_type is not None:
            type_name = field.message_type.name
            if type_name.endswith("Parameter"):
                type_name = type_name[:-len("Parameter")]
            out[type_name] = field.name[:-len("_param")]
    return out


def to_proto(*tops):
    """A NetParameter with every layer needed to compute `tops` (names generated)."""
    layers = collections.OrderedDict()
    counters = collections.Counter()
    for top in tops:
        # Each argument is walked with its own table of names; the counters are shared.
        top.fn._to_proto(layers, {}, counters)
    net = caffe_pb2.NetParameter()
    net.layer.extend(layers.values())
    return net


def assign_proto(proto, name, val):
    """Set field `name` of message `proto` from a Python value (see the module docstring).
    An unknown field raises AttributeError."""
    field = getattr(proto, name)
    repeated = hasattr(field, "extend")
    if repeated and not isinstance(val, list):
        val = [val]
    if isinstance(val, list):
        if val and isinstance(val[0], dict):
            for item in val:
                message = field.add()
                for key, value in item.items():
                    assign_proto(message, key, value)
        else:
            field.extend(val)
    elif isinstance(val, dict):
        for key, value in val.items():
            assign_proto(field, key, value)
    else:
        setattr(proto, name, val)


class Top:
    """Output `n` of the layer `fn` (one blob)."""

    def __init__(self, fn, n):
        self.fn = fn
        self.n = n

    def to_proto(self):
        """A NetParameter with every layer needed to compute this top."""
        return to_proto(self)

    def _to_proto(self, layers, names, counters):
        return self.fn._to_proto(layers, names, counters)


class Function:
    """One layer: its type, its input Tops and its fields (`params`, the keyword arguments
    less `ntop` and `in_place`)."""

    def __init__(self, type_name, inputs, params):
        self.type_name = type_name
        for index, item in enumerate(inputs):
            if not isinstance(item, Top):
                raise TypeError(f"{type_name} input {index} is not a Top (type is {type(item)})")
        self.inputs = inputs
        self.params = params
        self.ntop = self.params.pop("ntop", 1)
        self.in_place = self.params.pop("in_place", False)
        self.tops = tuple(Top(self, n) for n in range(self.ntop))

    def _top_name(self, top, names, counters):
        if top not in names:
            counters[top.fn.type_name] += 1
            names[top] = f"{top.fn.type_name}{counters[top.fn.type_name]}"
        return names[top]

    def _layer_name(self, names, counters):
        if self not in names:
            if self.ntop > 0:
                names[self] = self._top_name(self.tops[0], names, counters)
            else:
                counters[self.type_name] += 1
                names[self] = f"{self.type_name}{counters[self.type_name]}"
        return names[self]

    def _to_proto(self, layers, names, counters):
        if self in layers:
            return
        bottoms = []
        for item in self.inputs:
            item._to_proto(layers, names, counters)
            bottoms.append(layers[item.fn].top[item.n])
        layer = caffe_pb2.LayerParameter()
        layer.type = self.type_name
        layer.bottom.extend(bottoms)
        if self.in_place:
            layer.top.extend(layer.bottom)
        else:
            layer.top.extend(self._top_name(top, names, counters) for top in self.tops)
        layer.name = self._layer_name(names, counters)
        for key, value in self.params.items():
            if key.endswith("param"):
                assign_proto(layer, key, value)
                continue
            try:
                own = getattr(layer, _PARAM_NAMES[self.type_name] + "_param")
                assign_proto(own, key, value)
            except (AttributeError, KeyError):
                # Not a field of the layer's own *_param (or the type has none): the
                # LayerParameter's, e.g. loss_weight, include, propagate_down.
                assign_proto(layer, key, value)
        layers[self] = layer


class _NoSuchTop(KeyError, AttributeError):
    """A NetSpec name never assigned: pycaffe raises KeyError; AttributeError too, so that
    hasattr() and getattr(..., default) answer as for any object."""


class NetSpec:
    """Named Tops (assigned as attributes or items); to_proto() builds every layer needed for
    them, each top named by its attribute."""

    def __init__(self):
        object.__setattr__(self, "tops", collections.OrderedDict())

    def __setattr__(self, name, value):
        self.tops[name] = value

    def __getattr__(self, name):
        try:
            return self.tops[name]
        except KeyError:
            raise _NoSuchTop(name) from None

    def __setitem__(self, key, value):
        self.__setattr__(key, value)

    def __getitem__(self, item):
        return self.__getattr__(item)

    def to_proto(self):
        names = {top: name for name, top in self.tops.items()}
        counters = collections.Counter()
        layers = collections.OrderedDict()
        for top in self.tops.values():
            top._to_proto(layers, names, counters)
        net = caffe_pb2.NetParameter()
        net.layer.extend(layers.values())
        return net


class Layers:
    """`layers.<Type>(*bottoms, **fields)`: a layer of that type; returns its Top, its tuple
    of Tops (ntop > 1) or the Function itself (ntop=0)."""

    def __getattr__(self, type_name):
        def make_layer(*args, **kwargs):
            fn = Function(type_name, args, kwargs)
            if fn.ntop == 0:
                return fn
            if fn.ntop == 1:
                return fn.tops[0]
            return fn.tops
        make_layer.__name__ = type_name
        return make_layer


class Parameters:
    """`params.<Type>.<NAME>`: the enum value NAME of <Type>Parameter, e.g.
    params.Pooling.MAX."""

    def __getattr__(self, type_name):
        return _EnumsOf(type_name)


class _EnumsOf:
    def __init__(self, type_name):
        self._type_name = type_name

    def __getattr__(self, value_name):
        return getattr(getattr(caffe_pb2, self._type_name + "Parameter"), value_name)


_PARAM_NAMES = param_name_dict()
layers = Layers()
params = Parameters()
