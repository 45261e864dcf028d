"""The package's checkpoint format: a plain dict of tensors and metadata, safe to load.

A checkpoint is what `torch.save` writes for

    {"format": FORMAT, "arch": an --arch of reproduce.model.archs, "bits": K (0 = no hash layer),
     "state_dict": {parameter name: tensor}, "meta": {str: str|int|float|list|dict}}

(parameter names: Caffe's layer names for the Caffe family, torchvision's state-dict keys, its
BatchNorm buffers included, for the torchvision family; reproduce.model.nets.expected_shapes),
and "preprocessing": the image convention the network was trained with ("caffe" or
"torchvision", reproduce.data.preprocessing), written since backbones became an option;
checkpoints without it are of the Caffe convention, the only one before.

so `torch.load(path, weights_only=True)` reads it without unpickling any object. Converted ImageNet
models (`convert_weights`, `weights fetch`) have bits 0 unless the caffemodel carried a hash layer;
DHN training snapshots carry the hash layer and their full configuration in meta["args"].
"""
import errno
import os
import warnings
import shutil

import torch

from ..errors import UserError
from ..methods import make_method
from ..utils.fileio import atomic_output, require_file
from ..utils.messages import first_few
from .archs import ARCH_SPECS
from .nets import ARCHS, HASH_LAYER, MAX_BITS, DHNNet, expected_shapes

FORMAT = "reproduce-dhn-checkpoint/1"


def save_checkpoint(path, state_dict, arch, bits, meta=None, overwrite=False, extra=None):
    """Write a checkpoint atomically (temporary name, then rename).

    `extra` holds further weights_only-safe entries (a solver state, a resume position).
    """
    ckpt = {"format": FORMAT, "arch": arch, "bits": int(bits or 0),
            "preprocessing": ARCH_SPECS[arch].preprocessing,
            "state_dict": {k: v.detach().cpu().contiguous() for k, v in state_dict.items()},
            "meta": dict(meta or {})}
    ckpt.update(extra or {})
    with atomic_output(path, overwrite=overwrite) as tmp:
        try:
            torch.save(ckpt, tmp)
        except RuntimeError as e:
            # torch's zip writer reports a failed write (a full disk) as a RuntimeError
            free = shutil.disk_usage(os.path.dirname(os.path.abspath(tmp))).free
            reason = ("No space left on device" if free < (1 << 20)
                      else (str(e).strip().splitlines() or ["write failed"])[0])
            raise OSError(errno.ENOSPC if free < (1 << 20) else errno.EIO, reason) from None


def load_checkpoint(path, mmap=False):
    """Read a checkpoint with weights_only=True; any problem is a one-line UserError naming the file.
    mmap: map the tensors instead of reading them (for its meta alone: milliseconds)."""
    path = os.fspath(path)
    require_file(path, "checkpoint file")
    try:
        with warnings.catch_warnings():      # torch warns about old pickle protocols: one line only
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:   # torch raises many types on foreign or truncated files (KeyError, ...)
        text = str(e).strip()
        if text.startswith("Weights only load failed"):
            # torch's message goes on to suggest weights_only=False, which would run the file's code
            reason = "it holds Python objects beyond tensors and plain values, which are not loaded"
        else:
            reason = text.splitlines()[0][:300] if text else type(e).__name__
        raise UserError(f"{path}: not a readable checkpoint (truncated or not written by "
                        f"this package): {reason}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        # A plain state dict is what torchvision publishes (and what other ports save): say how
        # to bring it in, as for a .caffemodel
        state_dict = isinstance(ckpt, dict) and ckpt and all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in ckpt.items())
        how = ("it is a plain state dict: convert a torchvision one with `python -m "
               "reproduce.convert_weights FILE --arch tv-alexnet|tv-vgg16|tv-resnet50 --out OUT.pth`"
               if state_dict else
               "convert Caffe models (.caffemodel, .caffemodel.h5) and torchvision state dicts with "
               "`python -m reproduce.convert_weights`")
        raise UserError(f"{path}: not a reproduce checkpoint (no '{FORMAT}' format tag); {how}")
    if ckpt.get("arch") not in ARCHS:
        what = "names no arch" if ckpt.get("arch") is None else f"names an unknown arch {ckpt['arch']!r}"
        raise UserError(f"{path}: the checkpoint {what} (one of {', '.join(ARCHS)}); "
                        "the file is damaged or not written by this package")
    convention = ARCH_SPECS[ckpt["arch"]].preprocessing
    if ckpt.setdefault("preprocessing", convention) != convention:
        raise UserError(f"{path}: the checkpoint says arch {ckpt['arch']!r} with the "
                        f"{ckpt['preprocessing']!r} image convention, but that arch uses {convention!r}; "
                        "the file is damaged or not written by this package")
    bits = ckpt.get("bits")
    if isinstance(bits, bool) or not isinstance(bits, int) or not 0 <= bits <= MAX_BITS:
        raise UserError(f"{path}: the checkpoint's 'bits' entry is {bits!r}, not a number of bits "
                        f"(0 to {MAX_BITS}); the file is damaged or not written by this package")
    state_dict = ckpt.get("state_dict")
    if not isinstance(state_dict, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state_dict.items()):
        raise UserError(f"{path}: the checkpoint's 'state_dict' is not a mapping of names to tensors")
    weight = state_dict.get(f"{HASH_LAYER}.weight")
    if weight is not None and (weight.dim() != 2 or weight.shape[0] != bits):
        raise UserError(f"{path}: {HASH_LAYER}.weight has shape {tuple(weight.shape)}, but the "
                        f"checkpoint's 'bits' entry says {bits}")
    if not isinstance(ckpt.get("meta", {}), dict):
        raise UserError(f"{path}: the checkpoint's 'meta' entry is not a mapping")
    return ckpt


def check_state_dict(state_dict, arch_bits, source, allow_missing_hash=False, arch="caffenet"):
    """Assert every expected key of `arch` is present with its shape and nothing else is;
    UserError otherwise.

    `arch_bits` is the K of the hash layer to expect (0 = none); with allow_missing_hash a state
    dict without a hash layer is accepted (a pretrained model whose fch starts from its filler).
    """
    want = expected_shapes(arch_bits, arch)
    have = set(state_dict)
    missing = sorted(set(want) - have)
    if allow_missing_hash:
        missing = [k for k in missing if not k.startswith(HASH_LAYER + ".")]
    if missing:
        raise UserError(f"{source}: missing parameter(s) {first_few(missing)} (not a {arch} model of "
                        f"this package, or a damaged one)")
    unexpected = sorted(have - set(want))
    if unexpected:
        raise UserError(f"{source}: unexpected parameter(s) {first_few(unexpected)}")
    for k, v in state_dict.items():
        if tuple(v.shape) != want[k]:
            raise UserError(f"{source}: {k} has shape {tuple(v.shape)}, expected {want[k]}")
        if not torch.isfinite(v).all():
            bad = int((~torch.isfinite(v)).sum())
            raise UserError(f"{source}: {k} holds {bad} NaN or infinite value(s); refusing weights "
                            "that would give NaN codes")


def checkpoint_method_name(ckpt):
    """The registry name of the deep baseline a checkpoint was trained as, or None."""
    spec = ckpt.get("meta", {}).get("method")
    return spec.get("name") if isinstance(spec, dict) and isinstance(spec.get("name"), str) else None


def checkpoint_method(ckpt, source):
    """The deep baseline (reproduce.methods) a checkpoint was trained as, or None (DHN, ImageNet)."""
    spec = ckpt.get("meta", {}).get("method")
    if spec is None:
        return None
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) \
            or not isinstance(spec.get("options", {}), dict):
        raise UserError(f"{source}: the checkpoint's meta 'method' entry is not {{name, options}}")
    try:
        return make_method(spec["name"], ckpt["bits"], **spec.get("options", {}))
    except UserError as e:
        raise UserError(f"{source}: {e}") from None


def model_from_checkpoint(ckpt, source, bits=None, arch=None, dropout=0.5, generator=None, method=None):
    """Build a DHNNet from a loaded checkpoint, asserting every key and shape.

    bits=None takes the checkpoint's K. A checkpoint without a hash layer (a converted ImageNet
    model) gets the authors' fch filler for the requested `bits` — or, with `method` (a deep
    baseline of reproduce.methods), that method's head and fillers; a checkpoint trained as a
    method rebuilds it. A checkpoint whose hash layer has another K, or whose arch differs from
    `arch`, is an error.
    """
    if arch is not None and arch != ckpt["arch"]:
        raise UserError(f"{source}: checkpoint is arch {ckpt['arch']!r}, but {arch!r} was asked for")
    have_bits = ckpt["bits"]
    if bits is None:
        bits = have_bits
    if have_bits and bits != have_bits:
        raise UserError(f"{source}: {HASH_LAYER}.weight has shape "
                        f"{(have_bits, ARCH_SPECS[ckpt['arch']].feature_dim)} "
                        f"({have_bits} bits), but {bits} bits were asked for")
    method = checkpoint_method(ckpt, source) or method
    if method is not None:
        return _method_model(ckpt, source, bits, dropout, generator, method, trained=bool(have_bits))
    check_state_dict(ckpt["state_dict"], bits, source, allow_missing_hash=not have_bits, arch=ckpt["arch"])
    model = DHNNet(ckpt["arch"], bits=bits, dropout=dropout)
    model.reset_hash_layer(generator)
    missing, unexpected = model.load_state_dict(ckpt["state_dict"], strict=False)
    assert not unexpected, unexpected
    assert all(k.startswith(HASH_LAYER + ".") for k in missing) and (not missing or not have_bits), missing
    return model


def _method_model(ckpt, source, bits, dropout, generator, method, trained):
    """A DHNNet with a method's head: the features from the checkpoint, the head from it too when
    it was trained as that method (every key and shape checked), else from the head's fillers."""
    model = DHNNet(ckpt["arch"], bits=bits, dropout=dropout, method=method, generator=generator)
    state = ckpt["state_dict"]
    features = {k: v for k, v in state.items() if not k.startswith("head.")}
    check_state_dict(features, 0, source, arch=ckpt["arch"])
    if trained:
        want = {k: tuple(v.shape) for k, v in model.state_dict().items() if k.startswith("head.")}
        have = {k: tuple(v.shape) for k, v in state.items() if k.startswith("head.")}
        if want != have:
            differ = sorted(set(want) ^ set(have)) or [k for k in want if want[k] != have[k]]
            raise UserError(f"{source}: the {method.name} head's parameters differ from the "
                            f"checkpoint's ({', '.join(differ[:3])})")
        bad = [k for k in have if not torch.isfinite(state[k]).all()]
        if bad:
            raise UserError(f"{source}: {bad[0]} holds NaN or infinite values")
        model.load_state_dict(state)
    else:
        missing, unexpected = model.load_state_dict(features, strict=False)
        assert not unexpected and all(k.startswith("head.") for k in missing), (missing, unexpected)
    return model
