"""The package's checkpoint format: a plain dict of tensors and metadata, safe to load.

A checkpoint is what `torch.save` writes for

    {"format": FORMAT, "arch": "caffenet"|"alexnet", "bits": K (0 = no hash layer),
     "state_dict": {Caffe-layer-named parameter: tensor}, "meta": {str: str|int|float|list|dict}}

so `torch.load(path, weights_only=True)` reads it without unpickling any object. Converted ImageNet
models (`convert_weights`, `weights fetch`) have bits 0 unless the caffemodel carried a hash layer;
DHN training snapshots carry the hash layer and their full configuration in meta["args"].
"""
import os
import torch

from .errors import UserError
from .fileio import atomic_output
from .nets import ARCHS, HASH_LAYER, DHNNet, expected_shapes

FORMAT = "reproduce-dhn-checkpoint/1"


def save_checkpoint(path, state_dict, arch, bits, meta=None, overwrite=False, extra=None):
    """Write a checkpoint atomically (temporary name, then rename).

    `extra` holds further weights_only-safe entries (a solver state, a resume position).
    """
    ckpt = {"format": FORMAT, "arch": arch, "bits": int(bits or 0),
            "state_dict": {k: v.detach().cpu().contiguous() for k, v in state_dict.items()},
            "meta": dict(meta or {})}
    ckpt.update(extra or {})
    with atomic_output(path, overwrite=overwrite) as tmp:
        torch.save(ckpt, tmp)


def load_checkpoint(path):
    """Read a checkpoint with weights_only=True; any problem is a one-line UserError naming the file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:   # torch raises many types on foreign or truncated files (KeyError, ...)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path}: not a readable checkpoint (truncated or not written by "
                        f"this package): {first}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UserError(f"{path}: not a reproduce checkpoint (no '{FORMAT}' format tag); "
                        "convert Caffe models with `python -m reproduce.convert_weights`")
    if ckpt.get("arch") not in ARCHS:
        raise UserError(f"{path}: unknown arch {ckpt.get('arch')!r}")
    return ckpt


def check_state_dict(state_dict, arch_bits, source, allow_missing_hash=False):
    """Assert every expected key is present with its shape and nothing else is; UserError otherwise.

    `arch_bits` is the K of the hash layer to expect (0 = none); with allow_missing_hash a state
    dict without a hash layer is accepted (a pretrained model whose fch starts from its filler).
    """
    want = expected_shapes(arch_bits)
    have = set(state_dict)
    missing = sorted(set(want) - have)
    if allow_missing_hash:
        missing = [k for k in missing if not k.startswith(HASH_LAYER + ".")]
    if missing:
        raise UserError(f"{source}: missing parameter(s) {', '.join(missing)}")
    unexpected = sorted(have - set(want))
    if unexpected:
        raise UserError(f"{source}: unexpected parameter(s) {', '.join(unexpected)}")
    for k, v in state_dict.items():
        if tuple(v.shape) != want[k]:
            raise UserError(f"{source}: {k} has shape {tuple(v.shape)}, expected {want[k]}")


def model_from_checkpoint(ckpt, source, bits=None, arch=None, dropout=0.5, generator=None):
    """Build a DHNNet from a loaded checkpoint, asserting every key and shape.

    bits=None takes the checkpoint's K. A checkpoint without a hash layer (a converted ImageNet
    model) gets the authors' fch filler for the requested `bits`; a checkpoint whose hash layer has
    another K, or whose arch differs from `arch`, is an error.
    """
    if arch is not None and arch != ckpt["arch"]:
        raise UserError(f"{source}: checkpoint is arch {ckpt['arch']!r}, but {arch!r} was asked for")
    have_bits = ckpt["bits"]
    if bits is None:
        bits = have_bits
    if have_bits and bits != have_bits:
        raise UserError(f"{source}: {HASH_LAYER}.weight has shape {(have_bits, 4096)} "
                        f"({have_bits} bits), but {bits} bits were asked for")
    check_state_dict(ckpt["state_dict"], bits, source, allow_missing_hash=not have_bits)
    model = DHNNet(ckpt["arch"], bits=bits, dropout=dropout)
    model.reset_hash_layer(generator)
    missing, unexpected = model.load_state_dict(ckpt["state_dict"], strict=False)
    assert not unexpected, unexpected
    assert all(k.startswith(HASH_LAYER + ".") for k in missing) and (not missing or not have_bits), missing
    return model
