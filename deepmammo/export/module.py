"""A built engine Net as a plain `torch.nn.Module`: `to_module(net)`.

    net = caffe.Net("runs/x/latest/deploy.prototxt", "snap_iter_100.caffemodel", caffe.TEST)
    module = to_module(net)             # parameters: module.layers["conv1"].blobs[0], ...
    probs = module(torch.from_numpy(batch))

The module runs the net's own layers in the net's order, each on its bottoms and its
parameter blobs (now `nn.Parameter`s, shared where the prototxt shares them), so an eager call
is the engine's forward, number for number. Traced (TorchScript) and exported (ONNX) graphs
cannot hold the engine's hand-written autograd functions (the fused ReLU, the 1x1 GEMM
convolution, max pooling's split kernels, cross-channel LRN): while tracing, those layers run
the same arithmetic with standard operators (`portable_forward`), which differ from the
engine's only in float rounding. The module is for inference: it is made from a TEST net, and
Dropout is the identity there.
"""
import re

import torch
import torch.nn.functional as F

from deepmammo.caffe.proto import caffe_pb2 as pb


class LayerParams(torch.nn.Module):
    """One layer's parameter blobs, as Caffe orders them (weight, bias, ...)."""

    def __init__(self, blobs):
        super().__init__()
        self.blobs = torch.nn.ParameterList(blobs)


def _key(name, taken):
    """A ModuleDict key for a layer name (no dots; unique)."""
    key = re.sub(r"[^0-9A-Za-z_]", "_", name) or "layer"
    base, n = key, 2
    while key in taken:
        key, n = f"{base}_{n}", n + 1
    return key


def _tracing():
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


def _channel_window_sum(t, size):
    """The engine's LRN window sum (the centre, then +-1, +-2 ... channels, zero outside), in
    the same order of additions, without in-place slice updates."""
    half = (size - 1) // 2
    c = t.shape[1]
    padded = F.pad(t, (0, 0, 0, 0, half, half))
    out = t
    for d in range(1, half + 1):
        out = out + padded[:, half - d:half - d + c]
        out = out + padded[:, half + d:half + d + c]
    return out


def portable_forward(layer, bottoms, params):
    """A layer's TEST-phase forward with standard torch operators only (what tracing and ONNX
    can hold); None where the layer's own forward already is."""
    kind = layer.type
    if kind == "Convolution":
        bias = params[1] if len(params) > 1 else None
        return [F.conv2d(x, params[0], bias, layer.stride, layer.pad, layer.dilation,
                         layer.group) for x in bottoms]
    if kind == "ReLU":
        x, slope = bottoms[0], layer.layer_param.relu_param.negative_slope
        return [F.relu(x) if slope == 0 else torch.where(x > 0, x, x * slope)]
    if kind == "Pooling":
        x = bottoms[0]
        kernel, out = layer._geometry(tuple(x.shape))
        mode = layer._fast(tuple(x.shape), kernel, out)
        if mode is None or len(layer.layer_param.top) == 2:
            return None
        ceil = mode == "ceil"
        if layer.method == pb.PoolingParameter.MAX:
            return [F.max_pool2d(x, kernel, layer.stride, layer.pad, ceil_mode=ceil)]
        return None
    if kind == "LRN" and layer.across:
        x = bottoms[0]
        scale = _channel_window_sum(x * x, layer.size) * (layer.alpha / layer.size) + layer.k
        return [x * scale.pow(-layer.beta)]
    if kind == "InnerProduct":
        x = bottoms[0]
        axis = layer._axis(tuple(x.shape))
        if axis != 1:
            return None
        weight = params[0].t() if layer.transpose else params[0]
        return [F.linear(torch.flatten(x, 1), weight, params[1] if len(params) > 1 else None)]
    if kind == "Dropout":
        return [bottoms[0]]
    if kind == "Eltwise" and layer.op == pb.EltwiseParameter.PROD:
        top = bottoms[0]
        for x in bottoms[1:]:
            top = top * x
        return [top]
    if kind == "Flatten":
        p = layer.layer_param.flatten_param
        return [torch.flatten(bottoms[0], p.axis, p.end_axis)]
    return None


class CaffeModule(torch.nn.Module):
    """A TEST-phase engine Net as an nn.Module. forward(*inputs) takes the net's input blobs in
    `input_names` order and returns the output blob (or a tuple, in `output_names` order)."""

    def __init__(self, net, outputs=None):
        super().__init__()
        if net.phase != pb.TEST:
            raise ValueError(f"{net.source}: to_module takes a TEST-phase net (a deploy net)")
        for layer in net.layers:
            if layer.type in ("Data", "ImageData", "HDF5Data", "MemoryData", "Python") or \
                    getattr(layer, "IS_LOSS", False):
                raise ValueError(f"{layer.where}: a {layer.type} layer has no place in a "
                                 "module; export the deploy net")
        self.net_name = net.name
        self.input_names = list(net.inputs)
        self.output_names = list(outputs or net.outputs)
        self.layers = torch.nn.ModuleDict()
        self._steps = []
        shared = {}
        for name, layer, bottoms, tops in zip(net._layer_names, net.layers, net._layer_bottoms,
                                              net._layer_tops):
            if layer.type == "Input":
                continue
            key = None
            if layer.blobs:
                params = []
                for blob in layer.blobs:
                    if id(blob) not in shared:   # a blob shared by ParamSpec name: one Parameter
                        shared[id(blob)] = torch.nn.Parameter(blob.tdata.detach().clone())
                    params.append(shared[id(blob)])
                key = _key(name, self.layers)
                self.layers[key] = LayerParams(params)
            self._steps.append((layer, key, list(bottoms), list(tops)))

    def forward(self, *inputs):
        if len(inputs) != len(self.input_names):
            raise TypeError(f"{self.net_name}: expected {len(self.input_names)} input(s) "
                            f"({', '.join(self.input_names)}), got {len(inputs)}")
        blobs = dict(zip(self.input_names, inputs))
        tracing = _tracing()
        for layer, key, bottoms, tops in self._steps:
            params = list(self.layers[key].blobs) if key is not None else []
            args = [blobs[b] for b in bottoms]
            out = portable_forward(layer, args, params) if tracing else None
            if out is None:
                out = layer.forward(args, params)
            blobs.update(zip(tops, out))
        outs = tuple(blobs[n] for n in self.output_names)
        return outs[0] if len(outs) == 1 else outs


def to_module(net, outputs=None):
    """The net as a `torch.nn.Module` (CaffeModule), in eval mode."""
    return CaffeModule(net, outputs).eval()
