"""The published ImageNet models DHN starts from, and their download.

    python -m reproduce.weights fetch caffenet [--dir weights] [--no-verify]

downloads the BVLC model zoo caffemodel (VGG_ILSVRC_16_layers for vgg16, torchvision's state dict
for tv-*), checks its published checksum (sha1; torchvision's sha256 prefix; VGG-16 publishes none)
and converts it into weights/<arch>.pth (reproduce.convert_weights). A file already in the folder
with the right checksum is not downloaded again. Without network it prints the manual steps.
"""
from .cli import ArgumentParser, run_cli
from .model.nets import ARCHS
from .model.pretrained import DEFAULT_WEIGHTS_DIR, fetch


def get_args_parser():
    p = ArgumentParser(prog="python -m reproduce.weights", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fetch", help="download, verify and convert a published model")
    f.add_argument("arch", choices=ARCHS, help="caffenet = bvlc_reference_caffenet (what the authors "
                   "fine-tuned), alexnet = bvlc_alexnet, vgg16 = VGG_ILSVRC_16_layers, tv-* = torchvision's "
                   "IMAGENET1K_V1 weights")
    f.add_argument("--dir", default=DEFAULT_WEIGHTS_DIR, help="folder for the caffemodel and <arch>.pth "
                   f"(default: {DEFAULT_WEIGHTS_DIR})")
    f.add_argument("--no-verify", action="store_true", help="accept a file whose checksum differs from "
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
