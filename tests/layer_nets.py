"""The small nets the layer cross-checks build: Input layers, a head with force_backward, and
the check that both engines agree to TOL (see deepmammo/caffe/crosscheck.py)."""
from deepmammo.caffe.crosscheck import crosscheck

TOL = 2e-5


def input_layer(name, shape):
    dims = " ".join(f"dim: {d}" for d in shape)
    return f'layer {{ name: "{name}" type: "Input" top: "{name}" input_param {{ shape {{ {dims} }} }} }}\n'


def layer_net(body, shape, force_backward=True, extra_inputs=""):
    """A net of an Input `data` of `shape`, more inputs, then `body`."""
    head = f'name: "t"\nforce_backward: {"true" if force_backward else "false"}\n'
    return head + input_layer("data", shape) + extra_inputs + body


def check(real, text, phase=1, tol=TOL, **kw):
    report = crosscheck(real, text, phase, **kw)
    assert report.worst() < tol, report
    return report
