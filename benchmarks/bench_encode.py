"""Benchmark: the encode loop from image files on disk, next to the bare forward pass.

    python benchmarks/bench_encode.py [--num-images 100] [--batch-size 50] [--workers 2]
                                      [--device cpu] [--oversample] [--bits 48]

Writes `--num-images` random 500 x 375 JPEGs (NUS-WIDE/Flickr's typical size) and a randomly
initialised CaffeNet+hash checkpoint into a temporary folder, then reports images/s of
- `encode_list` end to end (decode, resize, crop, forward, HDF5 write; --workers processes),
- the bare forward pass of the same network on one batch of the same blobs (no data loading),
and of the parts of the image pipeline on one core: PIL decode, `resize_linear` 500x375 -> 256,
and `train_transform_batch` on a batch of 64 cached 256 x 256 images (the cached training loader's
per-batch transform). Timings are wall-clock medians; the machine's load changes them.
"""
import argparse
import os
import tempfile
import time

import numpy as np
import torch
from PIL import Image

from reproduce.cli import run_cli
from reproduce.data.lists import ImageList
from reproduce.data.transforms import (MEAN_VALUE, center_crop, oversample, read_image_bgr, resize_linear,
                                       train_transform_batch)
from reproduce.evaluation.encoding import EncodeSettings, encode_list
from reproduce.model.nets import DHNNet


def median_seconds(fn, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def write_jpegs(folder, n, seed=0):
    """n smooth random 375 x 500 JPEGs (quality 90); returns their names."""
    rng = np.random.default_rng(seed)
    names = []
    for i in range(n):
        img = np.cumsum(rng.integers(-6, 7, (375, 500, 3)), axis=1) + rng.integers(0, 256, (1, 1, 3))
        names.append(f"img{i:05d}.jpg")
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(os.path.join(folder, names[-1]), quality=90)
    return names


def get_args_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--num-images", type=int, default=100, help="JPEG files to encode (default 100)")
    p.add_argument("--batch-size", type=int, default=50, help="network inputs per forward (encode's default 50)")
    p.add_argument("--workers", type=int, default=2, help="decoding processes (encode's default 2)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--oversample", action="store_true", help="10 crops per image instead of the centre crop")
    p.add_argument("--bits", type=int, default=48, help="hash bits of the random network (default 48)")
    return p


def main(argv=None):
    args = get_args_parser().parse_args(argv)
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = DHNNet("caffenet", bits=args.bits).eval().to(device)
    with tempfile.TemporaryDirectory() as tmp:
        names = write_jpegs(tmp, args.num_images)
        image_list = ImageList(names, np.zeros((len(names), 1), np.uint8))
        path = os.path.join(tmp, names[0])

        decode = median_seconds(lambda: read_image_bgr(path), 20)
        img = read_image_bgr(path)
        resize = median_seconds(lambda: resize_linear(img), 50)
        cached = np.stack([resize_linear(read_image_bgr(os.path.join(tmp, names[i % len(names)])))
                           for i in range(64)])
        rng = np.random.default_rng(0)
        offsets, mirror = rng.integers(0, 30, (64, 2)), rng.random(64) < 0.5
        crop_batch = median_seconds(lambda: train_transform_batch(cached, offsets, mirror, MEAN_VALUE), 10)
        print(f"PIL decode 500x375 JPEG     {1 / decode:9.0f} images/s  ({decode * 1e3:.2f} ms)")
        print(f"resize_linear 500x375->256  {1 / resize:9.0f} images/s  ({resize * 1e3:.2f} ms)")
        print(f"train_transform_batch (64)  {64 / crop_batch:9.0f} images/s  ({crop_batch * 1e3:.2f} ms/batch)")

        out = os.path.join(tmp, "codes.h5")

        def run_encode():
            settings = EncodeSettings(oversample=args.oversample, batch_size=args.batch_size, workers=args.workers,
                                      device=device)
            encode_list(model, image_list, tmp, out, settings, overwrite=True, progress=False)
            if device.type == "cuda":
                torch.cuda.synchronize()

        run_encode()   # warm-up (allocator, cudnn autotuning, page cache)
        encode = median_seconds(run_encode, 3)

        per_image = 10 if args.oversample else 1
        n_img = max(1, args.batch_size // per_image)
        blobs = [oversample(cached[i % 64]) if args.oversample else center_crop(cached[i % 64])[None]
                 for i in range(n_img)]
        batch = torch.from_numpy(np.concatenate(blobs)).to(device)

        def forward():
            with torch.no_grad():
                model(batch)
            if device.type == "cuda":
                torch.cuda.synchronize()

        forward()
        bare = median_seconds(forward, 5)
    print(f"encode_list end to end      {args.num_images / encode:9.1f} images/s  "
          f"({args.num_images} images, batch {args.batch_size}, {args.workers} workers, {device})")
    print(f"bare forward, same batch    {n_img / bare:9.1f} images/s  ({batch.shape[0]} inputs per forward)")


if __name__ == "__main__":
    run_cli(main)
