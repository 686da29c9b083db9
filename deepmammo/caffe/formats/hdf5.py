"""Caffe's HDF5 files: weights (`.caffemodel.h5`, Net::ToHDF5) and solver states
(`.solverstate.h5`, SGDSolver::SnapshotSolverStateToHDF5), read and written with h5py.

Weights: a group `data` with one group per layer, named as the layer, holding one float32
dataset per parameter blob named by its index ("0", "1", ...); a blob shared from another
layer is stored once, at its owner. With diffs, a group `diff` has the same layout and every
layer's blobs. A layer name with a slash ("inception_3a/1x1") becomes nested groups, which
Caffe itself cannot write; reading looks the name up as a path.

Solver state: int32 datasets `iter` and `current_step` of shape (1,), a null-terminated string
`learned_net` (the weights file), and a group `history` with datasets "0", "1", ... in the
solver's history order.
"""
import os

import numpy as np

from deepmammo.atomic import atomic_path

# The HDF5 superblock signature; it sits at byte 0 or at 512, 1024, 2048, ... (a user block).
_SIGNATURE = b"\x89HDF\r\n\x1a\n"


class HDF5Error(ValueError):
    """An HDF5 weights or solver-state file Caffe would refuse."""


def is_hdf5(path):
    """Whether `path` is an HDF5 file (Caffe's H5Fis_hdf5: the signature, not the name)."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            offset = 0
            while offset + len(_SIGNATURE) <= size:
                f.seek(offset)
                if f.read(len(_SIGNATURE)) == _SIGNATURE:
                    return True
                offset = 512 if offset == 0 else offset * 2
    except OSError:
        return False
    return False


def _h5py():
    try:
        import h5py
    except ImportError:
        raise HDF5Error("HDF5 files need the h5py package (pip install h5py)") from None
    return h5py


def _shape_text(shape):
    """Caffe's shape string: '2 3 4 (24)'."""
    count = int(np.prod(shape, dtype=np.int64)) if len(shape) else 1
    return " ".join(str(d) for d in shape) + f" ({count})"


def write_weights(path, layers, write_diff=False):
    """Write `layers`, a list of (layer name, [(data or None, diff)]) in net order, as
    Caffe's ToHDF5: data None marks a blob shared from another layer (not written to
    `data`; its diff still is, with `write_diff`)."""
    h5py = _h5py()
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        data_group = f.create_group("data")
        diff_group = f.create_group("diff") if write_diff else None
        for name, blobs in layers:
            layer_data = data_group.require_group(name)
            layer_diff = diff_group.require_group(name) if write_diff else None
            for k, (data, diff) in enumerate(blobs):
                if data is not None:
                    layer_data.create_dataset(str(k), data=np.asarray(data, np.float32))
                if write_diff:
                    layer_diff.create_dataset(str(k), data=np.asarray(diff, np.float32))


def _param_datasets(group):
    """{index: dataset} of the numbered datasets in a layer's group."""
    h5py = _h5py()
    return {int(key): item for key, item in group.items()
            if isinstance(item, h5py.Dataset) and key.isdigit()}


def read_layer_blobs(path, targets):
    """For each (layer name, [blob shape], [blob shared from another layer?]) of `targets`
    whose layer the file's `data` group holds: (layer name, {index: float32 array}), as
    Caffe's CopyTrainedLayersFromHDF5 checks them: no more blobs than the layer has, each
    blob present unless it is shared, shapes exactly equal."""
    h5py = _h5py()
    out = []
    with h5py.File(path, "r") as f:
        if "data" not in f or not isinstance(f["data"], h5py.Group):
            raise HDF5Error(f"{path}: error reading weights (no group 'data')")
        data = f["data"]
        for name, shapes, shared in targets:
            if name not in data or not isinstance(data[name], h5py.Group):
                continue
            datasets = _param_datasets(data[name])
            if len(datasets) > len(shapes):
                raise HDF5Error(f"{path}: incompatible number of blobs for layer {name!r} "
                                f"(source {len(datasets)}, target {len(shapes)})")
            values = {}
            for k, shape in enumerate(shapes):
                if k not in datasets:
                    if shared[k]:
                        continue
                    raise HDF5Error(f"{path}: incompatible number of blobs for layer {name!r} "
                                    f"(blob {k} is missing)")
                values[k] = _read_blob(datasets[k], shape, f"{path}: layer {name!r} blob {k}")
            out.append((name, values))
    return out


def _read_blob(dataset, shape, where):
    """A dataset as a float32 array of exactly `shape` (float or integer data, as Caffe)."""
    if dataset.dtype.kind not in "fiu":
        raise HDF5Error(f"{where}: unsupported data type {dataset.dtype} (float or integer)")
    if tuple(dataset.shape) != tuple(shape):
        raise HDF5Error(f"{where}: cannot load blob from hdf5; shape mismatch. Source shape is "
                        f"{_shape_text(dataset.shape)} target shape is {_shape_text(shape)}")
    return np.asarray(dataset[()], dtype=np.float32)


def _write_int(f, name, value):
    f.create_dataset(name, data=np.array([value], dtype=np.int32))


def _write_string(f, name, text):
    """A scalar fixed-length C string, null-terminated (H5LTmake_dataset_string)."""
    h5py = _h5py()
    raw = text.encode("utf-8")
    string_type = h5py.h5t.C_S1.copy()
    string_type.set_size(len(raw) + 1)
    string_type.set_strpad(h5py.h5t.STR_NULLTERM)
    space = h5py.h5s.create(h5py.h5s.SCALAR)
    dataset = h5py.h5d.create(f.id, name.encode(), string_type, space)
    dataset.write(h5py.h5s.ALL, h5py.h5s.ALL, np.array(raw + b"\0", dtype=f"S{len(raw) + 1}"))


def write_solver_state(path, iteration, learned_net, current_step, history):
    """Write a solver state as Caffe's SnapshotSolverStateToHDF5."""
    h5py = _h5py()
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        _write_int(f, "iter", iteration)
        _write_string(f, "learned_net", learned_net)
        _write_int(f, "current_step", current_step)
        group = f.create_group("history")
        for i, h in enumerate(history):
            group.create_dataset(str(i), data=np.asarray(h, np.float32))


def _read_int(f, name, path):
    if name not in f:
        raise HDF5Error(f"{path}: failed to load int dataset with name {name!r}")
    return int(np.asarray(f[name][()]).ravel()[0])


def read_solver_state(path, history_shapes):
    """(iter, learned_net or None, current_step, [history arrays]) of a solver state whose
    history must match `history_shapes` in count and shapes (Caffe's
    RestoreSolverStateFromHDF5)."""
    h5py = _h5py()
    with h5py.File(path, "r") as f:
        iteration = _read_int(f, "iter", path)
        learned_net = None
        if "learned_net" in f:
            raw = f["learned_net"][()]
            raw = raw.tobytes() if isinstance(raw, np.ndarray) else bytes(raw)
            learned_net = raw.split(b"\0", 1)[0].decode("utf-8")
        current_step = _read_int(f, "current_step", path)
        if "history" not in f:
            raise HDF5Error(f"{path}: error reading history (no group 'history')")
        group = f["history"]
        if len(group) != len(history_shapes):
            raise HDF5Error(f"{path}: incorrect length of history blobs ({len(group)} in the "
                            f"file, {len(history_shapes)} for this solver and net)")
        history = []
        for i, shape in enumerate(history_shapes):
            if str(i) not in group:
                raise HDF5Error(f"{path}: failed to find HDF5 dataset history/{i}")
            history.append(_read_blob(group[str(i)], shape, f"{path}: history blob {i}"))
    return iteration, learned_net, current_step, history
