"""Bias: y = x + b, b shaped like bottom[0].shape[axis:axis + num_axes] (num_axes -1: to the
end; 0: a scalar), broadcast over the other axes. b is a learnable blob (filler default
constant 0) or, with two bottoms, the second bottom, which then gets the summed diff."""
from deepmammo.caffe.layers.base import Layer, canonical_axis, register


def broadcast_axis(layer, axis, shape, param_shape, what):
    """Caffe's placement of a Scale/Bias parameter in the bottom: from `axis` (0 when the
    parameter is a scalar, whatever `axis` says), dimensions equal. Returns the axis."""
    axis = 0 if len(param_shape) == 0 else canonical_axis(axis, len(shape), layer.where)
    if len(shape) < axis + len(param_shape):
        raise layer.error(f"{what} shape {tuple(param_shape)} extends past the bottom's "
                          f"{tuple(shape)} from axis {axis}")
    if tuple(shape[axis:axis + len(param_shape)]) != tuple(param_shape):
        raise layer.error(f"{what} shape {tuple(param_shape)} does not match the bottom "
                          f"{tuple(shape)} from axis {axis}")
    return axis


def param_shape_from(layer, shape, axis, num_axes, what):
    """The shape of a learnable Scale/Bias blob: bottom axes [axis, axis + num_axes)."""
    axis = canonical_axis(axis, len(shape), layer.where)
    if num_axes < -1:
        raise layer.error("num_axes must be non-negative, or -1 to extend to the end")
    if num_axes >= 0 and len(shape) < axis + num_axes:
        raise layer.error(f"{what} shape extends past the bottom's {tuple(shape)} from axis "
                          f"{axis} with num_axes {num_axes}")
    return tuple(shape[axis:]) if num_axes == -1 else tuple(shape[axis:axis + num_axes])


def broadcast_view(param, axis, ndim):
    return param.reshape((1,) * axis + tuple(param.shape) + (1,) * (ndim - axis - param.dim()))


@register
class Bias(Layer):
    TYPE = "Bias"
    FIELDS = {"bias_param": {"axis", "num_axes", "filler"}}
    MIN_BOTTOMS = 1
    MAX_BOTTOMS = 2
    EXACT_TOPS = 1

    def setup(self, bottom_shapes):
        if len(bottom_shapes) == 2:
            return
        p = self.layer_param.bias_param
        shape = param_shape_from(self, bottom_shapes[0], p.axis, p.num_axes, "bias")
        self.blobs = [self.make_blob(shape, p.filler, 0)]

    def _bias_shape(self, bottom_shapes):
        return tuple(bottom_shapes[1]) if len(bottom_shapes) == 2 else self.blobs[0].shape

    def reshape(self, bottom_shapes):
        broadcast_axis(self, self.layer_param.bias_param.axis, bottom_shapes[0],
                       self._bias_shape(bottom_shapes), "bias")
        return [bottom_shapes[0]]

    def forward(self, bottoms, params):
        x = bottoms[0]
        b = bottoms[1] if len(bottoms) == 2 else params[0]
        axis = broadcast_axis(self, self.layer_param.bias_param.axis, tuple(x.shape),
                              tuple(b.shape), "bias")
        return [x + broadcast_view(b, axis, x.dim())]
