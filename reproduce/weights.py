"""The published ImageNet models DHN starts from, and their download.

    python -m reproduce.weights fetch caffenet [--dir weights] [--no-verify]

downloads the BVLC model zoo caffemodel, checks its sha1 and converts it into weights/<arch>.pth
(reproduce.convert_weights). A caffemodel already in the folder with the right sha1 is not
downloaded again. Without network it prints the manual steps.
"""
import hashlib
import os
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass

from tqdm import tqdm

from .convert_weights import convert
from .errors import ArgumentParser, UserError, run_cli
from .fileio import atomic_output, sha1_file
from .nets import ARCHS

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
    if os.path.exists(out) and not force:
        log(f"{out} already exists (use --force to convert again)")
        return out
    caffemodel = os.path.join(weights_dir, model.filename)
    url = url or model.url
    if os.path.exists(caffemodel):
        have = sha1_file(caffemodel)
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
        except (urllib.error.URLError, socket.timeout, ConnectionError, ValueError) as e:
            reason = getattr(e, "reason", None) or e
            raise UserError(f"{url}: network unreachable or address not readable ({reason}); "
                            f"{_manual_steps(model, weights_dir)}") from None
        if have != model.sha1:
            log(f"warning: {caffemodel} has sha1 {have}, not the published {model.sha1} (--no-verify)")
    convert(caffemodel, out, arch=arch, overwrite=force, log=log)
    return out


def ensure_pretrained(arch, weights_dir=DEFAULT_WEIGHTS_DIR, log=print):
    """Path of the converted ImageNet model of `arch` (weights_dir/<arch>.pth), fetched if absent."""
    if arch not in PRETRAINED:
        raise UserError(f"unknown arch {arch!r} (one of {', '.join(ARCHS)})")
    out = checkpoint_path(arch, weights_dir)
    return out if os.path.isfile(out) else fetch(arch, weights_dir, log=log)


def get_args_parser():
    p = ArgumentParser(prog="python -m reproduce.weights", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fetch", help="download, verify and convert a published model")
    f.add_argument("arch", choices=ARCHS, help="caffenet = bvlc_reference_caffenet (what the authors "
                   "fine-tuned), alexnet = bvlc_alexnet")
    f.add_argument("--dir", default=DEFAULT_WEIGHTS_DIR, help="folder for the caffemodel and <arch>.pth "
                   f"(default: {DEFAULT_WEIGHTS_DIR})")
    f.add_argument("--no-verify", action="store_true", help="accept a caffemodel whose sha1 differs from "
                   "the published one (default: refuse)")
    f.add_argument("--url", default=None, help="download from this address instead (a mirror, or file://); "
                   "default: the BVLC address in PRETRAINED")
    f.add_argument("--force", action="store_true", help="convert again, replacing <arch>.pth (default: "
                   "keep an existing one)")
    return p


def main(argv=None):
    args = get_args_parser().parse_args(argv)
    if args.command == "fetch":
        print(fetch(args.arch, args.dir, verify=not args.no_verify, url=args.url, force=args.force))


if __name__ == "__main__":
    run_cli(main)
