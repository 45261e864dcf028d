"""Ways to run a plan (reproduce.plan): the jobs are the same, only where they run differs.

    inline   --jobs 1 (default): one job after another in this process, today's order and
             behaviour; the first failure stops the command with its one line (exit 2).
    local    --jobs N: up to N jobs at once, each in its own process (`python -m
             reproduce.run_job`), spread over --devices (cuda:0,cuda:1 or cpu; several jobs per
             device), the CPU's threads divided between them.
    slurm    --executor slurm: each job a SLURM job submitted through submitit, after the jobs it
             depends on (afterok), with --slurm-* resources; the command waits, or with
             --no-wait returns once they are submitted.

Every job, wherever it runs, goes through `execute`: it takes the job's lock (two processes
never run one job: a second one fails at once), writes its output to `<work>/jobs/<name>.log`,
sets its own number of threads (torch and BLAS: CPU results depend on it, so that a grid gives
the same numbers with every executor at the same --threads-per-job), removes what a killed run
of it left behind, runs it, and records a failure beside the log. A job killed mid-way resumes
when the command runs again (trainings from their last snapshot). A failing job does not stop
the others (local, slurm): the command names it with the last lines of its log, runs what does
not depend on it, and ends with a summary and exit status 1.
"""
import contextlib
import json
import os
import signal
import subprocess
import sys
import time

from tqdm import tqdm

from .errors import POSITIVE, UserError, check_signal, printable
from .fileio import read_json, write_text_atomic

EXECUTORS = ("local", "slurm")
LOG_TAIL = 8                 # lines of a failed job's log shown on the console


class JobsFailed(UserError):
    """Some jobs failed (their lines were shown); the command ends with exit status 1."""
    exit_code = 1


# ----------------------------------------------------------------------------- options
def add_arguments(parser):
    """The executor options of the per-dataset commands and the demo."""
    g = parser.add_argument_group("running the plan (reproduce.executors)")
    g.add_argument("--jobs", type=POSITIVE, default=1,
                   help="jobs at once on this machine (default 1: one after another in this process)")
    g.add_argument("--devices", default=None,
                   help="comma-separated devices the jobs are spread over, e.g. cuda:0,cuda:1 or cpu "
                        "(default: every visible GPU, else cpu)")
    g.add_argument("--threads-per-job", type=POSITIVE, default=None,
                   help="CPU threads of each job (default: this machine's cores divided by --jobs; "
                        "SLURM: --slurm-cpus-per-job); CPU results depend on it")
    g.add_argument("--executor", choices=EXECUTORS, default="local", help="local (default) or slurm")
    g.add_argument("--no-wait", action="store_true", help="slurm: return once the jobs are submitted")
    g.add_argument("--slurm-partition", default=None, help="slurm: partition (default: the cluster's)")
    g.add_argument("--slurm-cpus-per-job", type=POSITIVE, default=2, help="slurm: CPUs per job (default 2)")
    g.add_argument("--slurm-gpus-per-job", type=int, default=0, help="slurm: GPUs per job (default 0)")
    g.add_argument("--slurm-mem-gb", type=POSITIVE, default=16, help="slurm: memory per job in GB (default 16)")
    g.add_argument("--slurm-time-min", type=POSITIVE, default=24 * 60,
                   help="slurm: time limit per job in minutes (default 1440)")
    g.add_argument("--slurm-max-concurrent", type=POSITIVE, default=None,
                   help="slurm: at most this many of the command's jobs queued or running at once")


def check_arguments(args):
    """Option combinations that cannot work and devices that are not there, refused before any
    work (commands call it first)."""
    _with_defaults(args)
    if args.executor == "slurm" and args.jobs != 1:
        raise UserError("--jobs is for the local executor; SLURM runs as many as the cluster gives "
                        "(--slurm-max-concurrent to bound them)")
    if args.no_wait and args.executor != "slurm":
        raise UserError("--no-wait is for --executor slurm")
    if args.slurm_gpus_per_job < 0:
        raise UserError("--slurm-gpus-per-job: must be 0 or more")
    if args.devices is not None and getattr(args, "device", "auto") not in (None, "auto"):
        raise UserError("--device and --devices: give one (--devices spreads the jobs over devices)")
    if args.devices is not None:
        devices_of(args)


def devices_of(args):
    """The --devices list: cuda:N or cpu each; default every visible GPU, else cpu."""
    import torch
    if args.devices is None:
        n = torch.cuda.device_count()
        return [f"cuda:{i}" for i in range(n)] or ["cpu"]
    devices = [d.strip() for d in args.devices.split(",") if d.strip()]
    for d in devices:
        if d != "cpu" and not (d.startswith("cuda:") and d[5:].isdigit()):
            raise UserError(f"--devices {args.devices}: {d!r} is neither cpu nor cuda:N")
        if d != "cpu" and int(d[5:]) >= torch.cuda.device_count():
            raise UserError(f"--devices {args.devices}: {d} is not visible here "
                            f"({torch.cuda.device_count()} GPU(s))")
    if not devices:
        raise UserError("--devices: empty")
    return devices


# ----------------------------------------------------------------------------- one job, anywhere
def job_spec(plan, job, threads=None, device=None):
    """What a process needs to run `job`: written as `<work>/jobs/<name>.spec.json`."""
    spec = {"name": job.name, "func": job.func, "args": job.args, "identity": job.identity,
            "outputs": list(job.outputs), "status": plan.status_path(job), "log": plan.log_path(job),
            "threads": threads, "device": device}
    path = os.path.join(plan.state_dir, job.name + ".spec.json")
    write_text_atomic(path, json.dumps(spec) + "\n")
    return path


def execute(spec_path):
    """Run one job in this process (what every executor's worker calls): see the module docstring.
    Returns normally on success; a failure is recorded in the job's status file and raised."""
    from .plan import Job, call, job_lock, record_status
    spec = read_json(spec_path, "job spec")
    _limit_threads(spec.get("threads"))
    if spec.get("device"):
        _pin_device(spec["device"])
    with job_lock(spec["status"], spec["name"]), _logged(spec["log"], spec["name"]):
        job = Job.__new__(Job)         # the spec's job as planned (its identity is not recomputed)
        job.__dict__.update(name=spec["name"], func=spec["func"], args=spec["args"],
                            identity=spec["identity"], outputs=tuple(spec["outputs"]))
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


def _limit_threads(threads):
    """This job's CPU threads: torch's intra-op pool and the BLAS of numpy (baselines)."""
    if not threads:
        return
    import torch
    from threadpoolctl import threadpool_limits
    torch.set_num_threads(int(threads))
    threadpool_limits(int(threads))


def _pin_device(device):
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


# ----------------------------------------------------------------------------- the local executor
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


def _dependents(plan, failed):
    """Every job downstream of the jobs named in `failed`."""
    out = set()
    for job in plan.jobs:
        if any(d in failed or d in out for d in job.deps):
            out.add(job.name)
    return out


def summary_line(done, failed, not_run):
    return f"{done} done, {failed} failed, {not_run} not run"


WORKER_MARK = "@@reproduce-job-ended"     # a worker's line after each job: "<mark> <rc>"


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
        with open(self.log_path, "a", encoding="utf-8") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "reproduce.run_job", "--worker", "--device", device, "--threads", str(threads)],
                env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True, bufsize=1)
        self.ended = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            if line.startswith(WORKER_MARK):
                self.ended.put(int(line.split()[1]))

    def send(self, job, spec):
        self.job = job
        self.proc.stdin.write(spec + "\n")
        self.proc.stdin.flush()

    def result(self):
        """The ended job's exit status, None while it runs; a worker that died ends its job too."""
        import queue
        try:
            return self.ended.get_nowait()
        except queue.Empty:
            code = self.proc.poll()
            return None if code is None else (code or -1)


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
        why = status.get("error") if status.get("state") == "failed" else \
            f"its worker process ended (exit {code}; see {worker.log_path})"
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


def default_threads(jobs):
    """The machine's cores divided between the jobs that run at once."""
    return max(1, (os.cpu_count() or 1) // jobs)


# ----------------------------------------------------------------------------- what a command does
def running_jobs(plan, args):
    """{job name: extra text} of the jobs running elsewhere now (another process holds a job's
    lock; SLURM: its recorded job is running), and of those queued in SLURM."""
    from .plan import lock_held
    found = {}
    for job in plan.jobs:
        if lock_held(plan.status_path(job)):
            found[job.name] = "running (this machine)"
    from .slurm_executor import queued_jobs
    try:
        found.update({name: text for name, (_, _, text) in queued_jobs(plan).items()})
    except UserError:
        # no squeue here: a local run cannot see the jobs an earlier --executor slurm submitted
        if getattr(args, "executor", "local") == "slurm":
            raise
    return found


def plan_main(plan, args, log=print):
    """What a command does with its plan: --plan prints every job's state, output and log; else
    refuse stale outputs (unless --rerun-stale) and run what is not done with the executor the
    options choose. Returns the jobs that were to run (None with --plan)."""
    from .plan import display_path, run_inline
    check_arguments(args)
    busy = running_jobs(plan, args)
    state, why = plan.states(running={n for n, text in busy.items() if text.startswith("running")})
    if getattr(args, "plan", False):
        extra = {j.name: busy.get(j.name) or (f"log: {plan.log_path(j)}" if os.path.exists(plan.log_path(j)) else "")
                 for j in plan.jobs}
        print(plan.format(state, extra))
        for name in [n for n, s in state.items() if s == "stale"][:5]:
            print(f"stale: {name}: {why[name]}")
        sys.stdout.flush()
        return None
    in_slurm = {n: text for n, text in busy.items() if "SLURM job" in text}
    if in_slurm and getattr(args, "executor", "local") != "slurm":
        # Jobs an earlier `--executor slurm --no-wait` submitted would run a second time, next to
        # this command's copies (each failing on the other's job lock, or overwriting its outputs).
        name = next(iter(in_slurm))
        raise UserError(f"{display_path(plan.state_dir)}: {len(in_slurm)} job(s) of this plan are queued or "
                        f"running in SLURM ({name}: {in_slurm[name]}); run the command with --executor "
                        "slurm to wait for them, or scancel them first (one writer at a time)")
    plan.check_stale(getattr(args, "rerun_stale", False), state, why)
    todo = plan.to_run(state)
    if args.executor == "slurm":
        from .slurm_executor import SlurmExecutor
        SlurmExecutor.from_args(args, log).run(plan, state)
    elif args.jobs > 1 or args.devices is not None:
        threads = args.threads_per_job or default_threads(args.jobs)
        LocalExecutor(args.jobs, devices_of(args), threads, log).run(plan, state)
    else:
        if args.threads_per_job:
            _limit_threads(args.threads_per_job)
        run_inline(plan, state, log)
    return todo


def _with_defaults(args):
    """Commands and tests that build a plan without the executor options run it inline."""
    for key, value in (("jobs", 1), ("devices", None), ("threads_per_job", None), ("executor", "local"),
                       ("no_wait", False), ("slurm_gpus_per_job", 0)):
        if not hasattr(args, key):
            setattr(args, key, value)
    return args
