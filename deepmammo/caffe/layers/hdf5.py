"""HDF5Data and HDF5Output, as Caffe's layers of those names (h5py in place of HDF5's C API).

HDF5Data: `source` is a text file listing .h5 files (whitespace-separated, paths as given,
relative to the working directory). Each top reads the root dataset of its own name, float or
integer, converted to float32 by the HDF5 library as Caffe reads it; all tops of a file share
the first axis. Rows go out in order, file after file, wrapping for ever; with `shuffle` the
file order is shuffled once at setup and at each wrap, and a file's row order each time it
is loaded (twice over when the next file is loaded, as Caffe does: once on loading, once more
after), all with std::random_shuffle, whose draws come from the C library's process-wide
rand() (shuffles.py), not from Caffe's random stream. With several training workers, worker r
keeps the rows whose running index is r modulo the worker count (Caffe's Skip()); the TEST
phase keeps every row. transform_param is refused (Caffe: "does not transform data").

HDF5Output: at setup, creates (truncates) `file_name`; a forward writes its two bottoms as
datasets "data" and "label", float32, each shaped (num, channels, height, width) as Caffe's
legacy accessors read the bottom. A second forward would write those datasets again, which
Caffe's HDF5 call refuses: so is it here. The file is closed when the net is closed.
"""
import numpy as np
import torch

from deepmammo.caffe import distributed, shuffles
from deepmammo.caffe.layers.base import Layer, register
from deepmammo.caffe.layers.margin_loss import legacy_nchw
from deepmammo.caffe.proto import caffe_pb2 as pb


def _h5py():
    import h5py  # only where an HDF5 layer is used
    return h5py


@register
class HDF5Data(Layer):
    TYPE = "HDF5Data"
    FIELDS = {"hdf5_data_param": {"source", "batch_size", "shuffle"}}
    EXACT_BOTTOMS = 0
    MIN_TOPS = 1
    AUTOGRAD = False

    def check_fields(self):
        if self.layer_param.HasField("transform_param"):
            raise self.error("HDF5Data does not transform data (transform_param is refused)")
        super().check_fields()

    def __init__(self, *args):
        super().__init__(*args)
        p = self.layer_param.hdf5_data_param
        self.shuffle = p.shuffle
        self.batch_size = int(p.batch_size)
        try:
            with open(p.source) as f:
                self.files = f.read().split()
        except OSError as exc:
            raise self.error(f"failed to open source file {p.source}: {exc.strerror}") from None
        if not self.files:
            raise self.error(f"must have at least 1 HDF5 filename listed in {p.source}")
        self.file_order = list(range(len(self.files)))
        if self.shuffle:
            shuffles.random_shuffle(self.file_order)
        self.current_file = 0
        self._load(self.files[self.file_order[0]])
        self.current_row = 0
        self.offset = 0
        self.top_shapes = [(self.batch_size,) + tuple(a.shape[1:]) for a in self.arrays]

    def _load(self, filename):
        """Read every top's dataset of `filename` (float32) and reset the row order."""
        h5py = _h5py()
        try:
            f = h5py.File(filename, "r")
        except OSError:
            raise self.error(f"failed opening HDF5 file: {filename}") from None
        arrays = []
        with f:
            for name in self.layer_param.top:
                ds = f.get(name) if name in f.keys() else None
                if not isinstance(ds, h5py.Dataset):
                    raise self.error(f"failed to find HDF5 dataset {name} in {filename}")
                if ds.ndim < 1:
                    raise self.error(f"{filename}: dataset {name} has no axes")
                if ds.dtype.kind not in "fiu":
                    raise self.error(f"{filename}: dataset {name}: unsupported datatype "
                                     f"{ds.dtype} (float or integer only)")
                arr = np.empty(ds.shape, dtype=np.float32)
                if arr.size:
                    ds.read_direct(arr)          # HDF5 converts, as H5LTread_dataset_float
                arrays.append(arr)
        num = arrays[0].shape[0]
        for name, arr in zip(self.layer_param.top, arrays):
            if arr.shape[0] != num:
                raise self.error(f"{filename}: dataset {name} has {arr.shape[0]} rows, "
                                 f"{self.layer_param.top[0]} has {num}")
        if getattr(self, "top_shapes", None) is not None:
            for name, arr, shape in zip(self.layer_param.top, arrays, self.top_shapes):
                if tuple(arr.shape[1:]) != tuple(shape[1:]):
                    raise self.error(f"{filename}: dataset {name} rows are {arr.shape[1:]}, "
                                     f"the first file's {shape[1:]}")
        self.arrays = arrays
        self.row_order = list(range(num))
        if self.shuffle:
            shuffles.random_shuffle(self.row_order)

    def _next(self):
        """Caffe's Next(): one row on, loading (and shuffling) at the end of a file."""
        self.current_row += 1
        if self.current_row == self.arrays[0].shape[0]:
            if len(self.files) > 1:
                self.current_file += 1
                if self.current_file == len(self.files):
                    self.current_file = 0
                    if self.shuffle:
                        shuffles.random_shuffle(self.file_order)
                self._load(self.files[self.file_order[self.current_file]])
            self.current_row = 0
            if self.shuffle:
                shuffles.random_shuffle(self.row_order)
        self.offset += 1

    def _skip(self):
        size = distributed.solver_count()
        return not (self.offset % size == distributed.solver_rank() or self.phase == pb.TEST)

    def reshape(self, bottom_shapes):
        return list(self.top_shapes)

    def forward(self, bottoms, params):
        if self.arrays[0].shape[0] == 0:
            raise self.error("the HDF5 file has no rows")
        # The rows of a batch, gathered per loaded file (a file change swaps the arrays).
        parts, rows = [], []
        arrays = self.arrays
        for _ in range(self.batch_size):
            while self._skip():
                self._next()
            if self.arrays is not arrays:
                parts.append((arrays, rows))
                arrays, rows = self.arrays, []
            rows.append(self.row_order[self.current_row])
            self._next()
        parts.append((arrays, rows))
        tops = []
        for j in range(len(self.layer_param.top)):
            chunks = [arrs[j][idx] for arrs, idx in parts if idx]
            tops.append(torch.from_numpy(np.concatenate(chunks)).to(self.device))
        return tops

    def backward(self, tops, top_diffs, bottoms, params, need_bottom, need_param):
        return [], []


@register
class HDF5Output(Layer):
    REPLAYABLE = False      # forward writes the file
    TYPE = "HDF5Output"
    FIELDS = {"hdf5_output_param": {"file_name"}}
    EXACT_BOTTOMS = 2
    EXACT_TOPS = 0
    AUTOGRAD = False

    def __init__(self, *args):
        super().__init__(*args)
        self.file_name = self.layer_param.hdf5_output_param.file_name
        try:
            self.file = _h5py().File(self.file_name, "w")
        except OSError as exc:
            raise self.error(f"failed to open HDF5 file {self.file_name!r}: {exc}") from None

    def reshape(self, bottom_shapes):
        for shape in bottom_shapes:
            legacy_nchw(shape, self.error)
        a, b = bottom_shapes
        if (a[:1] or (1,)) != (b[:1] or (1,)):
            raise self.error(f"data blob and label blob must have the same batch size "
                             f"({a} and {b})")
        return []

    def forward(self, bottoms, params):
        if self.file is None:
            raise self.error(f"{self.file_name} is closed")
        for name, t in zip(("data", "label"), bottoms):
            shape = legacy_nchw(tuple(t.shape), self.error)
            if name in self.file:
                raise self.error(f"failed to make float dataset {name}: {self.file_name} "
                                 f"already holds one (Caffe writes each dataset once)")
            values = t.detach().to("cpu", torch.float32).numpy().reshape(shape)
            self.file.create_dataset(name, data=values)
        self.file.flush()
        return []

    def backward(self, tops, top_diffs, bottoms, params, need_bottom, need_param):
        return [None, None], []

    def close(self):
        f, self.file = getattr(self, "file", None), None
        if f is not None:
            try:
                f.close()
            except Exception:      # already closed by h5py at exit
                pass

    def __del__(self):
        self.close()

