"""Layers that rearrange blobs without arithmetic: Reshape, Slice, Tile, Crop, BatchReindex,
Filter, and Parameter (a learnable blob as a top).

Shapes, checks and defaults are Caffe's. Where Caffe's backward copies or sums diffs the
autograd gradient of the same indexing is the same number; BatchReindex, Filter and Parameter
write their own backward for Caffe's rules on index inputs and shared diffs.

In-place use (a top that is its bottom) is refused where Caffe refuses it (Reshape) and where
Caffe would read a blob it has already resized or overwritten (the rest, except a one-top
Slice, which is the identity).
"""
import math

import torch

from deepmammo.caffe.layers.base import Layer, canonical_axis, count, default_filler, register

_OVERWRITTEN = "Caffe would resize or overwrite the bottom before reading it"


def _dims(blob_shape):
    return [int(d) for d in blob_shape.dim]


@register
class Reshape(Layer):
    """Top shape: bottom axes before `axis`, then `shape` (0 copies the bottom's axis at that
    position, one -1 is inferred), then the bottom axes after `axis + num_axes`."""
    TYPE = "Reshape"
    FIELDS = {"reshape_param": {"shape", "axis", "num_axes"}}
    EXACT_BOTTOMS = 1
    EXACT_TOPS = 1

    def __init__(self, *args):
        super().__init__(*args)
        self.refuse_in_place()
        self.new = _dims(self.layer_param.reshape_param.shape)
        if sum(d == -1 for d in self.new) > 1:
            raise self.error("new shape contains multiple -1 dims; at most a single (1) "
                             "value of -1 may be specified")
        if any(d < -1 for d in self.new):
            raise self.error(f"shape dims must be >= -1, got {self.new}")

    def reshape(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        p = self.layer_param.reshape_param
        start = p.axis if p.axis >= 0 else len(shape) + p.axis + 1
        if not 0 <= start <= len(shape):
            raise self.error(f"axis {p.axis} out of range for a {len(shape)}-D bottom")
        if p.num_axes < -1:
            raise self.error("num_axes must be >= 0, or -1 for all")
        end = len(shape) if p.num_axes == -1 else start + p.num_axes
        if end > len(shape):
            raise self.error(f"end axis = axis + num_axes ({end}) is out of range for a "
                             f"{len(shape)}-D bottom")
        new = list(self.new)
        for i, d in enumerate(new):
            if d == 0:
                if start + i >= len(shape):
                    raise self.error("new shape contains a 0, but there was no "
                                     "corresponding bottom axis to copy")
                new[i] = shape[start + i]
        if -1 in new:
            known = count(shape, 0, start) * count(shape, end) * math.prod(
                d for d in new if d != -1)
            if known == 0 or count(shape) % known:
                raise self.error(f"bottom count ({count(shape)}) must be divisible by the "
                                 f"product of the specified dimensions ({known})")
            new[new.index(-1)] = count(shape) // known
        top = shape[:start] + tuple(new) + shape[end:]
        if count(top) != count(shape):
            raise self.error(f"output count must match input count: {shape} -> {top}")
        return [top]

    def forward(self, bottoms, params):
        x = bottoms[0]
        return [x.reshape(self.reshape([tuple(x.shape)])[0])]


@register
class Slice(Layer):
    """Cuts the bottom along `axis` (or `slice_dim`) at `slice_point`s, or into equal parts."""
    TYPE = "Slice"
    FIELDS = {"slice_param": {"axis", "slice_point", "slice_dim"}}
    EXACT_BOTTOMS = 1
    MIN_TOPS = 1

    def __init__(self, *args):
        super().__init__(*args)
        p = self.layer_param.slice_param
        if p.HasField("axis") and p.HasField("slice_dim"):
            raise self.error("either axis or slice_dim should be specified; not both")
        if len(self.layer_param.top) > 1:
            self.refuse_in_place(_OVERWRITTEN)

    def _axis(self, shape):
        p = self.layer_param.slice_param
        if p.HasField("slice_dim"):
            if p.slice_dim >= len(shape):
                raise self.error(f"slice_dim {p.slice_dim} out of range for {shape}")
            return p.slice_dim
        return canonical_axis(p.axis, len(shape), self.where)

    def _sizes(self, shape):
        axis = self._axis(shape)
        points = list(self.layer_param.slice_param.slice_point)
        n_tops = len(self.layer_param.top)
        total = shape[axis]
        if points:
            if len(points) != n_tops - 1:
                raise self.error(f"{len(points)} slice_point values for {n_tops} tops "
                                 f"(needs {n_tops - 1})")
            if n_tops > total:
                raise self.error(f"{n_tops} tops for an axis of size {total} ({shape})")
            sizes, prev = [], 0
            for point in points:
                if point <= prev:
                    raise self.error(f"slice_point values must increase from 1: {points}")
                sizes.append(point - prev)
                prev = point
            if prev > total:
                raise self.error(f"slice_point {prev} beyond the axis of size {total}")
            sizes.append(total - prev)
        else:
            if total % n_tops:
                raise self.error(f"number of top blobs ({n_tops}) should evenly divide the "
                                 f"slice axis ({total})")
            sizes = [total // n_tops] * n_tops
        return axis, sizes

    def reshape(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        axis, sizes = self._sizes(shape)
        return [shape[:axis] + (s,) + shape[axis + 1:] for s in sizes]

    def forward(self, bottoms, params):
        x = bottoms[0]
        if len(self.layer_param.top) == 1:
            return [x.view_as(x)]
        axis, sizes = self._sizes(tuple(x.shape))
        return list(torch.split(x, sizes, dim=axis))


@register
class Tile(Layer):
    """Repeats the block of axes from `axis` on, `tiles` times."""
    TYPE = "Tile"
    FIELDS = {"tile_param": {"axis", "tiles"}}
    EXACT_BOTTOMS = 1
    EXACT_TOPS = 1

    def __init__(self, *args):
        super().__init__(*args)
        self.refuse_in_place(_OVERWRITTEN)
        p = self.layer_param.tile_param
        if not p.HasField("tiles"):
            raise self.error("number of tiles must be specified")
        if p.tiles <= 0:
            raise self.error(f"number of tiles must be positive, got {p.tiles}")

    def reshape(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        axis = canonical_axis(self.layer_param.tile_param.axis, len(shape), self.where)
        return [shape[:axis] + (shape[axis] * self.layer_param.tile_param.tiles,)
                + shape[axis + 1:]]

    def forward(self, bottoms, params):
        x = bottoms[0]
        axis = canonical_axis(self.layer_param.tile_param.axis, x.dim(), self.where)
        reps = [1] * x.dim()
        reps[axis] = self.layer_param.tile_param.tiles
        return [x.repeat(*reps)]


@register
class Crop(Layer):
    """Crops bottom 0 to bottom 1's shape on the axes from `axis` (default 2) on, starting at
    `offset` (one value for all those axes, one per axis, or none: 0)."""
    TYPE = "Crop"
    FIELDS = {"crop_param": {"axis", "offset"}}
    EXACT_BOTTOMS = 2
    EXACT_TOPS = 1

    def __init__(self, *args):
        super().__init__(*args)
        self.refuse_in_place(_OVERWRITTEN)

    def _window(self, shape, ref):
        p = self.layer_param.crop_param
        start = canonical_axis(p.axis, len(shape), self.where)
        offsets = list(p.offset)
        if len(offsets) > 1 and start + len(offsets) != len(shape):
            raise self.error(f"number of offset values specified ({len(offsets)}) must be "
                             f"equal to the number of dimensions following axis {start}")
        window = []
        for i, size in enumerate(shape):
            if i < start:
                window.append((0, size))
                continue
            if i >= len(ref):
                raise self.error(f"bottom 1 {ref} has no axis {i} to give the crop size")
            off = offsets[0] if len(offsets) == 1 else offsets[i - start] if offsets else 0
            if size - off < ref[i]:
                raise self.error(f"the crop for dimension {i} is out-of-bounds with size "
                                 f"{ref[i]} and offset {off} (bottom {shape})")
            window.append((off, ref[i]))
        return window

    def reshape(self, bottom_shapes):
        window = self._window(tuple(bottom_shapes[0]), tuple(bottom_shapes[1]))
        return [tuple(size for _, size in window)]

    def forward(self, bottoms, params):
        x = bottoms[0]
        window = self._window(tuple(x.shape), tuple(bottoms[1].shape))
        return [x[tuple(slice(off, off + size) for off, size in window)]]


def _index_error(layer, which):
    return layer.error(f"cannot backpropagate to the {which} input (Caffe aborts); set "
                       f"propagate_down: false for it, and no force_backward")


@register
class BatchReindex(Layer):
    """Top item i is bottom 0's item `bottom1[i]` (a 1-D blob of indices, read as floats
    truncated to int). Backward sums each top item's diff into the item it came from; the
    index input has no gradient (Caffe aborts if asked for one)."""
    TYPE = "BatchReindex"
    EXACT_BOTTOMS = 2
    EXACT_TOPS = 1
    AUTOGRAD = False

    def __init__(self, *args):
        super().__init__(*args)
        self.refuse_in_place(_OVERWRITTEN)

    def reshape(self, bottom_shapes):
        if len(bottom_shapes[1]) != 1:
            raise self.error(f"the index blob must be 1-D, got {bottom_shapes[1]}")
        return [(bottom_shapes[1][0],) + tuple(bottom_shapes[0][1:])]

    def _indices(self, x, idx):
        if idx.numel() and bool(((idx < 0) | (idx >= x.shape[0])).any()):
            bad = idx[(idx < 0) | (idx >= x.shape[0])][0].item()
            raise self.error(f"index {bad} outside the batch [0, {x.shape[0]})")
        return idx.long()

    def forward(self, bottoms, params):
        x, idx = bottoms
        return [x.index_select(0, self._indices(x, idx))]

    def backward(self, tops, top_diffs, bottoms, params, need_bottom, need_param):
        if need_bottom[1]:
            raise _index_error(self, "index")
        if not need_bottom[0]:
            return [None, None], []
        x, idx = bottoms
        grad = torch.zeros_like(x).index_add_(0, self._indices(x, idx), top_diffs[0])
        return [grad, None], []


@register
class Filter(Layer):
    """Keeps the items (along axis 0) of every bottom but the last whose entry in the last
    bottom, the selector, is non-zero. Backward copies top diffs to the kept items and zeros
    the rest; the selector has no gradient (Caffe aborts if asked for one)."""
    TYPE = "Filter"
    MIN_BOTTOMS = 2
    MIN_TOPS = 1
    AUTOGRAD = False

    def __init__(self, *args):
        super().__init__(*args)
        if len(self.layer_param.top) != len(self.layer_param.bottom) - 1:
            raise self.error(f"needs one top per filtered bottom ({len(self.layer_param.bottom)}"
                             f" bottoms, the last the selector: "
                             f"{len(self.layer_param.bottom) - 1} tops)")
        self.refuse_in_place(_OVERWRITTEN)
        self.kept = None    # items kept by the last forward; before one, Caffe keeps them all

    def reshape(self, bottom_shapes):
        selector = bottom_shapes[-1]
        if any(d != 1 for d in selector[1:]):
            raise self.error(f"selector blob dimensions must be singletons (1), except the "
                             f"first: {selector}")
        for shape in bottom_shapes[:-1]:
            if not shape or shape[0] != selector[0]:
                raise self.error(f"each bottom should have the same 0th dimension as the "
                                 f"selector blob: {shape} vs {selector}")
        n = selector[0] if self.kept is None else self.kept
        return [(n,) + tuple(shape[1:]) for shape in bottom_shapes[:-1]]

    def forward(self, bottoms, params):
        keep = torch.nonzero(bottoms[-1].reshape(-1) != 0).reshape(-1)
        self.kept = int(keep.numel())
        return [b.index_select(0, keep) for b in bottoms[:-1]]

    def backward(self, tops, top_diffs, bottoms, params, need_bottom, need_param):
        if need_bottom[-1]:
            raise _index_error(self, "selector")
        keep = torch.nonzero(bottoms[-1].reshape(-1) != 0).reshape(-1)
        grads = [torch.zeros_like(b).index_copy_(0, keep, d) if need else None
                 for b, d, need in zip(bottoms[:-1], top_diffs, need_bottom[:-1])]
        return grads + [None], []


@register
class Parameter(Layer):
    """A blob of shape `parameter_param.shape` (zeros unless loaded) as the top. In Caffe the
    top shares the blob's data and diff, so the blob's diff is whatever the layers above wrote
    into the top's diff: backward assigns it (with iter_size > 1 the last pass's diff stays,
    not the sum, as in Caffe)."""
    TYPE = "Parameter"
    FIELDS = {"parameter_param": {"shape"}}
    EXACT_BOTTOMS = 0
    EXACT_TOPS = 1
    AUTOGRAD = False

    def setup(self, bottom_shapes):
        shape = tuple(_dims(self.layer_param.parameter_param.shape))
        if any(d < 0 for d in shape):
            raise self.error(f"shape dims must be >= 0, got {shape}")
        self.blobs = [self.make_blob(shape, default_filler(), 0)]

    def reshape(self, bottom_shapes):
        return [self.blobs[0].shape]

    def forward(self, bottoms, params):
        return [params[0]]

    def backward(self, tops, top_diffs, bottoms, params, need_bottom, need_param):
        if need_param and need_param[0]:
            with torch.no_grad():
                self.blobs[0].tdiff.copy_(top_diffs[0].reshape(self.blobs[0].shape))
        return [], [None]
