"""Shared test fixtures. The authors' reference files in ../shared are optional: tests that use
them skip cleanly where they are absent."""
import faulthandler
import os
import pathlib
import sys

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


@pytest.fixture(scope="session")
def random_caffenet(tmp_path_factory):
    """A converted-ImageNet-style checkpoint (no hash layer) of a randomly initialised CaffeNet."""
    import torch
    from reproduce.model.checkpoint import save_checkpoint
    from reproduce.model.nets import DHNNet
    path = str(tmp_path_factory.mktemp("weights") / "caffenet.pth")
    torch.manual_seed(0)
    save_checkpoint(path, DHNNet("caffenet", bits=0).state_dict(), "caffenet", 0, meta={"kind": "test"})
    return path


def pytest_configure(config):
    # Deterministic and bounded: the suite runs on 2 cores.
    os.environ.setdefault("OMP_NUM_THREADS", "2")


# A test that hangs inside compiled code (HDF5 looping on a corrupt file, as a fuzzed code file
# once did) cannot be interrupted by a Python signal handler: after this long the run prints every
# thread's stack and exits, so that CI fails with the place instead of running out of its time.
TEST_HANG_S = 900


@pytest.fixture(autouse=True)
def _exit_on_hang():
    faulthandler.dump_traceback_later(TEST_HANG_S, exit=True, file=sys.stderr)
    yield
    faulthandler.cancel_dump_traceback_later()
