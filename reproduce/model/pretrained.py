"""The ImageNet models DHN starts from: the BVLC zoo files, VGG_ILSVRC_16_layers and torchvision's
state dicts, their download and checksum, and their conversion into this package's checkpoints
(`convert`). Commands: `python -m reproduce.weights fetch ARCH` and `python -m
reproduce.convert_weights FILE`.
"""
import contextlib
import hashlib
import http.client
import os
import socket
import time
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass

import torch
import torchvision
from tqdm import tqdm

from ..caffe.caffe_format import read_caffemodel
from ..caffe.caffe_net import caffe_to_state_dict, detect_arch
from ..errors import UserError
from ..utils.fileio import atomic_output, check_output_file, require_file, sha1_file
from ..utils.messages import first_few
from .archs import CAFFE_ARCHS, TORCHVISION_ARCHS
from .checkpoint import FORMAT, check_state_dict, load_checkpoint, save_checkpoint
from .nets import ARCHS, HASH_LAYER
from .torchvision_nets import CLASSIFIER_PREFIX, trunk_shapes

DEFAULT_WEIGHTS_DIR = "weights"
DOWNLOAD_TIMEOUT_S = 30          # seconds without an answer before a download is given up


@dataclass(frozen=True)
class Pretrained:
    """A published file: sha1 (the BVLC zoo readmes list one) or sha256_prefix (torchvision's file
    names carry the first hex digits of their sha256, which torch.hub checks); neither when the
    publisher gives no checksum (VGG_ILSVRC_16_layers)."""
    arch: str
    filename: str
    url: str
    sha1: str | None
    sha256_prefix: str | None = None

    @property
    def checksum(self):
        """What a file must match, as text ('sha1 X', 'sha256 X...'), or None."""
        if self.sha1:
            return f"sha1 {self.sha1}"
        return f"sha256 {self.sha256_prefix}..." if self.sha256_prefix else None

    def matches(self, digests):
        """True when `digests` ({"sha1": hex, "sha256": hex}) match the published checksum (or
        none is published)."""
        if self.sha1:
            return digests["sha1"] == self.sha1
        return not self.sha256_prefix or digests["sha256"].startswith(self.sha256_prefix)


def _torchvision(arch, weights):
    """torchvision's published IMAGENET1K_V1 file of `weights` (a WeightsEnum member): URL and
    file name from torchvision itself, the sha256 prefix from the file name as torch.hub reads it
    (torch.hub.HASH_REGEX, `-<hex>.`)."""
    filename = weights.url.rsplit("/", 1)[1]
    return Pretrained(arch, filename, weights.url, None,
                      torch.hub.HASH_REGEX.search(filename).group(1))


PRETRAINED = {
    # BVLC model zoo (models/*/readme.md); sha1s as listed in shared/reference/official_settings.md.
    "caffenet": Pretrained("caffenet", "bvlc_reference_caffenet.caffemodel",
                           "http://dl.caffe.berkeleyvision.org/bvlc_reference_caffenet.caffemodel",
                           "4c8d77deb20ea792f84eb5e6d0a11ca0a8660a46"),
    "alexnet": Pretrained("alexnet", "bvlc_alexnet.caffemodel",
                          "http://dl.caffe.berkeleyvision.org/bvlc_alexnet.caffemodel",
                          "9116a64c0fbe4459d18f4bb6b56d647b63920377"),
    # The Caffe model zoo's VGG_ILSVRC_16_layers (gist ksimonyan/211839e770f7b538e2d8, its
    # caffemodel_url). The gist publishes no checksum (we found none), so none is checked here;
    # the conversion still checks every layer's shape, and the checkpoint records the file's sha1.
    "vgg16": Pretrained("vgg16", "VGG_ILSVRC_16_layers.caffemodel",
                        "http://www.robots.ox.ac.uk/~vgg/software/very_deep/caffe/"
                        "VGG_ILSVRC_16_layers.caffemodel", None),
    # torchvision's IMAGENET1K_V1 weights (torchvision/models/alexnet.py, vgg.py, resnet.py).
    "tv-alexnet": _torchvision("tv-alexnet", torchvision.models.AlexNet_Weights.IMAGENET1K_V1),
    "tv-vgg16": _torchvision("tv-vgg16", torchvision.models.VGG16_Weights.IMAGENET1K_V1),
    "tv-resnet50": _torchvision("tv-resnet50", torchvision.models.ResNet50_Weights.IMAGENET1K_V1),
}


def checkpoint_path(arch, weights_dir=DEFAULT_WEIGHTS_DIR):
    return os.path.join(weights_dir, f"{arch}.pth")


def _manual_steps(model, weights_dir):
    checksum = f" ({model.checksum})" if model.checksum else ""
    return (f"manual steps: download {model.url} elsewhere and put it at "
            f"{os.path.join(weights_dir, model.filename)}{checksum}, then rerun "
            f"`python -m reproduce.weights fetch {model.arch} --dir {weights_dir}`; or run "
            f"`python -m reproduce.convert_weights FILE --arch {model.arch} --out "
            f"{checkpoint_path(model.arch, weights_dir)}`")


def download(url, dest, sha1=None, overwrite=False, progress=True, expect=None):
    """Stream `url` into `dest` (temporary name, then rename); returns the hex sha1 of the bytes.

    With `sha1` given, or `expect` (a Pretrained whose checksum the bytes must match), a mismatch
    is a UserError and nothing is left behind.
    """
    digest, digest256 = hashlib.sha1(), hashlib.sha256()
    # connect first, so that an unreachable network creates nothing, not even the folder
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, \
            atomic_output(dest, overwrite=overwrite) as tmp:
        total = response.headers.get("Content-Length")
        with open(tmp, "wb") as f, tqdm(total=int(total) if total else None, unit="B", unit_scale=True,
                                         desc=os.path.basename(dest), disable=not progress) as bar:
            for block in iter(lambda: response.read(1 << 20), b""):
                digest.update(block)
                digest256.update(block)
                f.write(block)
                bar.update(len(block))
        if sha1 and digest.hexdigest() != sha1:
            raise UserError(f"{url}: downloaded file has sha1 {digest.hexdigest()}, expected {sha1} "
                            f"(corrupt download or another file; nothing kept at {dest}; --no-verify "
                            "accepts it)")
        if expect is not None and not expect.matches(
                {"sha1": digest.hexdigest(), "sha256": digest256.hexdigest()}):
            raise UserError(f"{url}: downloaded file has sha256 {digest256.hexdigest()}, expected "
                            f"{expect.checksum} (corrupt download or another file; nothing kept at "
                            f"{dest}; --no-verify accepts it)")
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
    caffemodel = os.path.join(weights_dir, model.filename)   # or torchvision's .pth
    url = url or model.url
    downloaded = not os.path.lexists(caffemodel)
    if not downloaded:
        digests = file_digests(require_file(caffemodel, "published model file"))  # a FIFO would hang here
        have = _shown_digest(model, digests)
        if not model.matches(digests) and verify:
            raise UserError(f"{caffemodel}: {have}, but the published file has {model.checksum}; "
                            "remove it (it will be downloaded again), or pass --no-verify to use it")
        state = (" verified" if model.checksum and model.matches(digests)
                 else ", no published checksum" if not model.checksum else ", NOT the published one")
        log(f"using {caffemodel} ({have}{state})")
    else:
        log(f"downloading {url} -> {caffemodel}")
        try:
            have = download(url, caffemodel, sha1=model.sha1 if verify else None,
                            expect=model if verify and model.sha256_prefix else None)
        except urllib.error.HTTPError as e:
            raise UserError(f"{url}: download failed (HTTP {e.code} {e.reason}); "
                            f"{_manual_steps(model, weights_dir)}") from None
        except (urllib.error.URLError, socket.timeout, ConnectionError, ValueError,
                http.client.HTTPException) as e:           # a reply that is not HTTP, a cut body
            reason = getattr(e, "reason", None) or f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"
            raise UserError(f"{url}: network unreachable or address not readable ({reason}); "
                            f"{_manual_steps(model, weights_dir)}") from None
        if model.sha1 and have != model.sha1:
            log(f"warning: {caffemodel} has sha1 {have}, not the published {model.sha1} (--no-verify)")
        elif model.sha256_prefix and not verify:
            digests = file_digests(caffemodel)
            if not model.matches(digests):
                log(f"warning: {caffemodel} has sha256 {digests['sha256']}, not the published "
                    f"{model.checksum} (--no-verify)")
        elif not model.checksum:
            log(f"note: {model.url} publishes no checksum; {caffemodel} has sha1 {have} (the "
                "conversion checks every layer's shape)")
    try:
        convert(caffemodel, out, arch=arch, overwrite=force, log=log)
    except BaseException:
        if downloaded:       # a file this call downloaded and that does not convert is not kept
            with contextlib.suppress(OSError):
                os.remove(caffemodel)
        raise
    return out


def file_digests(path, chunk=1 << 22):
    """{"sha1": hex, "sha256": hex} of a file's bytes in one pass (4 MiB chunks)."""
    h1, h256 = hashlib.sha1(), hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(chunk), b""):
                h1.update(block)
                h256.update(block)
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror})") from None
    return {"sha1": h1.hexdigest(), "sha256": h256.hexdigest()}


def _shown_digest(model, digests):
    """The digest of the kind the publisher gives ('sha256 <hex>' for torchvision, else sha1)."""
    return f"sha256 {digests['sha256']}" if model.sha256_prefix else f"sha1 {digests['sha1']}"


def ensure_pretrained(arch, weights_dir=DEFAULT_WEIGHTS_DIR, log=print):
    """Path of the converted ImageNet model of `arch` (weights_dir/<arch>.pth), fetched if absent."""
    if arch not in PRETRAINED:
        raise UserError(f"unknown arch {arch!r} (one of {', '.join(ARCHS)})")
    out = checkpoint_path(arch, weights_dir)
    return out if os.path.isfile(out) else fetch(arch, weights_dir, log=log)


# The first bytes of torch.save's files: the zip container (torch >= 1.6), or the legacy format's
# pickled magic number 0x1950a86a20f9469cfc6c (torch/serialization.py, MAGIC_NUMBER, protocol 2).
TORCH_ZIP_MAGIC = b"PK\x03\x04"
TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"


def torch_file_kind(path):
    """'zip' or 'legacy' for a file torch.save wrote, None for anything else (a .caffemodel)."""
    with open(require_file(path, "model file"), "rb") as f:
        head = f.read(len(TORCH_LEGACY_MAGIC))
    if head.startswith(TORCH_ZIP_MAGIC):
        return "zip"
    return "legacy" if head == TORCH_LEGACY_MAGIC else None


def read_torchvision_state_dict(path, kind):
    """torch.load(weights_only=True) of a state dict file: {str: Tensor}; UserError naming the
    file otherwise (a reproduce checkpoint, a pickled object, a damaged file)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # zip files are mapped, not read, as the .caffemodel reader maps its file
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=kind == "zip")
    except Exception as e:   # torch raises many types on foreign or truncated files
        text = str(e).strip()
        reason = ("it holds Python objects beyond tensors" if text.startswith("Weights only load failed")
                  else text.splitlines()[0][:300] if text else type(e).__name__)
        raise UserError(f"{path}: not a readable PyTorch state dict ({reason})") from None
    if isinstance(state, dict) and state.get("format") == FORMAT:
        raise UserError(f"{path}: already a reproduce checkpoint, nothing to convert")
    if not isinstance(state, dict) or not state or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise UserError(f"{path}: not a state dict (a mapping of parameter names to tensors)")
    return state


def detect_torchvision_arch(state):
    """The torchvision arch whose every trunk key the state dict holds (None if none or several)."""
    found = [a for a in TORCHVISION_ARCHS
             if all(k in state and tuple(state[k].shape) == v for k, v in trunk_shapes(a).items())]
    return found[0] if len(found) == 1 else None


def torchvision_to_state_dict(state, arch, source):
    """A torchvision state dict -> ({key: float32 tensor}, notes): every key and shape of the
    arch's trunk checked (torchvision's keys); only the ImageNet classifier (classifier.6.* / fc.*)
    is dropped, with a note; a BatchNorm without `num_batches_tracked` (files saved before torch
    0.4.1) gets 0, as BatchNorm's own loading does; any other missing or extra key is refused."""
    want, prefix = trunk_shapes(arch), CLASSIFIER_PREFIX[arch]
    notes, out = [], {}
    missing = [k for k in want if k not in state]
    counters = [k for k in missing if k.endswith(".num_batches_tracked")]
    missing = [k for k in missing if k not in counters]
    if missing:
        raise UserError(f"{source}: not a {arch} state dict: missing key(s) {first_few(missing)} "
                        f"(of {len(want)})")
    extra = sorted(k for k in state if k not in want and not k.startswith(prefix))
    if extra:
        raise UserError(f"{source}: unexpected key(s) for {arch}: {first_few(extra)} "
                        f"(only the ImageNet classifier {prefix}* is dropped)")
    for key, shape in want.items():
        if key in counters:
            out[key] = torch.tensor(0, dtype=torch.long)
            continue
        value = state[key]
        if tuple(value.shape) != shape:
            raise UserError(f"{source}: {key} has shape {tuple(value.shape)}, {arch} expects {shape}")
        if key.endswith(".num_batches_tracked"):
            out[key] = value.to(torch.long)
        elif not value.is_floating_point():
            raise UserError(f"{source}: {key} holds {value.dtype}, not floating-point weights")
        else:
            out[key] = value.to(torch.float32)
    if counters:
        notes.append(f"{len(counters)} BatchNorm num_batches_tracked counter(s) absent, set to 0 "
                     "(unused: BatchNorm is frozen)")
    dropped = sorted(k for k in state if k.startswith(prefix))
    if dropped:
        shapes = ", ".join("x".join(map(str, state[k].shape)) for k in dropped)
        notes.append(f"dropped {', '.join(dropped)} ({shapes}): ImageNet classifier")
    check_state_dict(out, 0, source, arch=arch)
    return out, notes


def convert(src, out, arch=None, overwrite=False, log=print):
    """Convert `src` into the checkpoint `out`; returns (arch, bits, notes).

    A .caffemodel (V1/V2) or .caffemodel.h5 for the Caffe family: arch=None is detected from the
    file's layers (VGG's conv1_1; CaffeNet pools before LRN, AlexNet after), else 'caffenet', the
    network the authors fine-tuned. A torchvision state dict (.pth, torch.save) for the
    torchvision family: arch=None is detected from its keys and shapes. A given arch that
    contradicts the file is an error (CaffeNet and AlexNet have the same weight shapes).
    """
    src, out = os.fspath(src), os.fspath(out)
    check_output_file(out, overwrite, hint="use --force",   # before the (long) conversion, not after
                      inputs={"source": src})
    start = time.perf_counter()
    kind = torch_file_kind(src)
    if kind and arch in CAFFE_ARCHS:
        raise UserError(f"{src}: a PyTorch state dict, not a .caffemodel: use --arch "
                        f"{' or '.join(TORCHVISION_ARCHS)}, not {arch}")
    if not kind and arch in TORCHVISION_ARCHS:
        raise UserError(f"{src}: not a PyTorch state dict (torch.save file) as --arch {arch} reads: "
                        f"a Caffe model goes with --arch {' or '.join(CAFFE_ARCHS)}")
    if kind:
        state = read_torchvision_state_dict(src, kind)
        found = detect_torchvision_arch(state)
        if arch and found and arch != found:
            raise UserError(f"{src}: the file's keys and shapes are {found}'s, but --arch {arch} was given")
        if not arch and not found:
            raise UserError(f"{src}: a PyTorch state dict of none of {', '.join(TORCHVISION_ARCHS)} "
                            "(keys or shapes differ); pass --arch to see which")
        arch_from = "the file's keys" if found else "--arch"
        arch = arch or found
        state_dict, notes = torchvision_to_state_dict(state, arch, src)
    else:
        blobs = read_caffemodel(src)
        found = detect_arch(blobs)
        if arch and found and arch != found:
            why = (f"layer order is {found}'s (pool1 {'before' if found == 'caffenet' else 'after'} norm1)"
                   if found in ("caffenet", "alexnet") and arch in ("caffenet", "alexnet")
                   else f"layers are {found}'s")
            raise UserError(f"{src}: the file's {why}, but --arch {arch} was given")
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
