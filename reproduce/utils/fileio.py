"""Small file helpers every writer uses: atomic outputs and content digests.

All outputs are written under a temporary name in the destination folder and renamed into place
only when complete, so an interrupted or failed command leaves nothing partial behind, and an
existing file a user had is never replaced unless the caller says so.
"""
import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile

from ..errors import UserError
from .signals import check_signal, deferred_signals

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_output(path, overwrite=False):
    """Yield a temporary path beside `path`; on success rename it onto `path`, on failure remove it.

    With overwrite=False an existing `path` is an error raised before anything is written.
    """
    path = os.fspath(path)
    check_output_file(path, overwrite)
    folder = os.path.dirname(os.path.abspath(path))
    created = missing_folders(folder)
    tmp = None
    try:
        # A signal between the temporary file's creation and this block would leave it behind:
        # held back until `tmp` names it (then raised inside the block, which removes it).
        with deferred_signals():
            tmp = make_temporary(folder, ".tmp-" + os.path.basename(path) + "-", path)
        yield tmp
        check_signal()
        os.replace(tmp, path)
    except OSError as e:
        _discard(tmp, created)
        raise UserError(f"{path}: cannot write ({e.strerror or e}); nothing was changed") from None
    except BaseException:
        _discard(tmp, created)
        raise


def _discard(tmp, created):
    """Remove a failed output's temporary file and the folders made for it (`created`, deepest
    first): "nothing was changed" holds for the folders too. A folder something else wrote into
    meanwhile stays."""
    if tmp is not None:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
    remove_created(created)


def remove_created(created):
    """rmdir the folders of missing_folders(), deepest first, stopping at one that is not empty."""
    for folder in created:
        try:
            os.rmdir(folder)
        except OSError:
            break


def missing_folders(folder):
    """The folders of `folder`'s path that do not exist yet, deepest first (what make_folder
    creates, and what a failed command removes again)."""
    missing, folder = [], os.path.abspath(os.fspath(folder))
    while not os.path.lexists(folder):
        missing.append(folder)
        folder = os.path.dirname(folder)
    return missing


def check_output_file(path, overwrite=False, hint="remove it or choose another output", inputs=None):
    """UserError unless `path` can be written as a new file (or, with overwrite, replace one):
    not a folder, not an existing file unless overwrite, its folder creatable and writable, and
    not one of the command's `inputs` ({option: path}; --force or not: it would be read, then
    replaced by the output)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise UserError(f"{path}: is a folder; give a file name for the output")
    if os.path.basename(path) in ("", ".", ".."):
        # `d/x.h5/` names a folder: the rename onto it could only fail, after d/ was created
        raise UserError(f"{path}: names a folder (it ends in '/', '.' or '..'); give a file name "
                        "for the output")
    for option, source in (inputs or {}).items():
        if source and os.path.exists(path) and os.path.exists(source) and os.path.samefile(path, source):
            raise UserError(f"{path}: is the {option} file, an input of this command; give another output "
                            "(it is never replaced, --force or not)")
    _refuse_replacing_special(path)
    if os.path.exists(path) and not overwrite:
        raise UserError(f"{path}: already exists; refusing to overwrite it ({hint})")
    check_output_folder(os.path.dirname(os.path.abspath(path)), path)


def require_file(path, what="file"):
    """UserError unless `path` is a regular file (or a link to one) that can be read as `what`:
    says which of missing, a folder, a dangling link, or a device / FIFO / socket it is."""
    if not os.path.lexists(path):
        raise UserError(f"{path}: no such {what}")
    if os.path.isdir(path):
        raise UserError(f"{path}: is a folder, not a {what}")
    if not os.path.exists(path):
        raise UserError(f"{path}: is a dangling symbolic link, not a {what}")
    if not os.path.isfile(path):
        raise UserError(f"{path}: is not a regular file (a device, FIFO or socket), not a {what}")
    return path


def refuse_special(path, what="file"):
    """UserError if `path` exists but is a folder, a device, a FIFO or a socket (reading one hangs
    or never ends: /dev/zero); a missing path is left to the caller's own message."""
    if os.path.lexists(path):
        require_file(path, what)
    return path


def _refuse_replacing_special(path):
    """A device, FIFO or socket is never replaced by an output (a rename onto /dev/null as root
    would remove the device node); a symbolic link to a regular file is replaced as a file."""
    if os.path.lexists(path) and not os.path.isdir(path) and not os.path.isfile(path):
        kind = "a dangling symbolic link" if os.path.islink(path) and not os.path.exists(path) \
            else "not a regular file (a device, FIFO or socket)"
        raise UserError(f"{path}: is {kind}; refusing to replace it, choose another output")


def require_free_space(path, need):
    """UserError unless the disk that `path` will be written on has `need` bytes free. For HDF5
    outputs, checked before any work: HDF5 does not survive a disk that fills up under it (h5py
    reports the write error, then may crash on closing the file)."""
    folder = os.path.dirname(os.path.abspath(os.fspath(path)))
    while not os.path.isdir(folder):                  # the nearest folder that exists
        folder = os.path.dirname(folder)
    free = shutil.disk_usage(folder).free
    if free < need:
        raise UserError(f"{path}: needs about {need / 2**20:.1f} MiB, but its disk has "
                        f"{free / 2**20:.1f} MiB free; nothing was written")


def check_output_folder(folder, what=None):
    """UserError unless `folder` is, or can be created as, a writable folder: checked before any
    work, so a bad --out costs nothing and leaves nothing behind."""
    folder = os.path.abspath(os.fspath(folder))
    probe = folder
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise UserError(f"{what or folder}: cannot be a folder: {probe} is a file")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"{what or folder}: {probe} is not writable")


def make_folder(folder, what=None):
    """os.makedirs(folder, exist_ok=True) with a one-line UserError naming the folder."""
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise UserError(f"{what or folder}: cannot create the folder {folder} "
                        f"({e.strerror or e}; a part of the path is a file, or it is read-only)") from None


def folder_name(name):
    """A method or variant name as a file or folder name: `CNNH*` -> `CNNH-star`; any other
    character but letters, digits and `._+-` -> `_`."""
    return re.sub(r"[^A-Za-z0-9._+-]", "_", str(name).replace("*", "-star"))


def make_temporary(folder, prefix, what):
    """An empty temporary file in `folder` (created if needed), with the usual permissions."""
    make_folder(folder, what)
    try:
        fd, tmp = tempfile.mkstemp(prefix=prefix, dir=folder)
    except OSError as e:
        raise UserError(f"{what}: cannot write into {folder} ({e.strerror or e})") from None
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)   # mkstemp makes 0600; outputs get the usual permissions
    return tmp


@contextlib.contextmanager
def staged_outputs(out_dir, remove=()):
    """Yield a staging folder inside `out_dir`: the files written under it (subfolders included)
    replace their counterparts in out_dir together when the block succeeds, and the names in
    `remove` (stale outputs of an earlier run, files or folders) are deleted at that moment. On any failure — an
    error found late, a full disk, Ctrl-C, SIGTERM — the staging folder is deleted and out_dir is
    left exactly as it was (a folder this call created is removed again)."""
    out_dir = os.fspath(out_dir)
    created = missing_folders(out_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise UserError(f"{out_dir}: is a file, not a folder for the outputs")
    make_folder(out_dir)
    stage, committed = None, False
    try:
        # held back until `stage` names the folder (as in atomic_output): none is left behind
        with deferred_signals():
            try:
                stage = tempfile.mkdtemp(prefix=".staging-", dir=out_dir)
            except OSError as e:
                raise UserError(f"{out_dir}: cannot write into it ({e.strerror or e})") from None
        yield stage
        check_signal()
        _commit(stage, out_dir, remove)
        committed = True
    except OSError as e:
        raise UserError(f"{out_dir}: cannot write the outputs ({e.strerror or e}); nothing was "
                        "changed") from None
    finally:
        if stage is not None:
            shutil.rmtree(stage, ignore_errors=True)
        if not committed:                 # the folders this call created go again
            remove_created(created)


def _commit(stage, out_dir, remove):
    """Move every staged file into place (renames on one filesystem: they cannot run out of
    space), with Ctrl-C and SIGTERM held back until the set is complete."""
    moves = []
    for root, _, names in os.walk(stage):
        for name in names:
            rel = os.path.relpath(os.path.join(root, name), stage)
            moves.append((os.path.join(stage, rel), os.path.join(out_dir, rel)))
    for _, target in moves:
        _refuse_replacing_special(target)
    with deferred_signals():
        for name in remove:             # stale outputs (files or folders) go first
            stale = os.path.join(out_dir, name)
            if os.path.isdir(stale) and not os.path.islink(stale):
                shutil.rmtree(stale)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(stale)
        for _, target in moves:
            os.makedirs(os.path.dirname(target), exist_ok=True)
        for source, target in moves:
            os.replace(source, target)


def read_json(path, what):
    """The JSON document in `path`; every way it can be unreadable (missing, not UTF-8, invalid,
    an integer of > 4,300 digits, absurd nesting) is a UserError naming the file and `what`."""
    refuse_special(path, what)
    try:
        with open(path, encoding="utf-8") as f:     # JSON is UTF-8 (RFC 8259), whatever the locale
            return json.load(f)
    except OSError as e:
        raise UserError(f"{path}: cannot read the {what} ({e.strerror or e})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        where = f"line {e.lineno}: {e.msg}" if isinstance(e, json.JSONDecodeError) else "not UTF-8 text"
        raise UserError(f"{path}: not a valid {what} ({where})") from None
    except (ValueError, RecursionError) as e:
        raise UserError(f"{path}: not a valid {what} ({type(e).__name__}: "
                        f"{' '.join(str(e).split())[:200]})") from None


def write_text_atomic(path, text, overwrite=True):
    """Write a text file atomically (temporary name, then rename)."""
    with atomic_output(path, overwrite=overwrite) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:   # not the locale's encoding (LC_ALL=C: ASCII)
            f.write(text)


def sha1_file(path, chunk=1 << 22):
    """Hex sha1 of a file's bytes, read in 4 MiB chunks (memory flat in the file size)."""
    h = hashlib.sha1()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(chunk), b""):
                h.update(block)
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror})") from None
    return h.hexdigest()
