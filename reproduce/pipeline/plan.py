"""The job plan: what a reproduction computes, as jobs with identities, inputs, outputs and
dependencies, independent of how the jobs are run.

A `Job` is data: its name (`train/dhn_12bits_seed0`), kind, settings, the jobs and source files it
is made from (`inputs`, identity documents), the jobs it must wait for (`deps`), its outputs, the
file that records its identity (`stamp`), and the work itself as a module-level function named by
"module:function" with JSON arguments (`func`, `args`) — so that any executor can run it, in this
process or in another one on another machine. The job's identity (reproduce.pipeline.identity) is
computed when the plan is built, before anything runs.

States (`Plan.states`):
  done     its stamp records this identity (and every output is there), and nothing it is made
           from will be recomputed: there is nothing to do;
  pending  it will run: no output yet, an interrupted one of the same identity (a training
           resumes), or something upstream will run (its outputs would no longer match);
  stale    an output exists with another identity: the command stops before any work with one
           line saying what changed, unless --rerun-stale (then it runs, and everything
           downstream with it);
  failed   its last attempt failed (reproduce.pipeline.plan writes the error beside the job's log); it
           runs again.
A `summary` job (the tables) is rebuilt whenever its identity changes and is never refused as
stale; an `intermediate` job (an image cache) is rebuilt only when a job that reads it runs.
"""
import contextlib
import dataclasses
import importlib
import json
import os
import time
import traceback

from . import identity as ids
from ..errors import UserError
from ..utils.fileio import read_json, write_text_atomic
from ..utils.locks import live_holder, remove_leftovers, writer_lock
from ..utils.messages import printable

STATES = ("done", "pending", "stale", "running", "failed")


@dataclasses.dataclass
class Job:
    """One unit of work of a plan (see the module docstring)."""
    name: str
    kind: str
    settings: dict
    func: str                                   # "module:function", called as func(**args)
    args: dict
    stamp: str                                  # the output file that records the identity
    outputs: tuple = ()                         # every output (files and folders) incl. stamp
    inputs: dict = dataclasses.field(default_factory=dict)   # {name: identity document}
    deps: tuple = ()                            # names of jobs that must run first
    verb: str = "made"                          # "trained", "encoded" ... in messages
    summary: bool = False
    intermediate: bool = False
    identity: dict = None
    lineage: bool = True
    # folders a command of its own also writes (a run folder: `train --resume --out` it): the job
    # holds their writer lock while it runs, as that command does, so that one of the two stops
    locks: tuple = ()

    def __post_init__(self):
        self.identity = ids.make_identity(self.name, self.kind, self.settings, self.inputs, self.lineage)
        self.outputs = tuple(self.outputs) or (self.stamp,)


def recorded_identity(path):
    """The identity document recorded in an output file (None: absent; "unreadable" for a file
    that is there but holds none that can be read). .json: its "identity"; .h5: its attribute
    "identity"; .pth: meta["identity"] (memory-mapped: no weights are read)."""
    if not os.path.isfile(path):
        return None
    try:
        if path.endswith(".json"):
            doc = read_json(path, "output")
            found = doc.get("identity") if isinstance(doc, dict) else None
        elif path.endswith(".h5"):
            import h5py
            with h5py.File(path, "r") as f:
                return ids.from_attr(f.attrs.get("identity")) or "unreadable"
        elif path.endswith(".pth"):
            import torch
            ckpt = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
            found = ckpt.get("meta", {}).get("identity") if isinstance(ckpt, dict) else None
        else:
            raise ValueError(f"no identity reader for {path}")
    except (UserError, OSError, RuntimeError, KeyError, AttributeError, EOFError):
        return "unreadable"
    except Exception:      # torch and h5py raise many types on foreign or damaged files
        return "unreadable"
    return ids.checked(found) or "unreadable"


class Plan:
    """Jobs in an order in which every job comes after its deps (the order they run in one by
    one), and where each job's state is kept (`<work>/jobs/<name>.json`)."""

    def __init__(self, jobs, state_dir):
        self.jobs = list(jobs)
        self.by_name = {}
        for job in self.jobs:
            if job.name in self.by_name:
                raise ValueError(f"two jobs named {job.name}")
            unknown = [d for d in job.deps if d not in self.by_name]
            if unknown:
                raise ValueError(f"{job.name}: depends on {unknown[0]}, which is not before it")
            self.by_name[job.name] = job
        self.state_dir = state_dir

    # ------------------------------------------------------------------ state
    def status_path(self, job):
        return os.path.join(self.state_dir, job.name + ".json")

    def log_path(self, job):
        return os.path.join(self.state_dir, job.name + ".log")

    def read_status(self, job):
        path = self.status_path(job)
        try:
            doc = read_json(path, "job status") if os.path.isfile(path) else None
        except UserError:
            return None
        return doc if isinstance(doc, dict) else None

    def recorded(self, job):
        """(recorded identity or None or "unreadable", complete: every output there)."""
        found = recorded_identity(job.stamp)
        complete = found not in (None, "unreadable") and all(os.path.exists(p) for p in job.outputs)
        return found, complete

    def states(self, running=()):
        """{job name: state} and {job name: why stale} (see the module docstring); `running`:
        names an executor knows to be running now."""
        state, why, forced = {}, {}, {}
        for job in self.jobs:
            found, complete = self.recorded(job)
            upstream = any(forced[d] for d in job.deps if not self.by_name[d].intermediate)
            if found not in (None, "unreadable") and found.get("hex") != job.identity["hex"]:
                own = "pending" if job.summary else "stale"
                why[job.name] = ids.differences(found, job.identity, verb=job.verb)
            elif found == "unreadable":
                own = "pending" if job.summary else "stale"
                why[job.name] = "its identity cannot be read (damaged, or not written by this package)"
            elif complete and not upstream:
                own = "done"
            else:
                own = "pending"
            status = self.read_status(job)
            if own == "pending" and status and status.get("state") == "failed" \
                    and status.get("identity") == job.identity["hex"]:
                own = "failed"
            if job.name in running:
                own = "running"
            state[job.name] = own
            forced[job.name] = own != "done"
        # An intermediate job is redone only for a job that runs and reads it.
        for job in reversed(self.jobs):
            if job.intermediate and state[job.name] == "pending" and not any(
                    job.name in other.deps and state[other.name] != "done" for other in self.jobs):
                state[job.name] = "done"
        return state, why

    def check_stale(self, rerun_stale, state=None, why=None):
        """UserError naming the first stale output and what changed, unless rerun_stale."""
        if state is None:
            state, why = self.states()
        stale = [j for j in self.jobs if state[j.name] == "stale"]
        if stale and not rerun_stale:
            job = stale[0]
            more = f" ({len(stale) - 1} more stale output(s))" if len(stale) > 1 else ""
            raise UserError(f"{display_path(job.outputs[0])}: {why[job.name]}{more}; pass --rerun-stale "
                            "to recompute it and what depends on it, or use another --out/--work "
                            "(nothing was changed)")
        return stale

    def format(self, state, extra=None):
        """One line per job: name, state, output (and `extra[name]`, e.g. a log), and a count."""
        width = max((len(j.name) for j in self.jobs), default=0)
        lines = [f"{j.name:<{width}}  {state[j.name]:<7}  {display_path(j.outputs[0])}"
                 + (f"  {extra[j.name]}" if extra and extra.get(j.name) else "") for j in self.jobs]
        counts = {s: sum(v == s for v in state.values()) for s in STATES}
        lines.append(f"{len(self.jobs)} jobs: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
        return "\n".join(lines)

    def to_run(self, state):
        """The jobs an executor starts: not done, and not running elsewhere already."""
        return [j for j in self.jobs if state[j.name] not in ("done", "running")]

    # ------------------------------------------------------------------ running
    def mark(self, job, state, error=None, log=None, **extra):
        record_status(self.status_path(job), job.identity, state, error, log, **extra)


def job_lock(status_path, name):
    """The lock of one job (`<name>.lock` beside its status file), held by the process running
    it: two processes never run one job."""
    folder, base = os.path.split(status_path)
    return writer_lock(folder, f"job {name}", lock_name=base[:-len(".json")] + ".lock")


def lock_held(status_path):
    """Whether a live process holds a job's lock (it is running, maybe under another command)."""
    return live_holder(status_path[:-len(".json")] + ".lock") is not None


def record_status(path, identity, state, error=None, log=None, **extra):
    """A job's status file: removed on success; else {state (failed, submitted), identity hex,
    time, error, log, and what the executor adds (the SLURM job id)}."""
    if state == "done":
        if os.path.exists(path):
            os.remove(path)
        return
    doc = {"state": state, "identity": identity["hex"], "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           "error": error, "log": log, **extra}
    write_text_atomic(path, json.dumps(doc, indent=1) + "\n")


def display_path(path):
    """A path as the user gave it (relative stays relative), for messages."""
    return os.path.relpath(path) if os.path.isabs(path) and not os.path.relpath(path).startswith("..") else path


def call(job):
    """Run a job's function in this process, holding the writer locks of `job.locks`, after
    removing what a killed writer of its outputs left behind (the caller holds the lock of the
    folders it writes; the leftovers of a folder another command may be writing are removed only
    once its lock is held: they could be that command's files being written)."""
    with contextlib.ExitStack() as held:
        for folder in job.locks:
            held.enter_context(writer_lock(folder, folder))
        remove_leftovers(job.outputs)
        module, name = job.func.split(":")
        function = getattr(importlib.import_module(module), name)
        return function(identity=job.identity, **job.args)


def run_inline(plan, state, log=print):
    """Run every job that is not done, one after another in plan order, in this process: today's
    order and behaviour. A failure is recorded (state `failed`) and raised as it is."""
    todo = plan.to_run(state)
    for n, job in enumerate(todo, 1):
        log(f"[{n}/{len(todo)}] {job.name}")
        try:
            with job_lock(plan.status_path(job), job.name):
                call(job)
        except BaseException as e:
            text = str(e) if isinstance(e, UserError) else "".join(
                traceback.format_exception_only(type(e), e)).strip()
            try:
                plan.mark(job, "failed", error=printable(text)[:2000])
            except (UserError, OSError):
                pass
            raise
        plan.mark(job, "done")
    return todo
