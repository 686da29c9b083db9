"""Layer type `Python` (deepmammo/caffe/layers/python_layer.py) against real Caffe's.

One pycaffe script runs the same net of Python layers (Caffe's own examples/pycaffe pyloss.py
among them) twice, under real pycaffe and under `deepmammo pycaffe`, and saves every blob's data
and diff, every parameter and the losses: forward, backward, propagate_down, loss_weight, a
layer's own parameter blob (saved, updated by the solver), reshape before each forward, phase
and param_str must agree. Then the module search (current directory, the prototxt's folder)
and its one-line error, in process.
"""
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import deepmammo.caffe as caffe
from deepmammo.caffe.netstate import NetError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

LAYERS = '''
import caffe
import numpy as np


class Scale(caffe.Layer):
    """top = k * bottom, k from param_str."""

    def setup(self, bottom, top):
        self.k = float(self.param_str)

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = self.k * bottom[0].data

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = self.k * top[0].diff


class ChannelMul(caffe.Layer):
    """top = bottom * w[channel], w a parameter blob of the layer."""

    def setup(self, bottom, top):
        self.blobs.add_blob(bottom[0].channels)
        self.blobs[0].data[...] = 0.5 * np.arange(1, bottom[0].channels + 1)

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data * self.blobs[0].data[None, :, None, None]

    def backward(self, top, propagate_down, bottom):
        self.blobs[0].diff[...] += (top[0].diff * bottom[0].data).sum(axis=(0, 2, 3))
        if propagate_down[0]:
            bottom[0].diff[...] = top[0].diff * self.blobs[0].data[None, :, None, None]


class PhaseOut(caffe.Layer):
    """top = phase + mean(bottom): its top feeds no loss."""

    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        top[0].reshape(1)

    def forward(self, bottom, top):
        top[0].data[...] = self.phase + bottom[0].data.mean()

    def backward(self, top, propagate_down, bottom):
        pass                # leaves the bottom diff as it is, as Caffe does then
'''

NET = '''
name: "pynet"
layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 dim: 4 dim: 4 } } }
layer { name: "t" type: "Input" top: "t" input_param { shape { dim: 2 dim: 5 } } }
layer { name: "scale" type: "Python" bottom: "x" top: "s"
        python_param { module: "mylayers" layer: "Scale" param_str: "1.5" } }
layer { name: "cmul" type: "Python" bottom: "s" top: "p"
        python_param { module: "mylayers" layer: "ChannelMul" } param { lr_mult: 2 } }
layer { name: "ip" type: "InnerProduct" bottom: "p" top: "ip"
        inner_product_param { num_output: 5 } }
layer { name: "relu" type: "ReLU" bottom: "ip" top: "ip" }
layer { name: "phase" type: "Python" bottom: "p" top: "ph"
        python_param { module: "mylayers" layer: "PhaseOut" } }
layer { name: "loss" type: "Python" bottom: "ip" bottom: "t" top: "loss"
        python_param { module: "pyloss" layer: "EuclideanLossLayer" } loss_weight: 2 }
'''

SOLVER = '''
net: "net.prototxt"
base_lr: 0.05 momentum: 0.9 weight_decay: 0.001 lr_policy: "fixed"
max_iter: 10 display: 0 snapshot_after_train: false
'''

SCRIPT = '''
import sys
import numpy as np
import caffe

caffe.set_mode_cpu()
given = np.load("given.npz")
out = {}


def record(tag, net):
    for name, blob in net.blobs.items():
        out[f"{tag}/data/{name}"] = blob.data.copy()
        out[f"{tag}/diff/{name}"] = blob.diff.copy()
    for name, blobs in net.params.items():
        for k, blob in enumerate(blobs):
            out[f"{tag}/param/{name}/{k}"] = blob.data.copy()
            out[f"{tag}/pdiff/{name}/{k}"] = blob.diff.copy()


def setup(net, n):
    net.blobs["x"].reshape(n, 3, 4, 4)
    net.blobs["t"].reshape(n, 5)
    net.blobs["x"].data[...] = given["x"][:n]
    net.blobs["t"].data[...] = given["t"][:n]
    net.params["ip"][0].data[...] = given["w"]
    net.params["ip"][1].data[...] = given["b"]


net = caffe.Net("net.prototxt", caffe.TRAIN)
setup(net, 2)
out["loss1"] = np.array(net.forward()["loss"])
net.backward()
record("first", net)
net.forward()
net.backward()              # the layer adds to its parameter diff, as Caffe layers do
record("second", net)
setup(net, 3)               # batch 3: every layer reshapes before its forward
out["loss3"] = np.array(net.forward()["loss"])
net.backward()
record("batch3", net)
out["layer_blob"] = net.layers[list(net._layer_names).index("cmul")].blobs[0].data.copy()

with open("net.prototxt") as f:
    text = f.read()
with open("force.prototxt", "w") as f:
    f.write("force_backward: true\\n" + text)
force = caffe.Net("force.prototxt", caffe.TRAIN)
setup(force, 2)
force.forward()
force.backward()
record("force", force)

test = caffe.Net("net.prototxt", caffe.TEST)
setup(test, 2)
test.forward()
record("test", test)

solver = caffe.SGDSolver("solver.prototxt")
setup(solver.net, 2)
solver.step(3)
record("solver", solver.net)
np.savez(sys.argv[1], **out)
'''


@pytest.fixture(scope="module")
def build(caffe_build):
    return caffe_build


def _workdir(path, build):
    path.mkdir()
    (path / "mylayers.py").write_text(LAYERS)
    shutil.copy(os.path.join(build, "src", "examples", "pycaffe", "layers", "pyloss.py"), path)
    (path / "net.prototxt").write_text(NET)
    (path / "solver.prototxt").write_text(SOLVER)
    (path / "run.py").write_text(SCRIPT)
    rs = np.random.RandomState(7)
    np.savez(path / "given.npz", x=rs.randn(3, 3, 4, 4).astype(np.float32),
             t=rs.randn(3, 5).astype(np.float32), w=(0.2 * rs.randn(5, 48)).astype(np.float32),
             b=(0.1 * rs.randn(5)).astype(np.float32))
    return path


def _run(cmd, cwd, env):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


@pytest.mark.subprocess
def test_python_layers_match_caffe(tmp_path, build):
    real_dir = _workdir(tmp_path / "real", build)
    ours_dir = _workdir(tmp_path / "ours", build)
    env = dict(os.environ, GLOG_minloglevel="2")
    env["PYTHONPATH"] = os.path.join(build, "src", "python")
    _run([sys.executable, "run.py", "out.npz"], real_dir, env)
    env["PYTHONPATH"] = ROOT
    _run([sys.executable, "-m", "deepmammo", "pycaffe", "run.py", "out.npz"], ours_dir, env)
    real = np.load(real_dir / "out.npz")
    ours = np.load(ours_dir / "out.npz")
    assert sorted(real.files) == sorted(ours.files)
    bad = []
    for key in real.files:
        a, b = ours[key], real[key]
        if a.shape != b.shape:
            bad.append(f"{key}: shape ours {a.shape} real {b.shape}")
        elif not np.allclose(a, b, rtol=1e-5, atol=1e-6):
            bad.append(f"{key}: max |diff| {np.abs(a - b).max():.3g}")
    assert not bad, "\n".join(bad)
    # The net did what the layers say (so the agreement above is not two empty runs).
    assert real["loss1"] > 0
    assert np.abs(real["first/pdiff/cmul/0"]).max() > 0
    assert not np.abs(real["first/diff/s"]).any()           # propagate_down false: s, t
    assert not np.abs(real["first/diff/t"]).any()
    assert np.abs(real["force/diff/x"]).max() > 0           # force_backward: down to x, t
    assert np.abs(real["force/diff/t"]).max() > 0
    assert float(real["test/data/ph"][0]) != float(real["first/data/ph"][0])   # phase 1 vs 0
    assert not np.array_equal(real["solver/param/cmul/0"], real["first/param/cmul/0"])


def _module_files(tmp_path, name="farlayer"):
    text = textwrap.dedent('''
        import deepmammo.caffe as caffe


        class Double(caffe.Layer):
            def setup(self, bottom, top):
                self.seen_phase = self.phase

            def reshape(self, bottom, top):
                top[0].reshape(*bottom[0].data.shape)

            def forward(self, bottom, top):
                top[0].data[...] = 2 * bottom[0].data

            def backward(self, top, propagate_down, bottom):
                bottom[0].diff[...] = 2 * top[0].diff
        ''')
    folder = tmp_path / "nets"
    folder.mkdir()
    (folder / f"{name}.py").write_text(text)
    net = folder / "net.prototxt"
    net.write_text('force_backward: true\n'
                   'layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 } } }\n'
                   'layer { name: "dbl" type: "Python" bottom: "x" top: "y" python_param { '
                   f'module: "{name}" layer: "Double" }} }}\n')
    return folder, net


def test_module_beside_the_prototxt(tmp_path, monkeypatch):
    folder, net_path = _module_files(tmp_path, "pyapi_beside_prototxt")
    monkeypatch.chdir(tmp_path)          # neither the current directory nor sys.path has it
    monkeypatch.setattr(sys, "path", list(sys.path))
    net = caffe.Net(str(net_path), caffe.TEST)
    net.blobs["x"].data[...] = [1.5, -2]
    assert net.forward()["y"].tolist() == [3, -4]
    assert net.layers[1].seen_phase == caffe.TEST        # the user layer's own attributes
    assert str(folder) in sys.path
    sys.modules.pop("pyapi_beside_prototxt", None)


def test_module_in_the_current_directory(tmp_path, monkeypatch):
    folder, _ = _module_files(tmp_path, "pyapi_in_cwd")
    param = caffe.proto.caffe_pb2.NetParameter()
    from google.protobuf import text_format
    text_format.Merge((folder / "net.prototxt").read_text(), param)
    monkeypatch.chdir(folder)
    monkeypatch.setattr(sys, "path", list(sys.path))
    net = caffe.Net(param, caffe.TRAIN)                  # no file: the current directory
    net.blobs["x"].data[...] = 1
    net.forward()
    net.blobs["y"].diff[...] = [1, 3]
    assert net.backward()["x"].tolist() == [2, 6]
    sys.modules.pop("pyapi_in_cwd", None)


def test_missing_module_names_prototxt_layer_and_paths(tmp_path, monkeypatch):
    path = tmp_path / "missing.prototxt"
    path.write_text('layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 } } }\n'
                    'layer { name: "mine" type: "Python" bottom: "x" top: "y" '
                    'python_param { module: "pyapi_no_such_module" layer: "L" } }\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    with pytest.raises(NetError) as info:
        caffe.Net(str(path), caffe.TEST)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message and "'mine'" in message and "pyapi_no_such_module" in message
    assert str(tmp_path) in message                      # searched: the prototxt's folder
    assert sys.path[-1] != str(tmp_path)                 # ... and left sys.path as it was


def test_missing_class_and_failing_import_are_reported(tmp_path, monkeypatch):
    (tmp_path / "pyapi_broken.py").write_text("import pyapi_not_installed_anywhere\n")
    (tmp_path / "pyapi_empty.py").write_text("X = 1\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [str(tmp_path)] + sys.path)
    body = 'layer {{ name: "x" type: "Input" top: "x" input_param {{ shape {{ dim: 2 }} }} }}\n' \
           'layer {{ name: "mine" type: "Python" bottom: "x" top: "y" ' \
           'python_param {{ module: "{}" layer: "L" }} }}\n'
    (tmp_path / "a.prototxt").write_text(body.format("pyapi_empty"))
    with pytest.raises(NetError, match="has no layer class 'L'"):
        caffe.Net(str(tmp_path / "a.prototxt"), caffe.TEST)
    (tmp_path / "b.prototxt").write_text(body.format("pyapi_broken"))
    with pytest.raises(ModuleNotFoundError, match="pyapi_not_installed_anywhere"):
        caffe.Net(str(tmp_path / "b.prototxt"), caffe.TEST)   # the module's own import error
    for name in ("pyapi_empty", "pyapi_broken"):
        sys.modules.pop(name, None)


@pytest.mark.subprocess
def test_pycaffe_module_under_plain_deepmammo(tmp_path, build):
    """A layer module that says `import caffe` works in a plain `import deepmammo.caffe`
    process (the alias is installed for it); with real pycaffe imported first, the error says
    which caffe the module got."""
    (tmp_path / "mylayers.py").write_text(LAYERS)
    (tmp_path / "net.prototxt").write_text(
        'layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 dim: 2 } } }\n'
        'layer { name: "s" type: "Python" bottom: "x" top: "y" '
        'python_param { module: "mylayers" layer: "Scale" param_str: "3" } }\n')
    script = ("import deepmammo.caffe as dm\n"
              "net = dm.Net('net.prototxt', dm.TEST)\n"
              "net.blobs['x'].data[...] = [1, 2]\n"
              "print(net.forward()['y'].tolist())\n")
    env = dict(os.environ, PYTHONPATH=ROOT, GLOG_minloglevel="2")
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "[[3.0, 6.0]]"
    env["PYTHONPATH"] = os.pathsep.join([ROOT, os.path.join(build, "src", "python")])
    proc = subprocess.run([sys.executable, "-c", "import caffe\n" + script], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert "mylayers.Scale is not a caffe.Layer" in last and "deepmammo pycaffe" in last, last
