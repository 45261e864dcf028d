"""The local executor (reproduce.pipeline.executors): --jobs N worker processes give the numbers of one job
after another, a failing job is named with its log while the others go on, a killed run resumes.
(The SLURM executor: tests/test_slurm_executor.py, the slurm tier.)"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from reproduce import demo
from reproduce.errors import UserError
from toy_jobs import toy_command

SMALL = ["--bits", "8", "12", "--seeds", "0", "--max-iter", "40", "--baselines", "lsh", "--methods", "cnnh"]


def metrics(out):
    """{run: metrics} of a results folder (the numbers, without paths)."""
    found = {}
    for name in sorted(os.listdir(out / "metrics")):
        doc = json.load(open(out / "metrics" / name / "metrics.json"))
        found[name] = (doc["metrics"], doc["identity"]["hex"])
    return found


def test_two_jobs_at_once_give_the_numbers_of_one_after_another(tmp_path, capsys):
    demo.main(SMALL + ["--out", str(tmp_path / "one"), "--work", str(tmp_path / "w1"), "--threads-per-job", "1"])
    demo.main(SMALL + ["--out", str(tmp_path / "two"), "--work", str(tmp_path / "w2"), "--jobs", "2", "--devices", "cpu"])
    assert metrics(tmp_path / "one") == metrics(tmp_path / "two")
    assert (tmp_path / "one" / "table1.md").read_text() == (tmp_path / "two" / "table1.md").read_text()
    capsys.readouterr()
    demo.main(SMALL + ["--out", str(tmp_path / "two"), "--work", str(tmp_path / "w2"), "--jobs", "2", "--plan"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1].endswith("done") and "pending" not in lines[-1]
    assert any("log: " in line and "train/dhn_8bits_seed0" in line for line in lines)   # where each log is
    log = tmp_path / "w2" / "jobs" / "train" / "dhn_8bits_seed0.log"
    assert "=== train/dhn_8bits_seed0: started" in log.read_text()


def test_a_failing_job_is_named_and_the_others_go_on(tmp_path):
    res = toy_command(tmp_path, "--jobs", "2", env={"TOY_FAIL": "b.json"})
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert "failed: value/b: " in res.stderr and "toy failure" in res.stderr
    assert f"log: {tmp_path / 'jobs' / 'value' / 'b.log'}" in res.stderr
    assert "2 done, 1 failed, 2 not run" in res.stdout          # value/a and the cache ran
    assert res.stderr.strip().splitlines()[-1].startswith("error: 1 job(s) failed (value/b)")
    assert (tmp_path / "a.json").exists() and not (tmp_path / "total.json").exists()
    assert "toy failure" in (tmp_path / "jobs" / "value" / "b.log").read_text()
    res = toy_command(tmp_path, "--jobs", "2")                 # fixed: the rest runs
    assert res.returncode == 0, res.stderr
    assert json.load(open(tmp_path / "summary.json"))["value"] == 4


def test_a_job_whose_worker_was_killed_is_named_with_its_own_log(tmp_path):
    # the line named the worker's log (jobs/.workers/worker-N.log) and an exit status -9, not the
    # job's log nor that it was killed
    res = toy_command(tmp_path, "--jobs", "2", env={"TOY_KILL": "b.json"})
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    line = next(line for line in res.stderr.splitlines() if line.startswith("failed: value/b: "))
    assert "was killed (signal 9, SIGKILL)" in line and f"log: {tmp_path / 'jobs' / 'value' / 'b.log'}" in line
    assert ".workers" not in line, line
    assert "2 done, 1 failed, 2 not run" in res.stdout
    res = toy_command(tmp_path, "--jobs", "2")                 # the re-run does what is left
    assert res.returncode == 0, res.stderr
    assert json.load(open(tmp_path / "summary.json"))["value"] == 4


def test_a_killed_grid_resumes_with_the_same_numbers(tmp_path):
    """SIGKILL in the middle of --jobs 2 (the command and its workers): the next run finishes what
    was not done, and the numbers are those of an uninterrupted run."""
    args = [sys.executable, "-m", "reproduce.demo"] + SMALL + ["--work", str(tmp_path / "w"), "--jobs", "2"]
    proc = subprocess.Popen(args + ["--out", str(tmp_path / "killed")], cwd=tmp_path, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not list((tmp_path / "w" / "train").glob("dhn-q*")) and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = subprocess.run(args + ["--out", str(tmp_path / "killed")], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    demo.main(SMALL + ["--out", str(tmp_path / "whole"), "--work", str(tmp_path / "w2"), "--threads-per-job", "1"])
    assert metrics(tmp_path / "killed") == metrics(tmp_path / "whole")
    leftovers = [p for p in (tmp_path / "w").rglob("*") if p.name.startswith((".tmp-", ".staging-"))]
    assert leftovers == []


def test_executor_options_that_cannot_work_are_refused(tmp_path):
    for argv, match in ((["--executor", "slurm", "--jobs", "2"], "--jobs is for the local executor"),
                        (["--no-wait"], "--no-wait is for --executor slurm"),
                        (["--jobs", "2", "--devices", "cuda:7"], r"cuda:7 is not visible here"),
                        (["--jobs", "2", "--devices", "tpu"], r"'tpu' is neither cpu nor cuda:N")):
        with pytest.raises(UserError, match=match):
            demo.main(SMALL + ["--out", str(tmp_path / "o"), "--work", str(tmp_path / "w")] + argv)
        assert not (tmp_path / "o").exists() and not (tmp_path / "w").exists()
