"""The SLURM executor (`--executor slurm`): each job of a plan a SLURM job, through submitit.

Submission follows the plan's order; a job waits for the jobs it depends on that are queued or
running (`--dependency=afterok:...`, with `--kill-on-invalid-dep=yes` so that SLURM cancels it
when one of them fails instead of keeping it pending for ever), and with --slurm-max-concurrent
also for the job submitted that many places before it (`afterany`: a chain that bounds how many
run at once). Each job runs reproduce.pipeline.execution.execute in the submitting Python (submitit runs
`sys.executable` with the submitter's environment and working directory), which writes the job's
log and, on failure, its status file under `<work>/jobs/`; submitit's own files go to
`<work>/jobs/slurm/`.

What is submitted is recorded in the job's status file (its SLURM job id and identity), so that
running the command again — after --no-wait, a crash of the submitting process, a scancel, a
node loss — submits only what is neither done nor still queued or running, and never a second
copy of a queued or running job: it waits for those. A queued or running job of other settings
(an earlier command's) is refused: its outputs would be overwritten under the new one.

States are read with `squeue` (slurmctld knows a job until MinJobAge after its end), not with
submitit's `sacct`, which needs slurmdbd (tests/slurm/NOTES.md); a job squeue no longer lists has
ended, and its outputs and status file tell how: done (its stamp carries its identity), failed
(the error it recorded), or killed without a word (scancel, time limit, node failure).
"""
import os
import subprocess
import time

from ..errors import UserError
from ..utils.signals import check_signal
from .execution import JobsFailed, Progress, execute, job_spec, log_tail, summary_line
from .plan import record_status

POLL_S = 3.0
LIVE = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING")


def squeue(ids):
    """{job id: SLURM state} of the ids slurmctld still knows."""
    ids = [str(i) for i in ids if i]
    if not ids:
        return {}
    try:
        done = subprocess.run(["squeue", "-h", "-t", "all", "-j", ",".join(ids), "-o", "%i|%T"],
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise UserError(f"squeue: cannot ask SLURM for the jobs' states ({e})") from None
    states = {}
    for line in done.stdout.splitlines():
        job_id, _, state = line.strip().partition("|")
        states[job_id] = state
    return states


def queued_jobs(plan):
    """{job name: (SLURM job id, identity hex, text)} of the plan's jobs recorded as submitted
    that SLURM still holds queued or running."""
    recorded = {}
    for job in plan.jobs:
        status = plan.read_status(job)
        if status and status.get("state") == "submitted" and status.get("slurm_job"):
            recorded[job.name] = (str(status["slurm_job"]), status.get("identity"))
    states = squeue([i for i, _ in recorded.values()])
    found = {}
    for name, (job_id, identity) in recorded.items():
        state = states.get(job_id)
        if state in LIVE:
            word = "running" if state in ("RUNNING", "COMPLETING") else "pending"
            found[name] = (job_id, identity, f"{word} (SLURM job {job_id}, {state})")
    return found


class SlurmExecutor:
    """Submits the jobs of a plan to SLURM and, unless no_wait, waits for them."""

    def __init__(self, resources, max_concurrent=None, no_wait=False, log=print):
        self.resources, self.max_concurrent, self.no_wait, self.log = resources, max_concurrent, no_wait, log

    @classmethod
    def from_settings(cls, settings, log=print):
        """The executor of a command's ExecutorSettings (reproduce.pipeline.executors)."""
        resources = {"partition": settings.slurm_partition, "cpus_per_task": settings.slurm_cpus_per_job,
                     "gpus_per_node": settings.slurm_gpus_per_job or None, "mem": f"{settings.slurm_mem_gb}GB",
                     "time": settings.slurm_time_min}
        return cls(resources, settings.slurm_max_concurrent, settings.no_wait, log)

    def _executor(self, plan):
        import submitit
        folder = os.path.join(os.path.abspath(plan.state_dir), "slurm")
        executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=0)
        executor.update_parameters(**{k: v for k, v in self.resources.items() if v is not None},
                                   additional_parameters={"kill-on-invalid-dep": "yes"})
        return executor

    def run(self, plan, state):
        queued = queued_jobs(plan)
        for name, (job_id, identity, _) in queued.items():
            if identity != plan.by_name[name].identity["hex"]:
                raise UserError(f"{name}: SLURM job {job_id} of an earlier command with other settings is "
                                f"still queued or running; wait for it or scancel {job_id} (nothing was submitted)")
        ids = {name: job_id for name, (job_id, _, _) in queued.items()}
        todo = [j for j in plan.jobs if state[j.name] != "done"]
        submitted = self._submit(plan, [j for j in todo if j.name not in ids], ids)
        attached = [j.name for j in todo if j.name in queued]
        self.log(f"SLURM: {len(submitted)} job(s) submitted, {len(attached)} already queued or running "
                 f"(logs: {plan.state_dir})")
        if self.no_wait:
            return
        self._wait(plan, todo, ids)

    def _submit(self, plan, jobs, ids):
        executor = self._executor(plan)
        order, made = [], []
        for job in jobs:
            check_signal()
            after = [ids[d] for d in job.deps if d in ids]
            dependency = [f"afterok:{':'.join(after)}"] if after else []
            if self.max_concurrent and len(order) >= self.max_concurrent:
                dependency.append(f"afterany:{order[-self.max_concurrent]}")
            executor.update_parameters(job_name=job.name, dependency=",".join(dependency) or None)
            spec = os.path.abspath(job_spec(plan, job, self.resources["cpus_per_task"]))
            handle = executor.submit(execute, spec)
            ids[job.name] = str(handle.job_id)
            order.append(ids[job.name])
            record_status(plan.status_path(job), job.identity, "submitted", log=plan.log_path(job),
                          slurm_job=ids[job.name])
            made.append(job.name)
        return made

    def _wait(self, plan, todo, ids):
        progress = Progress(len(todo))
        pending = {j.name for j in todo}
        finished, failed, skipped = set(), set(), set()
        try:
            while pending:
                states = squeue([ids[n] for n in pending])
                progress.running({n for n in pending if states.get(ids[n]) in ("RUNNING", "COMPLETING")})
                for job in [j for j in todo if j.name in pending and states.get(ids[j.name]) not in LIVE]:
                    pending.discard(job.name)
                    progress.finished()
                    if self._succeeded(plan, job):
                        finished.add(job.name)
                    elif any(d in failed or d in skipped for d in job.deps):
                        skipped.add(job.name)      # cancelled by SLURM: a job it needs failed
                    else:
                        failed.add(job.name)
                        self._report(plan, job, ids[job.name], states.get(ids[job.name]), progress)
                if pending:
                    time.sleep(POLL_S)
                    check_signal()
        finally:
            progress.close()
        self.log(summary_line(len(finished), len(failed), len(todo) - len(finished) - len(failed)))
        if failed:
            raise JobsFailed(f"{len(failed)} job(s) failed ({', '.join(sorted(failed)[:3])}"
                             f"{', ...' if len(failed) > 3 else ''}); their logs are in {plan.state_dir}; "
                             "run the command again to retry them")

    @staticmethod
    def _succeeded(plan, job):
        """A job SLURM no longer runs succeeded if its outputs carry its identity."""
        found, complete = plan.recorded(job)
        return complete and isinstance(found, dict) and found["hex"] == job.identity["hex"]

    def _report(self, plan, job, job_id, state, progress):
        status = plan.read_status(job) or {}
        if status.get("state") == "failed":
            why = status.get("error")
        else:
            why = f"ended without finishing (SLURM job {job_id}{', ' + state if state else ''}: cancelled, killed, out of time or its node lost)"
            record_status(plan.status_path(job), job.identity, "failed", error=why, log=plan.log_path(job),
                          slurm_job=job_id)
        progress.write(f"failed: {job.name}: {why}")
        for line in log_tail(plan.log_path(job)):
            progress.write(f"    {line}")
        progress.write(f"    log: {plan.log_path(job)}")
