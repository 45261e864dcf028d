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
    """A problem with the user's input; the message is a single line shown as is. run_cli exits
    with `exit_code` (2; 1 for a plan whose jobs failed, reproduce.pipeline.execution.JobsFailed)."""
    exit_code = 2


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
        if abs(value) > FLOAT32_MAX:     # every real setting ends in a float32 tensor (Caffe's too)
            raise argparse.ArgumentTypeError(f"{text!r} is beyond float32's range")
        if (low is not None and (value < low or (low_open and value == low))) or \
                (high is not None and (value > high or (high_open and value == high))):
            raise argparse.ArgumentTypeError(
                f"{text!r} is out of range ({_bounds(low, high, low_open, high_open)})")
        return value
    parse.__name__ = "number"
    return parse


def is_finite_number(value):
    """A finite int or float that is not a bool (a value read from JSON or given as an option)."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _bounds(low, high, low_open=False, high_open=False):
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low:{'d' if isinstance(low, int) else 'g'}}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {high:{'d' if isinstance(high, int) else 'g'}}")
    return " and ".join(parts)


# Every integer a user passes is a count, an index or a seed: bounded by Caffe's int32 (the solver
# fields max_iter, stepsize, snapshot, display are int32 in caffe.proto; Blob::Reshape bounds blob
# dimensions by INT_MAX),
# so that no value reaches numpy or torch as an overflow or as an impossible allocation.
INT_MAX = 2 ** 31 - 1
# Caffe's real-valued settings (base_lr, gamma, momentum, weight_decay ...) and blobs are float32.
FLOAT32_MAX = 3.4028234663852886e38
POSITIVE = integer(1, INT_MAX)       # counts that must be at least 1 (bits, iterations)
NON_NEGATIVE = integer(0, INT_MAX)   # counts that may be 0 (seeds, snapshots kept)
# Sizes that allocate per unit: a batch of 227x227 images is 0.6 MB of input per image (the
# authors used 64; 4,096 is 2.5 GB of input alone), and each loader process holds its own copy of
# the decoding state (more than 64 only compete for cores and memory).
MAX_BATCH, MAX_WORKERS = 4096, 64
BATCH_SIZE = integer(1, MAX_BATCH)
WORKERS = integer(0, MAX_WORKERS)


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are a UserError too: one line, exit status 2 via run_cli."""

    def error(self, message):
        raise UserError(f"{self.prog}: {message}")

    def parse_known_args(self, args=None, namespace=None):
        # An empty value (`--cache ""`, `--mean ""`) is a mistake in a script, never a setting:
        # refused here for every option rather than read as "." or as "use the default".
        namespace, rest = super().parse_known_args(args, namespace)
        for action in self._actions:
            value = getattr(namespace, action.dest, None)
            if any(isinstance(v, str) and not v.strip()
                   for v in (value if isinstance(value, (list, tuple)) else [value])):
                self.error(f"argument {'/'.join(action.option_strings) or action.dest}: empty value")
        return namespace, rest


_MAIN = {"pid": None, "signal": None, "command": False}


def _on_startup_signal(signum, frame):
    # Ctrl-C or SIGTERM while a command still imports its modules: nothing is written yet, so
    # leave at once with the same line and status as later (run_cli) instead of a traceback
    # inside importlib (SIGINT) or a silent death (SIGTERM).
    os.write(2, b"interrupted\n" if signum == signal.SIGINT else b"terminated\n")
    os._exit(128 + signum)


def install_startup_handlers():
    """Called by the package's __init__ when Python runs one of its commands (`python -m
    reproduce.<command>`), before the command's module and its heavy imports (torch) load;
    run_cli replaces these handlers once the command starts."""
    _MAIN["command"] = True
    tolerate_unencodable_output()
    signal.signal(signal.SIGINT, _on_startup_signal)
    signal.signal(signal.SIGTERM, _on_startup_signal)


def tolerate_unencodable_output():
    """Let stdout and stderr write what their encoding cannot hold as escapes (`\\xfc`) instead
    of raising UnicodeEncodeError: under an ASCII or Latin-1 locale (PYTHONIOENCODING=ascii,
    LC_ALL=C on an old Python) a path with a `ü` would otherwise crash the success line of a
    command whose outputs are already written, or its one-line error."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError, OSError):   # not a TextIOWrapper (replaced), or closed
            pass


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
    tolerate_unencodable_output()
    # Both signals are recorded (_MAIN["signal"]) before they raise: a KeyboardInterrupt raised
    # inside compiled code (numba's ranking kernels) surfaces as a SystemError, which is then
    # still reported as the interruption it is.
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        main(argv)
        check_signal()
    except UserError as e:
        if _MAIN["signal"] is None:
            _close_progress_bars()          # an image found undecodable mid-run: the line stands alone
            print(f"error: {printable(str(e))}", file=sys.stderr)
            sys.exit(e.exit_code)
        _exit_on_signal()
    except (KeyboardInterrupt, Terminated):
        _MAIN["signal"] = _MAIN["signal"] or signal.SIGINT
        _exit_on_signal()
    except Exception:
        if _MAIN["signal"] is None:
            raise
        _exit_on_signal()
    finally:
        if _MAIN["command"]:
            # The command is over (outputs committed, or the error reported): a signal during the
            # interpreter's shutdown changes nothing and must not turn a finished run into a
            # traceback or a -2 status.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)


MAX_MESSAGE = 2000     # characters of an error line (a list line can hold a path of megabytes)


def printable(message):
    """The message as one printable line: control characters (a NUL or newline in a list
    path), invisible ones (a byte-order mark) and other non-printables shown as escapes, and a
    message longer than MAX_MESSAGE shortened in its middle."""
    text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in message)
    if len(text) > MAX_MESSAGE:
        half = MAX_MESSAGE // 2
        text = f"{text[:half]} ... [{len(text) - 2 * half} characters] ... {text[-half:]}"
    return text


def _exit_on_signal():
    interrupted = _MAIN["signal"] == signal.SIGINT
    code = 130 if interrupted else 143
    _close_progress_bars()
    print("interrupted" if interrupted else "terminated", file=sys.stderr)
    if not _MAIN["command"]:
        sys.exit(code)
    # A command (`python -m reproduce.<command>`): its outputs were removed as the `with` blocks
    # unwound. Leave now, without the interpreter's teardown, where a loader worker that the same
    # Ctrl-C ended makes torch raise "worker exited unexpectedly" after the line above.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _close_progress_bars():
    """End a progress bar's line (tqdm leaves the cursor after it) so that the last line stands
    alone."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", ()) or ()):
        try:
            bar.close()
        except Exception:
            pass
