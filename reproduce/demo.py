"""`python -m reproduce.demo [--out results/demo]`: the whole method, offline, in a minute on a CPU.

The paper's setting needs ImageNet weights and a GPU; neither ships with a package. This demo runs
the same loss (reproduce.losses.DHNLoss), solver (reproduce.solver.CaffeSGD with the authors'
multipliers), training loop (reproduce.engine.fit), batch order (reproduce.data.BatchOrder),
evaluation (reproduce.metrics), tables and figures (reproduce.comparison.build_comparison) on a real
dataset that ships with scikit-learn: the handwritten digits (1,797 images of 8 x 8 pixels, 10
classes), split as the paper splits CIFAR-10. DHN is compared with the five shallow baselines on
the same features. What differs from the paper is printed (DIFFERENCES) and in the README.
"""
import argparse
import json
import os
import time

import numpy as np
import torch
from torch import nn

from .baselines import BASELINES, make_baseline
from .comparison import evaluate_method, write_comparison
from .config import VARIANTS
from .data import BatchOrder
from .datasets.common import sample_per_label
from .engine import fit
from .errors import NON_NEGATIVE, POSITIVE, ArgumentParser, run_cli
from .fileio import staged_outputs, write_text_atomic
from .figures import default_curve_bits
from .losses import LossSettings
from .methods import DEEP_METHODS, make_method
from .metrics import mean_average_precision
from .nets import BITS
from .paper import PAPER_BITS, canonical_method
from .provenance import git_revision, versions
from .records import check_records, collect_records, protocol, write_record
from .solver import SolverSettings, caffe_param_groups
from .sweep import search

DATASET = "digits"
PROTOCOL = protocol(topk=None)       # MAP over the whole database, as the paper's CIFAR-10
QUERY_PER_CLASS, TRAIN_PER_CLASS = 10, 50   # the CIFAR-10 protocol at 1/10 scale: 100 queries, 500 training
HIDDEN = 256
SWEEP_LRS = (1e-3, 1e-2, 1e-1)   # base_lr candidates, chosen per variant and bits on a validation split
SWEEP_LR_LIMITS = (1e-5, 10.0)   # how far reproduce.sweep.search may extend them past an edge
VALIDATION_PER_CLASS = 10        # of the 50 training images per class

DIFFERENCES = """\
What this demo changes from the paper's setup (everything else is the reproduction's code):
- data: scikit-learn's handwritten digits (1,797 8x8 images, 10 classes) instead of CIFAR-10 /
  NUS-WIDE / Flickr; split as CIFAR-10 at 1/10 scale: 10 queries and 50 training images per class,
  database = the 1,697 non-query images (it contains the training images), MAP over all of it;
- network: no ImageNet CaffeNet (its weights cannot ship, and one trained from scratch learns
  nothing useful in minutes on a CPU); the hash function is fc7 (64 -> 256, ReLU) -> hash_layer
  (256 -> K) -> tanh on the pixels scaled to [0, 1] and centred, trained from scratch;
- solver: Caffe SGD with the authors' momentum 0.9, weight decay 0.0005, batch 64, step policy
  (gamma 0.3) and lr multipliers (hash layer 10x), but 1,500 iterations with stepsize 500 and
  base_lr chosen per variant and code length from 0.001 / 0.01 / 0.1, extended x10 past an
  edge that holds the best up to 10 (not the paper's 1e-5...1e-2: nothing here is pretrained)
  on a validation split of the training images (10 per class as queries, the other 400 as
  database; the query set is never used), with seed 0 and quantization weight 0.3 (not
  cross-validated here);
- baselines: the seven shallow ones fitted on the same 64-d pixels instead of fc7 features; the
  deep ones (CNNH, CNNH*, DNNH) trained as DHN is: the same small network with their heads,
  losses and targets (reproduce.methods), the same solver and split, base_lr chosen as DHN's
  but once per method, at the largest code length.
The loss (pairwise cross-entropy + 0.3 x log-cosh quantization; the DHN-Q and DHN-E variants of
Table 2), the batch order, the evaluation
conventions (Hamming ranking, ties by database order, queries without hits left out, radius 2) and
the table/figure code are the reproduction's own."""


class PixelHashNet(nn.Module):
    """x (N x 64 pixels) -> tanh codes (N x K), with Caffe's layer names for the lr multipliers;
    with a deep baseline `method` (reproduce.methods), its head on fc7 instead of hash_layer + tanh
    (forward gives the head's outputs, `codes` the method's real codes)."""
    arch = "caffenet"   # only for the checkpoint metadata of engine.fit's callers; not a CaffeNet

    def __init__(self, bits, in_features=64, hidden=HIDDEN, method=None):
        super().__init__()
        self.bits, self.method = bits, method
        self.fc7 = nn.Linear(in_features, hidden)
        if method is None:
            self.hash_layer = nn.Linear(hidden, bits)
        with torch.no_grad():   # Caffe gaussian fillers: fc std 0.1 (from scratch), fch std 0.01 as the authors'
            self.fc7.weight.normal_(0, 0.1)
            self.fc7.bias.zero_()
            if method is None:
                self.hash_layer.weight.normal_(0, 0.01)
                self.hash_layer.bias.zero_()
        if method is not None:
            self.head = method.make_head(bits, in_features=hidden)   # the method's own fillers

    def forward(self, x):
        h = torch.relu(self.fc7(x))
        return self.head(h) if self.method is not None else torch.tanh(self.hash_layer(h))

    def codes(self, x):
        """Real codes whose sign is the binary code."""
        out = self(x)
        return self.method.codes(out) if self.method is not None else out


def load_digits_split(seed=0):
    """features (1797 x 64 float32, centred by the training mean), one-hot labels, split indices."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    labels = np.eye(10, dtype=np.uint8)[digits.target]
    query, train = sample_per_label(labels, (QUERY_PER_CLASS, TRAIN_PER_CLASS), seed, source="digits")
    database = np.setdiff1d(np.arange(len(labels)), query)
    x = (digits.data / 16.0).astype(np.float32)
    x -= x[train].mean(axis=0)
    return x, labels, {"query": query, "train": train, "database": database}


# Table 2's trained variants and their losses (reproduce.config.VARIANTS; DHN-B is the DHN model
# ranked without sign).
VARIANT_LOSS = {v.method: v.loss(LossSettings()) for v in VARIANTS.values() if v.trained_as is None}


def train_dhn(x, labels, train, bits, seed, max_iter=1500, base_lr=0.01, progress=False, loss=LossSettings(),
              method=None):
    """Train PixelHashNet with the DHN loss (or a deep baseline's head, loss and targets) and Caffe
    SGD; returns the model (eval mode) and its log."""
    torch.manual_seed(seed)
    method = make_method(method, bits) if method else None
    model = PixelHashNet(bits, method=method)
    # The authors' solver (momentum 0.9, weight decay 5e-4, step policy, gamma 0.3, batch 64),
    # shorter: stepsize 500 and max_iter iterations.
    settings = SolverSettings(base_lr=base_lr, stepsize=500, max_iter=max_iter)
    solver = settings.make_optimizer(caffe_param_groups(
        model, lr_mults=model.head.lr_mults("head.") if method else None))
    order = BatchOrder(len(train), settings.batch_size, seed)
    targets = method.prepare_targets(labels[train], bits, seed) if method else labels[train]
    xs, ys = torch.from_numpy(x[train]), torch.from_numpy(targets)
    batches = ((xs[i], ys[i]) for i in (order.batch(t)[0] for t in range(max_iter)))
    log = []
    criterion = method.make_loss() if method else loss.make_loss()
    fit(model.train(), batches, criterion, solver, 0, max_iter, batch_size=settings.batch_size,
        display=100, log=log.append, progress=progress, echo=False)
    return model.eval(), log


def choose_lr(x, labels, train, loss, bits, lrs=SWEEP_LRS, max_iter=1500, method=None):
    """The paper's cross-validation, reduced to base_lr: best validation MAP, first of equals;
    a best at the edge of the grid extends it (reproduce.sweep.search). Returns (best, rows of
    (lr, MAP, extended))."""
    val = sample_per_label(labels[train], (VALIDATION_PER_CLASS,), 1, source="digits training")[0]
    rest = np.setdiff1d(np.arange(len(train)), val)

    def score(lr):
        model, _ = train_dhn(x, labels, train[rest], bits, 0, max_iter=max_iter, base_lr=lr, loss=loss,
                             method=method)
        with torch.no_grad():
            b = np.where(model.codes(torch.from_numpy(x[train])).numpy() >= 0, 1, -1).astype(np.int8)
        return mean_average_precision(b[val], b[rest], labels[train][val], labels[train][rest])

    return search(lrs, score, SWEEP_LR_LIMITS)


def get_args_parser():
    p = ArgumentParser("python -m reproduce.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.join("results", "demo"), help="results folder (default results/demo)")
    p.add_argument("--bits", type=BITS, nargs="+", default=list(PAPER_BITS), help="code lengths (paper: 12 24 32 48)")
    p.add_argument("--seeds", type=NON_NEGATIVE, nargs="+", default=[0, 1, 2], help="training seeds (default 0 1 2)")
    p.add_argument("--baselines", nargs="*", choices=list(BASELINES), default=list(BASELINES),
                   help="shallow baselines on the pixels (default: all)")
    p.add_argument("--methods", nargs="*", choices=list(DEEP_METHODS), default=list(DEEP_METHODS),
                   help="deep baselines on the same small network (default: all)")
    p.add_argument("--max-iter", type=POSITIVE, default=1500)
    return p


def sweep_lrs(args, x, labels, split, start):
    """base_lr per (variant, bits), chosen on the validation split; the sweep table's lines."""
    lr_of, lines = {}, ["| variant | bits | base_lr | validation MAP | |", "|---|---|---|---|---|"]
    for bits in args.bits:
        for method, loss in VARIANT_LOSS.items():
            lr_of[method, bits], rows = choose_lr(x, labels, split["train"], loss, bits, max_iter=args.max_iter)
            lines += [f"| {method} | {bits} | {lr:g} | {m:.4f} | {'added: best at the edge' if ext else ''} |"
                      for lr, m, ext in rows]
            print(f"{method} {bits} bits: base_lr {lr_of[method, bits]:g} (validation MAP " +
                  ", ".join(f"{lr:g}: {m:.4f}" for lr, m, _ in rows) + f")  [{time.time() - start:.0f} s]")
    return lr_of, lines


def run_variants(args, x, labels, split, lr_of, save, start):
    """Train and evaluate every variant at every bit length and seed (DHN-B: DHN's codes unsigned)."""
    q, db = split["query"], split["database"]
    for seed in args.seeds:
        for bits in args.bits:
            for method, loss in VARIANT_LOSS.items():
                model, log = train_dhn(x, labels, split["train"], bits, seed, max_iter=args.max_iter,
                                       base_lr=lr_of[method, bits], loss=loss)
                with torch.no_grad():
                    z = model(torch.from_numpy(x)).numpy()
                b = np.where(z >= 0, 1, -1).astype(np.int8)
                inputs = {"training": {"base_lr": lr_of[method, bits], "first_loss": log[0]["total"],
                                       "last_loss": log[-1]["total"]}}
                doc = evaluate_method(method, DATASET, b[q], b[db], labels[q], labels[db], seed=seed, inputs=inputs,
                                      protocol=PROTOCOL)
                save(doc, method, bits, seed)
                if method == "DHN":
                    save(evaluate_method("DHN-B", DATASET, z[q], z[db], labels[q], labels[db], seed=seed,
                                         inputs=inputs, binary=False, protocol=PROTOCOL), "DHN-B", bits, seed)
                print(f"{method} {bits} bits seed {seed}: loss {log[0]['total']:.3f} -> {log[-1]['total']:.3f}, "
                      f"MAP {doc['metrics']['map']:.4f}  [{time.time() - start:.0f} s]")


def run_methods(args, x, labels, split, save, start):
    """The deep baselines of Table 1 on the same small network, solver and split as DHN, each
    with its base_lr chosen on the validation split as DHN's, once, at the largest code length
    (as the per-dataset commands' --sweep-bits)."""
    q, db = split["query"], split["database"]
    for name in args.methods:
        label = canonical_method(name)
        lr, _ = choose_lr(x, labels, split["train"], LossSettings(), max(args.bits), max_iter=args.max_iter,
                          method=name)
        for bits in args.bits:
            for seed in args.seeds:
                model, log = train_dhn(x, labels, split["train"], bits, seed, max_iter=args.max_iter,
                                       base_lr=lr, method=name)
                with torch.no_grad():
                    b = np.where(model.codes(torch.from_numpy(x)).numpy() >= 0, 1, -1).astype(np.int8)
                doc = evaluate_method(label, DATASET, b[q], b[db], labels[q], labels[db], seed=seed, protocol=PROTOCOL,
                                      inputs={"training": {"base_lr": lr, "first_loss": log[0]["total"],
                                                           "last_loss": log[-1]["total"]}})
                save(doc, label, bits, seed)
                print(f"{label} {bits} bits seed {seed}: base_lr {lr:g}, loss {log[0]['total']:.3f} -> "
                      f"{log[-1]['total']:.3f}, MAP {doc['metrics']['map']:.4f}  [{time.time() - start:.0f} s]")


def run_baselines(args, x, labels, split, save):
    """The shallow baselines on the same pixels (first seed only: they are not trained by SGD)."""
    q, db, seed = split["query"], split["database"], args.seeds[0]
    for bits in args.bits:
        for name in args.baselines:
            model_b = make_baseline(name, bits, seed=seed)
            model_b.fit(x[split["train"]], labels=labels[split["train"]] if model_b.supervised else None)
            codes = model_b.encode(x)
            doc_b = evaluate_method(name, DATASET, codes[q], codes[db], labels[q], labels[db], seed=seed,
                                    inputs={"baseline": model_b.settings()}, protocol=PROTOCOL)
            save(doc_b, doc_b["method"], bits, seed)
            print(f"{doc_b['method']} {bits} bits: MAP {doc_b['metrics']['map']:.4f}")


def main(argv=None):
    args = get_args_parser().parse_args(argv)
    start = time.time()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    print(DIFFERENCES + "\n")
    x, labels, split = load_digits_split()
    # Everything is written into a staging folder and replaces the previous results together
    # (the old metrics/ included) when the whole demo has succeeded.
    with staged_outputs(args.out, remove=["metrics"]) as out:
        metrics_dir = os.path.join(out, "metrics")

        def save(doc, name, bits, seed):
            write_record(os.path.join(metrics_dir, f"{name}_{bits}bits_seed{seed}"), doc, force=True)

        lr_of, sweep_lines = sweep_lrs(args, x, labels, split, start)
        write_text_atomic(os.path.join(out, "sweep.md"), "\n".join(sweep_lines) + "\n")
        run_variants(args, x, labels, split, lr_of, save, start)
        run_methods(args, x, labels, split, save, start)
        run_baselines(args, x, labels, split, save)
        records = check_records(collect_records([metrics_dir]), DATASET)
        write_comparison(records, DATASET, out, default_curve_bits(records), dataset_title="Digits (demo)")
        write_text_atomic(os.path.join(out, "run.json"), json.dumps(
            {"command": "python -m reproduce.demo", "config": vars(args), "split": {k: len(v) for k, v in split.items()},
             "base_lr": {f"{m} {b}": lr for (m, b), lr in lr_of.items()},
             "differences_from_paper": DIFFERENCES.splitlines(), "versions": versions(),
             "git_revision": git_revision(), "seconds": round(time.time() - start, 1)}, indent=2) + "\n")
    print(f"\nwrote {args.out}/table1.md, table2.md, figures and metrics in {time.time() - start:.0f} s")
    print(open(os.path.join(args.out, "table1.md")).read())


if __name__ == "__main__":
    run_cli(main)
