"""Small file helpers every writer uses: atomic outputs and content digests.

All outputs are written under a temporary name in the destination folder and renamed into place
only when complete, so an interrupted or failed command leaves nothing partial behind, and an
existing file a user had is never replaced unless the caller says so.
"""
import contextlib
import hashlib
import os
import tempfile

from .errors import UserError

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_output(path, overwrite=False):
    """Yield a temporary path beside `path`; on success rename it onto `path`, on failure remove it.

    With overwrite=False an existing `path` is an error raised before anything is written.
    """
    path = os.fspath(path)
    if os.path.exists(path) and not overwrite:
        raise UserError(f"{path}: already exists; refusing to overwrite it (remove it or choose another output)")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-" + os.path.basename(path) + "-", dir=folder)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)   # mkstemp makes 0600; outputs get the usual permissions
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def write_text_atomic(path, text, overwrite=True):
    """Write a text file atomically (temporary name, then rename)."""
    with atomic_output(path, overwrite=overwrite) as tmp:
        with open(tmp, "w") as f:
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
