"""Convert a Caffe model (.caffemodel V1/V2/mixed, or .caffemodel.h5) into this package's checkpoint.

    python -m reproduce.convert_weights bvlc_reference_caffenet.caffemodel --arch caffenet \\
        --out weights/caffenet.pth

conv1..fc7 are checked against the arch's shapes and kept; fc8 (the ImageNet classifier) is dropped
with a note; a hash layer (`hash_layer`, or `fch` as the authors' dhn-caffe names it) is imported,
so a model fine-tuned with the authors' Caffe code can be evaluated here as is. The checkpoint
records the source file's name and sha1 and the notes (reproduce.checkpoint).
"""
import os
import time

from .caffe_format import read_caffemodel
from .caffe_net import caffe_to_state_dict, detect_arch
from .checkpoint import save_checkpoint
from .errors import ArgumentParser, UserError, run_cli
from .fileio import sha1_file
from .nets import ARCHS, HASH_LAYER


def convert(src, out, arch=None, overwrite=False, log=print):
    """Convert `src` into the checkpoint `out`; returns (arch, bits, notes).

    arch=None: detected from the file's layer order (CaffeNet pools before LRN, AlexNet after),
    else 'caffenet', the network the authors fine-tuned. A given arch that contradicts the file's
    layer order is an error, since both nets have the same weight shapes.
    """
    src, out = os.fspath(src), os.fspath(out)
    if os.path.exists(out) and not overwrite:   # refuse before the (long) conversion, not after
        raise UserError(f"{out}: already exists; refusing to overwrite it (use --force)")
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


def get_args_parser():
    p = ArgumentParser(prog="python -m reproduce.convert_weights", description=__doc__.split("\n")[0])
    p.add_argument("src", help="a .caffemodel (V1, V2 or mixed; packed or unpacked floats) or .caffemodel.h5")
    p.add_argument("--arch", choices=ARCHS, default=None,
                   help="network of the file (default: detected from the file's layer order; caffenet, "
                        "the network the authors fine-tuned, when the file has none, e.g. HDF5 snapshots)")
    p.add_argument("--out", required=True, help="checkpoint to write (.pth)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists (default: refuse)")
    return p


def main(argv=None):
    args = get_args_parser().parse_args(argv)
    convert(args.src, args.out, arch=args.arch, overwrite=args.force)


if __name__ == "__main__":
    run_cli(main)
