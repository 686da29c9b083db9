"""pycaffe's own test suite (python/caffe/test of Caffe's source) against deepmammo.caffe.

The suite's folder is copied, and Caffe's models/ and examples/ linked, into a tree laid out as
Caffe's (test_draw draws every net prototxt under ../../../models and ../../../examples). The
suite then runs twice in subprocesses: under real pycaffe (the `make caffe` build, on
PYTHONPATH) and under `deepmammo pycaffe`, where `import caffe` is deepmammo.caffe. Every test
that passes on real pycaffe must pass on ours; real pycaffe must pass all of PYCAFFE_TESTS.
"""
import json
import os
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Every test of the suite; real pycaffe (CPU build, Graphviz's dot installed) passes them all.
PYCAFFE_TESTS = sorted(
    [f"test_coord_map.TestCoordMap.{t}" for t in (
        "test_catch_negative_crop", "test_catch_scale_mismatch", "test_catch_unconnected",
        "test_conv_pool_deconv", "test_crop_helper", "test_crop_of_crop", "test_multi_conv",
        "test_nd_conv", "test_padding", "test_pass", "test_rect")]
    + ["test_draw.TestDraw.test_draw_net"]
    + [f"test_io.TestBlobProtoToArray.{t}" for t in (
        "test_new_format", "test_no_shape", "test_old_format", "test_scalar")]
    + ["test_io.TestArrayToDatum.test_label_none_size",
       "test_layer_type_list.TestLayerTypeList.test_standard_types",
       "test_nccl.TestNCCL.test_newuid"]
    + [f"test_net.TestNet.{t}" for t in (
        "test_backward_start_end", "test_clear_param_diffs", "test_forward_backward",
        "test_forward_start_end", "test_inputs_outputs", "test_layer_dict", "test_memory",
        "test_save_and_read", "test_save_hdf5", "test_top_bottom_names")]
    + [f"test_net.TestLevels.{t}" for t in ("test_0", "test_1")]
    + [f"test_net.TestStages.{t}" for t in ("test_A", "test_B", "test_AandB")]
    + [f"test_net.TestAllInOne.{t}" for t in ("test_train", "test_val", "test_deploy")]
    + [f"test_net_spec.TestNetSpec.{t}" for t in (
        "test_lenet", "test_zero_tops", "test_type_error")]
    + [f"test_python_layer.TestPythonLayer.{t}" for t in (
        "test_forward", "test_backward", "test_reshape", "test_exception", "test_parameter",
        "test_phase")]
    + [f"test_python_layer_with_param_str.TestLayerWithParam.{t}" for t in (
        "test_forward", "test_backward")]
    + [f"test_solver.TestSolver.{t}" for t in (
        "test_solve", "test_apply_update", "test_net_memory", "test_snapshot")])

# Runs the suite with unittest's discovery and writes {test id: [status, traceback]}.
RUNNER = '''
import json
import sys
import unittest


def flatten(suite):
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            yield from flatten(item)
        else:
            yield item


start, out = sys.argv[1], sys.argv[2]
suite = unittest.defaultTestLoader.discover(start, pattern="test_*.py")
status = {t.id(): ["ok", ""] for t in flatten(suite)}
result = unittest.TextTestRunner(stream=sys.stderr, verbosity=2).run(suite)
for kind, items in (("ERROR", result.errors), ("FAIL", result.failures),
                    ("skipped", result.skipped), ("unexpected success",
                                                  [(t, "") for t in result.unexpectedSuccesses])):
    for test, detail in items:
        status[test.id()] = [kind, detail]
with open(out, "w") as f:
    json.dump(status, f, indent=1, sort_keys=True)
'''


@pytest.fixture(scope="module")
def caffe_tree(tmp_path_factory, caffe_build):
    build = caffe_build
    src = os.path.join(build, "src")
    tree = tmp_path_factory.mktemp("caffe_tree")
    shutil.copytree(os.path.join(src, "python", "caffe", "test"),
                    tree / "python" / "caffe" / "test")
    for name in ("models", "examples"):       # read only: the prototxt files test_draw draws
        os.symlink(os.path.join(src, name), tree / name)
    (tree / "run_suite.py").write_text(RUNNER)
    return tree, build


def _run_suite(tree, name, command, pythonpath):
    work = tree / name              # the suite writes snapshots into its current directory
    work.mkdir()
    out = work / "results.json"
    env = dict(os.environ, PYTHONPATH=pythonpath, GLOG_minloglevel="2")
    proc = subprocess.run(command + [str(tree / "run_suite.py"),
                                     str(tree / "python" / "caffe" / "test"), str(out)],
                          cwd=work, env=env, capture_output=True, text=True, timeout=900)
    assert out.exists(), f"{name}: the suite did not run ({proc.returncode}):\n" \
                         f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def real_results(caffe_tree):
    tree, build = caffe_tree
    return _run_suite(tree, "real", [sys.executable], os.path.join(build, "src", "python"))


@pytest.fixture(scope="module")
def our_results(caffe_tree):
    tree, _ = caffe_tree
    return _run_suite(tree, "ours", [sys.executable, "-m", "deepmammo", "pycaffe"], ROOT)


def _passed(results):
    return sorted(t for t, (status, _) in results.items() if status == "ok")


def _describe(results, tests):
    lines = []
    for test in tests:
        status, detail = results.get(test, ["missing", ""])
        tail = [line for line in detail.strip().splitlines() if line.strip()][-3:]
        lines.append(f"{test}: {status}" + "".join(f"\n    {line}" for line in tail))
    return "\n".join(lines)


def test_real_pycaffe_passes_the_suite(real_results):
    failed = [t for t in PYCAFFE_TESTS if real_results.get(t, ["missing"])[0] != "ok"]
    assert not failed, "real pycaffe fails:\n" + _describe(real_results, failed)
    assert _passed(real_results) == PYCAFFE_TESTS


def test_engine_passes_what_real_pycaffe_passes(real_results, our_results):
    failed = [t for t in _passed(real_results) if our_results.get(t, ["missing"])[0] != "ok"]
    assert not failed, f"{len(failed)} of {len(_passed(real_results))} pycaffe tests fail on " \
                       f"deepmammo.caffe:\n" + _describe(our_results, failed)


def test_unittest_module_mode(caffe_tree):
    """`deepmammo pycaffe -m unittest discover ...`, the command-line way to run the suite."""
    tree, _ = caffe_tree
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run(
        [sys.executable, "-m", "deepmammo", "pycaffe", "-m", "unittest", "discover", "-v", "-s",
         str(tree / "python" / "caffe" / "test"), "-p", "test_coord_map.py"],
        cwd=tree, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Ran 11 tests" in proc.stderr and "OK" in proc.stderr
    assert "test_crop_helper (test_coord_map.TestCoordMap" in proc.stderr     # -v reached it
