"""Train DHN: `python -m reproduce.train --train-list LIST --root DIR --weights CKPT --bits K --out RUN_DIR`.

`--arch` (default: the checkpoint's) is the backbone, whose image convention the training batches
follow (README, Backbones): Caffe's ImageData TRAIN transform for caffenet/alexnet/vgg16,
DeepHash-pytorch's torchvision transform for the tv-* archs.

Solver and loss settings resolve in this order: an explicit option, then `--solver-prototxt` (the
authors' solver.prototxt), then `--preset` (default `dhn-caffe`, the authors' dhn-caffe solver).
Multi-GPU / multi-node: `torchrun --nproc_per_node G -m reproduce.train ...` — `--batch-size` stays
the global batch (64, as in Caffe) and is split across the processes.
"""
import argparse
import contextlib
import dataclasses
import os

from .caffe.solver_prototxt import read_solver_prototxt, where as solver_where
from .cli import (BITS, DEFAULT_PRESET, NON_NEGATIVE, POSITIVE, ArgumentParser, add_solver_options,
                  format_mean, number, parse_mean_value, preset_settings, run_cli)
from .data.images import check_images_exist
from .data.lists import read_list
from .data.preprocessing import check_caffe_only
from .data.transforms import MEAN_VALUE, load_mean_file
from .errors import UserError
from .methods import DEEP_METHODS
from .model.checkpoint import load_checkpoint
from .model.nets import ARCHS
from .training.config import DataSettings, MethodSettings, ModelSettings, RunConfig, default_mean
from .training.distributed import process_rank
from .training.engine import run_identity, train
from .training.losses import DEFAULT_THRESHOLD, LOSS_PRESETS, PAIR_LOSSES
from .training.solver import LR_POLICIES, PRESETS, SolverSettings
from .utils.locks import refuse_inside_a_writer, remove_leftovers, writer_lock

DEFAULT_SOLVER = PRESETS[DEFAULT_PRESET]   # quoted in the help texts


def get_args_parser():
    p = ArgumentParser("python -m reproduce.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--train-list", required=True, help="training list, `path l1 ... lC` per line")
    g.add_argument("--root", required=True, help="dataset root the list's paths are relative to")
    g.add_argument("--num-labels", type=POSITIVE, default=None, help="C, to check the list against (default: the list's)")
    g.add_argument("--cache", default=None,
                   help="HDF5 cache of the list's images resized as the arch's image convention resizes "
                        "(Caffe: 256x256; torchvision: shorter side 256) (built if absent; default "
                        "<out>/train_cache.h5); 'none' decodes every batch from the image files")
    g.add_argument("--mean", default=None,
                   help=f"per-channel B,G,R mean, Caffe convention only (default: the arch's mean_value, "
                        f"{format_mean(MEAN_VALUE)} for caffenet/alexnet: the authors')")
    g.add_argument("--mean-file", default=None, help="imagenet_mean.binaryproto or ilsvrc_2012_mean.npy instead "
                   "(Caffe convention only)")
    g.add_argument("--no-mirror", dest="mirror", action="store_false",
                   help="disable the random mirror (the authors' TRAIN transform mirrors; torchvision's "
                        "RandomHorizontalFlip for the tv-* archs)")
    g = p.add_argument_group("model")
    g.add_argument("--weights", required=True,
                   help="converted ImageNet checkpoint (hash layer from its filler) or a DHN checkpoint")
    g.add_argument("--arch", choices=ARCHS, default=None,
                   help="backbone (reproduce.model.archs; README, Backbones); default: the checkpoint's, "
                        "which must be this arch")
    g.add_argument("--bits", type=BITS, default=48, help="K, hash code length (default 48)")
    g.add_argument("--dropout", type=number(0, 1, high_open=True), default=0.5, help="fc6/fc7 dropout ratio (default 0.5, as the zoo nets)")
    add_solver_options(p)
    g = p.add_argument_group("loss")
    g.add_argument("--pair-loss", choices=PAIR_LOSSES, default=LOSS_PRESETS[DEFAULT_PRESET].pair_loss,
                   help="cross_entropy (DHN, default) or squared (DHN-E)")
    g.add_argument("--method", choices=list(DEEP_METHODS), default=None,
                   help="train a deep baseline of Table 1 instead of DHN (its head and loss on the same "
                        "network and solver; reproduce.methods)")
    g.add_argument("--threshold", type=number(), default=DEFAULT_THRESHOLD,
                   help=f"θ above which the pair loss is linear (default {DEFAULT_THRESHOLD:g}, the authors' layer)")
    g = p.add_argument_group("solver (an option given here, else --solver-prototxt, else --preset)")
    g.add_argument("--solver-prototxt", default=None, help="read the settings from a Caffe solver.prototxt")
    g.add_argument("--lr-policy", choices=LR_POLICIES)
    g.add_argument("--gamma", type=number(0))
    g.add_argument("--stepsize", type=POSITIVE)
    g.add_argument("--power", type=number())
    g.add_argument("--stepvalue", type=NON_NEGATIVE, nargs="*")
    g.add_argument("--momentum", type=number(0, 1, high_open=True))
    g.add_argument("--weight-decay", type=number(0))
    g.add_argument("--snapshot", type=NON_NEGATIVE,
                   help=f"snapshot interval in iterations (preset: {DEFAULT_SOLVER.snapshot}; 0: only the "
                        "final snapshot, as Caffe)")
    g.add_argument("--display", type=NON_NEGATIVE,
                   help=f"log interval in iterations (preset: {DEFAULT_SOLVER.display}; 0: only at the end)")
    g = p.add_argument_group("run")
    g.add_argument("--out", required=True, help="run folder")
    g.add_argument("--seed", type=NON_NEGATIVE, default=0, help="drives the batch order, crops, mirrors, dropout, fch filler")
    g.add_argument("--resume", action="store_true", help="continue from the latest snapshot in --out")
    g.add_argument("--keep-snapshots", type=NON_NEGATIVE, default=0,
                   help="keep only the newest N snapshots (default 0 = all, as Caffe)")
    g.add_argument("--quiet", dest="progress", action="store_false", help="no progress bar")
    return p


def config_from_args(args, ckpt=None):
    """The RunConfig of parsed arguments: an explicit option, else --solver-prototxt, else the
    --preset. UserError on settings Caffe would refuse or that cannot train."""
    solver_file = read_solver_prototxt(args.solver_prototxt) if args.solver_prototxt else None
    options = vars(args)
    overrides = {f.name: options[f.name] for f in dataclasses.fields(SolverSettings)}
    given = {k for k, v in overrides.items() if v is not None}
    num_labels = args.num_labels or read_list(args.train_list).labels.shape[1]
    arch = args.arch or (ckpt or load_checkpoint(args.weights))["arch"]
    check_caffe_only(arch, **{"--mean": args.mean, "--mean-file": args.mean_file})
    if args.mean_file:
        load_mean_file(args.mean_file)           # a bad mean file stops the run before it starts
    cache = os.path.join(args.out, "train_cache.h5") if args.cache is None else (
        None if args.cache == "none" else args.cache)
    try:
        solver, loss = preset_settings(args.preset, dict(overrides, quant_weight=args.quant_weight), solver_file)
        return RunConfig(
            data=DataSettings(args.train_list, args.root, num_labels, cache,
                              parse_mean_value(args.mean) if args.mean else default_mean(arch),
                              args.mean_file, args.mirror, args.workers),
            model=ModelSettings(args.weights, arch, args.bits, args.dropout),
            solver=solver,
            loss=dataclasses.replace(loss, pair_loss=args.pair_loss, threshold=args.threshold),
            out=args.out, seed=args.seed, device=args.device, keep_snapshots=args.keep_snapshots,
            method=MethodSettings(args.method) if args.method else None)
    except ValueError as e:
        # A setting the solver file gave (not overridden by an option) is named with the file.
        key = str(e).split()[0]
        if solver_file is not None and key in solver_file.to_dict() and key not in given:
            raise UserError(f"{solver_where(args.solver_prototxt, key)}: {e}") from None
        raise UserError(f"solver settings: {e}") from None


def main(argv=None):
    args = get_args_parser().parse_args(argv)
    rank, _ = process_rank()          # torchrun's environment, checked before any work
    ckpt = load_checkpoint(args.weights)
    cfg = config_from_args(args, ckpt)
    image_list = read_list(cfg.data.train_list, num_labels=cfg.data.num_labels)
    check_images_exist(image_list, cfg.data.root)
    identity = run_identity(cfg, image_list=image_list)
    # One writer per run folder; under torchrun only rank 0 writes it (and holds the lock).
    # (named with the folder: a dataset command's training job may be the holder)
    refuse_inside_a_writer(cfg.out, "--out")   # e.g. a dataset command's --work, while it runs
    lock = writer_lock(cfg.out, f"--out {cfg.out}") if rank == 0 else contextlib.nullcontext()
    final_path = os.path.join(cfg.out, "final.pth")
    before = _file_version(final_path)
    with lock:
        if rank == 0:
            # what a killed train left (a partial snapshot is as large as a snapshot) goes now
            remove_leftovers([cfg.out])
        final = train(cfg, ckpt=ckpt, resume=args.resume, progress=args.progress, identity=identity)
    # a finished run resumed at its max_iter is left as it was: no "wrote" after "nothing to do"
    if final and _file_version(final) != before:
        print(f"wrote {final}")


def _file_version(path):
    """(inode, mtime) of a file, None if absent: whether a command replaced it."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


if __name__ == "__main__":
    run_cli(main)
