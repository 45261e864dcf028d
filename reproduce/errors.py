"""User-facing errors: one line, exit status 2, no traceback.

Every problem with a user's input (a truncated file, a list line with the wrong number of labels,
a checkpoint of another arch) raises `UserError` with a message that names the file (and line, or
key and shapes) and what is wrong. Command-line entry points run through `run_cli`, which turns it
into that one line on stderr and exit status 2.
"""
import argparse
import contextlib
import math
import os
import signal
import sys


class UserError(Exception):
    """A problem with the user's input; the message is a single line shown as is."""


class Terminated(BaseException):
    """SIGTERM received: raised in the main thread so that every `with` block (temporary outputs,
    open files) unwinds as on Ctrl-C; run_cli turns it into one line and exit status 143."""


# --------------------------------------------------------------------------------- option types
# argparse `type=` callables: a bad value becomes argparse's "argument --x: ..." usage error,
# which ArgumentParser below turns into one line and exit status 2. Every number a user passes is
# range-checked here, before any work starts.
def integer(low=None, high=None):
    """An int in [low, high] (either bound optional); also accepts `1e3`-style whole numbers."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            try:
                number = float(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
            if not math.isfinite(number) or number != int(number):
                raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
            value = int(number)
        if (low is not None and value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{text!r} is out of range ({_bounds(low, high)})")
        return value
    parse.__name__ = "integer"
    return parse


def number(low=None, high=None, low_open=False, high_open=False):
    """A finite float in the interval given by low/high (open ends with low_open/high_open)."""
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if (low is not None and (value < low or (low_open and value == low))) or \
                (high is not None and (value > high or (high_open and value == high))):
            raise argparse.ArgumentTypeError(
                f"{text!r} is out of range ({_bounds(low, high, low_open, high_open)})")
        return value
    parse.__name__ = "number"
    return parse


def _bounds(low, high, low_open=False, high_open=False):
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {high:g}")
    return " and ".join(parts)


POSITIVE = integer(1)            # counts that must be at least 1 (bits, iterations, batch sizes)
NON_NEGATIVE = integer(0)        # counts that may be 0 (workers, seeds, snapshots kept)


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are a UserError too: one line, exit status 2 via run_cli."""

    def error(self, message):
        raise UserError(f"{self.prog}: {message}")


_MAIN = {"pid": None, "signal": None}


def check_signal():
    """Raise Terminated / KeyboardInterrupt if a signal arrived: writers call this before they
    commit an output, since a signal handled inside library code (a loader's clean-up, a
    destructor) can be swallowed there and must still not let a half-finished run publish."""
    if _MAIN["signal"] == signal.SIGTERM:
        raise Terminated()
    if _MAIN["signal"] == signal.SIGINT:
        raise KeyboardInterrupt()


# Code where an exception raised by the handler would be swallowed ("Exception ignored in ..."):
# fork hooks, destructors, thread and logging internals. There the signal is only recorded and
# takes effect at the next check_signal() (every batch of encode and train, every commit).
_DEFER_IN = ("logging", "threading", "multiprocessing", "weakref", "importlib", "concurrent", "queue")


@contextlib.contextmanager
def deferred_signals():
    """Hold Ctrl-C and SIGTERM back for the block (e.g. while a DataLoader starts its workers: an
    exception raised inside its constructor leaves a half-built object whose destructor prints a
    traceback at exit); a signal that arrived meanwhile is handled when the block ends."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def unblock_signals(worker_id=None):
    """A loader worker's init (worker_init_fn): workers fork while deferred_signals holds Ctrl-C
    and SIGTERM back, and inherit that mask; they must receive them (the loader stops its
    workers with SIGTERM)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


def _on_signal(signum, frame):
    # Loader workers (forked children) inherit this handler: they leave quietly, the main
    # process unwinds its `with` blocks (temporary outputs removed) and reports one line.
    if os.getpid() != _MAIN["pid"]:
        os._exit(128 + signum)
    _MAIN["signal"] = signum
    module = (frame.f_globals.get("__name__") or "") if frame is not None else ""
    if module.split(".")[0] in _DEFER_IN or (frame is not None and frame.f_code.co_name == "__del__"):
        return
    check_signal()


def run_cli(main, argv=None):
    """Call `main(argv)`; map UserError to `error: <message>` on stderr and exit status 2, Ctrl-C
    to exit status 130 and SIGTERM to 143, each after the outputs being written were removed. An
    error that follows a signal (a loader worker gone) is reported as the signal."""
    _MAIN["pid"] = os.getpid()
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        main(argv)
        check_signal()
    except UserError as e:
        if _MAIN["signal"] is None:
            msg = " ".join(str(e).split("\n"))
            print(f"error: {msg}", file=sys.stderr)
            sys.exit(2)
        _exit_on_signal()
    except (KeyboardInterrupt, Terminated):
        _MAIN["signal"] = _MAIN["signal"] or signal.SIGINT
        _exit_on_signal()
    except Exception:
        if _MAIN["signal"] is None:
            raise
        _exit_on_signal()


def _exit_on_signal():
    interrupted = _MAIN["signal"] == signal.SIGINT
    print("interrupted" if interrupted else "terminated", file=sys.stderr)
    sys.exit(130 if interrupted else 143)
