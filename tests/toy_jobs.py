"""Job functions of the plan tests (reproduce.pipeline.plan calls them by "toy_jobs:<name>"): tiny outputs
that record their identity, so that states, staleness and forcing are tested in milliseconds."""
import json
import os
import signal
import subprocess
import sys

from reproduce.errors import UserError
from reproduce.utils.fileio import write_text_atomic

CALLS = []     # (job function, out) in the order they ran, for the tests to inspect


def write_value(identity, out, value, fail=False):
    """A source-like job: writes {"identity", "value"}."""
    CALLS.append(("write_value", out))
    if os.environ.get("TOY_KILL") == os.path.basename(out):
        os.kill(os.getpid(), signal.SIGKILL)            # the process running the job dies with it
    if fail or os.environ.get("TOY_FAIL") == os.path.basename(out):
        raise UserError(f"{out}: toy failure")
    write_text_atomic(out, json.dumps({"identity": identity, "value": value}) + "\n")


def total(identity, out, parts):
    """A job that reads other jobs' outputs (checking nothing: the plan's forcing is tested)."""
    CALLS.append(("total", out))
    value = 0
    for path in parts:
        with open(path) as f:
            value += json.load(f)["value"]
    write_text_atomic(out, json.dumps({"identity": identity, "value": value}) + "\n")


TOY_COMMAND = """
import pathlib, sys
sys.path.insert(0, {tests!r})
from test_plan import toy_plan
from reproduce.cli import ArgumentParser, add_plan_options, executor_settings, run_cli
from reproduce.pipeline.executors import plan_main
def main(argv):
    p = ArgumentParser("toy")
    add_plan_options(p)
    plan_main(toy_plan(pathlib.Path({folder!r})), executor_settings(p.parse_args(argv)))
run_cli(main, sys.argv[1:])
"""


def toy_command(folder, *extra, env=None, timeout=300):
    """A command running test_plan.toy_plan's jobs (outputs in `folder`) with the executor options
    `extra`, in a subprocess from `folder`; env: variables added (e.g. TOY_FAIL)."""
    tests = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.dirname(tests)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([tests, repo]), **(env or {}))
    return subprocess.run([sys.executable, "-c", TOY_COMMAND.format(tests=tests, folder=str(folder)), *extra],
                          capture_output=True, text=True, env=env, timeout=timeout, cwd=folder)
