"""Throughput and memory of every backbone (--arch, issue 20): training and encoding images/s, and
the memory a training batch of 64 needs.

    python benchmarks/bench_backbones.py [--device cpu|cuda:0] [--batch-size 16] [--iters 2]
        [--encode-batch 50] [--memory-batch 64] [--what all|speed|memory] [--archs caffenet ...]

For each arch: a DHNNet with a 48-bit hash layer, randomly initialised (the weights do not change
the time), at the arch's input size (227 or 224).
  train    forward + DHN loss + backward + CaffeSGD step (the authors' dhn-caffe solver and
           multipliers) on one fixed batch already on the device, `--iters` timed iterations
           after one warm-up; batch `--batch-size` (default 64 on a GPU; 16 on a CPU, where a
           batch of 64 through VGG-16 takes minutes).
  encode   model.features + hash in eval mode under no_grad, batch `--encode-batch`.
  memory   of one training step at batch `--memory-batch` (default 64), beyond what the model,
           its momentum and the batch hold before it. GPU: torch.cuda.max_memory_allocated.
           CPU: the peak RSS of a child process (VmHWM of /proc/self/status, reset just before
           the step by writing 5 to /proc/self/clear_refs) minus its RSS before the step. Measured
           at 64, not extrapolated from small batches: below about 16 images the peak is the
           solver's step (gradients and the foreach temporaries), not the activations, so a line
           through two small batches underestimates (VGG-16: 25 MiB per image between 4 and 8,
           46 between 2 and 16).
Images are random tensors: the loader is bench_loader.py's and bench_encode.py's subject.
"""
import argparse
import multiprocessing
import time

import torch

from reproduce.model.archs import ARCHS, arch_spec
from reproduce.model.nets import DHNNet, pick_device
from reproduce.training.losses import DHNLoss
from reproduce.training.solver import PRESETS, CaffeSGD, caffe_param_groups

BITS = 48
NUM_LABELS = 21          # NUS-WIDE's


def setup(arch, device):
    torch.manual_seed(0)
    model = DHNNet(arch, bits=BITS).to(device).train()
    s = PRESETS["dhn-caffe"]   # the authors' solver: base_lr 2e-5, step policy, gamma 0.3, stepsize 500
    solver = CaffeSGD(caffe_param_groups(model), base_lr=s.base_lr, lr_policy=s.lr_policy, gamma=s.gamma,
                      stepsize=s.stepsize)
    return model, solver, DHNLoss()


def batch(arch, n, device):
    crop = arch_spec(arch).crop_size
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 3, crop, crop, generator=g).to(device)
    y = (torch.rand(n, NUM_LABELS, generator=g) < 0.2).to(torch.uint8).to(device)
    return x, y


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step(model, solver, criterion, x, y):
    loss = criterion(model(x), y)
    solver.zero_grad(set_to_none=True)
    loss.backward()
    solver.step()
    return loss


def train_rate(arch, device, n, iters):
    model, solver, criterion = setup(arch, device)
    x, y = batch(arch, n, device)
    step(model, solver, criterion, x, y).item()          # warm-up (allocator, cuDNN autotune)
    sync(device)
    t = time.perf_counter()
    for _ in range(iters):
        loss = step(model, solver, criterion, x, y)
    loss.item()
    sync(device)
    return iters * n / (time.perf_counter() - t)


@torch.no_grad()
def encode_rate(arch, device, n, iters):
    model = DHNNet(arch, bits=BITS).to(device).eval()
    x, _ = batch(arch, n, device)
    model.hash(model.features(x)).cpu()                  # warm-up
    sync(device)
    t = time.perf_counter()
    for _ in range(iters):
        model.hash(model.features(x)).cpu()
    sync(device)
    return iters * n / (time.perf_counter() - t)


def gpu_memory(arch, device, n=64):
    """Bytes torch allocates beyond the model and solver during one training step at batch n."""
    model, solver, criterion = setup(arch, device)
    x, y = batch(arch, n, device)
    step(model, solver, criterion, x, y).item()          # momentum buffers exist from here on
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    step(model, solver, criterion, x, y).item()
    sync(device)
    return torch.cuda.max_memory_allocated(device) - before


def _status_kib(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def _rss_child(arch, n, threads, out):
    torch.set_num_threads(threads)
    model, solver, criterion = setup(arch, torch.device("cpu"))
    x, y = batch(arch, 1, torch.device("cpu"))
    step(model, solver, criterion, x, y).item()          # momentum buffers, allocator warm
    x, y = batch(arch, n, torch.device("cpu"))
    before = _status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:        # resets VmHWM to the current RSS (Linux >= 4.0)
        f.write("5")
    step(model, solver, criterion, x, y).item()
    out.put((_status_kib("VmHWM") - before) * 1024)


def cpu_memory(arch, n=64):
    """Peak RSS increase (bytes) of one training step at batch n, in a fresh process."""
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_rss_child, args=(arch, n, torch.get_num_threads(), q))
    p.start()
    found = q.get()
    p.join()
    return found


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--archs", nargs="+", choices=ARCHS, default=list(ARCHS))
    p.add_argument("--batch-size", type=int, default=None, help="training batch (default: 64 on a GPU, 16 on a CPU)")
    p.add_argument("--iters", type=int, default=2, help="timed iterations after one warm-up (default 2)")
    p.add_argument("--encode-batch", type=int, default=50)
    p.add_argument("--memory-batch", type=int, default=64, help="batch of the memory measurement (default 64)")
    p.add_argument("--what", choices=("all", "speed", "memory"), default="all")
    args = p.parse_args()
    device = pick_device(args.device)
    n = args.batch_size or (64 if device.type == "cuda" else 16)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"{name}; training batch {n}, encoding batch {args.encode_batch}, {args.iters} timed iterations")
    print(f"| arch | input | train images/s | encode images/s | memory, training batch of {args.memory_batch} |")
    print("|---|---|---|---|---|")
    for arch in args.archs:
        crop = arch_spec(arch).crop_size
        tr = en = mem = "-"
        if args.what in ("all", "speed"):
            tr = f"{train_rate(arch, device, n, args.iters):.1f}"
            en = f"{encode_rate(arch, device, args.encode_batch, args.iters):.1f}"
        if args.what in ("all", "memory"):
            if device.type == "cuda":
                mem = f"{gpu_memory(arch, device, args.memory_batch) / 2 ** 30:.2f} GiB (max_memory_allocated)"
            else:
                mem = f"{cpu_memory(arch, args.memory_batch) / 2 ** 30:.2f} GiB (peak RSS)"
        print(f"| {arch} | {crop} | {tr} | {en} | {mem} |", flush=True)


if __name__ == "__main__":
    main()
