"""Deconvolution (2-D, grouped, dilated), as Caffe's DeconvolutionLayer: the transpose of
Convolution with the same `convolution_param`. Weight (C_in, num_output/group, kh, kw), bias
(num_output); output size (in - 1) * stride - 2 * pad + dilation * (kernel - 1) + 1; unset
fillers are constant 0 (fillers see the weight shape above, as Caffe's do)."""
import torch.nn.functional as F

from deepmammo.caffe.layers.base import register
from deepmammo.caffe.layers.conv import Convolution


@register
class Deconvolution(Convolution):
    TYPE = "Deconvolution"

    def __init__(self, *args):
        super().__init__(*args)
        self.refuse_in_place("Caffe would resize the bottom before reading it")

    def setup(self, bottom_shapes):
        p = self.layer_param.convolution_param
        channels = bottom_shapes[0][1]
        if channels % self.group:
            raise self.error(f"{channels} input channels not divisible by group {self.group}")
        shape = (channels, self.num_output // self.group) + tuple(self.kernel)
        self.make_weight_and_bias(p, shape)

    def reshape(self, bottom_shapes):
        tops = []
        for shape in bottom_shapes:
            if len(shape) != 4:
                raise self.error(f"bottom must be 4-D (N, C, H, W), got {shape}")
            if shape != bottom_shapes[0]:
                raise self.error("all bottoms must have the same shape")
            if self.blobs and shape[1] != self.blobs[0].shape[0]:
                raise self.error(f"input size incompatible with deconvolution kernel: "
                                 f"{shape[1]} channels, the weights expect "
                                 f"{self.blobs[0].shape[0]}")
            out = [shape[0], self.num_output]
            for i in range(2):
                extent = self.dilation[i] * (self.kernel[i] - 1) + 1
                size = self.stride[i] * (shape[2 + i] - 1) + extent - 2 * self.pad[i]
                if size <= 0:
                    raise self.error(f"output would be empty for input {shape}")
                out.append(size)
            tops.append(tuple(out))
        return tops

    def forward(self, bottoms, params):
        weight = params[0]
        bias = params[1] if len(params) > 1 else None
        return [F.conv_transpose2d(x, weight, bias, self.stride, self.pad, 0, self.group,
                                   self.dilation) for x in bottoms]

    def flops(self, bottom_shapes, top_shapes):
        """Multiply-adds x 2 of the forward pass (for GFLOP/s reports)."""
        w = self.blobs[0].shape
        per_in = w[1] * w[2] * w[3]
        return sum(2 * per_in * b[0] * b[1] * b[2] * b[3] for b in bottom_shapes)
