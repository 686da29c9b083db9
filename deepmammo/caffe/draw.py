"""pycaffe's `caffe.draw`: a NetParameter drawn as a Graphviz graph (pydot), the same graph
pycaffe draws (node names, labels, colours, edges, in the same order).

    from deepmammo.caffe import draw
    draw.draw_net_to_file(net_param, "net.png", rankdir="LR", phase=None, display_lrm=False)

Layers are record boxes labelled "name (Type)" (+ kernel/stride/pad for Convolution,
Deconvolution and Pooling, + lr multipliers with display_lrm), blobs are octagons; edges run
bottom blob -> layer -> top blob, a layer's top edges labelled with its output size (Data:
"Batch N"). An in-place layer (one bottom = its one top) is a green box. `phase` keeps the
layers whose include/exclude phase rules admit it (None: every layer); stages and levels are
not looked at, as in pycaffe. Drawing needs Graphviz's `dot` on PATH; `deepmammo draw` is
Caffe's python/draw_net.py.
"""
import pydot

from deepmammo.caffe.proto import caffe_pb2

LAYER_STYLE_DEFAULT = {"shape": "record", "fillcolor": "#6495ED", "style": "filled"}
NEURON_LAYER_STYLE = {"shape": "record", "fillcolor": "#90EE90", "style": "filled"}
BLOB_STYLE = {"shape": "octagon", "fillcolor": "#E0E0E0", "style": "filled"}

_LEARNING_TYPES = ("Convolution", "Deconvolution", "InnerProduct")


def get_pooling_types_dict():
    """{pool method number: name}, e.g. {0: 'MAX', 1: 'AVE', 2: 'STOCHASTIC'}."""
    values = caffe_pb2.PoolingParameter.PoolMethod.DESCRIPTOR.values
    return {v.number: v.name for v in values}


def get_edge_label(layer):
    """The label of a layer's edges to its tops: the output size where the layer has one."""
    if layer.type == "Data":
        return f"Batch {layer.data_param.batch_size}"
    if layer.type in ("Convolution", "Deconvolution"):
        return str(layer.convolution_param.num_output)
    if layer.type == "InnerProduct":
        return str(layer.inner_product_param.num_output)
    return '""'


def get_layer_lr_mult(layer):
    """(weight lr_mult, bias lr_mult) of a Convolution, Deconvolution or InnerProduct layer;
    1.0 where no ParamSpec gives one."""
    if layer.type not in _LEARNING_TYPES:
        raise ValueError(f"{layer.type} layers do not have a learning rate multiplier")
    specs = list(layer.param)
    if len(specs) > 2:
        raise ValueError("Could not parse the learning rate multiplier")
    mults = [spec.lr_mult for spec in specs] + [1.0] * (2 - len(specs))
    return tuple(mults)


def get_layer_label(layer, rankdir, display_lrm=False):
    """The node label of a layer, quoted for dot. Vertical layouts (TB, BT) put the parts on
    one line, others one part per line."""
    separator = " " if rankdir in ("TB", "BT") else r"\n"
    if layer.type == "Pooling":
        pool = get_pooling_types_dict()[layer.pooling_param.pool]
        parts = [layer.name, f"({layer.type} {pool})"]
    else:
        parts = [layer.name, f"({layer.type})"]
    if layer.type in ("Convolution", "Deconvolution", "Pooling"):
        if layer.type == "Pooling":
            p = layer.pooling_param
            kernel, stride, pad = p.kernel_size, p.stride, p.pad
        else:
            p = layer.convolution_param
            kernel = p.kernel_size[0] if len(p.kernel_size) else 1
            stride = p.stride[0] if len(p.stride) else 1
            pad = p.pad[0] if len(p.pad) else 0
        parts.append(separator.join([f"kernel size: {kernel:d}", f"stride: {stride:d}",
                                     f"pad: {pad:d}"]))
    if display_lrm and layer.type in _LEARNING_TYPES:
        weight_mult, bias_mult = get_layer_lr_mult(layer)
        if weight_mult or bias_mult:
            parts.append(f"lr mult: {weight_mult:.1f}, {bias_mult:.1f}")
    # Quoted, or dot would read the colons as port separators.
    return '"%s"' % separator.join(parts)


def choose_color_by_layertype(layertype):
    """A layer box's fill colour by its type."""
    return {"Convolution": "#FF5050", "Deconvolution": "#FF5050", "Pooling": "#FF9900",
            "InnerProduct": "#CC33FF"}.get(layertype, "#6495ED")


def _in_phase(layer, phase):
    if len(layer.include) and len(layer.exclude):
        raise ValueError(f"layer {layer.name} has both include and exclude specified.")
    included = not len(layer.include) or any(r.phase == phase for r in layer.include)
    return included and not any(r.phase == phase for r in layer.exclude)


def get_pydot_graph(caffe_net, rankdir, label_edges=True, phase=None, display_lrm=False):
    """The pydot.Dot graph of NetParameter `caffe_net` (see the module docstring)."""
    graph = pydot.Dot(caffe_net.name if caffe_net.name else "Net", graph_type="digraph",
                      rankdir=rankdir)
    nodes = {}     # key -> node, in the order the keys first appear (a blob keeps its place)
    edges = []
    for layer in caffe_net.layer:
        if phase is not None and not _in_phase(layer, phase):
            continue
        label = get_layer_label(layer, rankdir, display_lrm=display_lrm)
        key = f"{layer.name}_{layer.type}"
        if len(layer.bottom) == 1 and len(layer.top) == 1 and layer.bottom[0] == layer.top[0]:
            nodes[key] = pydot.Node(label, **NEURON_LAYER_STYLE)
        else:
            style = dict(LAYER_STYLE_DEFAULT, fillcolor=choose_color_by_layertype(layer.type))
            nodes[key] = pydot.Node(label, **style)
        for blob in layer.bottom:
            nodes[blob + "_blob"] = pydot.Node(blob, **BLOB_STYLE)
            edges.append((blob + "_blob", key, '""'))
        for blob in layer.top:
            # A top keeps pycaffe's plain node until a later layer reads it as a bottom.
            nodes[blob + "_blob"] = pydot.Node(blob)
            edges.append((key, blob + "_blob", get_edge_label(layer) if label_edges else '""'))
    for node in nodes.values():
        graph.add_node(node)
    for src, dst, label in edges:
        graph.add_edge(pydot.Edge(nodes[src], nodes[dst], label=label))
    return graph


def draw_net(caffe_net, rankdir, ext="png", phase=None, display_lrm=False):
    """The drawing of `caffe_net` as bytes in format `ext` (any of dot's: png, svg, pdf, ...)."""
    return get_pydot_graph(caffe_net, rankdir, phase=phase,
                           display_lrm=display_lrm).create(format=ext)


def draw_net_to_file(caffe_net, filename, rankdir="LR", phase=None, display_lrm=False):
    """Draw `caffe_net` into `filename`, in the format its extension names ('.raw': the dot
    text, to feed Graphviz by hand)."""
    ext = filename[filename.rfind(".") + 1:]
    data = draw_net(caffe_net, rankdir, ext, phase, display_lrm)
    with open(filename, "wb") as fid:
        fid.write(data)
