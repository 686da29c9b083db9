"""Caffe's recurrent layers: RNN, LSTM and LSTMUnit (the one-step LSTM cell).

Caffe runs RNN and LSTM as a small net unrolled over the T time steps; here the same math runs
as a loop over the steps, each step vectorised over the N streams and the units. Bottoms are
x (T, N, ...), cont (T, N) and optionally x_static (N, ...); with `expose_hidden` the initial
states follow (RNN: h0; LSTM: h0, c0, each (1, N, num_output)) and the final states are extra
tops (hT [, cT]). cont_t multiplies the previous hidden state (and, in the LSTM cell, the
forget gate), so cont 0 starts a new sequence at that step.

What Caffe's unrolled net implies, and these layers reproduce:
- Without `expose_hidden` the state carries over between forwards: each forward starts from
  the last one's final state (zero at first). The state lives in a buffer that behaves as a
  Caffe blob does when the batch size changes: kept as a flat prefix when N shrinks, zeroed
  when N outgrows what the buffer ever held.
- Backward goes to x, x_static and the parameters only. Nothing flows into h0/c0 (their diffs
  are left at zero) nor from the diffs of hT/cT, nor across forwards; cont is never
  differentiated (Caffe refuses when asked to).
- Parameters, in Caffe's order: RNN W_xh (H, K), b_h (H), [W_xh_static (H, K_s)], W_hh (H, H),
  W_ho (H, H), b_o (H); LSTM W_xc (4H, K), b_c (4H), [W_xc_static (4H, K_s)], W_hc (4H, H),
  the gate rows in the order i, f, o, g. The fillers are drawn as the unrolled net draws them:
  the input transforms, then every step's copies of the recurrent weights (only the first
  step's values are kept).
- RNN: h_t = tanh(W_hh (cont_t h_{t-1}) + W_xh x_t + b_h [+ W_xh_static x_static]),
  o_t = tanh(W_ho h_t + b_o); the top is o.
- LSTM: gates_t = W_hc (cont_t h_{t-1}) + W_xc x_t + b_c [+ W_xc_static x_static], then the
  LSTMUnit step; the top is h.

Not reproduced: `debug_info` is accepted but prints nothing (there is no unrolled net whose
layers it would trace); blobs embedded in the prototxt layer are loaded, where Caffe's setup
discards them and keeps the filled values (.caffemodel weights load as in Caffe).
"""
import torch
import torch.nn.functional as F

from deepmammo.caffe.blob import Blob
from deepmammo.caffe.fillers import fill
from deepmammo.caffe.layers.base import Layer, count, default_filler, register


def _cell_gates(c_prev, gates, cont):
    """i, f, o, g and the new cell of Caffe's LSTM unit. f is 0 where cont is 0 and
    cont * sigmoid otherwise."""
    hidden = c_prev.shape[-1]
    i = torch.sigmoid(gates[..., :hidden])
    keep = cont.unsqueeze(-1)
    f = torch.where(keep == 0, torch.zeros((), dtype=gates.dtype, device=gates.device),
                    keep * torch.sigmoid(gates[..., hidden:2 * hidden]))
    o = torch.sigmoid(gates[..., 2 * hidden:3 * hidden])
    g = torch.tanh(gates[..., 3 * hidden:])
    return i, f, o, g


class _LSTMCell(torch.autograd.Function):
    """One LSTMUnit step: c = f * c_prev + i * g, h = o * tanh(c). Backward is Caffe's
    formula, in which the forget gate's derivative is f * (1 - f) with f = cont * sigmoid(.)
    (the exact derivative only for cont 0 or 1)."""

    @staticmethod
    def forward(ctx, c_prev, gates, cont):
        i, f, o, g = _cell_gates(c_prev, gates, cont)
        c = f * c_prev + i * g
        tanh_c = torch.tanh(c)
        h = o * tanh_c
        ctx.save_for_backward(c_prev, i, f, o, g, tanh_c)
        return c, h

    @staticmethod
    def backward(ctx, dc, dh):
        c_prev, i, f, o, g, tanh_c = ctx.saved_tensors
        if dc is None:
            dc = torch.zeros_like(c_prev)
        if dh is None:
            dh = torch.zeros_like(c_prev)
        c_term = dc + dh * o * (1 - tanh_c * tanh_c)
        dc_prev = c_term * f if ctx.needs_input_grad[0] else None
        dgates = None
        if ctx.needs_input_grad[1]:
            dgates = torch.cat([c_term * g * i * (1 - i),
                                c_term * c_prev * f * (1 - f),
                                dh * tanh_c * o * (1 - o),
                                c_term * i * (1 - g * g)], dim=-1)
        return dc_prev, dgates, None


def _refuse_cont_backward(layer, need_bottom, cont_index):
    if need_bottom[cont_index]:
        raise layer.error("cannot backpropagate to the sequence indicators (bottom "
                          f"{cont_index}, {layer.layer_param.bottom[cont_index]!r})")


class _Recurrent(Layer):
    """What RNN and LSTM share: bottoms and tops, checks, parameters, the carried state."""
    REPLAYABLE = False      # each forward carries its final state into the next
    FIELDS = {"recurrent_param": {"num_output", "weight_filler", "bias_filler", "debug_info",
                                  "expose_hidden"}}
    NUM_STATES = 1          # recurrent state blobs: RNN h; LSTM h and c
    GATES = 1               # rows of the weights per unit: 4 for the LSTM's i, f, o, g

    def __init__(self, *args):
        p = args[0].recurrent_param
        self.expose_hidden = p.expose_hidden
        exposed = self.NUM_STATES if p.expose_hidden else 0
        # Caffe's counts: x, cont, [x_static], the exposed states; one top plus the states.
        self.MIN_BOTTOMS = 2 + exposed
        self.MAX_BOTTOMS = 3 + exposed
        self.EXACT_TOPS = 1 + exposed
        super().__init__(*args)
        if p.num_output <= 0:
            raise self.error("num_output must be positive")
        self.num_output = p.num_output
        self.static_input = len(self.layer_param.bottom) > 2 + exposed
        self.state_offset = 3 if self.static_input else 2
        self.steps = None
        self.state = []          # flat buffers holding the final states of the last forward

    def allow_force_backward(self, bottom_index):
        return bottom_index != 1

    # ---- construction ----
    def _check_bottoms(self, shapes, setup):
        x, cont = shapes[0], shapes[1]
        if len(x) < 2:
            raise self.error(f"bottom[0] must have at least 2 axes (#timesteps, #streams, "
                             f"...), has shape {x}")
        if not setup and x[0] != self.steps:
            raise self.error(f"input number of timesteps changed ({self.steps} at setup, "
                             f"now {x[0]})")
        if len(x) < 3:
            raise self.error(f"bottom[0] {x}: the input transform works from axis 2, so x "
                             "needs at least 3 axes (#timesteps, #streams, input...)")
        steps, streams = x[0], x[1]
        if len(cont) != 2 or tuple(cont) != (steps, streams):
            raise self.error(f"bottom[1] (cont) must have shape (#timesteps, #streams) = "
                             f"({steps}, {streams}), has {cont}")
        if self.static_input:
            xs = shapes[2]
            if len(xs) < 1 or xs[0] != streams:
                raise self.error(f"bottom[2] (x_static) must have {streams} streams on its "
                                 f"first axis, has shape {xs}")
            if len(xs) < 2:
                raise self.error(f"bottom[2] (x_static) {xs}: its transform works from "
                                 "axis 1, so it needs at least 2 axes")
        if self.expose_hidden and not setup:
            want = (1, streams, self.num_output)
            for j in range(self.NUM_STATES):
                got = tuple(shapes[self.state_offset + j])
                if got != want:
                    raise self.error(f"bottom[{self.state_offset + j}] (initial state) must "
                                     f"have shape {want}, has {got}")
        return steps, streams

    def _blob(self, values, index):
        blob = Blob(values.shape, self.device, name=f"{self.name}/{index}")
        blob.tdata = values.to(self.device)
        return blob

    def _fillers(self):
        p = self.layer_param.recurrent_param
        wf = p.weight_filler if p.HasField("weight_filler") else default_filler()
        bf = p.bias_filler if p.HasField("bias_filler") else default_filler()
        return wf, bf

    def setup(self, bottom_shapes):
        steps, streams = self._check_bottoms(bottom_shapes, setup=True)
        self.steps = steps
        rows = self.GATES * self.num_output
        wf, bf = self._fillers()
        # Caffe builds the unrolled net even when the prototxt carries blobs, so the fillers
        # are always drawn, in the unrolled net's layer order.
        values = [fill(wf, (rows, count(bottom_shapes[0], 2)), f"{self.where} input weight"),
                  fill(bf, (rows,), f"{self.where} input bias")]
        if self.static_input:
            values.append(fill(wf, (rows, count(bottom_shapes[2], 1)),
                               f"{self.where} static weight"))
        values += self._step_params(steps, wf, bf)
        self.blobs = [self._blob(v, k) for k, v in enumerate(values)]
        size = streams * self.num_output
        self.state = [torch.zeros(size, device=self.device) for _ in range(self.NUM_STATES)]

    def _step_params(self, steps, wf, bf):
        """The recurrent parameters, drawn once per step as the unrolled net's per-step
        layers each fill their own copy; the first step's copy is the one that is kept."""
        raise NotImplementedError

    def reshape(self, bottom_shapes):
        steps, streams = self._check_bottoms(bottom_shapes, setup=False)
        k = count(bottom_shapes[0], 2)
        if k != self.blobs[0].shape[1]:
            raise self.error(f"input size {k} (bottom {bottom_shapes[0]} from axis 2) does "
                             f"not match the input weight's {self.blobs[0].shape[1]}")
        if self.static_input:
            ks = count(bottom_shapes[2], 1)
            if ks != self.blobs[2].shape[1]:
                raise self.error(f"static input size {ks} (bottom {bottom_shapes[2]} from "
                                 f"axis 1) does not match the static weight's "
                                 f"{self.blobs[2].shape[1]}")
        size = streams * self.num_output
        for j, buffer in enumerate(self.state):
            if size > buffer.numel():      # a blob outgrowing its memory starts from zeros
                self.state[j] = torch.zeros(size, device=self.device)
        tops = [(steps, streams, self.num_output)]
        if self.expose_hidden:
            tops += [(1, streams, self.num_output)] * self.NUM_STATES
        return tops

    def reset(self):
        """Zero the carried state (Caffe's RecurrentLayer::Reset)."""
        for buffer in self.state:
            buffer.zero_()

    # ---- computation ----
    def _initial_states(self, bottoms, streams):
        if self.expose_hidden:
            # Their diffs are never written: detached, the bottoms get none.
            return [bottoms[self.state_offset + j].detach().reshape(streams, self.num_output)
                    for j in range(self.NUM_STATES)]
        size = streams * self.num_output
        return [buffer[:size].clone().view(streams, self.num_output) for buffer in self.state]

    def _inputs(self, bottoms, params):
        """(steps, streams, cont, the input transform of every step, the static one)."""
        x = bottoms[0]
        steps, streams = x.shape[0], x.shape[1]
        cont = bottoms[1].detach()
        xw = F.linear(x.reshape(steps, streams, -1), params[0], params[1])
        static = None
        if self.static_input:
            static = F.linear(bottoms[2].reshape(streams, -1), params[2])
        return steps, streams, cont, xw, static

    def _finish(self, output, finals, streams):
        size = streams * self.num_output
        with torch.no_grad():
            for buffer, final in zip(self.state, finals):
                buffer[:size].copy_(final.reshape(-1))
        tops = [output]
        if self.expose_hidden:
            tops += [final.detach().reshape(1, streams, self.num_output).clone()
                     for final in finals]
        return tops

    def backward(self, tops, top_diffs, bottoms, params, need_bottom, need_param):
        _refuse_cont_backward(self, need_bottom, 1)
        if self.expose_hidden:
            need_bottom = list(need_bottom)
            for j in range(self.NUM_STATES):
                need_bottom[self.state_offset + j] = False
        return super().backward(tops, top_diffs, bottoms, params, need_bottom, need_param)


@register
class RNN(_Recurrent):
    """Caffe's plain recurrent net: tanh hidden state, tanh output layer."""
    TYPE = "RNN"

    def _step_params(self, steps, wf, bf):
        h = self.num_output
        kept = None
        for _ in range(steps):
            drawn = [fill(wf, (h, h), f"{self.where} W_hh"),
                     fill(wf, (h, h), f"{self.where} W_ho"),
                     fill(bf, (h,), f"{self.where} b_o")]
            kept = kept or drawn
        return kept

    def forward(self, bottoms, params):
        steps, streams, cont, xw, static = self._inputs(bottoms, params)
        w_hh, w_ho, b_o = params[-3:]
        (h,) = self._initial_states(bottoms, streams)
        hidden = []
        for t in range(steps):
            pre = F.linear(h * cont[t].unsqueeze(-1), w_hh) + xw[t]
            if static is not None:
                pre = pre + static
            h = torch.tanh(pre)
            hidden.append(h)
        output = torch.tanh(F.linear(torch.stack(hidden), w_ho, b_o))
        return self._finish(output, [h], streams)


@register
class LSTM(_Recurrent):
    """Caffe's LSTM (no peepholes): input, forget, output gates and the tanh input, in that
    order in the weight rows; the top is the hidden state of every step."""
    TYPE = "LSTM"
    NUM_STATES = 2
    GATES = 4

    def _step_params(self, steps, wf, bf):
        kept = None
        for _ in range(steps):
            drawn = fill(wf, (4 * self.num_output, self.num_output), f"{self.where} W_hc")
            kept = drawn if kept is None else kept
        return [kept]

    def forward(self, bottoms, params):
        steps, streams, cont, xw, static = self._inputs(bottoms, params)
        w_hc = params[-1]
        h, c = self._initial_states(bottoms, streams)
        hidden = []
        for t in range(steps):
            gates = F.linear(h * cont[t].unsqueeze(-1), w_hc) + xw[t]
            if static is not None:
                gates = gates + static
            c, h = _LSTMCell.apply(c, gates, cont[t])
            hidden.append(h)
        return self._finish(torch.stack(hidden), [h, c], streams)


@register
class LSTMUnit(Layer):
    """One LSTM step. Bottoms c_prev (1, N, H), gates (1, N, 4H) in the order i, f, o, g, and
    cont (1, N); tops c (1, N, H) and h (1, N, H). i, o = sigmoid, g = tanh, f = 0 where cont
    is 0 and cont * sigmoid otherwise; c = f * c_prev + i * g, h = o * tanh(c)."""
    TYPE = "LSTMUnit"
    EXACT_BOTTOMS = 3
    EXACT_TOPS = 2

    def allow_force_backward(self, bottom_index):
        return bottom_index != 2

    def reshape(self, bottom_shapes):
        streams = bottom_shapes[0][1] if len(bottom_shapes[0]) > 1 else None
        for j, shape in enumerate(bottom_shapes):
            axes = 2 if j == 2 else 3
            if len(shape) != axes or shape[0] != 1 or shape[1] != streams:
                raise self.error(f"bottom[{j}] must have shape (1, {streams}"
                                 f"{'' if j == 2 else ', ...'}), has {shape}")
        hidden = bottom_shapes[0][2]
        if bottom_shapes[1][2] != 4 * hidden:
            raise self.error(f"bottom[1] (gates) must have 4 * {hidden} = {4 * hidden} "
                             f"values per stream, has {bottom_shapes[1][2]}")
        return [tuple(bottom_shapes[0])] * 2

    def forward(self, bottoms, params):
        c, h = _LSTMCell.apply(bottoms[0], bottoms[1], bottoms[2].detach())
        return [c, h]

    def backward(self, tops, top_diffs, bottoms, params, need_bottom, need_param):
        _refuse_cont_backward(self, need_bottom, 2)
        return super().backward(tops, top_diffs, bottoms, params, need_bottom, need_param)
