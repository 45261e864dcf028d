"""Client of the real-Caffe oracle (tests/caffe/oracle.py) for the `caffe` test tier.

pycaffe runs under the Debian python3 it was built for; the tests run in the package's venv and
exchange .npz files with it through a subprocess. `oracle()` finds the built oracle (the folder
`bash tests/caffe/build_caffe.sh` prints, or $REPRODUCE_CAFFE) and skips the test with a one-line
reason when it is not built — unless $REPRODUCE_REQUIRE_CAFFE is set (CI), where a missing oracle
fails the test: a skipped tier in CI is a failure.
"""
import functools
import json
import os
import pathlib
import subprocess

import numpy as np
import pytest

HERE = pathlib.Path(__file__).resolve().parent / "caffe"
BUILD_SCRIPT = HERE / "build_caffe.sh"
SYSTEM_PYTHON = "/usr/bin/python3"


@functools.lru_cache(maxsize=1)
def _find():
    folder = os.environ.get("REPRODUCE_CAFFE")
    if not folder:
        done = subprocess.run(["bash", str(BUILD_SCRIPT), "--check"], capture_output=True, text=True)
        folder = done.stdout.strip().splitlines()[-1] if done.returncode == 0 and done.stdout.strip() else None
    if folder and (pathlib.Path(folder) / "BUILD_OK").is_file():
        return pathlib.Path(folder)
    return None


def oracle():
    """The built oracle's folder, or skip (fail under $REPRODUCE_REQUIRE_CAFFE)."""
    folder = _find()
    if folder is None:
        reason = "real Caffe is not built: run `bash tests/caffe/build_caffe.sh` (the caffe tier)"
        if os.environ.get("REPRODUCE_REQUIRE_CAFFE"):
            pytest.fail(reason)
        pytest.skip(reason)
    return folder


def run(task, tmp_path, params, **arrays):
    """Run oracle task `task` with JSON-able `params` and numpy `arrays`; returns its output arrays."""
    folder = oracle()
    tmp_path = pathlib.Path(tmp_path)
    tmp_path.mkdir(parents=True, exist_ok=True)
    in_path, out_path = tmp_path / f"{task}_in.npz", tmp_path / f"{task}_out.npz"
    np.savez(in_path, params=np.array(json.dumps(params)), **arrays)
    env = dict(os.environ, LD_LIBRARY_PATH=str(folder / "lib"), PYTHONPATH=str(folder / "python"),
               OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"), GLOG_minloglevel="2")
    done = subprocess.run([SYSTEM_PYTHON, str(HERE / "oracle.py"), task, str(in_path), str(out_path)],
                          env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise AssertionError(f"Caffe oracle task {task} failed (exit {done.returncode}):\n"
                             f"{done.stderr[-4000:]}")
    with np.load(out_path) as f:
        return {k: f[k] for k in f.files}
