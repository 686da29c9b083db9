"""Same seed, same run: the engine draws Caffe's random numbers (deepmammo.caffe.rng).

Against real BVLC Caffe (pycaffe, the `real_caffe` fixture) on the same files: every filler
after construction (through set_random_seed and through a solver's random_seed), the Data
layer's batches (crop, mirror, both, TEST phase), Dropout outputs, and a 12-iteration
from-scratch LevyNet-like run with a test net. Bit-equal wherever no float arithmetic of a
layer is involved.
"""
import os

import numpy as np
import pytest
from helpers import load_script, run_cli

import deepmammo.caffe as ours
from deepmammo.caffe import rng
from deepmammo.caffe.fillers import FillerError, fill
from deepmammo.caffe.formats.caffemodel import layer_blobs, read_caffemodel
from deepmammo.caffe.formats.datum import array_to_datum
from deepmammo.caffe.formats.lmdb_io import LMDBWriter, lmdb_key
from deepmammo.caffe.proto import caffe_pb2 as pb
from deepmammo.caffe.scenario import make_data, write_solver
from deepmammo.caffe.solvers import get_solver

SEEDS = (1, 77, 2 ** 31 + 5)


# ---------------------------------------------------------------- the stream itself
def test_raw_outputs_are_mt19937():
    # The 10000th output of mt19937 seeded with its default 5489 is 4123659995 (C++11's check).
    s = rng.CaffeRNG(5489)
    assert s.rand() == 3499211612
    assert int(s.raw(9999)[-1]) == 4123659995


def test_seed_wraps_like_an_unsigned_int():
    assert rng.CaffeRNG(-1).seed == 2 ** 32 - 1
    ours.set_random_seed(2 ** 32 + 3)
    assert rng.stream().seed == 3


def test_each_thread_has_its_own_stream():
    import threading
    ours.set_random_seed(11)
    seen = {}
    worker = threading.Thread(target=lambda: seen.update(other=rng.stream()))
    worker.start()
    worker.join()
    assert seen["other"] is not rng.stream()
    assert rng.stream().rand() == rng.CaffeRNG(11).rand()


def test_ziggurat_tables_are_recomputed_exactly():
    module = load_script("make_ziggurat_tables")
    from deepmammo.caffe import ziggurat_tables as z
    computed = module.tables()
    assert tuple(computed["normal_x"]) == z.NORMAL_X
    assert tuple(computed["normal_y"]) == z.NORMAL_Y
    assert tuple(computed["exp_x"]) == z.EXP_X
    assert tuple(computed["exp_y"]) == z.EXP_Y
    assert z.NORMAL_X[1] == pytest.approx(3.4426198558966521)


def test_integer_fast_test_is_boosts_float_test():
    # The ziggurat's fast test x < x[i+1] (x = m * 2^-24 * float(x[i])) as m < limit, checked
    # at every layer's edges; the top layer (x[128] = 0) has no fast values at all.
    f32 = np.float32
    for byte in range(256):
        limit, i = int(rng._FAST_LIMIT[byte]), byte >> 1
        for m in {0, limit - 1, limit, 2 ** 24 - 1}:
            if 0 <= m < 2 ** 24:
                x = f32(m) * f32(2.0 ** -24) * f32(rng._NX[i])
                assert (float(x) < rng._NX[i + 1]) == (m < limit), (byte, m)
    assert int(rng._FAST_LIMIT[254]) == int(rng._FAST_LIMIT[255]) == 0


def test_gaussian_blocks_continue_the_stream():
    # Values drawn in pieces are the values drawn at once: no output is skipped or reused,
    # whatever the block boundaries cut through (wedge tests, tails).
    whole = rng.CaffeRNG(9).gaussian(50_000, 0.0, 1.0)
    s = rng.CaffeRNG(9)
    parts = np.concatenate([s.gaussian(k, 0.0, 1.0) for k in (1, 2, 997, 13, 48_987)])
    np.testing.assert_array_equal(parts, whole)
    assert abs(float(whole.mean())) < 0.02 and abs(float(whole.std()) - 1) < 0.02


def test_bad_filler_settings_are_refused():
    with pytest.raises(FillerError, match="std > 0"):
        fill(pb.FillerParameter(type="gaussian", std=0), (2, 3), where="net.prototxt: layer 'a'")
    with pytest.raises(FillerError, match="exceeds the blob's 2 outputs"):
        fill(pb.FillerParameter(type="gaussian", sparse=3), (2, 3))
    with pytest.raises(FillerError, match="min 2.0 exceeds max 1.0"):
        fill(pb.FillerParameter(type="uniform", min=2, max=1), (2, 3))


# ---------------------------------------------------------------- fillers
FILLERS = {
    "constant": 'type: "constant" value: 0.25',
    "uniform": 'type: "uniform" min: -0.3 max: 0.7',
    "gaussian": 'type: "gaussian" mean: 0.1 std: 0.02',
    "gaussian-sparse": 'type: "gaussian" std: 0.5 sparse: 3',
    "positive_unitball": 'type: "positive_unitball"',
    "xavier": 'type: "xavier"',
    "xavier-fan_out": 'type: "xavier" variance_norm: FAN_OUT',
    "xavier-average": 'type: "xavier" variance_norm: AVERAGE',
    "msra": 'type: "msra"',
    "msra-fan_out": 'type: "msra" variance_norm: FAN_OUT',
    "msra-average": 'type: "msra" variance_norm: AVERAGE',
    "bilinear": 'type: "bilinear"',
}


def _filler_net(weight_filler):
    """Two convolutions and an InnerProduct with `weight_filler`, biases of other kinds, so
    that each blob starts where the previous one left the stream."""
    return f"""name: "fillers"
layer {{ name: "in" type: "Input" top: "x"
  input_param {{ shape {{ dim: 2 dim: 3 dim: 9 dim: 9 }} }} }}
layer {{ name: "c1" type: "Convolution" bottom: "x" top: "c1"
  convolution_param {{ num_output: 8 kernel_size: 4 weight_filler {{ {weight_filler} }}
    bias_filler {{ type: "gaussian" std: 1 }} }} }}
layer {{ name: "c2" type: "Convolution" bottom: "c1" top: "c2"
  convolution_param {{ num_output: 5 kernel_size: 3 group: 1 weight_filler {{ {weight_filler} }}
    bias_filler {{ type: "uniform" min: -1 max: 1 }} }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "c2" top: "ip"
  inner_product_param {{ num_output: 700
    weight_filler {{ {weight_filler if "bilinear" not in weight_filler else 'type: "msra"'} }}
    bias_filler {{ type: "xavier" }} }} }}
"""


def _params(net):
    return {name: [np.array(b.data, copy=True) for b in blobs]
            for name, blobs in net.params.items()}


def _assert_params_equal(a, b, where):
    assert list(a) == list(b), where
    for name in b:
        for k, (x, y) in enumerate(zip(a[name], b[name])):
            np.testing.assert_array_equal(x, y.reshape(x.shape), err_msg=f"{where}: {name}/{k}")


@pytest.mark.parametrize("kind", sorted(FILLERS))
def test_fillers_bit_equal_after_set_random_seed(real_caffe, tmp_path, kind):
    path = tmp_path / "net.prototxt"
    path.write_text(_filler_net(FILLERS[kind]))
    for seed in SEEDS:
        real_caffe.set_random_seed(seed)
        theirs = _params(real_caffe.Net(str(path), real_caffe.TRAIN))
        ours.set_random_seed(seed)
        mine = _params(ours.Net(str(path), ours.TRAIN))
        _assert_params_equal(mine, theirs, f"{kind} seed {seed}")


def _write_solver(path, net, seed, extra=""):
    path.write_text(f'net: "{net}"\nbase_lr: 0.01\nlr_policy: "fixed"\nmax_iter: 10\n'
                    f'display: 0\nsolver_mode: CPU\nrandom_seed: {seed}\n'
                    f'snapshot_prefix: "{path.parent / "snap"}"\n{extra}')
    return str(path)


@pytest.mark.parametrize("kind", ["gaussian", "gaussian-sparse", "msra-average",
                                  "positive_unitball", "xavier-fan_out", "uniform"])
def test_fillers_bit_equal_through_solver_random_seed(real_caffe, tmp_path, kind):
    net = tmp_path / "net.prototxt"
    net.write_text(_filler_net(FILLERS[kind]))
    for seed in SEEDS[:2]:
        solver = _write_solver(tmp_path / "solver.prototxt", net, seed)
        real_caffe.set_random_seed(12345)       # the solver's seed replaces whatever was set
        ours.set_random_seed(54321)
        theirs = real_caffe.get_solver(solver)
        with get_solver(solver) as mine:
            _assert_params_equal(_params(mine.net), _params(theirs.net), f"{kind} seed {seed}")


# ---------------------------------------------------------------- Data layer
def _write_images(path, n=7, shape=(3, 12, 10), seed=0):
    r = np.random.RandomState(seed)
    with LMDBWriter(str(path)) as db:
        for i in range(n):
            img = r.randint(0, 256, size=shape).astype(np.uint8)
            db.put_datum(lmdb_key(i, f"img{i}"), array_to_datum(img, label=i % 2))
    return str(path)


DATA_CASES = {
    "crop": ("TRAIN", "crop_size: 8"),
    "mirror": ("TRAIN", "mirror: true"),
    "crop-mirror": ("TRAIN", "crop_size: 7 mirror: true scale: 0.5"),
    "full-crop-mirror": ("TRAIN", "crop_size: 10 mirror: true"),
    "test-crop-mirror": ("TEST", "crop_size: 8 mirror: true"),
    "test-crop": ("TEST", "crop_size: 8 mean_value: 100"),
}


@pytest.mark.parametrize("case", sorted(DATA_CASES))
def test_data_layer_batches_bit_equal(real_caffe, tmp_path, case):
    phase, transform = DATA_CASES[case]
    source = _write_images(tmp_path / "db")
    # A filler after the Data layer checks that it took as many draws as Caffe's.
    net = tmp_path / "net.prototxt"
    net.write_text(f"""name: "data"
layer {{ name: "data" type: "Data" top: "data" top: "label"
  transform_param {{ {transform} }}
  data_param {{ source: "{source}" batch_size: 3 backend: LMDB }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param {{ num_output: 4 weight_filler {{ type: "gaussian" std: 1 }} }} }}
""")
    for seed in SEEDS[:2]:
        real_caffe.set_random_seed(seed)
        theirs = real_caffe.Net(str(net), getattr(real_caffe, phase))
        ours.set_random_seed(seed)
        mine = ours.Net(str(net), getattr(ours, phase))
        try:
            _assert_params_equal(_params(mine), _params(theirs), f"{case} seed {seed}")
            for step in range(5):           # 15 records of 7: wraps twice
                theirs.forward()
                mine.forward()
                for blob in ("data", "label"):
                    np.testing.assert_array_equal(
                        mine.blobs[blob].data, theirs.blobs[blob].data,
                        err_msg=f"{case} seed {seed} forward {step} {blob}")
        finally:
            mine.close()
            del theirs


# ---------------------------------------------------------------- Dropout
@pytest.mark.parametrize("ratio", [0.5, 0.3, 0.9])
def test_dropout_bit_equal(real_caffe, tmp_path, ratio):
    net = tmp_path / "net.prototxt"
    net.write_text(f"""name: "drop"
layer {{ name: "in" type: "Input" top: "x" input_param {{ shape {{ dim: 4 dim: 1000 }} }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "x" top: "ip"
  inner_product_param {{ num_output: 300 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "drop" type: "Dropout" bottom: "ip" top: "ip"
  dropout_param {{ dropout_ratio: {ratio} }} }}
""")
    x = np.random.RandomState(3).randn(4, 1000).astype(np.float32)
    real_caffe.set_random_seed(21)
    theirs = real_caffe.Net(str(net), real_caffe.TRAIN)
    ours.set_random_seed(21)
    mine = ours.Net(str(net), ours.TRAIN)
    for step in range(3):
        # Caffe's InnerProduct and ours may round the sums differently: give Dropout the same
        # input by running it alone on Caffe's InnerProduct output.
        theirs.blobs["x"].data[...] = x
        theirs.forward(end="ip")
        before = np.array(theirs.blobs["ip"].data, copy=True)
        theirs.forward(start="drop")
        mine.blobs["ip"].data[...] = before
        mine.forward(start="drop")
        np.testing.assert_array_equal(mine.blobs["ip"].data, theirs.blobs["ip"].data,
                                      err_msg=f"ratio {ratio} forward {step}")
    kept = np.count_nonzero(theirs.blobs["ip"].data) / theirs.blobs["ip"].data.size
    assert kept == pytest.approx(1 - ratio, abs=0.03)


# ---------------------------------------------------------------- a from-scratch run
LEVYNET_LIKE = """name: "LevyNetLike"
layer {{ name: "data" type: "Data" top: "data" top: "label" include {{ phase: TRAIN }}
  transform_param {{ crop_size: 14 mirror: true scale: 0.00390625 mean_value: 120 }}
  data_param {{ source: "{train}" batch_size: 8 backend: LMDB }} }}
layer {{ name: "data" type: "Data" top: "data" top: "label" include {{ phase: TEST }}
  transform_param {{ crop_size: 14 scale: 0.00390625 mean_value: 120 }}
  data_param {{ source: "{test}" batch_size: 4 backend: LMDB }} }}
layer {{ name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  param {{ lr_mult: 1 }} param {{ lr_mult: 2 }}
  convolution_param {{ num_output: 6 kernel_size: 3 weight_filler {{ type: "gaussian" std: 0.1 }}
    bias_filler {{ type: "constant" value: 0.1 }} }} }}
layer {{ name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" }}
layer {{ name: "scale1" type: "Scale" bottom: "conv1" top: "conv1"
  scale_param {{ bias_term: true }} }}
layer {{ name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }}
layer {{ name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param {{ pool: AVE kernel_size: 2 stride: 2 }} }}
layer {{ name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
  convolution_param {{ num_output: 8 kernel_size: 3 weight_filler {{ type: "msra" }} }} }}
layer {{ name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }}
layer {{ name: "ip1" type: "InnerProduct" bottom: "conv2" top: "ip1"
  inner_product_param {{ num_output: 32 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "relu3" type: "ReLU" bottom: "ip1" top: "ip1" }}
layer {{ name: "drop" type: "Dropout" bottom: "ip1" top: "ip1"
  dropout_param {{ dropout_ratio: 0.4 }} }}
layer {{ name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  inner_product_param {{ num_output: 2 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }}
layer {{ name: "accuracy" type: "Accuracy" bottom: "ip2" bottom: "label" top: "accuracy"
  include {{ phase: TEST }} }}
"""


def test_from_scratch_run_follows_caffe(real_caffe, tmp_path):
    train = _write_images(tmp_path / "train", n=20, shape=(1, 16, 16), seed=1)
    test = _write_images(tmp_path / "test", n=8, shape=(1, 16, 16), seed=2)
    net = tmp_path / "net.prototxt"
    net.write_text(LEVYNET_LIKE.format(train=train, test=test))
    solver = _write_solver(tmp_path / "solver.prototxt", net, 5,
                           "momentum: 0.9\nweight_decay: 0.0005\ntest_iter: 2\n"
                           "test_interval: 4\ntest_initialization: true\n"
                           "snapshot_after_train: false\n")
    theirs = real_caffe.get_solver(solver)
    with get_solver(solver) as mine:
        _assert_params_equal(_params(mine.net), _params(theirs.net), "after construction")
        _assert_params_equal(_params(mine.test_nets[0]), _params(theirs.test_nets[0]),
                             "test net after construction")
        for step in range(1, 13):
            theirs.step(1)
            mine.step(1)
            loss_theirs = float(theirs.net.blobs["loss"].data)
            loss_mine = float(mine.net.blobs["loss"].data)
            assert loss_mine == pytest.approx(loss_theirs, rel=1e-5), f"loss at {step}"
        final_theirs, final_mine = _params(theirs.net), _params(mine.net)
        for name in final_theirs:
            for k, (a, b) in enumerate(zip(final_mine[name], final_theirs[name])):
                np.testing.assert_allclose(a, b.reshape(a.shape), rtol=1e-5, atol=1e-7,
                                           err_msg=f"final {name}/{k}")


# ---------------------------------------------------------------- the command line
@pytest.mark.subprocess
def test_train_from_scratch_cli_matches_caffe_and_logs_the_stream(real_caffe, tmp_path):
    """`deepmammo train` without weights, in both engines, from the solver's random_seed:
    the same final weights, and the log says which stream the run drew from."""
    root = str(tmp_path)
    net = make_data(root)
    body = 'type: "SGD" base_lr: 0.1 momentum: 0.9 lr_policy: "fixed" max_iter: 6 display: 2'
    for engine in ("torch", "caffe"):
        solver = write_solver(root, engine, body, net)     # random_seed: 3
        done = run_cli("train", "--solver", solver, "--engine", engine, "--log",
                       os.path.join(root, f"{engine}.log"))
        assert done.returncode == 0, done.stderr
    with open(os.path.join(root, "torch.log")) as fh:
        assert "Random stream: caffe-mt19937 seed 3 " in fh.read()
    ours_w = layer_blobs(read_caffemodel(os.path.join(root, "torch_iter_6.caffemodel")))
    theirs_w = layer_blobs(read_caffemodel(os.path.join(root, "caffe_iter_6.caffemodel")))
    assert sorted(ours_w) == sorted(theirs_w)
    for name in theirs_w:
        for a, b in zip(ours_w[name], theirs_w[name]):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=name)


def test_each_worker_seeds_with_random_seed_plus_rank(real_caffe, tmp_path):
    # Caffe's Solver::Init seeds with random_seed + Caffe::solver_rank().
    net = tmp_path / "net.prototxt"
    net.write_text(_filler_net(FILLERS["gaussian"]))
    solver = _write_solver(tmp_path / "solver.prototxt", net, 40)
    real_caffe.set_random_seed(42)
    theirs = _params(real_caffe.Net(str(net), real_caffe.TRAIN))
    with get_solver(solver, rank=2, world_size=3) as mine:
        assert mine.random_stream.startswith("caffe-mt19937 seed 42 ")
        _assert_params_equal(_params(mine.net), theirs, "rank 2")
