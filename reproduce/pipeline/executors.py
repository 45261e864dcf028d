"""Ways to run a plan (reproduce.pipeline.plan): the jobs are the same, only where they run differs.

    inline   --jobs 1 (default): one job after another in this process, today's order and
             behaviour; the first failure stops the command with its one line (exit 2).
    local    --jobs N: up to N jobs at once, each in its own process (`python -m
             reproduce.run_job`), spread over --devices (cuda:0,cuda:1 or cpu; several jobs per
             device), the CPU's threads divided between them.
    slurm    --executor slurm: each job a SLURM job submitted through submitit, after the jobs it
             depends on (afterok), with --slurm-* resources; the command waits, or with
             --no-wait returns once they are submitted.

Every job, wherever it runs, goes through reproduce.pipeline.execution.execute (its lock, its log, its
threads, its failure recorded beside the log). A job killed mid-way resumes
when the command runs again (trainings from their last snapshot). A failing job does not stop
the others (local, slurm): the command names it with the last lines of its log, runs what does
not depend on it, and ends with a summary and exit status 1.
"""
import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import time

from ..errors import UserError
from ..utils.signals import check_signal
from .execution import WORKER_MARK, JobsFailed, Progress, job_spec, limit_threads, log_tail, summary_line
from .plan import display_path, lock_held, run_inline
from .slurm_executor import SlurmExecutor, queued_jobs

EXECUTORS = ("local", "slurm")


# ----------------------------------------------------------------------------- settings
@dataclasses.dataclass(frozen=True)
class ExecutorSettings:
    """How a command runs its plan (the options of reproduce.cli.add_plan_options)."""
    show_plan: bool = False             # --plan: print every job with its state; run nothing
    rerun_stale: bool = False           # recompute outputs made with other settings
    jobs: int = 1                       # at once on this machine (1: one after another, in this process)
    devices: str | None = None          # "cuda:0,cuda:1" or "cpu" (None: every visible GPU, else cpu)
    threads_per_job: int | None = None  # None: the cores divided by `jobs` (SLURM: its CPUs per job)
    executor: str = "local"             # one of EXECUTORS
    no_wait: bool = False               # slurm: return once the jobs are submitted
    slurm_partition: str | None = None
    slurm_cpus_per_job: int = 2
    slurm_gpus_per_job: int = 0
    slurm_mem_gb: int = 16
    slurm_time_min: int = 24 * 60
    slurm_max_concurrent: int | None = None
    device: str | None = None           # the command's --device ("auto": none), exclusive with devices

    def check(self):
        """Option combinations that cannot work and devices that are not there, refused before
        any work (commands call it first)."""
        if self.executor not in EXECUTORS:
            raise UserError(f"--executor {self.executor}: choose one of {', '.join(EXECUTORS)}")
        if self.executor == "slurm" and self.jobs != 1:
            raise UserError("--jobs is for the local executor; SLURM runs as many as the cluster gives "
                            "(--slurm-max-concurrent to bound them)")
        if self.no_wait and self.executor != "slurm":
            raise UserError("--no-wait is for --executor slurm")
        if self.slurm_gpus_per_job < 0:
            raise UserError("--slurm-gpus-per-job: must be 0 or more")
        if self.devices is not None and self.device not in (None, "auto"):
            raise UserError("--device and --devices: give one (--devices spreads the jobs over devices)")
        if self.devices is not None:
            devices_of(self)


def devices_of(settings):
    """The --devices list: cuda:N or cpu each; default every visible GPU, else cpu."""
    import torch
    if settings.devices is None:
        n = torch.cuda.device_count()
        return [f"cuda:{i}" for i in range(n)] or ["cpu"]
    devices = [d.strip() for d in settings.devices.split(",") if d.strip()]
    for d in devices:
        if d != "cpu" and not (d.startswith("cuda:") and d[5:].isdigit()):
            raise UserError(f"--devices {settings.devices}: {d!r} is neither cpu nor cuda:N")
        if d != "cpu" and int(d[5:]) >= torch.cuda.device_count():
            raise UserError(f"--devices {settings.devices}: {d} is not visible here "
                            f"({torch.cuda.device_count()} GPU(s))")
    if not devices:
        raise UserError("--devices: empty")
    return devices


# ----------------------------------------------------------------------------- the local executor
def _dependents(plan, failed):
    """Every job downstream of the jobs named in `failed`."""
    out = set()
    for job in plan.jobs:
        if any(d in failed or d in out for d in job.deps):
            out.add(job.name)
    return out


class Worker:
    """A long-lived `python -m reproduce.run_job --worker` process bound to one device and thread
    count, running the jobs it is sent one after another (so that a job pays no start-up: torch
    is imported once per worker, not once per job)."""

    def __init__(self, index, device, threads, log_dir):
        import queue
        import threading
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        os.makedirs(log_dir, exist_ok=True)
        self.log_path = os.path.join(log_dir, f"worker-{index}.log")
        self.index, self.device, self.job = index, device, None
        self.died = None            # the exit status of a worker that ended while running a job
        with open(self.log_path, "a", encoding="utf-8") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "reproduce.run_job", "--worker", "--device", device, "--threads", str(threads)],
                env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True, bufsize=1)
        self.ended = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            if line.startswith(WORKER_MARK):
                self.ended.put(int(line.split()[1]))

    def send(self, job, spec):
        self.job = job
        self.proc.stdin.write(spec + "\n")
        self.proc.stdin.flush()

    def result(self):
        """The ended job's exit status, None while it runs; a worker that died ends its job too
        (`died`: the worker's exit status, negative: the signal that killed it)."""
        import queue
        try:
            return self.ended.get_nowait()
        except queue.Empty:
            code = self.proc.poll()
            if code is None:
                return None
        # it ended: its last line (the job's end, if it came) may still be in the reader's hands
        self.reader.join(timeout=5)
        try:
            return self.ended.get_nowait()
        except queue.Empty:
            self.died = code
            return code or -1


class LocalExecutor:
    """Up to `jobs` jobs at once in worker processes spread over `devices` (see the module
    docstring)."""

    def __init__(self, jobs, devices, threads, log=print):
        self.jobs, self.devices, self.threads, self.log = jobs, devices, threads, log

    def run(self, plan, state):
        todo = plan.to_run(state)
        waiting, finished = list(todo), {n for n, s in state.items() if s == "done"}
        failed, workers = set(), []
        progress = Progress(len(todo))
        try:
            while waiting or any(w.job for w in workers):
                check_signal()
                self._start_ready(plan, waiting, finished, workers)
                blocked = _dependents(plan, failed)
                waiting[:] = [j for j in waiting if j.name not in blocked]
                progress.running({w.job.name for w in workers if w.job})
                if not any(w.job for w in workers):
                    break
                time.sleep(0.1)
                for worker in workers:
                    code = worker.result() if worker.job else None
                    if code is None:
                        continue
                    job, worker.job = worker.job, None
                    progress.finished()
                    if code == 0:
                        finished.add(job.name)
                    else:
                        failed.add(job.name)
                        self._report(plan, job, code, progress, worker)
                workers[:] = [w for w in workers if w.proc.poll() is None]    # a dead one is replaced
        except BaseException:
            self._stop(workers)
            raise
        finally:
            progress.close()
            for worker in workers:
                with contextlib.suppress(OSError):
                    worker.proc.stdin.close()
            for worker in workers:
                worker.proc.wait()
        ran = {j.name for j in todo}
        self.log(summary_line(len(finished & ran), len(failed), len(ran - finished - failed)))
        if failed:
            raise JobsFailed(f"{len(failed)} job(s) failed ({', '.join(sorted(failed)[:3])}"
                             f"{', ...' if len(failed) > 3 else ''}); their logs are in {plan.state_dir}; "
                             "run the command again to retry them")

    def _start_ready(self, plan, waiting, finished, workers):
        """Give every ready job (its deps done) to an idle worker, starting workers up to --jobs,
        worker i on device i mod len(devices)."""
        for job in [j for j in waiting if all(d in finished for d in j.deps)]:
            idle = next((w for w in workers if w.job is None), None)
            if idle is None and len(workers) < self.jobs:
                used = {w.index for w in workers}
                index = min(i for i in range(self.jobs + 1) if i not in used)
                idle = Worker(index, self.devices[index % len(self.devices)], self.threads,
                              os.path.join(plan.state_dir, ".workers"))
                workers.append(idle)
            if idle is None:
                return
            idle.send(job, job_spec(plan, job, self.threads, idle.device))
            waiting.remove(job)

    @staticmethod
    def _report(plan, job, code, progress, worker):
        status = plan.read_status(job) or {}
        log = plan.log_path(job)
        if worker.died is not None:
            # The job could record nothing (a status of an earlier attempt is not this one's end):
            # say how its process ended, and where its own output went.
            how = (f"was killed (signal {-worker.died}, {_signal_name(-worker.died)})" if worker.died < 0
                   else f"ended (exit {worker.died}; its own messages: {worker.log_path})")
            why = f"its worker process {how} while it ran the job; log: {log}"
        elif status.get("state") == "failed":
            why = status.get("error")
        else:
            why = f"ended with exit status {code}; log: {log}"
        progress.write(f"failed: {job.name}: {why}")
        for line in log_tail(plan.log_path(job)):
            progress.write(f"    {line}")
        progress.write(f"    log: {plan.log_path(job)}")

    @staticmethod
    def _stop(workers):
        """Ctrl-C / SIGTERM: the workers get SIGTERM (a job leaves resumable state) and are waited for."""
        for worker in workers:
            with contextlib.suppress(OSError):
                worker.proc.send_signal(signal.SIGTERM)
        for worker in workers:
            try:
                worker.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                worker.proc.kill()


def _signal_name(number):
    try:
        return signal.Signals(number).name
    except ValueError:
        return "unknown signal"


def default_threads(jobs):
    """The machine's cores divided between the jobs that run at once."""
    return max(1, (os.cpu_count() or 1) // jobs)


# ----------------------------------------------------------------------------- what a command does
def running_jobs(plan, settings):
    """{job name: extra text} of the jobs running elsewhere now (another process holds a job's
    lock; SLURM: its recorded job is running), and of those queued in SLURM."""
    found = {}
    for job in plan.jobs:
        if lock_held(plan.status_path(job)):
            found[job.name] = "running (this machine)"
    try:
        found.update({name: text for name, (_, _, text) in queued_jobs(plan).items()})
    except UserError:
        # no squeue here: a local run cannot see the jobs an earlier --executor slurm submitted
        if settings.executor == "slurm":
            raise
    return found


def plan_main(plan, settings, log=print):
    """What a command does with its plan (settings: ExecutorSettings): --plan prints every job's
    state, output and log; else refuse stale outputs (unless --rerun-stale) and run what is not
    done with the executor the settings choose. Returns the jobs that were to run (None with
    --plan)."""
    settings.check()
    busy = running_jobs(plan, settings)
    state, why = plan.states(running={n for n, text in busy.items() if text.startswith("running")})
    if settings.show_plan:
        extra = {j.name: busy.get(j.name) or (f"log: {plan.log_path(j)}" if os.path.exists(plan.log_path(j)) else "")
                 for j in plan.jobs}
        print(plan.format(state, extra))
        for name in [n for n, s in state.items() if s == "stale"][:5]:
            print(f"stale: {name}: {why[name]}")
        sys.stdout.flush()
        return None
    in_slurm = {n: text for n, text in busy.items() if "SLURM job" in text}
    if in_slurm and settings.executor != "slurm":
        # Jobs an earlier `--executor slurm --no-wait` submitted would run a second time, next to
        # this command's copies (each failing on the other's job lock, or overwriting its outputs).
        name = next(iter(in_slurm))
        raise UserError(f"{display_path(plan.state_dir)}: {len(in_slurm)} job(s) of this plan are queued or "
                        f"running in SLURM ({name}: {in_slurm[name]}); run the command with --executor "
                        "slurm to wait for them, or scancel them first (one writer at a time)")
    plan.check_stale(settings.rerun_stale, state, why)
    todo = plan.to_run(state)
    if settings.executor == "slurm":
        SlurmExecutor.from_settings(settings, log).run(plan, state)
    elif settings.jobs > 1 or settings.devices is not None:
        threads = settings.threads_per_job or default_threads(settings.jobs)
        LocalExecutor(settings.jobs, devices_of(settings), threads, log).run(plan, state)
    else:
        if settings.threads_per_job:
            limit_threads(settings.threads_per_job)
        run_inline(plan, state, log)
    return todo
