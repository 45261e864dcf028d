"""The real single-node SLURM of the `slurm` test tier (tests/slurm/start_slurm.sh, tests/slurm/NOTES.md).

`cluster()` finds the running cluster (the state folder `bash tests/slurm/start_slurm.sh --check`
prints) and skips the test with a one-line reason when SLURM does not answer — unless
$REPRODUCE_REQUIRE_SLURM is set (CI), where it fails the test: a skipped tier in CI is a failure.
`wait(job)` bounds a submitit job's wait: without accounting (no slurmdbd) submitit never learns
that a job ended without a result, and `job.result()` would wait forever (NOTES.md).
"""
import collections
import functools
import os
import pathlib
import re
import subprocess
import time

import pytest

START_SCRIPT = pathlib.Path(__file__).resolve().parent / "slurm" / "start_slurm.sh"

Cluster = collections.namedtuple("Cluster", "state partition cpus jobcomp")


@functools.lru_cache(maxsize=1)
def _find():
    done = subprocess.run(["bash", str(START_SCRIPT), "--check"], capture_output=True, text=True)
    if done.returncode != 0 or not done.stdout.strip():
        return None
    state = pathlib.Path(done.stdout.strip().splitlines()[-1])
    conf = (state / "slurm.conf").read_text()
    return Cluster(state=state,
                   partition=re.search(r"^PartitionName=(\S+)", conf, re.M).group(1),
                   cpus=int(re.search(r"^NodeName=.*\bCPUs=(\d+)", conf, re.M).group(1)),
                   jobcomp=pathlib.Path(re.search(r"^JobCompLoc=(\S+)", conf, re.M).group(1)))


def cluster():
    """The running cluster's Cluster(state, partition, cpus, jobcomp), or skip (fail under
    $REPRODUCE_REQUIRE_SLURM)."""
    found = _find()
    if found is None:
        reason = "SLURM is not running: run `bash tests/slurm/start_slurm.sh` (the slurm tier)"
        if os.environ.get("REPRODUCE_REQUIRE_SLURM"):
            pytest.fail(reason)
        pytest.skip(reason)
    return found


def squeue_state(job_id):
    """SLURM's state of a job slurmctld still knows (up to MinJobAge after its end), else ''."""
    done = subprocess.run(["squeue", "-h", "-t", "all", "-j", str(job_id), "-o", "%T"],
                          capture_output=True, text=True)
    return done.stdout.strip()


def wait(job, timeout_s=120):
    """The job's result; a job without one after timeout_s is cancelled and fails the test."""
    deadline = time.monotonic() + timeout_s
    while not job.paths.result_pickle.exists():
        if time.monotonic() > deadline:
            state = squeue_state(job.job_id)
            job.cancel(check=False)
            pytest.fail(f"SLURM job {job.job_id} gave no result within {timeout_s} s (state {state!r}); "
                        f"stderr:\n{job.stderr()}")
        time.sleep(0.5)
    return job.result()
