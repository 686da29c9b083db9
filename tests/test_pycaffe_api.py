"""pycaffe's API on the engine, against real pycaffe: Net's methods and properties
(_caffe.cpp and pycaffe.py), HDF5 weights, Classifier and Detector, the Solver's pycaffe
methods and HDF5 snapshots, and multi-worker training through caffe.NCCL."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

import deepmammo.caffe as caffe
from deepmammo.caffe import distributed
from deepmammo.caffe.formats.caffemodel import layer_blobs, read_caffemodel
from deepmammo.caffe.netstate import NetError
from deepmammo.caffe.scenario import make_data, make_initial_weights, params_of, write_solver

TOL = 2e-5

TRAIN_NET = '''name: "small" force_backward: true
layer { name: "data" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 2 dim: 3 dim: 5 dim: 5 } shape { dim: 2 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "fc" type: "InnerProduct" bottom: "conv1" top: "fc" param { name: "w" }
        inner_product_param { num_output: 3 } }
layer { name: "fc2" type: "InnerProduct" bottom: "conv1" top: "fc2" param { name: "w" }
        inner_product_param { num_output: 3 } }
layer { name: "sum" type: "Eltwise" bottom: "fc" bottom: "fc2" top: "sum" }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "sum" bottom: "label" top: "loss"
        loss_weight: 2 }
layer { name: "prob" type: "Softmax" bottom: "sum" top: "prob" }
'''
# Outputs with a batch axis (forward_all cannot batch a scalar loss, in pycaffe either).
DEPLOY_NET = TRAIN_NET.replace(TRAIN_NET[TRAIN_NET.index('layer { name: "loss"'):
                                         TRAIN_NET.index('layer { name: "prob"')], "")


def _write(tmp_path, text, name="net.prototxt"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _pair(real_caffe, tmp_path, text, phase, name="net"):
    """The net in real pycaffe and in ours, with the same random weights."""
    path = _write(tmp_path, text, f"{name}.prototxt")
    real = real_caffe.Net(path, phase)
    rs = np.random.RandomState(0)
    for blobs in real.params.values():
        for b in blobs:
            b.data[...] = rs.randn(*b.data.shape)
    weights = str(tmp_path / f"{name}.caffemodel")
    real.save(weights)
    return caffe.Net(path, phase, weights=weights), real, path, weights


def _feed(nets, seed=1, batch=2):
    rs = np.random.RandomState(seed)
    x = rs.randn(batch, 3, 5, 5).astype(np.float32)
    label = rs.randint(0, 3, batch).astype(np.float32)
    for net in nets:
        net.blobs["data"].data[...] = x
        net.blobs["label"].data[...] = label


def _assert_dicts_close(ours, theirs):
    assert sorted(ours) == sorted(theirs)
    for k in theirs:
        np.testing.assert_allclose(ours[k], theirs[k], rtol=TOL, atol=1e-6, err_msg=k)


# ---------------------------------------------------------------------------------- Net
def test_net_introspection_matches_pycaffe(real_caffe, tmp_path):
    ours, real, _, _ = _pair(real_caffe, tmp_path, TRAIN_NET, caffe.TRAIN)
    for attr in ("_blob_names", "_layer_names", "_inputs", "_outputs", "_blob_loss_weights",
                 "inputs", "outputs"):
        assert list(getattr(ours, attr)) == list(getattr(real, attr)), attr
    assert ours.top_names == real.top_names and ours.bottom_names == real.bottom_names
    assert dict(ours.blob_loss_weights) == dict(real.blob_loss_weights)
    for i in range(len(real.layers)):
        assert list(ours._top_ids(i)) == list(real._top_ids(i))
        assert list(ours._bottom_ids(i)) == list(real._bottom_ids(i))
        assert ours.layers[i].type == real.layers[i].type
        assert len(ours.layers[i].blobs) == len(real.layers[i].blobs)
    assert list(ours.layer_dict) == list(real.layer_dict) and list(ours.params) == list(real.params)
    assert [tuple(b.shape) for b in ours._blobs] == [tuple(b.shape) for b in real._blobs]
    assert ours.params["fc"][0] is ours.params["fc2"][0]          # shared by ParamSpec name


def test_forward_and_backward_ranges_match_pycaffe(real_caffe, tmp_path):
    ours, real, _, _ = _pair(real_caffe, tmp_path, TRAIN_NET, caffe.TRAIN)
    _feed([ours, real])
    _assert_dicts_close(ours.forward(), real.forward())
    assert ours._forward(0, len(ours.layers) - 1) == pytest.approx(
        real._forward(0, len(real.layers) - 1), rel=TOL)
    for kwargs in [dict(start="fc"), dict(end="fc"), dict(start="relu1", end="sum"),
                   dict(blobs=["conv1"], end="relu1")]:
        _assert_dicts_close(ours.forward(**kwargs), real.forward(**kwargs))
    for kwargs in [{}, dict(start="sum"), dict(end="fc"), dict(start="loss", end="relu1"),
                   dict(diffs=["conv1"], end="fc2")]:
        ours.forward()
        real.forward()
        _assert_dicts_close(ours.backward(**kwargs), real.backward(**kwargs))
    ours.forward()
    real.forward()
    ours._backward(len(ours.layers) - 1, 2)
    real._backward(len(real.layers) - 1, 2)
    np.testing.assert_allclose(ours.blobs["conv1"].diff, real.blobs["conv1"].diff, rtol=TOL,
                               atol=1e-6)
    x = np.zeros((2, 3, 5, 5), np.float32)
    calls = [lambda n: n.forward(data=x), lambda n: n.forward(data=x[:1], label=x[:1, 0, 0, 0]),
             lambda n: n.backward(loss=np.ones(1)), lambda n: n.forward(start="nope"),
             lambda n: n.set_input_arrays(x, np.zeros(2, np.float32))]
    for call in calls:
        errors = []
        for net in (ours, real):
            with pytest.raises(Exception) as info:
                call(net)
            errors.append(type(info.value))
        assert errors[0] == errors[1]


def test_forward_all_and_forward_backward_all_match_pycaffe(real_caffe, tmp_path):
    ours, real, _, _ = _pair(real_caffe, tmp_path, DEPLOY_NET, caffe.TEST)
    rs = np.random.RandomState(2)
    x = rs.randn(5, 3, 5, 5).astype(np.float32)            # 2 full batches and a padded one
    label = rs.randint(0, 3, 5).astype(np.float32)
    for blobs in (None, ["fc"]):
        a, b = ours.forward_all(blobs=blobs, data=x, label=label), \
            real.forward_all(blobs=blobs, data=x, label=label)
        _assert_dicts_close(a, b)
        assert a["prob"].shape == (5, 3)
    top_diff = rs.randn(5, 3).astype(np.float32)
    (a_out, a_diff), (b_out, b_diff) = [
        net.forward_backward_all(blobs=["fc"], diffs=["conv1"], data=x, label=label,
                                 prob=top_diff) for net in (ours, real)]
    _assert_dicts_close(a_out, b_out)
    _assert_dicts_close(a_diff, b_diff)
    assert a_diff["data"].shape == (5, 3, 5, 5)


def test_net_hooks_run_around_each_layer_as_pycaffe(real_caffe, tmp_path):
    ours, real, _, _ = _pair(real_caffe, tmp_path, TRAIN_NET, caffe.TRAIN)
    _feed([ours, real])
    seen = []
    for net in (ours, real):
        calls = []
        net.before_forward(lambda i, c=calls: c.append(("before_forward", i)))
        net.after_forward(lambda i, c=calls: c.append(("after_forward", i)))
        net.before_backward(lambda i, c=calls: c.append(("before_backward", i)))
        net.after_backward(lambda i, c=calls: c.append(("after_backward", i)))
        net.forward(start="fc", end="sum")
        net.backward(start="sum", end="fc2")
        net.forward()
        seen.append(calls)
    assert seen[0] == seen[1]
    fc = list(ours._layer_names).index("fc")
    assert seen[0][:2] == [("before_forward", fc), ("after_forward", fc)]


def test_hdf5_weights_interchange_with_real(real_caffe, tmp_path):
    import h5py
    ours, real, path, _ = _pair(real_caffe, tmp_path, TRAIN_NET, caffe.TRAIN)
    ours_h5, real_h5 = str(tmp_path / "ours.h5"), str(tmp_path / "real.caffemodel.h5")
    ours.save_hdf5(ours_h5)
    real.save_hdf5(real_h5)

    def layout(p):
        items = []
        with h5py.File(p, "r") as f:
            f.visititems(lambda n, it: items.append((n, getattr(it, "shape", None),
                                                     str(getattr(it, "dtype", "")))))
        return items
    assert layout(ours_h5) == layout(real_h5)
    assert "data/fc2/0" not in dict((n, s) for n, s, _ in layout(real_h5))   # shared: stored once
    real_loaded = real_caffe.Net(path, caffe.TRAIN)
    real_loaded.load_hdf5(ours_h5)
    ours_loaded = caffe.Net(path, caffe.TRAIN)
    ours_loaded.load_hdf5(real_h5)
    by_weights = caffe.Net(path, caffe.TRAIN, weights=real_h5)     # told apart by content
    by_copy = caffe.Net(path, caffe.TRAIN)
    by_copy.copy_from(real_h5)
    for name in real.params:
        for k, blob in enumerate(real.params[name]):
            for net in (real_loaded, ours_loaded, by_weights, by_copy):
                np.testing.assert_array_equal(net.params[name][k].data, blob.data)
    with_diff = str(tmp_path / "diff.h5")
    ours.blobs["data"].data[...] = 1
    ours.forward()
    ours.backward()
    ours.save_hdf5(with_diff, write_diff=True)
    with h5py.File(with_diff, "r") as f:
        np.testing.assert_array_equal(f["diff/conv1/0"][()], ours.params["conv1"][0].diff)
        assert "diff/fc2/0" in f and "data/fc2/0" not in f


def test_hdf5_weights_shape_and_count_checks(tmp_path):
    import h5py
    path = _write(tmp_path, TRAIN_NET)
    wrong = str(tmp_path / "wrong.h5")
    with h5py.File(wrong, "w") as f:
        f.create_dataset("data/conv1/0", data=np.zeros((4, 3, 2, 2), np.float32))
        f.create_dataset("data/conv1/1", data=np.zeros(4, np.float32))
    with pytest.raises(NetError, match=r"layer 'conv1' blob 0.*Source shape is 4 3 2 2 \(48\) "
                                       r"target shape is 4 3 3 3 \(108\)"):
        caffe.Net(path, caffe.TRAIN).load_hdf5(wrong)
    missing = str(tmp_path / "missing.h5")
    with h5py.File(missing, "w") as f:
        f.create_dataset("data/conv1/0", data=np.zeros((4, 3, 3, 3), np.float32))
    with pytest.raises(NetError, match="incompatible number of blobs for layer 'conv1'"):
        caffe.Net(path, caffe.TRAIN).load_hdf5(missing)


def test_pycaffe_net_suite(real_caffe, tmp_path):
    """pycaffe's own test_net.py checks (with an Input layer in place of DummyData)."""
    ours, _, path, _ = _pair(real_caffe, tmp_path, TRAIN_NET, caffe.TRAIN)
    _feed([ours])
    ours.forward()
    ours.backward()
    diff = ours.params["conv1"][0].diff
    assert np.abs(diff).max() > 0
    ours.clear_param_diffs()
    assert (diff == 0).all()
    saved = str(tmp_path / "saved.caffemodel")
    ours.save(saved)
    legacy = caffe.Net(path, saved, caffe.TRAIN)                  # pycaffe's legacy form
    named = real_caffe.Net(path, caffe.TRAIN, weights=saved)
    for name in ours.params:
        for k, blob in enumerate(ours.params[name]):
            np.testing.assert_array_equal(legacy.params[name][k].data, blob.data)
            np.testing.assert_array_equal(named.params[name][k].data, blob.data)
    params = [b for blobs in ours.params.values() for b in blobs]
    blobs = list(ours.blobs.values())
    del ours, legacy
    assert np.isfinite(sum(p.data.sum() + p.diff.sum() for p in params + blobs))
    shared = caffe.Net(path, caffe.TEST)
    trained = caffe.Net(path, caffe.TRAIN, weights=saved)
    shared.share_with(trained)
    assert shared.params["conv1"][0].data is not None
    np.testing.assert_array_equal(shared.params["conv1"][0].data,
                                  trained.params["conv1"][0].data)
    trained.params["conv1"][0].data[...] = 3
    assert (shared.params["conv1"][0].data == 3).all()


# ----------------------------------------------------------------- Classifier, Detector
CLASSIFY_NET = '''name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 6 dim: 6 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip" inner_product_param { num_output: 5 } }
layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }
'''


@pytest.fixture
def real_load_image(real_caffe, monkeypatch):
    """Real pycaffe with its load_image working: the `as_grey` keyword it passes is today's
    scikit-image `as_gray` (see test_pycaffe_io.py)."""
    import skimage.io
    imread = skimage.io.imread
    monkeypatch.setattr(skimage.io, "imread",
                        lambda f, as_grey=False, **kw: imread(f, as_gray=as_grey, **kw))
    return real_caffe


def test_classifier_matches_pycaffe(real_caffe, tmp_path):
    _, _, path, weights = _pair(real_caffe, tmp_path, CLASSIFY_NET, caffe.TEST)
    rs = np.random.RandomState(3)
    images = [rs.rand(9, 11, 3).astype(np.float32), rs.rand(7, 8, 3).astype(np.float32),
              rs.rand(10, 10, 3).astype(np.float32)]
    options = dict(image_dims=(8, 8), mean=np.array([0.4, 0.5, 0.6]), raw_scale=2.0,
                   channel_swap=(2, 1, 0), input_scale=1.5)
    ours = caffe.Classifier(path, weights, **options)
    real = real_caffe.Classifier(path, weights, **options)
    for oversample in (True, False):
        a, b = ours.predict(images, oversample), real.predict(images, oversample)
        assert a.shape == b.shape == (3, 5)
        np.testing.assert_allclose(a, b, rtol=TOL, atol=1e-7)
    whole = caffe.Classifier(path, weights)                       # image_dims: the input's
    assert list(whole.image_dims) == [6, 6]


def test_detector_matches_pycaffe(real_load_image, tmp_path):
    real_caffe = real_load_image
    _, _, path, weights = _pair(real_caffe, tmp_path, CLASSIFY_NET, caffe.TEST)
    image = str(tmp_path / "image.png")
    rs = np.random.RandomState(4)
    Image.fromarray(rs.randint(0, 255, (20, 24, 3)).astype(np.uint8)).save(image)
    options = dict(mean=np.array([0.4, 0.5, 0.6]), raw_scale=2.0, channel_swap=(2, 1, 0))
    windows = [np.array([0, 0, 10, 12]), np.array([5, 3, 18, 20])]
    ours = caffe.Detector(path, weights, **options).detect_windows([(image, windows)])
    real = real_caffe.Detector(path, weights, **options).detect_windows([(image, windows)])
    assert len(ours) == len(real) == 2
    for a, b in zip(ours, real):
        assert a["filename"] == b["filename"] and list(a["window"]) == list(b["window"])
        np.testing.assert_allclose(a["prediction"], b["prediction"], rtol=TOL, atol=1e-7)

    # Context padding (pycaffe's own crop slices with floats, which numpy no longer takes):
    # R-CNN's warp, the part beyond the image filled with the mean in image space.
    padded = caffe.Detector(path, weights, context_pad=1, **options)
    np.testing.assert_allclose(padded.crop_mean.ravel(), [0.3, 0.25, 0.2])   # BGR mean, /255
    img = caffe.io.load_image(image)
    crop = padded.crop(img, np.array([0, 0, 10, 12]))
    assert crop.shape == (6, 6, 3)
    np.testing.assert_allclose(crop[0, 0], padded.crop_mean.ravel())        # outside: mean
    inner = padded.crop(img, np.array([4, 4, 14, 16]))
    assert inner.shape == (6, 6, 3) and not np.allclose(inner[0, 0], padded.crop_mean.ravel())
    with pytest.raises(RuntimeError, match="selective_search_ijcv_with_python"):
        padded.detect_selective_search([image])


# ---------------------------------------------------------------------------------- Solver
SCHEDULE = ('type: "SGD" base_lr: 0.1 momentum: 0.9 lr_policy: "step" gamma: 0.5 stepsize: 2 '
            "weight_decay: 0.01 max_iter: 6 display: 0 test_iter: 2 test_interval: 100 "
            "test_initialization: false")


@pytest.fixture
def scenario(real_caffe, tmp_path):
    root = str(tmp_path)
    net = make_data(root)
    weights = make_initial_weights(real_caffe, net, os.path.join(root, "init.caffemodel"))
    return root, net, weights


def _assert_params_equal(ours, theirs, rtol=1e-5, atol=1e-6):
    assert list(ours) == list(theirs)
    for name in theirs:
        for a, b in zip(ours[name], theirs[name]):
            np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=name)


def test_solver_pycaffe_methods_match_real(real_caffe, scenario):
    root, net, weights = scenario
    solvers = []
    for mod, name in ((caffe, "ours"), (real_caffe, "real")):
        path = write_solver(root, name, SCHEDULE, net, weights=weights)
        solver = mod.SGDSolver(path)
        assert isinstance(mod.get_solver(path), mod.SGDSolver)
        events = []
        solver.add_callback(lambda e=events: e.append("start"),
                            lambda e=events, s=solver: e.append(("gradients", s.iter)))
        solver.step(3)
        solvers.append((solver, events))
    (ours, ours_events), (real, real_events) = solvers
    assert ours_events == real_events == ["start", ("gradients", 0), "start", ("gradients", 1),
                                          "start", ("gradients", 2)]
    assert ours.iter == real.iter == 3
    _assert_params_equal(params_of(ours.net), params_of(real.net))
    for field in ("max_iter", "display", "layer_wise_reduce", "base_lr"):
        assert getattr(ours.param, field) == getattr(real.param, field)
    assert ours.lr == pytest.approx(real.lr)
    assert len(ours.test_nets) == len(real.test_nets) == 1
    # pycaffe's test_apply_update: zero weights, unit diffs, one update at the base rate
    fresh = caffe.SGDSolver(write_solver(root, "apply", SCHEDULE, net, weights=weights))
    data = fresh.net.layers[1].blobs[0].data
    data[...] = 0
    fresh.net.layers[1].blobs[0].diff[...] = 1
    fresh.apply_update()
    assert np.abs(data + 0.1).max() < 1e-7 and fresh.iter == 1
    # share_weights: a separate net reads the solver's train weights
    test_net = caffe.Net(net, caffe.TEST)
    ours.share_weights(test_net)
    np.testing.assert_array_equal(test_net.params["ip1"][0].data, ours.net.params["ip1"][0].data)
    for solver, prefix in ((ours, "ours"), (real, "real")):
        solver.snapshot()
        for ext in (".caffemodel", ".solverstate"):
            assert os.path.isfile(os.path.join(root, f"{prefix}_iter_3{ext}"))


def test_hdf5_snapshots_interchange_with_real(real_caffe, scenario):
    import h5py
    root, net, weights = scenario
    body = SCHEDULE + " snapshot_format: HDF5"
    paths = {name: write_solver(root, name, body, net, weights=weights)
             for name in ("ours", "real")}
    ours, real = caffe.SGDSolver(paths["ours"]), real_caffe.SGDSolver(paths["real"])
    for solver in (ours, real):
        solver.step(3)
        solver.snapshot()
    files = {name: os.path.join(root, f"{name}_iter_3.solverstate.h5") for name in paths}
    for name in paths:
        assert os.path.isfile(os.path.join(root, f"{name}_iter_3.caffemodel.h5"))

    def layout(p):
        items = []
        with h5py.File(p, "r") as f:
            f.visititems(lambda n, it: items.append((n, getattr(it, "shape", None),
                                                     str(getattr(it, "dtype", "")))))
        return items
    assert layout(files["ours"]) == layout(files["real"])
    # each restores the other's state (iteration, weights, momentum) and both go on alike
    ours2, real2 = caffe.SGDSolver(paths["ours"]), real_caffe.SGDSolver(paths["real"])
    ours2.restore(files["real"])
    real2.restore(files["ours"])
    assert ours2.iter == real2.iter == 3
    _assert_params_equal(params_of(ours2.net), params_of(real.net))
    ours2.step(3)
    real2.step(3)
    _assert_params_equal(params_of(ours2.net), params_of(real2.net))


def test_solver_rank_follows_solver_rank(scenario):
    root, net, weights = scenario
    path = write_solver(root, "ranked", SCHEDULE, net, weights=weights)
    try:
        caffe.set_solver_rank(1)
        assert caffe.SGDSolver(path).rank == 1
    finally:
        caffe.set_solver_rank(0)
    assert caffe.SGDSolver(path).rank == 0


# ------------------------------------------------------------------ workers, module names
@pytest.mark.subprocess
def test_nccl_workers_train_as_one_with_iter_size_2(real_caffe, scenario):
    """pycaffe's multi-GPU recipe on two gloo CPU processes, with layer-wise reduce (the
    net's after_backward hook) and without (the solver callback): both end where one worker
    with iter_size 2 ends."""
    import torch.multiprocessing as mp
    from pycaffe_workers import nccl_worker
    root, net, weights = scenario
    schedule = ('type: "SGD" base_lr: 0.1 momentum: 0.9 lr_policy: "step" gamma: 0.5 '
                "stepsize: 3 weight_decay: 0.01 clip_gradients: 2 max_iter: 4 display: 0")
    with caffe.get_solver(write_solver(root, "one", schedule + " iter_size: 2", net,
                                       weights=weights)) as solver:
        solver.step(4)
        expected = params_of(solver.net)
    runs = []
    for layer_wise in ("true", "false"):
        path = write_solver(root, f"two_{layer_wise}",
                            schedule + f" layer_wise_reduce: {layer_wise}", net, weights=weights)
        runs.append((path, os.path.join(root, f"two_{layer_wise}.caffemodel")))
    uid = caffe.NCCL.new_uid()
    assert isinstance(uid, bytes)                          # pycaffe's test_nccl
    mp.spawn(nccl_worker, args=(runs, uid, 4), nprocs=2, join=True)
    for _, result in runs:
        _assert_params_equal(layer_blobs(read_caffemodel(result)), expected)


def test_module_has_pycaffe_names(real_caffe):
    # NetSpec, Python layers and drawing live elsewhere (their own modules and tests).
    elsewhere = {"Layer", "NetSpec", "layers", "params", "to_proto", "net_spec", "pycaffe",
                 "classifier", "detector", "draw", "coord_map"}
    public = {n for n in dir(real_caffe) if not n.startswith("_") and n not in elsewhere}
    assert not public - set(dir(caffe)), sorted(public - set(dir(caffe)))
    assert caffe.has_nccl() is torch.distributed.is_available()
    caffe.set_multiprocess(True)
    assert distributed.multiprocess()
    caffe.set_multiprocess(False)
    timer = caffe.Timer()
    assert timer.ms == 0.0                                  # never started
    timer.start()
    x = torch.ones(200, 200)
    for _ in range(5):
        x = x @ x / 200
    timer.stop()
    assert timer.ms > 0
    caffe.init_log()
    caffe.log("pycaffe's log")
