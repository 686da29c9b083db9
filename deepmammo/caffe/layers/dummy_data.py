"""DummyData: tops of given shapes filled by FillerParameters, as Caffe's DummyDataLayer.

Shapes: `shape` (once, or once per top) or the legacy num/channels/height/width (each once
or once per top; 4-D tops), not both. Fillers: none (constant 0), one for every top, or one
per top. A constant filler fills its tops once, when the net is built; any other filler
refills its tops at every forward, drawing from the calling thread's Caffe stream (rng.py) in
top order, so a seeded net gives real Caffe's values bit for bit.
"""
from deepmammo.caffe.fillers import FillerError, fill
from deepmammo.caffe.layers.base import Layer, register
from deepmammo.caffe.proto import caffe_pb2 as pb

FILLER_TYPES = {"constant", "uniform", "gaussian", "positive_unitball", "xavier", "msra",
                "bilinear"}


@register
class DummyData(Layer):
    TYPE = "DummyData"
    FIELDS = {"dummy_data_param": {"data_filler", "shape", "num", "channels", "height",
                                   "width"}}
    EXACT_BOTTOMS = 0
    MIN_TOPS = 1
    AUTOGRAD = False

    def __init__(self, *args):
        super().__init__(*args)
        p = self.layer_param.dummy_data_param
        ntop = len(self.layer_param.top)
        nfill = len(p.data_filler)
        if nfill not in (0, 1, ntop):
            raise self.error(f"number of data fillers must be 0, 1 or equal to the number of "
                             f"tops: {ntop}; you specified {nfill} data fillers")
        self.shapes = self._shapes(p, ntop)
        if nfill == 0:
            fillers = [pb.FillerParameter(type="constant", value=0)] * ntop
        elif nfill == 1:
            fillers = [p.data_filler[0]] * ntop
        else:
            fillers = list(p.data_filler)
        for f in fillers:
            if f.type not in FILLER_TYPES:
                raise self.error(f"unknown filler type {f.type!r}")
        self.fillers = fillers
        # Constant tops are filled now and never again (no random draws).
        self.constant = {i: self._fill(i) for i, f in enumerate(fillers) if f.type == "constant"}

    def _shapes(self, p, ntop):
        legacy = [list(getattr(p, f)) for f in ("num", "channels", "height", "width")]
        if any(legacy):
            if len(p.shape):
                raise self.error("both shape and legacy fields (num, channels, height, "
                                 "width) were specified")
            for name, values in zip(("num", "channels", "height", "width"), legacy):
                if len(values) not in (1, ntop):
                    raise self.error(f"must specify '{name}' once, or once per top blob "
                                     f"({ntop}); specified {len(values)}")
            return [tuple(int(v[0] if len(v) == 1 else v[i]) for v in legacy)
                    for i in range(ntop)]
        if len(p.shape) not in (1, ntop):
            raise self.error(f"must specify 'shape' once, or once per top blob ({ntop}); "
                             f"specified {len(p.shape)}")
        shapes = [tuple(int(d) for d in s.dim) for s in p.shape]
        return [shapes[0 if len(shapes) == 1 else i] for i in range(ntop)]

    def _fill(self, i):
        try:
            values = fill(self.fillers[i], self.shapes[i], where=f"{self.where} top {i}")
        except FillerError as exc:
            raise self.error(str(exc)) from None
        return values.to(self.device)

    def reshape(self, bottom_shapes):
        return list(self.shapes)

    def forward(self, bottoms, params):
        tops = []
        for i in range(len(self.shapes)):
            tops.append(self.constant[i] if i in self.constant else self._fill(i))
        return tops

    def backward(self, tops, top_diffs, bottoms, params, need_bottom, need_param):
        return [], []

