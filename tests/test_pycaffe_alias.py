"""`deepmammo pycaffe`: pycaffe scripts run as they are, `import caffe` answered by
deepmammo.caffe (deepmammo/caffe/alias.py, deepmammo/caffe/pycaffe_cli.py)."""
import pytest
from helpers import error_line, run_cli

pytestmark = pytest.mark.subprocess

CHECKS = '''
import importlib
import os
import sys

import caffe
import caffe.proto.caffe_pb2
import caffe.io, caffe.draw, caffe.net_spec, caffe.coord_map, caffe.pycaffe, caffe.layers
from caffe import layers as L, params as P, to_proto, NetSpec, Layer
from caffe.proto import caffe_pb2
from caffe.pycaffe import Net
from caffe._caffe import layer_type_list
import deepmammo.caffe as dm

assert caffe is dm
for name in ("proto", "proto.caffe_pb2", "io", "draw", "net_spec", "coord_map", "pycaffe",
             "layers"):
    alias, real = sys.modules["caffe." + name], sys.modules["deepmammo.caffe." + name]
    assert alias is real, name
    assert real.__spec__.name == "deepmammo.caffe." + name, (name, real.__spec__.name)
assert caffe.io is dm.io and caffe_pb2 is dm.proto.caffe_pb2
assert caffe_pb2.NetParameter is dm.proto.caffe_pb2.NetParameter
assert Net is dm.Net and Layer is dm.Layer and "Python" in layer_type_list()
assert caffe.layers is L and L.ReLU(L.Input()).fn.type_name == "ReLU"
assert P.Pooling.MAX == 0 and to_proto is dm.net_spec.to_proto and NetSpec is dm.NetSpec
assert importlib.import_module("caffe") is dm
try:
    import caffe.no_such_module
except ModuleNotFoundError as exc:
    assert exc.name == "caffe.no_such_module", exc.name
else:
    raise AssertionError("caffe.no_such_module imported")
assert __name__ == "__main__"
assert sys.argv == [sys.argv[0], "--flag", "value"] and sys.argv[0].endswith("checks.py")
assert sys.path[0] == os.path.dirname(os.path.abspath(__file__))
print("checked")
sys.exit(3)
'''


def _pycaffe(args, cwd):
    return run_cli("pycaffe", *args, cwd=cwd)


def test_script_sees_deepmammo_as_caffe(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "checks.py").write_text(CHECKS)
    proc = _pycaffe(["sub/checks.py", "--flag", "value"], tmp_path)
    assert proc.stdout.strip() == "checked", proc.stderr[-3000:]
    assert proc.returncode == 3                        # the script's sys.exit status


def test_script_errors_print_their_traceback(tmp_path):
    (tmp_path / "fails.py").write_text("import caffe\n\n\ndef f():\n    raise KeyError('k')\n\n\nf()\n")
    proc = _pycaffe(["fails.py"], tmp_path)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert 'fails.py", line 8, in <module>' in lines[1]   # the script's frames, not ours
    assert lines[-1] == "KeyError: 'k'"


def test_missing_script_or_module_is_one_line(tmp_path):
    proc = _pycaffe(["absent.py"], tmp_path)
    error_line("pycaffe", proc.returncode, proc.stderr, "absent.py: no such script")
    proc = _pycaffe(["-m", "no_such_module_here"], tmp_path)
    error_line("pycaffe", proc.returncode, proc.stderr, "No module named 'no_such_module_here'")
