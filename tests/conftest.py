"""Shared fixtures. Tests that need real BVLC Caffe use `real_caffe`: it imports the build made
by `make caffe` (which `make test` runs first) and fails, never skips, when it is missing."""
import os

import numpy as np
import pytest

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


@pytest.fixture(scope="session")
def real_caffe():
    from deepmammo.caffe.real import CaffeNotBuilt, import_caffe
    try:
        return import_caffe()
    except CaffeNotBuilt as exc:
        pytest.fail(str(exc))


@pytest.fixture
def rng():
    return np.random.RandomState(1234)


@pytest.fixture
def fixtures_dir():
    return FIXTURES
