"""Cached training loader throughput: crop 227, mirror and mean subtraction from the HDF5 cache.

    python benchmarks/bench_loader.py [--images 2000] [--batches 60] [--workers 2]

Writes a cache of random 256 x 256 images in reproduce.data.cache's format (no decoding: this measures
the loader the training loop waits on), then times TrainBatches through make_loader. Goal (issue
3): >= 1500 images/s on 2 CPU cores.
"""
import argparse
import os
import tempfile
import time

import numpy as np

from reproduce.data.batches import BatchOrder, TrainBatches, make_loader
from reproduce.data.cache import CACHE_FORMAT, list_digest
from reproduce.data.lists import ImageList
from reproduce.data.transforms import MEAN_VALUE


def make_cache(path, n, num_labels=21, seed=0):
    rng = np.random.default_rng(seed)
    image_list = ImageList([f"img/{i}.jpg" for i in range(n)],
                           (rng.random((n, num_labels)) < 0.1).astype(np.uint8), "bench")
    import h5py
    with h5py.File(path, "w") as f:
        f.attrs.update(format=CACHE_FORMAT, list_sha1=list_digest(image_list), size=256)
        images = f.create_dataset("images", (n, 256, 256, 3), dtype=np.uint8, chunks=(1, 256, 256, 3))
        for s in range(0, n, 500):
            images[s:s + 500] = rng.integers(0, 256, (min(500, n - s), 256, 256, 3), dtype=np.uint8)
        f.create_dataset("labels", data=image_list.labels)
        f.create_dataset("done", data=np.ones(n, dtype=bool))
    return image_list


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--batches", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cache = os.path.join(tmp, "cache.h5")
        image_list = make_cache(cache, args.images)
        order = BatchOrder(args.images, args.batch_size, seed=0)
        mean = np.asarray(MEAN_VALUE, np.float32)
        batches = TrainBatches(image_list, order, mean, 0, args.batches + 5, cache_path=cache)
        loader = iter(make_loader(batches, workers=args.workers))
        for _ in range(5):            # start the workers, fill the prefetch queue
            next(loader)
        t = time.perf_counter()
        for _ in range(args.batches):
            next(loader)
        dt = time.perf_counter() - t
    print(f"cached loader, {args.workers} workers, batch {args.batch_size}: "
          f"{args.batches * args.batch_size / dt:.0f} images/s (goal >= 1500)")


if __name__ == "__main__":
    main()
