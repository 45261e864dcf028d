"""One writer at a time: a lock per run folder, results folder and output file, and the clean-up
of what a killed writer left behind.

`writer_lock(folder)` holds an exclusive POSIX record lock (fcntl.lockf, which NFS locks too) on
`<folder>/.lock` for as long as the command writes there; the file says who holds it: PID, host
and since when, and is removed when the writer is done. The kernel releases the lock when the
process ends, however it ends (kill -9 included), so a lock is never left held by a dead process:
a second writer stops with one line naming a live holder, and a writer that finds the file of a
process that is gone (it was killed) takes the lock over and says so in one line.

A writer killed mid-way leaves its temporary files (`.tmp-<name>-*`, reproduce.utils.fileio
atomic_output) and staging folders (`.staging-*`, staged_outputs). Readers never read them (they
look up exact names, and collect_records skips hidden folders); `remove_leftovers` deletes them,
called by the next writer of that place once it holds the lock.
"""
import contextlib
import errno
import fcntl
import glob
import json
import os
import shutil
import socket
import sys
import time

from ..errors import UserError
from .fileio import make_folder

LOCK_NAME = ".lock"

# The lock files this process holds (real paths): live_holder must not test-lock them, since
# closing any descriptor of a file drops this process's POSIX lock on it.
_HELD = set()


def _holder_text(info):
    if not isinstance(info, dict):
        return "another process"
    return (f"PID {info.get('pid', '?')} on {info.get('host', '?')} since {info.get('since', '?')}"
            + (f" ({info['command']})" if info.get("command") else ""))


def _read_notes(fd):
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 65536).decode("utf-8", "replace").strip()
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return {"pid": "?", "host": "?", "since": "?"}


@contextlib.contextmanager
def writer_lock(folder, what=None, log=None, lock_name=LOCK_NAME):
    """Hold the writer lock of `folder` (created if needed) for the block. UserError naming the
    holder if another live process holds it. `what` names the folder in messages (an option)."""
    folder = os.fspath(folder)
    created = _first_missing(folder)
    make_folder(folder, what)
    path = os.path.join(folder, lock_name)
    fd = _acquire(path, what or folder)
    held = os.path.realpath(path)
    _HELD.add(held)
    try:
        previous = _read_notes(fd)
        if previous and previous.get("pid") != os.getpid():
            # a job's or a file's lock is named by its file, not by the folder it lies in
            place = folder if lock_name == LOCK_NAME else path
            (log or _note)(f"note: {place}: took over from {_holder_text(previous)}, which is "
                           "no longer running (it was stopped or killed)")
        notes = {"pid": os.getpid(), "host": socket.gethostname(),
                 "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": " ".join(sys.argv[:4])}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(notes) + "\n").encode(), 0)
        except OSError:
            # The notes only say who holds the lock (the fcntl lock is held already): on a full
            # disk the holder is "another process" to others, and the block meets the full disk
            # where it writes its outputs, with the message of that write.
            pass
        try:
            yield path
        finally:
            # Removed while still held: a process that opened it meanwhile finds, once it gets
            # the lock, that the name no longer leads to it, and starts again (_acquire).
            with contextlib.suppress(OSError):
                os.remove(path)
            _remove_if_unused(created, folder)
    finally:
        _HELD.discard(held)
        os.close(fd)                       # closing releases the lock


def _acquire(path, what):
    """An open descriptor of `path` holding its exclusive lock, the file being the one the name
    leads to (not one removed by its last holder meanwhile)."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise UserError(f"{what}: cannot create its lock file {path} ({e.strerror})") from None
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            notes = _read_notes(fd)
            os.close(fd)
            if e.errno not in (errno.EACCES, errno.EAGAIN):
                raise UserError(f"{path}: cannot lock ({e.strerror})") from None
            raise UserError(f"{what}: in use by {_holder_text(notes)}; wait for it to finish or "
                            "stop it (one writer at a time)") from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def live_holder(lock_path):
    """Who holds the lock file `lock_path` (its notes; "?" when it has none) if another live
    process does, else None. Test-locks the file and releases it at once; a lock this process
    holds is not touched (closing a descriptor of it would drop the lock)."""
    if os.path.realpath(lock_path) in _HELD:
        return None
    try:
        fd = os.open(lock_path, os.O_RDWR)
    except OSError:
        return None
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return _read_notes(fd) or "?"
    finally:
        os.close(fd)        # releases it again at once (it was free)
    return None


def refuse_inside_a_writer(path, what):
    """UserError when `path` lies inside a folder that another live process holds the writer
    lock of (a dataset command's or the demo's --work and --out, a training's run folder): a
    standalone command must not write among a running plan's outputs, whose jobs lock their own
    files under other names. Checks the folders above `path`, not `path` itself (the command's
    own writer_lock does that)."""
    folder = os.path.dirname(os.path.abspath(path))
    while True:
        holder = live_holder(os.path.join(folder, LOCK_NAME))
        if holder is not None:
            raise UserError(f"{what} {path}: inside {folder}, which {_holder_text(holder)} is writing; "
                            "wait for it to finish or stop it (one writer at a time)")
        parent = os.path.dirname(folder)
        if parent == folder:
            return
        folder = parent


def _first_missing(folder):
    """The outermost folder of `folder`'s path that does not exist yet (None: it exists)."""
    folder, missing = os.path.abspath(folder), None
    while not os.path.exists(folder):
        missing, folder = folder, os.path.dirname(folder)
    return missing


def _remove_if_unused(created, folder):
    """A command that stopped before writing anything leaves no folder behind: the folders this
    lock created are removed again when they are empty."""
    if created is None:
        return
    try:
        folder = os.path.abspath(folder)
        while True:
            os.rmdir(folder)
            if folder == created:
                break
            folder = os.path.dirname(folder)
    except OSError:
        pass


def _note(text):
    print(text, file=sys.stderr)


def file_lock(path, what=None, log=None):
    """The writer lock of a single output file: `.<name>.lock` beside it."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    return writer_lock(folder, what or path, log, lock_name=f".{os.path.basename(path)}.lock")


def leftovers(path):
    """What a killed writer of `path` may have left: `.tmp-<name>-*` beside a file, and inside a
    folder its `.staging-*` folders and `.tmp-*` files (not below: subfolders have their own)."""
    path = os.fspath(path).rstrip(os.sep)
    folder, name = os.path.dirname(path) or ".", os.path.basename(path)
    found = glob.glob(os.path.join(glob.escape(folder), f".tmp-{glob.escape(name)}-*"))
    if os.path.isdir(path):
        found += glob.glob(os.path.join(glob.escape(path), ".staging-*"))
        found += glob.glob(os.path.join(glob.escape(path), ".tmp-*"))
    return sorted(found)


def remove_leftovers(paths):
    """Delete the leftovers of every output in `paths`; only under the lock of their place."""
    removed = []
    for path in paths:
        for junk in leftovers(path):
            if os.path.isdir(junk) and not os.path.islink(junk):
                shutil.rmtree(junk, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(junk)
            removed.append(junk)
    return removed
