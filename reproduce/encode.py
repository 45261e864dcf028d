"""Encode a list of images into hash codes (and penultimate features) with the backbone's TEST transform.

    python -m reproduce.encode --checkpoint CKPT --list LIST --root DIR --out CODES.h5
        [--arch ARCH] [--pipeline imagedata|pycaffe] [--oversample] [--batch-size 50] [--workers 2]
        [--features] [--mean B,G,R | --mean-file F] [--device cpu|cuda] [--force]

The checkpoint's arch decides the image convention (README, Backbones). The torchvision backbones
(tv-*) are encoded with DeepHash-pytorch's TEST transform (PIL RGB, Resize(256), CenterCrop(224),
ImageNet mean and std; reproduce.data.torchvision_transforms) and take none of --pipeline,
--oversample, --mean, --mean-file. The Caffe backbones (caffenet, alexnet, vgg16: crop 224 and the
VGG mean) have two image pipelines, both checked against real Caffe (README, Checked against real Caffe):
  imagedata (default)  Caffe's ImageData layer in the TEST phase: decoded as BGR, resized to
                       256 x 256 as cv::resize INTER_LINEAR does, centre crop (227 x 227; vgg16:
                       224), minus the arch's mean_value (the authors' 104,117,123; vgg16: the
                       VGG authors' 103.939,116.779,123.68) (reproduce.data.transforms).
  pycaffe              what produced the papers' numbers: caffe.io.load_image + caffe.Classifier
                       .predict as the authors' predict scripts call it (scikit-image resize,
                       RGB -> BGR, x 255, minus ilsvrc_2012_mean.npy averaged per channel;
                       reproduce.data.pycaffe_pipeline).
With --oversample, pycaffe's 10 crops are encoded and their outputs averaged (the authors' first
evaluation script, dhn-caffe generate.py). The HDF5 output holds

    codes     float32 N x K   tanh outputs before sign (absent for a model without hash layer)
    labels    uint8   N x C   the list's labels
    paths     str     N       the list's relative paths (UTF-8)
    features  float32 N x D  the penultimate features, with --features: fc7 after relu7 (Caffe's
                             fc7 blob; D = 4096) or ResNet-50's pooled features (D = 2048)

and attributes naming the checkpoint (path, sha1), arch, preprocessing, bits, transform, mean and list. It is
written in batches into preallocated datasets (memory flat in N), under a temporary name renamed
into place at the end: an interrupted or failed run leaves no output file.
"""
import os

import numpy as np

from .cli import BATCH_SIZE, WORKERS, ArgumentParser, format_mean, parse_mean_value, run_cli
from .data.images import check_images_exist
from .data.lists import read_list
from .data.preprocessing import check_caffe_only
from .data.pycaffe_pipeline import ILSVRC_2012_MEAN_BGR
from .data.transforms import MEAN_VALUE, load_mean_file
from .errors import UserError
from .evaluation.encoding import PIPELINES, EncodeSettings, encode_list
from .model.archs import ARCHS, arch_spec
from .model.checkpoint import load_checkpoint, model_from_checkpoint
from .pipeline import identity as ids
from .utils.fileio import check_output_file, sha1_file
from .utils.locks import file_lock, refuse_inside_a_writer, remove_leftovers


def get_args_parser():
    p = ArgumentParser(prog="python -m reproduce.encode", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True,
                   help="model checkpoint (.pth of this package: a DHN snapshot, or a converted "
                        "ImageNet model with --features)")
    p.add_argument("--list", required=True, help="image list: `relative/path l1 ... lC` per line")
    p.add_argument("--root", required=True, help="folder the list's paths are relative to")
    p.add_argument("--out", required=True, help="output HDF5 file")
    p.add_argument("--arch", choices=ARCHS, default=None,
                   help="the backbone the checkpoint must be (default: the checkpoint's; README, Backbones)")
    # default None, not "imagedata": a torchvision arch has neither pipeline, and refuses one
    # that is asked for by name (main resolves None to imagedata for the Caffe archs)
    p.add_argument("--pipeline", choices=PIPELINES, default=None,
                   help="Caffe archs only. imagedata (default): Caffe's ImageData layer, TEST phase (cv::resize, mean "
                        f"{format_mean(MEAN_VALUE)}); pycaffe: caffe.Classifier as the authors' predict scripts "
                        "(scikit-image resize, mean of ilsvrc_2012_mean.npy per channel)")
    p.add_argument("--oversample", action="store_true",
                   help="pycaffe's 10 crops averaged (the authors' first evaluation script); "
                        "default: centre crop 227 at offset 14 (Caffe's TEST phase, their later script)")
    p.add_argument("--batch-size", type=BATCH_SIZE, default=50,
                   help="network inputs (crops) per forward pass (default 50); the codes do not "
                        "depend on it beyond float rounding")
    p.add_argument("--workers", type=WORKERS, default=2, help="image decoding processes (default 2; 0 = in the main process)")
    p.add_argument("--features", action="store_true",
                   help="also write the penultimate features, N x the arch's feature size (fc7 after relu7: "
                        "4096; tv-resnet50's pooled features: 2048)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--mean", default=None,
                   help=f"per-channel mean B,G,R (default: imagedata the arch's mean_value, {format_mean(MEAN_VALUE)} "
                        "for caffenet/alexnet, the authors' transform_param mean_value; pycaffe "
                        f"{format_mean(ILSVRC_2012_MEAN_BGR)}, ilsvrc_2012_mean.npy averaged per channel)")
    g.add_argument("--mean-file", default=None,
                   help="mean image instead: imagenet_mean.binaryproto or ilsvrc_2012_mean.npy (3 x 256 x 256 "
                        "BGR); the pycaffe pipeline averages it per channel, as the authors' scripts did")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda if available, else cpu)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    return p


def encode_identity(args, ckpt, image_list):
    """What the output is made from: the checkpoint (the identity its training recorded, else its
    sha1), the list and its images, and the pipeline's settings."""
    model = ids.checked(ckpt.get("meta", {}).get("identity")) or ids.file_identity("checkpoint", args.checkpoint)
    inputs = {"checkpoint": model, "list": ids.images_identity("list", image_list, args.root)}
    if args.mean_file:
        inputs["mean_file"] = ids.file_identity("mean_file", args.mean_file)
    settings = {"pipeline": args.pipeline, "oversample": args.oversample, "features": args.features,
                "mean": args.mean, **ids.backbone_settings(ckpt["arch"], arch_spec(ckpt["arch"]).preprocessing)}
    return ids.make_identity("encode", "encode", settings, inputs)


def main(argv=None):
    args = get_args_parser().parse_args(argv)
    # Cheap checks first: output, options, mean, list, images; then the (large) checkpoint, whose
    # arch says which options apply, and the mean file.
    check_output_file(args.out, args.force, hint="use --force",
                      inputs={"--checkpoint": args.checkpoint, "--list": args.list, "--mean-file": args.mean_file})
    if args.workers < 0:
        raise UserError(f"--workers {args.workers}: must be 0 or more")
    caffe_only = {f"--pipeline {args.pipeline}": args.pipeline is not None, "--oversample": args.oversample,
                  "--mean": args.mean, "--mean-file": args.mean_file}
    if args.arch:
        check_caffe_only(args.arch, **caffe_only)
    mean = parse_mean_value(args.mean) if args.mean else None
    image_list = read_list(args.list)
    check_images_exist(image_list, args.root)
    ckpt = load_checkpoint(args.checkpoint)
    check_caffe_only(ckpt["arch"], **caffe_only)     # before the mean file: it is not read then
    args.pipeline = args.pipeline or "imagedata"      # a Caffe arch's default (see the option)
    attrs = {"list": os.path.abspath(args.list), "root": os.path.abspath(args.root)}
    if args.mean_file:
        mean = load_mean_file(args.mean_file)
        if args.pipeline == "pycaffe":   # predict scripts: np.load(mean_file).mean(1).mean(1)
            mean = mean.astype(np.float64).mean(axis=(1, 2))
        attrs.update(mean_file=os.path.abspath(args.mean_file), mean_file_sha1=sha1_file(args.mean_file))
    model = model_from_checkpoint(ckpt, args.checkpoint, arch=args.arch)
    attrs.update(checkpoint=os.path.abspath(args.checkpoint), checkpoint_sha1=sha1_file(args.checkpoint))
    attrs["identity"] = ids.to_attr(encode_identity(args, ckpt, image_list))
    refuse_inside_a_writer(args.out, "--out")      # e.g. a dataset command's --work, while it runs
    with file_lock(args.out, "--out"):            # one writer of this file at a time
        remove_leftovers([args.out])
        settings = EncodeSettings(args.pipeline, args.oversample, args.batch_size, mean, args.features, args.workers,
                                  args.device)
        encode_list(model, image_list, args.root, args.out, settings, attrs=attrs, overwrite=args.force)
    print(f"wrote {args.out}: {len(image_list)} images, "
          + ", ".join(k for k, on in (("codes", model.has_codes), ("features", args.features)) if on))


if __name__ == "__main__":
    run_cli(main)
