"""Caffe's element-wise ("neuron") layers: AbsVal, BNLL, Clip, ELU, Exp, Log, Power, PReLU,
Sigmoid, Swish, TanH and Threshold. Top shape = bottom shape.

Backward is Caffe's own formula, written out (not autograd), because Caffe's differs from the
exact derivative at kinks (AbsVal's sign(0) = 0, Clip passes the gradient at its bounds) and
because it reads the blobs' data as they are when backward runs: an in-place layer's bottom
then holds its top, and a later in-place layer may have overwritten a top (a Sigmoid followed
by an in-place Scale differentiates the scaled values). `BACKWARD_READS_BLOBS` asks the Net
for those tensors. Where Caffe's in-place backward writes the bottom diff over the top diff
it is still reading (Log, Power), the result is Caffe's too (the factor applied twice).
PReLU keeps a copy of its bottom for an in-place backward, as Caffe does, so it differentiates
the forward's input.
"""
import numpy as np
import torch

from deepmammo.caffe.layers.base import Layer, default_filler, register

F32 = np.float32


class _Neuron(Layer):
    EXACT_BOTTOMS = 1
    EXACT_TOPS = 1
    AUTOGRAD = False
    BACKWARD_READS_BLOBS = True

    def __init__(self, *args):
        super().__init__(*args)
        lp = self.layer_param
        self.in_place = lp.top[0] == lp.bottom[0]

    def reshape(self, bottom_shapes):
        return [bottom_shapes[0]]

    def forward(self, bottoms, params):
        return [self.compute(bottoms[0])]

    def backward(self, tops, top_diffs, bottoms, params, need_bottom, need_param):
        if not need_bottom[0]:
            return [None], [None] * len(params)
        with torch.no_grad():
            return [self.gradient(bottoms[0], tops[0], top_diffs[0])], [None] * len(params)

    def compute(self, x):
        raise NotImplementedError

    def gradient(self, x, y, dy):
        """Bottom diff from the bottom and top data (as the blobs hold them now) and the top
        diff."""
        raise NotImplementedError


def _mask(condition, like):
    return condition.to(like.dtype)


@register
class AbsVal(_Neuron):
    """y = |x|; dx = sign(x) dy with sign(0) = 0. Caffe refuses it in place."""
    TYPE = "AbsVal"

    def __init__(self, *args):
        super().__init__(*args)
        if self.in_place:
            raise self.error("AbsVal does not allow in-place computation (top == bottom)")

    def compute(self, x):
        return torch.abs(x)

    def gradient(self, x, y, dy):
        return (_mask(x > 0, x) - _mask(x < 0, x)) * dy


@register
class BNLL(_Neuron):
    """y = log(1 + e^x), as x + log(1 + e^-x) for x > 0; dx = dy e^m / (e^m + 1) with
    m = min(x, 50). Computed in double, as Caffe's expressions are."""
    TYPE = "BNLL"

    def compute(self, x):
        d = x.double()
        pos = d + torch.log(1.0 + torch.exp(-d))
        neg = torch.log(1.0 + torch.exp(d))
        return torch.where(d > 0, pos, neg).to(x.dtype)

    def gradient(self, x, y, dy):
        e = torch.exp(torch.clamp(x, max=50.0))
        return ((dy * e).double() / (e.double() + 1.0)).to(x.dtype)


@register
class Clip(_Neuron):
    """y = max(min, min(x, max)) (NaN becomes min, as with std::min/std::max); the gradient
    passes where min <= x <= max, bounds included. clip_param's min and max are required
    fields: Caffe refuses a clip_param without them (an unset clip_param leaves both 0)."""
    TYPE = "Clip"
    FIELDS = {"clip_param": {"min", "max"}}

    def __init__(self, *args):
        super().__init__(*args)
        lp = self.layer_param
        if lp.HasField("clip_param"):
            missing = [f for f in ("min", "max") if not lp.clip_param.HasField(f)]
            if missing:
                raise self.error(f"clip_param is missing required field(s) {', '.join(missing)}")
        self.lo = float(F32(lp.clip_param.min))
        self.hi = float(F32(lp.clip_param.max))

    def compute(self, x):
        t = torch.where(x > self.hi, self.hi, x)
        return torch.where(t > self.lo, t, self.lo)

    def gradient(self, x, y, dy):
        return dy * _mask((x >= self.lo) & (x <= self.hi), x)


@register
class ELU(_Neuron):
    """y = max(x, 0) + alpha (e^min(x, 0) - 1); dx = dy ([x > 0] + (alpha + y) [x <= 0])."""
    TYPE = "ELU"
    FIELDS = {"elu_param": {"alpha"}}

    def __init__(self, *args):
        super().__init__(*args)
        self.alpha = float(F32(self.layer_param.elu_param.alpha))

    def compute(self, x):
        return torch.clamp(x, min=0) + self.alpha * (torch.exp(torch.clamp(x, max=0)) - 1)

    def gradient(self, x, y, dy):
        return dy * (_mask(x > 0, x) + (self.alpha + y) * _mask(x <= 0, x))


def _log_base(layer, base):
    """ln(base) for Exp and Log: base -1 means e (exactly 1); any other must be > 0."""
    if base == -1:
        return F32(1)
    if not base > 0:
        raise layer.error(f"base must be strictly positive (or -1 for e), got {base}")
    value = F32(np.log(F32(base)))
    if not np.isfinite(value):
        raise layer.error(f"log(base) = log({base}) is not finite")
    return value


@register
class Exp(_Neuron):
    """y = base^(shift + scale x) = outer e^(inner x) with inner = ln(base) scale and
    outer = base^shift (1 when shift = 0); dx = inner y dy."""
    TYPE = "Exp"
    FIELDS = {"exp_param": {"base", "scale", "shift"}}

    def __init__(self, *args):
        super().__init__(*args)
        p = self.layer_param.exp_param
        base, scale, shift = F32(p.base), F32(p.scale), F32(p.shift)
        self.inner = float(_log_base(self, base) * scale)
        if shift == 0:
            outer = F32(1)
        elif base != -1:
            outer = F32(np.power(np.float64(base), np.float64(shift)))
        else:
            outer = F32(np.exp(np.float64(shift)))
        self.outer = float(outer)

    def compute(self, x):
        y = torch.exp(x) if self.inner == 1 else torch.exp(x * self.inner)
        return y if self.outer == 1 else y * self.outer

    def gradient(self, x, y, dy):
        dx = y * dy
        return dx if self.inner == 1 else dx * self.inner


@register
class Log(_Neuron):
    """y = log_base(shift + scale x); dx = dy scale / (ln(base) (shift + scale x)). In place,
    Caffe's backward overwrites the top diff it reads: dx is that factor squared."""
    TYPE = "Log"
    FIELDS = {"log_param": {"base", "scale", "shift"}}

    def __init__(self, *args):
        super().__init__(*args)
        p = self.layer_param.log_param
        log_base = _log_base(self, F32(p.base))
        with np.errstate(divide="ignore"):
            base_scale = F32(1) / log_base
        if not np.isfinite(base_scale):
            raise self.error(f"1 / log(base) is not finite for base {p.base}")
        self.base_scale = float(base_scale)
        self.scale, self.shift = float(F32(p.scale)), float(F32(p.shift))
        self.num_scale = float(F32(p.scale) / log_base)

    def _affine(self, x):
        t = x if self.scale == 1 else x * self.scale
        return t if self.shift == 0 else t + self.shift

    def compute(self, x):
        y = torch.log(self._affine(x))
        return y if self.base_scale == 1 else y * self.base_scale

    def gradient(self, x, y, dy):
        g = torch.pow(self._affine(x), -1.0)
        if self.num_scale != 1:
            g = g * self.num_scale
        return g * g if self.in_place else dy * g


@register
class Power(_Neuron):
    """y = (shift + scale x)^power; a constant (1, or shift^power) when power * scale = 0.
    Caffe's backward: the constant power * scale when power is 1 (0 when it is 0);
    2 scale (shift + scale x) when power is 2; power y / x when shift is 0; else
    power scale y / (shift + scale x). In place, Caffe's backward overwrites the top diff
    it reads: dx is that factor squared (0 for the constant case)."""
    TYPE = "Power"
    FIELDS = {"power_param": {"power", "scale", "shift"}}

    def __init__(self, *args):
        super().__init__(*args)
        p = self.layer_param.power_param
        self.power, self.scale, self.shift = F32(p.power), F32(p.scale), F32(p.shift)
        self.diff_scale = F32(self.power * self.scale)

    def compute(self, x):
        if self.diff_scale == 0:
            if self.power == 0:
                value = 1.0
            else:
                with np.errstate(all="ignore"):
                    value = float(F32(np.power(np.float64(self.shift), np.float64(self.power))))
            return torch.full_like(x, value)
        t = x if self.scale == 1 else x * float(self.scale)
        if self.shift != 0:
            t = t + float(self.shift)
        return t if self.power == 1 else torch.pow(t, float(self.power))

    def gradient(self, x, y, dy):
        ds, scale, shift = self.diff_scale, float(self.scale), float(self.shift)
        if ds == 0 or self.power == 1:
            g = torch.full_like(x, float(ds))
        elif self.power == 2:
            g = x * float(F32(ds * self.scale))
            if shift != 0:
                g = g + float(F32(ds * self.shift))
        elif shift == 0:
            g = (y / x) * float(self.power)
        else:
            t = x if scale == 1 else x * scale
            g = y / (t + shift)
            if ds != 1:
                g = g * float(ds)
        if ds == 0:
            return g
        return g * g if self.in_place else dy * g


@register
class PReLU(Layer):
    """y = max(x, 0) + a_c min(x, 0), one learnable slope per channel (axis 1) or one for all
    (channel_shared); the slope's filler defaults to constant 0.25. dx = dy ([x > 0] +
    a_c [x <= 0]); da_c += sum of dy x over x <= 0. In place it differentiates the forward's
    input (Caffe keeps a copy of it)."""
    TYPE = "PReLU"
    FIELDS = {"prelu_param": {"filler", "channel_shared"}}
    EXACT_BOTTOMS = 1
    EXACT_TOPS = 1
    AUTOGRAD = False

    def setup(self, bottom_shapes):
        shape = bottom_shapes[0]
        if len(shape) < 2:
            raise self.error(f"bottom needs at least 2 axes, got {shape}")
        p = self.layer_param.prelu_param
        filler = p.filler if p.HasField("filler") else default_filler("constant", 0.25)
        self.blobs = [self.make_blob(() if p.channel_shared else (shape[1],), filler, 0)]

    def reshape(self, bottom_shapes):
        shape = bottom_shapes[0]
        if len(shape) < 2:
            raise self.error(f"bottom needs at least 2 axes, got {shape}")
        expected = 1 if self.layer_param.prelu_param.channel_shared else shape[1]
        if self.blobs[0].count != expected:
            raise self.error(f"slope blob has {self.blobs[0].count} values, the bottom's "
                             f"{'channel_shared' if expected == 1 else 'channels'} need "
                             f"{expected}")
        return [shape]

    def _slope(self, a, x):
        view = (1, -1) + (1,) * (x.dim() - 2)
        return a.reshape(view) if a.dim() else a

    def forward(self, bottoms, params):
        x = bottoms[0]
        return [torch.clamp(x, min=0) + self._slope(params[0], x) * torch.clamp(x, max=0)]

    def backward(self, tops, top_diffs, bottoms, params, need_bottom, need_param):
        x, dy, a = bottoms[0], top_diffs[0], params[0].detach()
        negative = _mask(x <= 0, x)
        da = dx = None
        with torch.no_grad():
            if need_param[0]:
                per = dy * x * negative
                if a.dim():
                    dims = [0] + list(range(2, x.dim()))
                    da = per.sum(dim=dims)
                else:
                    da = per.sum()
            if need_bottom[0]:
                dx = dy * (_mask(x > 0, x) + self._slope(a, x) * negative)
        return [dx], [da]


@register
class Sigmoid(_Neuron):
    """y = 0.5 tanh(0.5 x) + 0.5 (Caffe's form); dx = dy y (1 - y)."""
    TYPE = "Sigmoid"
    FIELDS = {"sigmoid_param": set()}

    def compute(self, x):
        return 0.5 * torch.tanh(0.5 * x) + 0.5

    def gradient(self, x, y, dy):
        return dy * y * (1.0 - y)


@register
class Swish(_Neuron):
    """y = x sigmoid(beta x); dx = dy (beta y + s (1 - beta y)) with s = sigmoid(beta x)
    kept from the forward (Caffe's internal sigmoid blob) and y the top as it is now."""
    TYPE = "Swish"
    FIELDS = {"swish_param": {"beta"}}

    def __init__(self, *args):
        super().__init__(*args)
        self.beta = float(F32(self.layer_param.swish_param.beta))
        self.sigmoid = None

    def compute(self, x):
        s = 0.5 * torch.tanh(0.5 * (x * self.beta)) + 0.5
        self.sigmoid = s
        return x * s

    def gradient(self, x, y, dy):
        by = self.beta * y
        return dy * (by + self.sigmoid * (1.0 - by))


@register
class TanH(_Neuron):
    """y = tanh(x); dx = dy (1 - y^2)."""
    TYPE = "TanH"
    FIELDS = {"tanh_param": set()}

    def compute(self, x):
        return torch.tanh(x)

    def gradient(self, x, y, dy):
        return dy * (1 - y * y)


@register
class Threshold(_Neuron):
    """y = 1 where x > threshold, else 0. It has no gradient: Caffe's backward is
    NOT_IMPLEMENTED. force_backward does not reach its bottom here (Caffe would abort), and a
    backward that truly needs its bottom's diff is refused."""
    TYPE = "Threshold"
    FIELDS = {"threshold_param": {"threshold"}}

    def __init__(self, *args):
        super().__init__(*args)
        self.threshold = float(F32(self.layer_param.threshold_param.threshold))

    def allow_force_backward(self, bottom_index):
        return False

    def compute(self, x):
        return _mask(x > self.threshold, x)

    def gradient(self, x, y, dy):
        raise self.error("Threshold has no backward (Caffe: not implemented); stop the "
                         "gradient below it (propagate_down: false) or remove it from the "
                         "loss's path")
