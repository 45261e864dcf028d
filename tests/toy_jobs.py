"""Job functions of the plan tests (reproduce.pipeline.plan calls them by "toy_jobs:<name>"): tiny outputs
that record their identity, so that states, staleness and forcing are tested in milliseconds."""
import json
import os

from reproduce.errors import UserError
from reproduce.utils.fileio import write_text_atomic

CALLS = []     # (job function, out) in the order they ran, for the tests to inspect


def write_value(identity, out, value, fail=False):
    """A source-like job: writes {"identity", "value"}."""
    CALLS.append(("write_value", out))
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
