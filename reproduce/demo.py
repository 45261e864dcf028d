"""`python -m reproduce.demo [--out results/demo]`: the whole method, offline, in minutes on a CPU.

The paper's setting needs ImageNet weights and a GPU; neither ships with a package. This demo runs
the same loss (reproduce.training.losses.DHNLoss), solver (reproduce.training.solver.CaffeSGD with the authors'
multipliers), training loop (reproduce.training.engine.fit), batch order (reproduce.data.batches.BatchOrder),
evaluation (reproduce.evaluation.metrics), tables and figures (reproduce.reporting.comparison) on a real dataset that
ships with scikit-learn: the handwritten digits (1,797 images of 8 x 8 pixels, 10 classes), split
as the paper splits CIFAR-10. Its work is the per-dataset commands' job plan (reproduce.pipeline.grid: the
same grid, names, identities, states, --plan and --rerun-stale), with jobs that train the small
network below on the pixels; trainings and codes go to --work (runs/demo), results to --out.
What differs from the paper is printed (DIFFERENCES) and in the README.
"""
import argparse
import dataclasses
import hashlib
import json
import os
import time

import h5py
import numpy as np
import torch
from torch import nn

from .baselines import BASELINES, make_baseline
from .cli import BITS, NON_NEGATIVE, POSITIVE, ArgumentParser, add_plan_options, executor_settings, run_cli
from .data.batches import BatchOrder
from .datasets.common import sample_per_label
from .evaluation.codes import ENCODE_FORMAT, sign_codes
from .evaluation.metrics import mean_average_precision
from .evaluation.records import check_records, protocol, read_record, write_record
from .methods import DEEP_METHODS, make_method
from .pipeline import identity as ids
from .pipeline.executors import plan_main
from .pipeline.grid import (GridBuilder, GridSpec, SweepSpec, make_sweep_job, run_name, sweep_choice,
                            write_diverged)
from .pipeline.jobs import earlier_summary_outputs, require_identity, summary_names, sweep_markdown
from .pipeline.plan import Job, Plan
from .reporting.comparison import evaluate_method, write_comparison
from .reporting.figures import default_curve_bits
from .reporting.paper import PAPER_BITS, canonical_method
from .training.config import VARIANTS
from .training.engine import NonFiniteLoss, Report, fit
from .training.losses import LossSettings
from .training.solver import SolverSettings, caffe_param_groups
from .utils.fileio import atomic_output, check_output_folder, staged_outputs, write_text_atomic
from .utils.locks import writer_lock
from .utils.provenance import git_revision, versions

DATASET = "digits"
PROTOCOL = protocol(topk=None)       # MAP over the whole database, as the paper's CIFAR-10
QUERY_PER_CLASS, TRAIN_PER_CLASS = 10, 50   # the CIFAR-10 protocol at 1/10 scale: 100 queries, 500 training
HIDDEN = 256
SWEEP_LRS = (1e-3, 1e-2, 1e-1)   # base_lr candidates, chosen per variant and bits on a validation split
SWEEP_LR_LIMITS = (1e-5, 10.0)   # how far reproduce.pipeline.sweep.search may extend them past an edge
VALIDATION_PER_CLASS = 10        # of the 50 training images per class
STEPSIZE = 500                   # the step policy's stepsize at the demo's 1,500 iterations

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


# Table 2's trained variants and their losses (reproduce.training.config.VARIANTS; DHN-B is the DHN model
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
    settings = SolverSettings(base_lr=base_lr, stepsize=STEPSIZE, max_iter=max_iter)
    solver = settings.make_optimizer(caffe_param_groups(
        model, lr_mults=model.head.lr_mults("head.") if method else None))
    order = BatchOrder(len(train), settings.batch_size, seed)
    targets = method.prepare_targets(labels[train], bits, seed) if method else labels[train]
    xs, ys = torch.from_numpy(x[train]), torch.from_numpy(targets)
    batches = ((xs[i], ys[i]) for i in (order.batch(t)[0] for t in range(max_iter)))
    log = []
    criterion = method.make_loss() if method else loss.make_loss()
    fit(model.train(), batches, criterion, solver, 0, max_iter,
        Report(settings.batch_size, display=100, log=log.append, progress=progress, echo=False))
    return model.eval(), log


def validation_split(labels, train):
    """The sweep's split of the training images (the query set is never used): 10 per class as
    validation queries, the other 400 as training images and database. (val, rest) indices
    into `train`."""
    val = sample_per_label(labels[train], (VALIDATION_PER_CLASS,), 1, source="digits training")[0]
    return val, np.setdiff1d(np.arange(len(train)), val)


def data_identity():
    """The demo's data as a source: the digits, their split and scaling (sha1 of the arrays)."""
    x, labels, split = load_digits_split()
    h = hashlib.sha1()
    for a in (x, labels, *split.values()):
        h.update(np.ascontiguousarray(a).tobytes())
    return ids.source_identity("data/digits", {"sha1": h.hexdigest(), "hidden": HIDDEN})


# ---------------------------------------------------------------------------- the demo's jobs
# Module-level functions with JSON arguments (reproduce.pipeline.plan.Job): any executor can run them.

def _loss(trained):
    """The LossSettings of a trained variant (Table 2); None for a deep baseline (its own loss)."""
    return VARIANT_LOSS[VARIANTS[trained].method] if trained in VARIANTS else None


def _train(trained, x, labels, train, bits, seed, max_iter, base_lr):
    method = None if trained in VARIANTS else trained
    return train_dhn(x, labels, train, bits, seed, max_iter=max_iter, base_lr=base_lr,
                     loss=_loss(trained) or LossSettings(), method=method)


def demo_train(identity, trained, bits, seed, max_iter, out, base_lr=None, sweep=None):
    """Job: one training on the digits; final.pth holds the state dict, the log's ends, base_lr."""
    if sweep:
        base_lr = sweep_choice(sweep["path"], sweep["hex"])["base_lr"]
    x, labels, split = load_digits_split()
    model, log = _train(trained, x, labels, split["train"], bits, seed, max_iter, base_lr)
    meta = {"identity": identity, "base_lr": base_lr, "first_loss": log[0]["total"], "last_loss": log[-1]["total"]}
    with atomic_output(os.path.join(out, "final.pth"), overwrite=True) as tmp:
        torch.save({"state_dict": model.state_dict(), "meta": meta}, tmp)
    print(f"{trained} {bits} bits seed {seed}: base_lr {base_lr:g}, loss {log[0]['total']:.3f} -> "
          f"{log[-1]['total']:.3f}")


def _load_model(checkpoint, trained, bits):
    require_identity(checkpoint["path"], checkpoint["hex"], "trained model")
    ckpt = torch.load(checkpoint["path"], map_location="cpu", weights_only=True)
    method = None if trained in VARIANTS else make_method(trained, bits)
    model = PixelHashNet(bits, method=method)
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), ckpt["meta"]


def demo_encode(identity, checkpoint, trained, bits, query, database):
    """Job: the codes of every digit in one forward pass, written as the query and database code
    files (reproduce.encode's format: real codes, labels, the sign rule applied when read)."""
    x, labels, split = load_digits_split()
    model, meta = _load_model(checkpoint, trained, bits)
    with torch.no_grad():
        z = model.codes(torch.from_numpy(x)).numpy()
    for part, path in (("query", query), ("database", database)):   # the database is the stamp
        rows = split[part]
        with atomic_output(path, overwrite=True) as tmp, h5py.File(tmp, "w") as f:
            f.attrs.update(format=ENCODE_FORMAT, bits=bits, identity=ids.to_attr(identity),
                           training=json.dumps({k: meta[k] for k in ("base_lr", "first_loss", "last_loss")}))
            f.create_dataset("codes", data=z[rows].astype(np.float32))
            f.create_dataset("labels", data=labels[rows].astype(np.uint8))
            f.create_dataset("paths", data=[f"digits/{i}" for i in rows], dtype=h5py.string_dtype("utf-8"))


def demo_trial(identity, trained, bits, max_iter, base_lr, quant_weight, out):
    """Job: one value of a sweep: train at seed 0 on the training images but the validation
    queries, and the MAP of the validation queries against the rest (out/metrics.json)."""
    x, labels, split = load_digits_split()
    train = split["train"]
    val, rest = validation_split(labels, train)
    try:
        model, _ = _train(trained, x, labels, train[rest], bits, 0, max_iter, base_lr)
    except NonFiniteLoss as e:
        return write_diverged(os.path.join(out, "metrics.json"), identity, e)
    with torch.no_grad():
        b = sign_codes(model.codes(torch.from_numpy(x[train])).numpy())
    score = mean_average_precision(b[val], b[rest], labels[train][val], labels[train][rest])
    doc = {"method": canonical_method(trained) if trained not in VARIANTS else VARIANTS[trained].method,
           "dataset": DATASET, "bits": bits, "seed": 0, "metrics": {"map": float(score)}, "identity": identity}
    write_text_atomic(os.path.join(out, "metrics.json"), json.dumps(doc, indent=1) + "\n")


def demo_baseline(identity, name, bits, seed, out):
    """Job: a shallow baseline fitted on the training pixels, evaluated (metrics.json)."""
    x, labels, split = load_digits_split()
    q, db = split["query"], split["database"]
    model = make_baseline(name, bits, seed=seed)
    model.fit(x[split["train"]], labels=labels[split["train"]] if model.supervised else None)
    codes = model.encode(x)
    doc = evaluate_method(name, DATASET, codes[q], codes[db], labels[q], labels[db], seed=seed,
                          inputs={"baseline": model.settings()}, protocol=PROTOCOL)
    write_record(out, dict(doc, identity=identity), force=True)
    print(f"{doc['method']} {bits} bits: MAP {doc['metrics']['map']:.4f}")


def demo_summary(identity, records, sweeps, out, run):
    """Job: the tables, figures and sweep.md of the demo's evaluations, and run.json (last)."""
    loaded = []
    for spec in records:
        require_identity(spec["path"], spec["hex"], "evaluation")
        loaded.append(read_record(spec["path"]))
    loaded = check_records(loaded, DATASET)
    curve_bits = default_curve_bits(loaded)
    names = summary_names(curve_bits, True)
    # an earlier plan's figures at other bits go when these are committed (earlier_summary_outputs)
    with staged_outputs(out, remove=earlier_summary_outputs(out, names)) as stage:
        write_comparison(loaded, DATASET, stage, curve_bits, dataset_title="Digits (demo)")
        with open(os.path.join(stage, "sweep.md"), "w", encoding="utf-8") as f:
            f.write(sweep_markdown(sweeps))
    doc = dict(run, identity=identity, versions=versions(), git_revision=git_revision(),
               seconds=round(time.time() - run["started"], 1), outputs=names)
    write_text_atomic(os.path.join(out, "run.json"), json.dumps(doc, indent=2) + "\n")


# ---------------------------------------------------------------------------- the plan
class DemoGrid(GridBuilder):
    """The grid of reproduce.pipeline.grid with the demo's jobs: PixelHashNet on the digits."""

    def __init__(self, spec, out, work, max_iter, run_info):
        super().__init__(spec)
        self.out, self.work, self.max_iter, self.run_info = out, work, max_iter, run_info
        self.data = data_identity()

    def _settings(self, trained, bits):
        loss = _loss(trained)
        return {"trained": trained, "bits": bits, "max_iter": self.max_iter, "stepsize": STEPSIZE,
                "loss": None if loss is None else dataclasses.asdict(loss)}

    def train_job(self, run, sweep):
        out = os.path.join(self.work, "train", run.folder)
        settings = dict(self._settings(run.name, run.bits), seed=run.seed, base_lr=f"chosen by {sweep.name}")
        stamp = os.path.join(out, "final.pth")
        return Job(f"train/{run.folder}", "train", settings, "reproduce.demo:demo_train",
                   {"trained": run.name, "bits": run.bits, "seed": run.seed, "max_iter": self.max_iter, "out": out,
                    "sweep": {"path": sweep.stamp, "hex": sweep.identity["hex"]}},
                   stamp=stamp, outputs=(out, stamp), inputs={"data/digits": self.data, sweep.name: sweep.identity},
                   deps=(sweep.name,), verb="trained")

    def encode_jobs(self, run, train):
        paths = {p: os.path.join(self.work, "codes", f"{run.folder}_{p}.h5") for p in ("query", "database")}
        job = Job(f"encode/{run.folder}", "encode", {"parts": ["query", "database"]}, "reproduce.demo:demo_encode",
                  {"checkpoint": {"path": train.stamp, "hex": train.identity["hex"]}, "trained": run.name,
                   "bits": run.bits, **paths},
                  stamp=paths["database"], outputs=(paths["query"], paths["database"]),
                  inputs={train.name: train.identity}, deps=(train.name,), verb="encoded")
        return [job], {p: (job, path) for p, path in paths.items()}

    def evaluate_job(self, label, run, codes, binary):
        label = label or canonical_method(run.name)
        name = run_name(label, run.bits, run.seed)
        out = os.path.join(self.out, "metrics", name)
        encode = codes["query"][0]          # one job wrote both files
        return Job(f"evaluate/{name}", "evaluate",
                   {"method": label, "binary": binary, "seed": run.seed, "protocol": PROTOCOL},
                   "reproduce.pipeline.jobs:evaluate_run",
                   {"dataset": DATASET, "method": label, "seed": run.seed, "binary": binary, "protocol": PROTOCOL,
                    "out": out, **{p: {"path": path, "hex": encode.identity["hex"]} for p, (_, path) in codes.items()}},
                   stamp=os.path.join(out, "metrics.json"), outputs=(out, os.path.join(out, "metrics.json")),
                   inputs={encode.name: encode.identity}, deps=(encode.name,), verb="evaluated")

    def trial_template(self, unit):
        return {"func": "reproduce.demo:demo_trial", "folder": os.path.join(self.work, "sweep", unit.name),
                "settings": dict(self._settings(unit.trained, unit.bits), validation=VALIDATION_PER_CLASS),
                "inputs": {"data/digits": self.data},
                "args": {"trained": unit.trained, "bits": unit.bits, "max_iter": self.max_iter}}

    def sweep_job(self, unit, trials):
        return make_sweep_job(unit, trials, self.trial_template(unit),
                              os.path.join(self.out, "sweep", f"{unit.name}.json"))

    def baseline_job(self, name, bits, seed, features):
        folder = run_name(name.upper(), bits, seed)
        out = os.path.join(self.out, "metrics", folder)
        return Job(f"baseline/{folder}", "baseline", {"baseline": name, "bits": bits, "seed": seed, "protocol": PROTOCOL},
                   "reproduce.demo:demo_baseline", {"name": name, "bits": bits, "seed": seed, "out": out},
                   stamp=os.path.join(out, "metrics.json"), outputs=(out, os.path.join(out, "metrics.json")),
                   inputs={"data/digits": self.data}, verb="fitted")

    def summary_job(self, evaluations, sweeps):
        return Job("summary", "summary", {"dataset": DATASET}, "reproduce.demo:demo_summary",
                   {"records": [{"path": j.stamp, "hex": j.identity["hex"]} for j in evaluations],
                    "sweeps": [{"path": j.stamp, "hex": j.identity["hex"]} for j in sweeps],
                    "out": self.out, "run": self.run_info},
                   stamp=os.path.join(self.out, "run.json"),
                   # out itself: what a killed summary left there (.staging-*) goes before it runs
                   outputs=(os.path.join(self.out, "run.json"), self.out),
                   inputs={j.name: j.identity for j in evaluations + sweeps},
                   deps=tuple(j.name for j in evaluations + sweeps), summary=True, lineage=False)


def get_args_parser():
    p = ArgumentParser("python -m reproduce.demo", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.join("results", "demo"), help="results folder (default results/demo)")
    p.add_argument("--work", default=os.path.join("runs", "demo"),
                   help="trainings, codes and sweep trials (default runs/demo)")
    p.add_argument("--bits", type=BITS, nargs="+", default=list(PAPER_BITS), help="code lengths (paper: 12 24 32 48)")
    p.add_argument("--seeds", type=NON_NEGATIVE, nargs="+", default=[0, 1, 2], help="training seeds (default 0 1 2)")
    p.add_argument("--baselines", nargs="*", choices=list(BASELINES), default=list(BASELINES),
                   help="shallow baselines on the pixels (default: all)")
    p.add_argument("--methods", nargs="*", choices=list(DEEP_METHODS), default=list(DEEP_METHODS),
                   help="deep baselines on the same small network (default: all)")
    p.add_argument("--max-iter", type=POSITIVE, default=1500)
    add_plan_options(p)
    return p


def grid_spec(args):
    """The demo's grid: every variant at every bits and seed, base_lr chosen per variant and
    bits (deep baselines: once, at the longest code), the shallow baselines at the first seed.
    UserError for a value given twice (--bits 12 12)."""
    return GridSpec(DATASET, tuple(args.bits), tuple(args.seeds), tuple(VARIANTS), tuple(args.methods),
                    tuple(args.baselines), tuple(args.seeds[:1]),
                    SweepSpec(SWEEP_LRS, None, None, max(args.bits), SWEEP_LR_LIMITS, SWEEP_LR_LIMITS, per_bits=True))


def make_plan(args, started=None):
    """The demo's job plan (grid_spec)."""
    spec = grid_spec(args)
    run_info = {"command": "python -m reproduce.demo", "config": vars(args), "started": started or time.time(),
                "differences_from_paper": DIFFERENCES.splitlines()}
    jobs = DemoGrid(spec, args.out, args.work, args.max_iter, run_info).jobs()
    return Plan(jobs, os.path.join(args.work, "jobs"))


def main(argv=None):
    args = get_args_parser().parse_args(argv)
    executor = executor_settings(args)
    executor.check()
    start = time.time()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    # what the run refuses (a file, a read-only place) --plan refuses too, creating nothing
    check_output_folder(args.out, "--out")
    check_output_folder(args.work, "--work")
    grid_spec(args)          # a value given twice is refused before anything is printed or written
    if args.plan:
        plan_main(make_plan(args, start), executor)
        return
    print(DIFFERENCES + "\n")
    with writer_lock(args.out, "--out"), writer_lock(args.work, "--work"):
        plan_main(make_plan(args, start), executor, log=lambda text: print(f"{text}  [{time.time() - start:.0f} s]"))
    print(f"\nwrote {args.out}/table1.md, table2.md, figures and metrics in {time.time() - start:.0f} s")
    with open(os.path.join(args.out, "table1.md"), encoding="utf-8") as f:
        print(f.read())


if __name__ == "__main__":
    run_cli(main)
