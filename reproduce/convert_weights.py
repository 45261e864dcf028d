"""Convert a Caffe model (.caffemodel V1/V2/mixed, or .caffemodel.h5) or a torchvision state dict into this package's checkpoint.

    python -m reproduce.convert_weights bvlc_reference_caffenet.caffemodel --arch caffenet \\
        --out weights/caffenet.pth
    python -m reproduce.convert_weights resnet50-0676ba61.pth --arch tv-resnet50 --out weights/tv-resnet50.pth

conv1..fc7 (conv1_1 ... fc7 for vgg16) are checked against the arch's shapes and kept; fc8 (the ImageNet classifier) is dropped
with a note; a hash layer (`hash_layer`, or `fch` as the authors' dhn-caffe names it) is imported,
so a model fine-tuned with the authors' Caffe code can be evaluated here as is. The checkpoint
records the source file's name and sha1 and the notes (reproduce.model.checkpoint).
A torchvision state dict (tv-alexnet, tv-vgg16, tv-resnet50) is read with torch.load(weights_only=True);
every key and shape is checked, and only its ImageNet classifier (classifier.6 / fc) is dropped.
"""
from .cli import ArgumentParser, run_cli
from .model.nets import ARCHS
from .model.pretrained import convert


def get_args_parser():
    p = ArgumentParser(prog="python -m reproduce.convert_weights", description=__doc__.split("\n")[0])
    p.add_argument("src", help="a .caffemodel (V1, V2 or mixed; packed or unpacked floats), .caffemodel.h5, "
                   "or a torchvision state dict (.pth)")
    p.add_argument("--arch", choices=ARCHS, default=None,
                   help="network of the file (default: detected from the file's layers or keys; caffenet, "
                        "the network the authors fine-tuned, when a Caffe file tells none, e.g. HDF5 snapshots)")
    p.add_argument("--out", required=True, help="checkpoint to write (.pth)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists (default: refuse)")
    return p


def main(argv=None):
    args = get_args_parser().parse_args(argv)
    convert(args.src, args.out, arch=args.arch, overwrite=args.force)


if __name__ == "__main__":
    run_cli(main)
