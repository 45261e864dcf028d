"""Shared test fixtures. The authors' reference files in ../shared are optional: tests that use
them skip cleanly where they are absent."""
import os
import pathlib

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_REFERENCE = REPO.parent / "shared" / "reference"


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def shared_reference():
    if not SHARED_REFERENCE.is_dir():
        pytest.skip("../shared/reference is not present on this machine")
    return SHARED_REFERENCE


def pytest_configure(config):
    # Deterministic and bounded: the suite runs on 2 cores.
    os.environ.setdefault("OMP_NUM_THREADS", "2")
