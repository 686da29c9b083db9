"""A tiny training set-up for checking solvers: float Datums in LMDBs, a small net of
InnerProduct layers (one frozen, others with lr_mult / decay_mult), initial weights made by
either engine, and solver files; real Caffe and the torch engine read exactly the same files.
The solver tests and scripts/check_solver_gpu.py both use it."""
import os

import numpy as np

from deepmammo.caffe.formats.datum import array_to_datum
from deepmammo.caffe.formats.lmdb_io import LMDBWriter, lmdb_key

TRAIN_RECORDS, TRAIN_BATCH = 24, 4   # 6 iterations per pass over the data
TEST_RECORDS, TEST_BATCH = 10, 5

NET = """name: "TinyMLP"
layer {{ name: "data" type: "Data" top: "data" top: "label" include {{ phase: TRAIN }}
  data_param {{ source: "{train}" batch_size: {train_batch} backend: LMDB }} }}
layer {{ name: "data" type: "Data" top: "data" top: "label" include {{ phase: TEST }}
  data_param {{ source: "{test}" batch_size: {test_batch} backend: LMDB }} }}
layer {{ name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
  param {{ lr_mult: 1 decay_mult: 1 }} param {{ lr_mult: 2 decay_mult: 0 }}
  inner_product_param {{ num_output: 5 weight_filler {{ type: "gaussian" std: 0.5 }}
    bias_filler {{ type: "uniform" min: -0.5 max: 0.5 }} }} }}
layer {{ name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }}
layer {{ name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  param {{ lr_mult: 0 decay_mult: 1 }} param {{ lr_mult: 0 decay_mult: 0 }}
  inner_product_param {{ num_output: 4 weight_filler {{ type: "gaussian" std: 0.5 }}
    bias_filler {{ type: "uniform" min: -0.5 max: 0.5 }} }} }}
layer {{ name: "ip3" type: "InnerProduct" bottom: "ip2" top: "ip3"
  param {{ lr_mult: 0.5 decay_mult: 2 }} param {{ lr_mult: 1 decay_mult: 0.5 }}
  inner_product_param {{ num_output: 3 weight_filler {{ type: "gaussian" std: 0.5 }}
    bias_filler {{ type: "uniform" min: -0.5 max: 0.5 }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip3" bottom: "label" top: "loss" }}
layer {{ name: "accuracy" type: "Accuracy" bottom: "ip3" bottom: "label" top: "accuracy"
  include {{ phase: TEST }} }}
"""


def write_lmdb(path, n, seed):
    rng = np.random.RandomState(seed)
    with LMDBWriter(path) as db:
        for i in range(n):
            x = rng.randn(6, 1, 1).astype(np.float32)
            db.put_datum(lmdb_key(i, f"s{i}"), array_to_datum(x, label=(i * 7 + 1) % 3))


def make_data(root):
    """LMDBs and net.prototxt under `root`; returns the net's path."""
    os.makedirs(root, exist_ok=True)
    train, test = os.path.join(root, "train_lmdb"), os.path.join(root, "test_lmdb")
    write_lmdb(train, TRAIN_RECORDS, 1)
    write_lmdb(test, TEST_RECORDS, 2)
    net = os.path.join(root, "net.prototxt")
    with open(net, "w") as f:
        f.write(NET.format(train=train, test=test, train_batch=TRAIN_BATCH,
                           test_batch=TEST_BATCH))
    return net


def make_initial_weights(caffe, net_path, out):
    """Real Caffe fills the net (seeded) and saves it: both engines start from these weights."""
    caffe.set_random_seed(5)
    net = caffe.Net(net_path, caffe.TRAIN)
    net.save(out)
    return out


def write_solver(root, name, body, net_path, weights=None, prefix=None):
    """A solver prototxt at root/name.prototxt; `body` holds the type and schedule."""
    path = os.path.join(root, name + ".prototxt")
    lines = [f'net: "{net_path}"', body, "solver_mode: CPU", "random_seed: 3"]
    if weights:
        lines.append(f'weights: "{weights}"')
    lines.append(f'snapshot_prefix: "{prefix or os.path.join(root, name)}"')
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def params_of(net):
    """{layer: [arrays]} of a pycaffe-style net (ours or Caffe's), copied."""
    return {name: [np.array(b.data, copy=True) for b in blobs]
            for name, blobs in net.params.items()}


def assert_params_close(ours, theirs, rtol, atol, where):
    assert list(ours) == list(theirs), f"{where}: layers {list(ours)} vs {list(theirs)}"
    for name in theirs:
        assert len(ours[name]) == len(theirs[name]), f"{where}: {name} blob count"
        for i, (a, b) in enumerate(zip(ours[name], theirs[name])):
            np.testing.assert_allclose(a, b.reshape(a.shape), rtol=rtol, atol=atol,
                                       err_msg=f"{where}: {name} blob {i}")
