"""Ctrl-C and SIGTERM: one line, no partial output, whatever the command is doing.

A command (reproduce.cli.run_cli) installs `on_signal` for both signals: the main process
records the signal and raises KeyboardInterrupt or `Terminated` at once, so that every `with`
block (temporary outputs, open files) unwinds; loader workers (forked children) leave quietly.
Where a raised exception would be swallowed (fork hooks, destructors, thread and logging
internals) the signal is only recorded and takes effect at the next `check_signal()`: writers
call it before they commit an output, the loaders before every batch
(reproduce.data.batches.checked_batches). While a command still imports its modules,
`install_startup_handlers` (called by the package's __init__) ends it with the same line and
status.
"""
import contextlib
import os
import signal
import sys


class Terminated(BaseException):
    """SIGTERM received: raised in the main thread so that every `with` block (temporary outputs,
    open files) unwinds as on Ctrl-C; run_cli turns it into one line and exit status 143."""


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
# takes effect at the next check_signal() (every batch of encode and train, every chunk of
# queries the ranking kernels rank, every commit).
# numba.core.serialize: a compiled function calls its `_numba_unpickle` (Python) while it boxes
# each array it returns, to fetch the array's type (numba/core/pythonapi.py,
# nrt_adapt_ndarray_to_python), and does not check the result for NULL. An exception raised there
# made the kernel return with an exception set (SystemError) or, when the NULL type reached
# NRT_adapt_ndarray_to_python_acqref, crashed the process (SIGSEGV instead of 130/143).
_DEFER_IN = ("logging", "threading", "multiprocessing", "weakref", "importlib", "concurrent", "queue",
             "numba.core.serialize")


def _deferred_in(frame):
    """Whether the handler runs in code where it must only record the signal (_DEFER_IN)."""
    if frame is None:
        return False
    module = frame.f_globals.get("__name__") or ""
    return (frame.f_code.co_name == "__del__"
            or any(module == name or module.startswith(name + ".") for name in _DEFER_IN))


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
    if _deferred_in(frame):
        return
    check_signal()


def install_command_handlers():
    """This process runs a command now (run_cli): both signals are recorded (`received`) before
    they raise, so that an error that follows one (a loader worker gone, a library that turned
    the KeyboardInterrupt into another exception) is still reported as the interruption it is."""
    _MAIN["pid"] = os.getpid()
    tolerate_unencodable_output()
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)


def received():
    """The signal that arrived while the command ran (signal.SIGINT / SIGTERM), or None."""
    return _MAIN["signal"]


def record_interrupt():
    """A KeyboardInterrupt or Terminated that surfaced without the handler (or before it ran)."""
    _MAIN["signal"] = _MAIN["signal"] or signal.SIGINT


def ignore_after_command():
    """The command is over (outputs committed, or the error reported): a signal during the
    interpreter's shutdown changes nothing and must not turn a finished run into a traceback or
    a -2 status (only when Python runs a command: a library caller keeps its own handlers)."""
    if _MAIN["command"]:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def exit_on_signal():
    """Leave with `interrupted` (130) or `terminated` (143) on stderr, once the outputs being
    written were removed (the `with` blocks unwound)."""
    interrupted = _MAIN["signal"] == signal.SIGINT
    code = 130 if interrupted else 143
    close_progress_bars()
    print("interrupted" if interrupted else "terminated", file=sys.stderr)
    if not _MAIN["command"]:
        sys.exit(code)
    # A command (`python -m reproduce.<command>`): its outputs were removed as the `with` blocks
    # unwound. Leave now, without the interpreter's teardown, where a loader worker that the same
    # Ctrl-C ended makes torch raise "worker exited unexpectedly" after the line above.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def close_progress_bars():
    """End a progress bar's line (tqdm leaves the cursor after it) so that the last line stands
    alone."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", ()) or ()):
        try:
            bar.close()
        except Exception:
            pass
