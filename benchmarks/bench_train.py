"""Training loop throughput against the bare forward + backward + update of the same network.

    python benchmarks/bench_train.py [--batch-size 64] [--iters 5] [--workers 2] [--device cpu]

Both on the same network (CaffeNet + 48-bit hash layer), loss (DHNLoss) and solver (CaffeSGD with
the authors' multipliers): "bare" repeats forward, loss, backward and update on one fixed batch
already on the device; "loop" is reproduce.training.engine.fit fed by the cached loader (crop, mirror,
mean, workers prefetching). Goal (issue 3): loop / bare >= 0.90. On a CPU the loader's worker
processes compete with the network for the same cores; on a GPU machine they do not.
"""
import argparse
import os
import tempfile
import time

import numpy as np
import torch

from bench_loader import make_cache
from reproduce.data.batches import BatchOrder, TrainBatches, checked_batches, make_loader
from reproduce.data.transforms import MEAN_VALUE
from reproduce.model.nets import DHNNet, pick_device
from reproduce.training.engine import Report, fit
from reproduce.training.losses import DHNLoss
from reproduce.training.solver import PRESETS, CaffeSGD, caffe_param_groups


def setup(device):
    torch.manual_seed(0)
    model = DHNNet("caffenet", bits=48).to(device).train()
    s = PRESETS["dhn-caffe"]   # the authors' solver: base_lr 2e-5, step policy, gamma 0.3, stepsize 500
    solver = CaffeSGD(caffe_param_groups(model), base_lr=s.base_lr, lr_policy=s.lr_policy, gamma=s.gamma,
                      stepsize=s.stepsize)
    return model, solver, DHNLoss()


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def bare(device, batch_size, iters, labels):
    model, solver, criterion = setup(device)
    x = torch.randn(batch_size, 3, 227, 227, device=device) * 50
    y = torch.from_numpy(labels[:batch_size]).to(device)
    for it in range(iters + 2):
        if it == 2:          # two warm-up iterations (allocator, cuDNN autotune)
            sync(device)
            t = time.perf_counter()
        loss = criterion(model(x), y)
        solver.zero_grad(set_to_none=True)
        loss.backward()
        solver.step()
    loss.item()
    sync(device)
    return iters * batch_size / (time.perf_counter() - t)


def loop(device, batch_size, iters, workers, cache, image_list):
    model, solver, criterion = setup(device)
    order = BatchOrder(len(image_list), batch_size, seed=0)
    mean = np.asarray(MEAN_VALUE, np.float32)
    batches = TrainBatches(image_list, order, mean, 0, iters + 2, cache_path=cache)
    loader = checked_batches(iter(make_loader(batches, workers=workers, pin_memory=device.type == "cuda")))
    fit(model, loader, criterion, solver, 0, 2, Report(batch_size, display=10 ** 9, progress=False), device=device)
    sync(device)
    t = time.perf_counter()
    fit(model, loader, criterion, solver, 2, iters + 2, Report(batch_size, display=10 ** 9, progress=False),
        device=device)
    sync(device)
    return iters * batch_size / (time.perf_counter() - t)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--images", type=int, default=640)
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    device = pick_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        cache = os.path.join(tmp, "cache.h5")
        image_list = make_cache(cache, args.images)
        b = bare(device, args.batch_size, args.iters, image_list.labels)
        lo = loop(device, args.batch_size, args.iters, args.workers, cache, image_list)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"{name}, batch {args.batch_size}, {args.iters} iterations: bare forward+backward+update "
          f"{b:.1f} images/s, training loop {lo:.1f} images/s, ratio {lo / b:.2f} (goal >= 0.90)")


if __name__ == "__main__":
    main()
