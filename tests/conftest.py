"""Shared fixtures and the test tiers.

Tests that need real BVLC Caffe use `real_caffe` (pycaffe, imported) or `caffe_build` (the
build's folder: its tools and source tree): both come from `make caffe` (which `make test` runs
first) and fail, never skip, when it is missing.

Three markers set the slow or set-up-dependent tests apart; `make test-fast` runs the tests
that carry none of them, `make test` runs them all:

- caffe: needs real Caffe (`make caffe`). Every test that uses `real_caffe` or `caffe_build`
  (itself or through its fixtures) is marked here. `make test-fast` hides the build, so a test
  that reaches it another way fails there instead of passing only where Caffe is built.
- subprocess: starts another process itself: the `deepmammo` command, make, a script, Caffe's
  tools, Graphviz's dot, workers of its own (modules of such tests set `pytestmark`; mixed
  modules mark each test or parameter). The worker pools and the `git` calls of the code
  under test do not count: they need nothing a fresh checkout lacks.
- browser: needs headless Chromium (`make browser`).
"""
import os

import numpy as np
import pytest

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")

MARKERS = {
    "caffe": "needs real BVLC Caffe, built by `make caffe`",
    "subprocess": "starts another process: the deepmammo command, make, a script, a tool",
    "browser": "needs headless Chromium (`make browser`)",
}


def pytest_configure(config):
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")


CAFFE_FIXTURES = {"real_caffe", "caffe_build"}


def pytest_collection_modifyitems(items):
    for item in items:
        if CAFFE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.caffe)


@pytest.fixture(scope="session")
def caffe_build():
    from deepmammo.caffe.real import CaffeNotBuilt, find_build
    try:
        return find_build()
    except CaffeNotBuilt as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def real_caffe():
    from deepmammo.caffe.real import CaffeNotBuilt, import_caffe
    try:
        return import_caffe()
    except CaffeNotBuilt as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """(cases.csv, DATASETS folder) of worlds.build_tiny_data: a tiny synthetic archive taken
    through synth, ingest, crops, split and lmdb by the CLI, once for the session. Tests read
    it; one that would change it builds its own."""
    from worlds import build_tiny_data
    return build_tiny_data(str(tmp_path_factory.mktemp("tiny_data")))


@pytest.fixture
def rng():
    return np.random.RandomState(1234)


@pytest.fixture
def fixtures_dir():
    return FIXTURES
