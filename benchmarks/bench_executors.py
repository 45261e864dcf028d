"""How many jobs to give a machine: the reproduction grid's wall time with --jobs N.

    python bench_executors.py cpu                      # smoke grid, --jobs 1 vs --jobs 2 (the CPU)
    python bench_executors.py gpu --device cuda:0      # CIFAR-10 column, 1, 2, 4 and 8 jobs on one GPU

`cpu`: `reproduce.custom --smoke` (two bit lengths, DHN, LSH) on synthetic images, once with
--jobs 1 and once with --jobs 2 --devices cpu, each into a fresh work folder; prints the wall
times and checks that both give the same metrics.

`gpu`: the CIFAR-10 column of Table 2 (DHN, DHN-Q, DHN-E at 12, 24, 32 and 48 bits: 12 trainings
of --max-iter iterations, default the paper's 10,000) on synthetic 32x32 images of CIFAR-10's list
sizes (5,000 training, 1,000 query, 54,000 database images: official_settings.md), run with 1, 2, 4
and 8 jobs on the one device; prints configurations per hour and the GPU's mean utilisation and
peak memory, sampled once a second with nvidia-smi while the grid runs. The random CaffeNet weights
are as costly as the real ones. Needs about 1 GB of disk for the images and their cache per --jobs.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
from PIL import Image

CIFAR10_SIZES = {"train": 5000, "query": 1000, "database": 54000}   # official_settings.md
SMOKE_SIZES = {"train": 40, "query": 8, "database": 40}


def make_dataset(root, sizes, side, seed=0):
    """JPEG images of `side` pixels under root/images and train/query/database lists with one of
    ten one-hot classes per image (the database holds the training images, as CIFAR-10's)."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    total = sizes["train"] + sizes["query"] + max(0, sizes["database"] - sizes["train"])
    rows = []
    for i in range(total):
        name = f"images/{i:06d}.jpg"
        path = os.path.join(root, name)
        if not os.path.exists(path):
            Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(path, quality=90)
        label = np.zeros(10, int)
        label[i % 10] = 1
        rows.append(name + " " + " ".join(map(str, label)))
    train = rows[:sizes["train"]]
    query = rows[sizes["train"]:sizes["train"] + sizes["query"]]
    database = train + rows[sizes["train"] + sizes["query"]:]
    database = database[:sizes["database"]]
    lists = {}
    for split, part in (("train", train), ("query", query), ("database", database)):
        lists[split] = os.path.join(root, f"{split}.txt")
        with open(lists[split], "w") as f:
            f.write("\n".join(part) + "\n")
    return lists


def random_caffenet(path):
    import torch
    from reproduce.model.checkpoint import save_checkpoint
    from reproduce.model.nets import DHNNet
    torch.manual_seed(0)
    save_checkpoint(path, DHNNet("caffenet", bits=0).state_dict(), "caffenet", 0, meta={"kind": "benchmark"})
    return path


class GpuSampler:
    """nvidia-smi's utilisation (%) and memory (MiB) of one GPU, once a second, in a thread."""

    def __init__(self, index):
        self.index, self.samples, self.stop = index, [], threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.is_set():
            out = subprocess.run(["nvidia-smi", f"--id={self.index}", "--query-gpu=utilization.gpu,memory.used",
                                  "--format=csv,noheader,nounits"], capture_output=True, text=True)
            if out.returncode == 0 and out.stdout.strip():
                util, mem = (float(v) for v in out.stdout.strip().split(","))
                self.samples.append((util, mem))
            self.stop.wait(1.0)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()

    def summary(self):
        if not self.samples:
            return float("nan"), float("nan")
        util, mem = np.array(self.samples).T
        return float(util.mean()), float(mem.max())


def run_grid(base, lists, weights, work, out, extra):
    argv = [sys.executable, "-m", "reproduce.custom", "--name", "bench", "--root", base,
            "--train-list", lists["train"], "--query-list", lists["query"], "--database-list", lists["database"],
            "--topk", "all", "--weights", weights, "--work", work, "--out", out, *extra]
    start = time.perf_counter()
    res = subprocess.run(argv, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if res.returncode != 0:
        sys.exit(f"bench_executors: {' '.join(argv)} failed:\n{res.stderr[-3000:]}")
    return wall


def metrics(out):
    folder = os.path.join(out, "metrics")
    return {n: json.load(open(os.path.join(folder, n, "metrics.json")))["metrics"] for n in sorted(os.listdir(folder))}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("target", choices=["cpu", "gpu"])
    p.add_argument("--jobs", type=int, nargs="+", default=None, help="default: 1 2 (cpu), 1 2 4 8 (gpu)")
    p.add_argument("--device", default="cuda:0", help="gpu: the one device the jobs share")
    p.add_argument("--max-iter", type=int, default=10000, help="gpu: iterations per training (the paper's 10,000)")
    p.add_argument("--keep", default=None, help="a folder to keep the data and results in (default: temporary)")
    a = p.parse_args()
    base = a.keep or tempfile.mkdtemp(prefix="bench-executors-")
    os.makedirs(base, exist_ok=True)
    weights = random_caffenet(os.path.join(base, "caffenet.pth"))
    rows = []
    if a.target == "cpu":
        lists = make_dataset(base, SMOKE_SIZES, 64)
        common = ["--smoke", "--bits", "8", "12", "--variants", "dhn", "--baselines", "lsh", "--methods",
                  "--workers", "0"]
        found = {}
        for jobs in a.jobs or [1, 2]:
            extra = common + ["--jobs", str(jobs), "--devices", "cpu"]
            out = os.path.join(base, f"out-{jobs}")
            wall = run_grid(base, lists, weights, os.path.join(base, f"work-{jobs}"), out, extra)
            found[jobs] = metrics(out)
            rows.append(f"| {jobs} | {wall:.1f} s |")
            print(rows[-1], flush=True)
        same = all(m == next(iter(found.values())) for m in found.values())
        print("| --jobs | smoke grid wall time |\n|---|---|\n" + "\n".join(rows))
        print(f"same metrics with every --jobs: {same}")
    else:
        lists = make_dataset(base, CIFAR10_SIZES, 32)
        index = a.device.split(":")[1] if ":" in a.device else "0"
        for jobs in a.jobs or [1, 2, 4, 8]:
            extra = ["--bits", "12", "24", "32", "48", "--variants", "dhn", "dhn-q", "dhn-e", "--baselines",
                     "--methods", "--max-iter", str(a.max_iter), "--jobs", str(jobs),
                     "--devices", a.device, "--workers", "2"]
            with GpuSampler(index) as sampler:
                wall = run_grid(base, lists, weights, os.path.join(base, f"work-{jobs}"),
                                os.path.join(base, f"out-{jobs}"), extra)
            util, mem = sampler.summary()
            rows.append(f"| {jobs} | {wall / 60:.1f} min | {12 / (wall / 3600):.1f} | {util:.0f} % | {mem:.0f} MiB |")
            print(rows[-1], flush=True)
        print("| --jobs | wall time (12 trainings) | configurations / hour | mean GPU utilisation | peak memory |")
        print("|---|---|---|---|---|\n" + "\n".join(rows))
    if a.keep is None:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
