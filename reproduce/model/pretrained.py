"""The ImageNet models DHN starts from: the BVLC zoo files, their download and sha1 check, and
their conversion into this package's checkpoints (`convert`). Commands: `python -m
reproduce.weights fetch ARCH` and `python -m reproduce.convert_weights FILE`.
"""
import contextlib
import hashlib
import http.client
import os
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from tqdm import tqdm

from ..caffe.caffe_format import read_caffemodel
from ..caffe.caffe_net import caffe_to_state_dict, detect_arch
from ..errors import UserError
from ..utils.fileio import atomic_output, check_output_file, require_file, sha1_file
from .checkpoint import load_checkpoint, save_checkpoint
from .nets import ARCHS, HASH_LAYER

DEFAULT_WEIGHTS_DIR = "weights"
DOWNLOAD_TIMEOUT_S = 30          # seconds without an answer before a download is given up


@dataclass(frozen=True)
class Pretrained:
    arch: str
    filename: str
    url: str
    sha1: str


# BVLC model zoo (models/*/readme.md); sha1s as listed in shared/reference/official_settings.md.
PRETRAINED = {
    "caffenet": Pretrained("caffenet", "bvlc_reference_caffenet.caffemodel",
                           "http://dl.caffe.berkeleyvision.org/bvlc_reference_caffenet.caffemodel",
                           "4c8d77deb20ea792f84eb5e6d0a11ca0a8660a46"),
    "alexnet": Pretrained("alexnet", "bvlc_alexnet.caffemodel",
                          "http://dl.caffe.berkeleyvision.org/bvlc_alexnet.caffemodel",
                          "9116a64c0fbe4459d18f4bb6b56d647b63920377"),
}


def checkpoint_path(arch, weights_dir=DEFAULT_WEIGHTS_DIR):
    return os.path.join(weights_dir, f"{arch}.pth")


def _manual_steps(model, weights_dir):
    return (f"manual steps: download {model.url} elsewhere and put it at "
            f"{os.path.join(weights_dir, model.filename)} (sha1 {model.sha1}), then rerun "
            f"`python -m reproduce.weights fetch {model.arch} --dir {weights_dir}`; or run "
            f"`python -m reproduce.convert_weights FILE --arch {model.arch} --out "
            f"{checkpoint_path(model.arch, weights_dir)}`")


def download(url, dest, sha1=None, overwrite=False, progress=True):
    """Stream `url` into `dest` (temporary name, then rename); returns the hex sha1 of the bytes.

    With `sha1` given, a mismatch is a UserError and nothing is left behind.
    """
    digest = hashlib.sha1()
    # connect first, so that an unreachable network creates nothing, not even the folder
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, \
            atomic_output(dest, overwrite=overwrite) as tmp:
        total = response.headers.get("Content-Length")
        with open(tmp, "wb") as f, tqdm(total=int(total) if total else None, unit="B", unit_scale=True,
                                         desc=os.path.basename(dest), disable=not progress) as bar:
            for block in iter(lambda: response.read(1 << 20), b""):
                digest.update(block)
                f.write(block)
                bar.update(len(block))
        if sha1 and digest.hexdigest() != sha1:
            raise UserError(f"{url}: downloaded file has sha1 {digest.hexdigest()}, expected {sha1} "
                            f"(corrupt download or another file; nothing kept at {dest}; --no-verify "
                            "accepts it)")
    return digest.hexdigest()


def fetch(arch, weights_dir=DEFAULT_WEIGHTS_DIR, verify=True, url=None, force=False, log=print):
    """Download (unless present) and convert the published model of `arch`; returns the .pth path."""
    model = PRETRAINED[arch]
    out = checkpoint_path(arch, weights_dir)
    if os.path.lexists(out) and not force:
        load_checkpoint(out)           # an empty file or a folder there is named, not reported as done
        log(f"{out} already exists (use --force to convert again)")
        return out
    check_output_file(out, overwrite=force)          # before a download of 233 MB
    caffemodel = os.path.join(weights_dir, model.filename)
    url = url or model.url
    downloaded = not os.path.lexists(caffemodel)
    if not downloaded:
        have = sha1_file(require_file(caffemodel, "caffemodel"))   # a FIFO or device would hang here
        if have != model.sha1 and verify:
            raise UserError(f"{caffemodel}: sha1 {have}, but the published file has {model.sha1}; "
                            "remove it (it will be downloaded again), or pass --no-verify to use it")
        log(f"using {caffemodel} (sha1 {have}{' verified' if have == model.sha1 else ', NOT the published one'})")
    else:
        log(f"downloading {url} -> {caffemodel}")
        try:
            have = download(url, caffemodel, sha1=model.sha1 if verify else None)
        except urllib.error.HTTPError as e:
            raise UserError(f"{url}: download failed (HTTP {e.code} {e.reason}); "
                            f"{_manual_steps(model, weights_dir)}") from None
        except (urllib.error.URLError, socket.timeout, ConnectionError, ValueError,
                http.client.HTTPException) as e:           # a reply that is not HTTP, a cut body
            reason = getattr(e, "reason", None) or f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"
            raise UserError(f"{url}: network unreachable or address not readable ({reason}); "
                            f"{_manual_steps(model, weights_dir)}") from None
        if have != model.sha1:
            log(f"warning: {caffemodel} has sha1 {have}, not the published {model.sha1} (--no-verify)")
    try:
        convert(caffemodel, out, arch=arch, overwrite=force, log=log)
    except BaseException:
        if downloaded:       # a file this call downloaded and that does not convert is not kept
            with contextlib.suppress(OSError):
                os.remove(caffemodel)
        raise
    return out


def ensure_pretrained(arch, weights_dir=DEFAULT_WEIGHTS_DIR, log=print):
    """Path of the converted ImageNet model of `arch` (weights_dir/<arch>.pth), fetched if absent."""
    if arch not in PRETRAINED:
        raise UserError(f"unknown arch {arch!r} (one of {', '.join(ARCHS)})")
    out = checkpoint_path(arch, weights_dir)
    return out if os.path.isfile(out) else fetch(arch, weights_dir, log=log)


def convert(src, out, arch=None, overwrite=False, log=print):
    """Convert `src` into the checkpoint `out`; returns (arch, bits, notes).

    arch=None: detected from the file's layer order (CaffeNet pools before LRN, AlexNet after),
    else 'caffenet', the network the authors fine-tuned. A given arch that contradicts the file's
    layer order is an error, since both nets have the same weight shapes.
    """
    src, out = os.fspath(src), os.fspath(out)
    check_output_file(out, overwrite, hint="use --force")   # before the (long) conversion, not after
    start = time.perf_counter()
    blobs = read_caffemodel(src)
    found = detect_arch(blobs)
    if arch and found and arch != found:
        raise UserError(f"{src}: the file's layer order is {found}'s (pool1 "
                        f"{'before' if found == 'caffenet' else 'after'} norm1), but --arch {arch} was given")
    arch_from = "the file's layer order" if found else "--arch" if arch else "the default (caffenet)"
    arch = arch or found or "caffenet"
    state_dict, notes = caffe_to_state_dict(blobs, arch, src)
    bits = int(state_dict[f"{HASH_LAYER}.weight"].shape[0]) if f"{HASH_LAYER}.weight" in state_dict else 0
    meta = {"source": os.path.basename(src), "source_sha1": sha1_file(src), "notes": notes,
            "arch_from": arch_from}
    save_checkpoint(out, state_dict, arch, bits, meta=meta, overwrite=overwrite)
    log(f"converted {src} ({arch}, from {arch_from}; {bits or 'no'} hash bits) -> {out} "
        f"in {time.perf_counter() - start:.1f} s")
    for note in notes:
        log(f"  note: {note}")
    return arch, bits, notes
