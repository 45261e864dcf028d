"""Fit and encode time of the shallow baselines (reproduce.baselines) on fc7-sized features.

Target (issue 4, baseline comparison): on 2,000 x 4,096 training features every method fits in a
few seconds at 48 bits with its published settings (KSH: 300 anchors, 1,000 labelled samples,
500 gradient iterations per bit). Features are synthetic but fc7-like (non-negative, ReLU'd
class-mixture activations); labels are NUS-WIDE-like multi-hot (21 concepts, skewed, 1-3 per
image) or CIFAR-like single class ids. The KSH time depends on the number of distinct label
patterns among its labelled samples (`--labels`). Seeds fixed.
    python benchmarks/bench_baselines.py [--n 2000] [--dim 4096] [--bits 48] [--labels multi]
"""
import argparse
import time

import numpy as np

from reproduce.baselines import BASELINES, make_baseline
from reproduce.cli import run_cli


def get_args_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=2000, help="training samples (default 2000)")
    p.add_argument("--dim", type=int, default=4096, help="feature dimension (default 4096, fc7)")
    p.add_argument("--bits", type=int, default=48, help="code length (default 48, the paper's figures)")
    p.add_argument("--labels", choices=["multi", "single"], default="multi",
                   help="multi: 21-concept multi-hot (NUS-WIDE-like); single: 10 classes (default multi)")
    p.add_argument("--encode", type=int, default=20000, help="rows to encode after fitting (default 20000)")
    p.add_argument("--methods", nargs="+", default=list(BASELINES), choices=list(BASELINES),
                   help="which baselines (default all)")
    p.add_argument("--seed", type=int, default=0, help="data and method seed (default 0)")
    return p


def fc7_like(rng, n, dim, labels):
    """Non-negative features: ReLU(mean of the label prototypes + noise), float32 as encode writes."""
    protos = rng.standard_normal((labels.shape[1], dim))
    X = labels @ protos / np.maximum(labels.sum(1, keepdims=True), 1) + rng.standard_normal((n, dim))
    return np.maximum(X, 0).astype(np.float32)


def make_labels(rng, n, kind):
    if kind == "single":
        return np.eye(10)[rng.integers(0, 10, n)]
    freq = 0.5 ** np.arange(21) * 0.6 + 0.02                 # skewed concept frequencies
    L = (rng.random((n, 21)) < freq / freq.sum() * 1.6).astype(np.float64)
    L[np.arange(n), rng.choice(21, n, p=freq / freq.sum())] = 1
    return L


def main(argv=None):
    args = get_args_parser().parse_args(argv)
    rng = np.random.default_rng(args.seed)
    L = make_labels(rng, args.n + args.encode, args.labels)
    X = fc7_like(rng, args.n + args.encode, args.dim, L)
    patterns = len(np.unique(L[:args.n], axis=0))
    print(f"{args.n} x {args.dim} training features, {args.bits} bits, {args.labels}-label "
          f"({patterns} distinct label patterns); encode {args.encode} rows")
    print(f"{'method':8s} {'fit s':>7s} {'encode s':>9s}")
    for name in args.methods:
        b = make_baseline(name, args.bits, seed=args.seed)
        t = time.perf_counter()
        b.fit(X[:args.n], L[:args.n])
        fit = time.perf_counter() - t
        t = time.perf_counter()
        b.encode(X[args.n:])
        enc = time.perf_counter() - t
        print(f"{name:8s} {fit:7.2f} {enc:9.2f}")


if __name__ == "__main__":
    run_cli(main)
