"""The `slurm` tier's foundation: submitit sends Python functions to the real SLURM that
tests/slurm/start_slurm.sh runs, and their results come back; without it every test here skips with
one line (CI starts it and requires it).

The functions sent are builtins (os.getenv, pow): a job unpickles its function by importing its
module, and this test module is not importable from a job's Python.
"""
import os

import pytest

from slurm_cluster import cluster, wait

pytestmark = pytest.mark.slurm


def executor(tmp_path):
    import submitit
    info = cluster()
    ex = submitit.AutoExecutor(folder=tmp_path / "%j")
    assert ex.cluster == "slurm"
    ex.update_parameters(timeout_min=5, slurm_partition=info.partition, cpus_per_task=1)
    return ex


def test_a_function_runs_as_a_slurm_job_and_returns(tmp_path):
    job = executor(tmp_path).submit(os.getenv, "SLURM_JOB_ID")
    assert wait(job) == job.job_id


def test_a_result_is_read_back_by_a_new_job_object(tmp_path):
    # What a process that did not submit the job does: only the folder and the job id are kept.
    import submitit
    job = executor(tmp_path).submit(pow, 6, 2)
    wait(job)
    assert submitit.SlurmJob(folder=tmp_path / "%j", job_id=job.job_id).result() == 36


def test_a_job_array_of_three_with_map_array(tmp_path):
    jobs = executor(tmp_path).map_array(pow, [2, 3, 4], [3, 3, 3])
    assert [wait(job) for job in jobs] == [8, 27, 64]
    array_ids = {job.job_id.split("_")[0] for job in jobs}
    assert len(array_ids) == 1 and [job.job_id.split("_")[1] for job in jobs] == ["0", "1", "2"]


def test_a_job_array_of_three_with_batch(tmp_path):
    ex = executor(tmp_path)
    with ex.batch():
        jobs = [ex.submit(os.getenv, "SLURM_ARRAY_TASK_ID") for _ in range(3)]
    assert [wait(job) for job in jobs] == ["0", "1", "2"]
