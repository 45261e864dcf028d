"""The SLURM executor against a real SLURM (the `slurm` tier; tests/slurm/start_slurm.sh): a smoke
grid gives the metrics of the local executors, a grid submitted with --no-wait and cancelled in
flight is completed by running the command again, a failing job is reported."""
import json
import os
import subprocess
import sys
import time

import pytest

import fake_datasets
from slurm_cluster import cluster, squeue_state
from toy_jobs import toy_command

pytestmark = pytest.mark.slurm
SLURM = ["--executor", "slurm", "--slurm-cpus-per-job", "1", "--slurm-mem-gb", "2", "--slurm-time-min", "30"]


@pytest.fixture(scope="module")
def grid(tmp_path_factory, random_caffenet):
    """`reproduce.custom --smoke` arguments of a two-bit-length grid on a stand-in dataset."""
    d = tmp_path_factory.mktemp("slurm_grid")
    argv = fake_datasets.make_toy_list_dataset(d, random_caffenet) + [
        "--bits", "8", "12", "--variants", "dhn", "--baselines", "lsh", "--methods", "--workers", "0",
        "--device", "cpu", "--smoke"]
    return d, argv


def command(d, argv, name, *extra, timeout=1200):
    return subprocess.run([sys.executable, "-m", "reproduce.custom", *argv, "--out", str(d / f"res-{name}"),
                           "--work", str(d / f"work-{name}"), *extra], capture_output=True, text=True,
                          cwd=d, timeout=timeout)


def metrics(out):
    return {name: (doc["metrics"], doc["identity"]["hex"]) for name in sorted(os.listdir(out / "metrics"))
            for doc in [json.load(open(out / "metrics" / name / "metrics.json"))]}


def slurm_ids(work):
    """The SLURM job ids the command recorded for its jobs (status files of submitted jobs)."""
    ids = []
    for root, _, names in os.walk(work / "jobs"):
        for n in names:
            if n.endswith(".json") and not n.endswith(".spec.json"):
                doc = json.load(open(os.path.join(root, n)))
                if doc.get("slurm_job"):
                    ids.append(str(doc["slurm_job"]))
    return ids


def test_the_same_metrics_with_every_executor(grid):
    c = cluster()
    d, argv = grid
    for name, extra in (("one", ["--threads-per-job", "1"]), ("two", ["--jobs", "2"]), ("slurm", SLURM)):
        res = command(d, argv, name, *extra)
        assert res.returncode == 0, res.stderr[-3000:]
    one = metrics(d / "res-one")
    assert len(one) == 4 and one == metrics(d / "res-two") == metrics(d / "res-slurm")
    res = command(d, argv, "slurm", "--plan", *SLURM)
    last = res.stdout.strip().splitlines()[-1].split()
    assert res.returncode == 0 and last[1:] == ["jobs:", last[0], "done"] and int(last[0]) > 10
    # SLURM ran them: its completion log names the jobs
    assert " Name=train/dhn_12bits_seed0 " in c.jobcomp.read_text()


def test_a_cancelled_no_wait_grid_is_completed_by_running_the_command_again(grid):
    cluster()
    d, argv = grid
    res = command(d, argv, "cancelled", "--no-wait", *SLURM)
    assert res.returncode == 0 and "job(s) submitted" in res.stdout, res.stderr[-2000:]
    work = d / "work-cancelled"
    ids = slurm_ids(work)
    deadline = time.time() + 300
    while not any(squeue_state(i) == "RUNNING" for i in ids) and time.time() < deadline:
        time.sleep(1)
    time.sleep(3)                                  # well inside the first jobs
    subprocess.run(["scancel", *ids], check=True)
    res = command(d, argv, "cancelled", *SLURM)    # waits for cancellations to end, resubmits the rest
    assert res.returncode == 0, res.stderr[-3000:]
    if not (d / "res-one").exists():
        assert command(d, argv, "one", "--threads-per-job", "1").returncode == 0
    assert metrics(d / "res-cancelled") == metrics(d / "res-one")


def test_a_second_command_waits_for_queued_jobs_instead_of_submitting_them_again(grid):
    cluster()
    d, argv = grid
    res = command(d, argv, "attach", "--no-wait", *SLURM)
    assert res.returncode == 0, res.stderr[-2000:]
    res = command(d, argv, "attach", *SLURM)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "SLURM: 0 job(s) submitted" in res.stdout, res.stdout[-2000:]
    if not (d / "res-one").exists():
        assert command(d, argv, "one", "--threads-per-job", "1").returncode == 0
    assert metrics(d / "res-attach") == metrics(d / "res-one")


def test_queued_jobs_of_other_settings_are_not_overwritten(grid):
    cluster()
    d, argv = grid
    res = command(d, argv, "other", "--no-wait", *SLURM)
    assert res.returncode == 0, res.stderr[-2000:]
    try:
        res = command(d, argv + ["--max-iter", "4"], "other", "--rerun-stale", *SLURM)
        assert res.returncode == 2 and "of an earlier command with other settings is still queued or running" \
            in res.stderr, res.stderr[-2000:]
    finally:
        subprocess.run(["scancel", *slurm_ids(d / "work-other")])


def test_a_failing_slurm_job_is_named_with_its_log(tmp_path):
    cluster()
    res = toy_command(tmp_path, *SLURM, env={"TOY_FAIL": "b.json"}, timeout=600)
    assert res.returncode == 1 and "Traceback" not in res.stderr.split("error:")[-1], res.stderr[-3000:]
    assert "failed: value/b: " in res.stderr and "toy failure" in res.stderr
    assert "2 done, 1 failed, 2 not run" in res.stdout
    assert (tmp_path / "a.json").exists() and not (tmp_path / "total.json").exists()
