"""One job of a plan, wherever it runs: what every executor's worker calls (reproduce.pipeline.executors).

`execute(spec)` takes the job's lock (two processes never run one job: a second one fails at
once), writes its output to `<work>/jobs/<name>.log`, sets its own number of threads (torch and
BLAS: CPU results depend on it, so that a grid gives the same numbers with every executor at the
same --threads-per-job), removes what a killed run of it left behind (reproduce.pipeline.plan.call), runs
it, and records a failure beside the log. The spec file (`job_spec`) holds what a process needs
to do this; `Progress`, `log_tail` and `summary_line` are what the executors show of a plan.
"""
import contextlib
import json
import os
import sys
import time

from tqdm import tqdm

from ..errors import UserError
from ..utils.fileio import read_json, write_text_atomic
from ..utils.messages import printable
from .plan import Job, call, job_lock, record_status

LOG_TAIL = 8                 # lines of a failed job's log shown on the console
WORKER_MARK = "@@reproduce-job-ended"     # a worker's line after each job: "<mark> <rc>"


class JobsFailed(UserError):
    """Some jobs failed (their lines were shown); the command ends with exit status 1."""
    exit_code = 1


def job_spec(plan, job, threads=None, device=None):
    """What a process needs to run `job`: written as `<work>/jobs/<name>.spec.json`."""
    spec = {"name": job.name, "func": job.func, "args": job.args, "identity": job.identity,
            "outputs": list(job.outputs), "locks": list(job.locks), "status": plan.status_path(job), "log": plan.log_path(job),
            "threads": threads, "device": device}
    path = os.path.join(plan.state_dir, job.name + ".spec.json")
    write_text_atomic(path, json.dumps(spec) + "\n")
    return path


def execute(spec_path):
    """Run one job in this process (what every executor's worker calls): see the module docstring.
    Returns normally on success; a failure is recorded in the job's status file and raised."""
    spec = read_json(spec_path, "job spec")
    limit_threads(spec.get("threads"))
    if spec.get("device"):
        pin_device(spec["device"])
    with job_lock(spec["status"], spec["name"]), _logged(spec["log"], spec["name"]):
        job = Job.__new__(Job)         # the spec's job as planned (its identity is not recomputed)
        job.__dict__.update(name=spec["name"], func=spec["func"], args=spec["args"],
                            identity=spec["identity"], outputs=tuple(spec["outputs"]),
                            locks=tuple(spec.get("locks", ())))
        try:
            call(job)
        except BaseException as e:
            print(f"error: {_error_text(e)}", file=sys.stderr, flush=True)
            record_status(spec["status"], job.identity, "failed", error=_error_text(e), log=spec["log"])
            raise
        record_status(spec["status"], job.identity, "done")


def _error_text(e):
    text = str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}"
    return printable(text)[:2000]


def limit_threads(threads):
    """This job's CPU threads: torch's intra-op pool and the BLAS of numpy (baselines)."""
    if not threads:
        return
    import torch
    from threadpoolctl import threadpool_limits
    torch.set_num_threads(int(threads))
    threadpool_limits(int(threads))


def pin_device(device):
    """The job sees only its GPU (as cuda:0), or none ("cpu"); set before CUDA starts."""
    os.environ["CUDA_VISIBLE_DEVICES"] = "" if device == "cpu" else device.split(":")[1]


@contextlib.contextmanager
def _logged(log_path, name):
    """Standard output and error (of this process and its children) appended to the job's log."""
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    os.write(fd, f"\n=== {name}: started {time.strftime('%Y-%m-%dT%H:%M:%S%z')} on "
                 f"{os.uname().nodename}, PID {os.getpid()}\n".encode())
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for f in saved + [fd]:
            os.close(f)


def log_tail(path, n=LOG_TAIL):
    """The last n lines of a job's log (progress bars' carriage returns folded), for a failure."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - 16384))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    lines = [line.rsplit("\r", 1)[-1] for line in text.splitlines()]
    return [line for line in lines if line.strip()][-n:]


class Progress:
    """One line over the whole plan: jobs done / total, the running ones, ETA (tqdm)."""

    def __init__(self, total, enabled=True):
        self.bar = tqdm(total=total, unit="job", desc="plan", disable=not enabled, dynamic_ncols=True)

    def running(self, names):
        self.bar.set_postfix_str(", ".join(sorted(names))[:120], refresh=True)

    def finished(self):
        self.bar.update(1)

    def write(self, text):
        self.bar.write(text, file=sys.stderr)

    def close(self):
        self.bar.close()


def summary_line(done, failed, not_run):
    return f"{done} done, {failed} failed, {not_run} not run"
