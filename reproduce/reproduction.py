"""From nothing to `results/<dataset>/`: the engine behind `python -m reproduce.<dataset>`.

One configuration = (variant, bits, seed). For each: train (reproduce.engine, skipped when the run
folder holds final.pth, resumed when it holds snapshots), encode query and database
(reproduce.encode, skipped when the codes exist), evaluate with the dataset's protocol (skipped
when metrics.json exists). DHN-B is the DHN run ranked by its continuous codes. The shallow
baselines are fitted on the fc7 features of the ImageNet network (no fine-tuning), as in the
paper's Table 1. Then Table 1, Table 2 and Figures (a)-(c) are written next to the paper's
numbers (reproduce.comparison.build_comparison), and run.json records the whole configuration.

The dataset modules (reproduce.datasets.cifar10, nus_wide, flickr) are presets over this engine:
how to get the lists, and nothing else; `python -m reproduce.<dataset>` runs their `main`.
"""
import dataclasses
import json
import os
import sys
import time

import h5py
import numpy as np

from .baselines import BASELINES, make_baseline
from .checkpoint import load_checkpoint, model_from_checkpoint
from .comparison import build_comparison, dataset_protocol, evaluate_baselines, evaluate_method
from .config import VARIANTS, DataSettings, MethodSettings, ModelSettings, RunConfig
from .datasets.common import build_report, format_report, require_images, write_split
from .encoding import PIPELINES, encode_list
from .engine import snapshots, train
from .errors import BATCH_SIZE, NON_NEGATIVE, POSITIVE, WORKERS, ArgumentParser, UserError, number
from .fileio import read_json, sha1_file, write_text_atomic
from .lists import ImageList
from .losses import LOSS_PRESETS
from .nets import ARCHS, BITS, FC_LAYERS
from .methods import DEEP_METHODS
from .paper import PAPER_BITS, canonical_method
from .provenance import git_revision, versions
from .records import collect_records, read_record, write_record
from .solver import PRESETS
from .sweep import SWEEP_LRS, SWEEP_QUANT_WEIGHTS, Sweeps
from .pretrained import ensure_pretrained

SMOKE = dict(train=32, query=8, database=40, max_iter=3, batch_size=8)
# Settings that define what a results folder holds; a re-run with other values is refused.
IDENTITY_KEYS = ("dataset", "lists", "arch", "preset", "max_iter", "batch_size", "base_lr", "quant_weight",
                 "protocol", "smoke", "sweep", "oversample", "pipeline", "database_excludes_train")


@dataclasses.dataclass
class Preset:
    """What differs between datasets: the name, the label count, how the lists are made, the
    default bit lengths, the evaluation protocol and the published numbers shown beside ours.

    make_lists(args, lists_dir) -> {"train", "query", "database": ImageList}, writing the three
    list files into lists_dir; add_arguments(parser) adds the dataset's own options. num_labels
    None: the lists' own. protocol None: the dataset module's (comparison.dataset_protocol).
    paper None: the DHN paper's numbers (reproduce.paper), shown where they name this dataset.
    """
    name: str
    title: str
    num_labels: int | None
    make_lists: callable
    add_arguments: callable = lambda parser: None
    bits: tuple = PAPER_BITS
    protocol: dict | None = None
    paper: dict | None = None


def get_args_parser(preset):
    p = ArgumentParser(f"python -m reproduce.{preset.name}",
                       description=f"DHN on {preset.title}: training, codes, Tables 1-2 and Figures (a)-(c).")
    p.add_argument("--root", required=True, help="dataset root: the image paths of the lists are relative to it")
    p.add_argument("--bits", type=BITS, nargs="+", default=list(preset.bits),
                   help=f"code lengths (default {' '.join(map(str, preset.bits))})")
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
                   help="Table 2 variants (default: all four)")
    p.add_argument("--baselines", nargs="*", choices=list(BASELINES), default=list(BASELINES),
                   help="shallow baselines on fc7 features (default: all)")
    p.add_argument("--methods", nargs="*", choices=list(DEEP_METHODS), default=list(DEEP_METHODS),
                   help="deep baselines of Table 1 trained like DHN on the same network, solver and "
                        "lists (reproduce.methods; default: all)")
    p.add_argument("--seeds", type=NON_NEGATIVE, nargs="+", default=[0], help="one training run per seed (default 0)")
    p.add_argument("--arch", choices=ARCHS, default="caffenet",
                   help="default caffenet: the network the authors fine-tuned")
    p.add_argument("--weights", default=None,
                   help="converted ImageNet checkpoint (default: weights/<arch>.pth, fetched if absent)")
    p.add_argument("--weights-dir", default="weights")
    p.add_argument("--out", default=None, help="results folder (default results/<dataset>)")
    p.add_argument("--work", default=None,
                   help="caches, lists, features and training runs (default runs/<dataset>)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="dhn-caffe",
                   help="solver and loss preset (default: the authors' dhn-caffe)")
    p.add_argument("--max-iter", type=POSITIVE, default=None,
                   help=f"override the preset's max_iter ({PRESETS['dhn-caffe'].max_iter})")
    p.add_argument("--batch-size", type=BATCH_SIZE, default=None,
                   help=f"override the preset's batch ({PRESETS['dhn-caffe'].batch_size})")
    p.add_argument("--base-lr", type=number(0, low_open=True), default=None,
                   help=f"override the preset's base_lr ({PRESETS['dhn-caffe'].base_lr:g})")
    p.add_argument("--quant-weight", type=number(0), default=None,
                   help=f"override the preset's λ ({LOSS_PRESETS['dhn-caffe'].quant_weight:g})")
    p.add_argument("--oversample", action="store_true", help="encode with pycaffe's 10 crops (default: centre crop)")
    p.add_argument("--pipeline", choices=PIPELINES, default="imagedata",
                   help="image pipeline of the codes: imagedata (Caffe's TEST phase, default) or pycaffe "
                        "(the authors' evaluation scripts; see reproduce.encode)")
    p.add_argument("--workers", type=WORKERS, default=2, help="loader processes")
    p.add_argument("--device", default="auto")
    p.add_argument("--smoke", action="store_true",
                   help=f"whole chain on {SMOKE['train']}/{SMOKE['query']}/{SMOKE['database']} images and "
                        f"{SMOKE['max_iter']} iterations, into results/smoke/<dataset>: checks an installation")
    g = p.add_argument_group("cross-validation (the paper's grid, on a validation split of the training set)")
    g.add_argument("--sweep", action="store_true", help="choose base_lr and λ on a validation split first")
    g.add_argument("--sweep-bits", type=BITS, default=48)
    g.add_argument("--sweep-max-iter", type=POSITIVE, default=None, help="iterations per sweep run (default: max_iter)")
    g.add_argument("--sweep-lrs", type=number(0, low_open=True), nargs="+", default=list(SWEEP_LRS))
    g.add_argument("--sweep-quant-weights", type=number(0), nargs="+", default=list(SWEEP_QUANT_WEIGHTS))
    g.add_argument("--validation-fraction", type=number(0, 1, low_open=True, high_open=True), default=0.1,
                   help="share of the training list held out as validation queries (default 0.1)")
    preset.add_arguments(p)
    return p


def subset(image_list, n):
    """The first n entries (smoke runs)."""
    return image_list.subset(np.arange(min(n, len(image_list))))


class Reproduction(Sweeps):
    """One dataset's reproduction: folders, the identity check, and every configuration."""

    def __init__(self, preset, args):
        self.preset, self.args = preset, args
        smoke = "smoke/" if args.smoke else ""
        self.out = args.out or os.path.join("results", smoke + preset.name)
        self.work = args.work or os.path.join("runs", smoke + preset.name)
        self.protocol = preset.protocol or dataset_protocol(preset.name)
        self.log = print

    # ------------------------------------------------------------------------------ setup
    def prepare(self):
        """Lists, report, images on disk, weights, identity of the results folder: all before training."""
        a = self.args
        if os.path.exists(a.root) and not os.path.isdir(a.root):
            raise UserError(f"--root {a.root}: is a file, not the dataset's folder")
        lists_dir = os.path.join(self.work, "lists")
        lists = self.preset.make_lists(a, lists_dir)
        need = self._baseline_samples()
        if a.smoke:       # enough training images for the shallow baselines at the longest code
            lists = {k: subset(v, max(SMOKE[k], need) if k == "train" else SMOKE[k]) for k, v in lists.items()}
            lists_dir = os.path.join(self.work, "lists_smoke")
            write_split(lists, lists_dir, overwrite=True)
        self.lists = {k: ImageList(v.paths, v.labels, os.path.join(lists_dir, f"{k}.txt"), None)
                      for k, v in lists.items()}
        self.num_labels = self.preset.num_labels or self.lists["train"].labels.shape[1]
        report = build_report(self.lists, a.root)
        self.log(format_report(report))
        require_images(self.lists, a.root)
        if len(self.lists["train"]) < need:
            raise UserError(f"{self.lists['train'].source}: {len(self.lists['train'])} training images, but "
                            f"the shallow baselines at {max(a.bits)} bits need {need} (use fewer --bits, "
                            "more images, or leave those --baselines out)")
        self.weights = a.weights or ensure_pretrained(a.arch, a.weights_dir)
        self.identity = self._identity()
        self._check_identity()

    def _baseline_samples(self):
        """The fewest training images every requested shallow baseline can be fitted with."""
        dim = FC_LAYERS["fc7"][1]
        return max([make_baseline(name, bits).min_train_samples(dim)
                    for name in self.args.baselines for bits in self.args.bits], default=0)

    def _identity(self):
        a = self.args
        return {"dataset": self.preset.name, "arch": a.arch, "preset": a.preset, "smoke": a.smoke,
                "lists": {k: sha1_file(v.source) for k, v in self.lists.items()},
                "max_iter": SMOKE["max_iter"] if a.smoke else a.max_iter,
                "batch_size": SMOKE["batch_size"] if a.smoke else a.batch_size,
                "base_lr": a.base_lr, "quant_weight": a.quant_weight, "oversample": a.oversample,
                "protocol": self.protocol, "sweep": a.sweep, "pipeline": a.pipeline,
                "database_excludes_train": getattr(a, "database_excludes_train", False)}

    def _check_identity(self):
        path = os.path.join(self.out, "run.json")
        if not os.path.exists(path):
            return
        try:
            old = read_json(path, "run.json")
        except UserError as e:
            raise UserError(f"{e}; this results folder cannot be checked against the configuration: "
                            "use another --out (nothing was changed)") from None
        old = old.get("identity") if isinstance(old, dict) else None
        if not isinstance(old, dict):
            raise UserError(f"{path}: no 'identity' object; use another --out (nothing was changed)")
        differ = [k for k in IDENTITY_KEYS if old.get(k) != self.identity.get(k)]
        if differ:
            raise UserError(f"{path}: this results folder was written with another configuration "
                            f"({differ[0]}: {old.get(differ[0])!r}, now {self.identity.get(differ[0])!r}); "
                            "use another --out (nothing was changed)")

    # ------------------------------------------------------------------------------ pieces
    def settings(self):
        """(SolverSettings, LossSettings) of every run: the preset with the command's overrides."""
        a = self.args
        given = {"max_iter": a.max_iter, "batch_size": a.batch_size, "base_lr": a.base_lr}
        if a.smoke:
            given.update(max_iter=SMOKE["max_iter"], batch_size=SMOKE["batch_size"],
                         snapshot=SMOKE["max_iter"], display=1)
        solver = dataclasses.replace(PRESETS[a.preset], **{k: v for k, v in given.items() if v is not None})
        loss = LOSS_PRESETS[a.preset]
        if a.quant_weight is not None:
            loss = dataclasses.replace(loss, quant_weight=a.quant_weight)
        return solver, loss

    def run_config(self, run_dir, list_path, bits, seed, solver, loss, method=None):
        """The RunConfig of one training run of this reproduction."""
        a = self.args
        # one cache per list content: the sweep's training list is another list
        cache = os.path.join(self.work, "cache", f"train-{sha1_file(list_path)[:16]}.h5")
        try:
            return RunConfig(DataSettings(list_path, a.root, self.num_labels, cache, workers=a.workers),
                             ModelSettings(self.weights, a.arch, bits), out=run_dir, solver=solver,
                             loss=loss, seed=seed, device=a.device, keep_snapshots=1,
                             method=MethodSettings(method) if method else None)
        except ValueError as e:
            raise UserError(f"settings: {e}") from None

    def run_training(self, cfg):
        final = os.path.join(cfg.out, "final.pth")
        if os.path.exists(final):
            self.log(f"{final}: done, skipped")
            return final
        train(cfg, resume=True)
        # A finished run is never resumed: its snapshot (weights + solver history, twice the
        # model's size) is not kept beside final.pth.
        for path in snapshots(cfg.out).values():
            os.remove(path)
        return final

    def encode(self, checkpoint, split, out_path, features=False, image_list=None):
        if os.path.exists(out_path):
            return out_path
        ckpt = load_checkpoint(checkpoint)
        model = model_from_checkpoint(ckpt, checkpoint)
        image_list = image_list or self.lists[split]
        return encode_list(model, image_list, self.args.root, out_path, oversample=self.args.oversample,
                           features=features, workers=self.args.workers, pipeline=self.args.pipeline,
                           device=None if self.args.device == "auto" else self.args.device,
                           attrs={"checkpoint": checkpoint, "checkpoint_sha1": sha1_file(checkpoint),
                                  "dataset": self.preset.name, "split": split})

    def evaluate(self, method, bits, seed, codes, binary=True, out_dir=None):
        """metrics.json + curves of query/database code files, with the dataset's protocol."""
        out_dir = out_dir or os.path.join(self.out, "metrics", f"{method}_{bits}bits_seed{seed}")
        if os.path.exists(os.path.join(out_dir, "metrics.json")):     # a finished evaluation
            return read_record(os.path.join(out_dir, "metrics.json"))
        arrays = []
        for path in codes:
            with h5py.File(path, "r") as f:
                c = f["codes"][()]
                arrays.append((np.where(c >= 0, 1, -1).astype(np.int8) if binary else c, f["labels"][()]))
        doc = evaluate_method(method, self.preset.name, arrays[0][0], arrays[1][0], arrays[0][1],
                              arrays[1][1], seed=seed, binary=binary, protocol=self.protocol,
                              inputs={k: {"path": p, "sha1": sha1_file(p)} for k, p in zip(("query", "database"), codes)})
        write_record(out_dir, doc, force=True)
        self.log(f"{method} {bits} bits seed {seed}: MAP {doc['metrics']['map']:.4f}")
        return doc

    # ------------------------------------------------------------------------------ stages
    def run(self):
        a = self.args
        started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.prepare()
        os.makedirs(self.out, exist_ok=True)
        self._write_run_json(started, finished=None)
        chosen = self.sweep() if a.sweep else None
        self.run_variants(chosen)
        self.run_methods(chosen)
        if a.baselines:
            self.run_baselines()
        records = collect_records([os.path.join(self.out, "metrics")])
        written = build_comparison(self.preset.name, records, self.out, overwrite=True,
                                   dataset_title=self.preset.title, paper=self.preset.paper)
        self._write_run_json(started, finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"), chosen=chosen)
        self.log("wrote " + ", ".join(os.path.relpath(p, self.out) for p in written) + f" in {self.out}")

    def run_variants(self, chosen):
        """Train every variant the requested ones need, encode, evaluate (Table 2's DHN-B ranks
        the DHN run's codes without sign)."""
        a = self.args
        solver, loss = self.settings()
        if chosen:
            solver = dataclasses.replace(solver, base_lr=chosen["base_lr"])
            loss = dataclasses.replace(loss, quant_weight=chosen["quant_weight"])
        train_path = os.path.join(self.work, "lists_smoke" if a.smoke else "lists", "train.txt")
        codes_dir = os.path.join(self.out, "codes")
        trained = dict.fromkeys(VARIANTS[v].trained_as or v for v in a.variants)
        for seed in a.seeds:
            for bits in a.bits:
                for name in trained:
                    run_dir = os.path.join(self.work, "train", f"{name}_{bits}bits_seed{seed}")
                    cfg = self.run_config(run_dir, train_path, bits, seed, solver, VARIANTS[name].loss(loss))
                    final = self.run_training(cfg)
                    codes = [self.encode(final, s, os.path.join(codes_dir, f"{name}_{bits}bits_seed{seed}_{s}.h5"))
                             for s in ("query", "database")]
                    for v in a.variants:
                        if (VARIANTS[v].trained_as or v) == name:
                            self.evaluate(VARIANTS[v].method, bits, seed, codes, binary=VARIANTS[v].binary)

    def run_methods(self, chosen):
        """Train, encode and evaluate every deep baseline (with --sweep: its own base_lr, chosen on
        the validation split as DHN's; else the DHN solver's, the same for every method)."""
        a = self.args
        solver, loss = self.settings()
        train_path = os.path.join(self.work, "lists_smoke" if a.smoke else "lists", "train.txt")
        for name in a.methods:
            method_solver = solver
            if chosen:
                method_solver = dataclasses.replace(solver, base_lr=self.sweep_method(name))
            label, folder = canonical_method(name), name.replace("*", "-star")
            for seed in a.seeds:
                for bits in a.bits:
                    run_dir = os.path.join(self.work, "train", f"{folder}_{bits}bits_seed{seed}")
                    final = self.run_training(self.run_config(run_dir, train_path, bits, seed, method_solver,
                                                              loss, method=name))
                    codes = [self.encode(final, s, os.path.join(self.out, "codes", f"{folder}_{bits}bits_seed{seed}_{s}.h5"))
                             for s in ("query", "database")]
                    self.evaluate(label, bits, seed, codes)

    def run_baselines(self):
        """The shallow baselines, fitted on the fc7 features of the ImageNet network."""
        a = self.args
        features = [self.encode(self.weights, s, os.path.join(self.work, "features", f"{s}.h5"), features=True)
                    for s in ("train", "query", "database")]
        for seed in a.seeds:
            todo = [(n, b) for n in a.baselines for b in a.bits if not os.path.exists(
                os.path.join(self.out, "metrics", f"{n.upper()}_{b}bits_seed{seed}", "metrics.json"))]
            for name, bits in todo:
                doc = evaluate_baselines(self.preset.name, [name], [bits], features, seed=seed, log=self.log,
                                         protocol=self.protocol)[0]
                write_record(os.path.join(self.out, "metrics", f"{name.upper()}_{bits}bits_seed{seed}"), doc, force=True)

    def _write_run_json(self, started, finished, chosen=None):
        a = self.args
        doc = {"identity": self.identity, "command": [sys.executable, "-m", f"reproduce.{self.preset.name}"] + sys.argv[1:],
               "config": {k: v for k, v in vars(a).items()}, "seeds": a.seeds, "bits": a.bits,
               "variants": a.variants, "baselines": a.baselines, "weights": self.weights,
               "weights_sha1": sha1_file(self.weights), "work": self.work,
               "lists": {k: {"path": v.source, "images": len(v)} for k, v in self.lists.items()},
               "sweep_choice": chosen, "versions": versions(), "git_revision": git_revision(),
               "started": started, "finished": finished}
        write_text_atomic(os.path.join(self.out, "run.json"), json.dumps(doc, indent=2, default=str) + "\n")


def run_preset(preset, argv=None):
    """Parse a per-dataset command line and run its reproduction (reproduce.datasets.<name>.main)."""
    args = get_args_parser(preset).parse_args(argv)
    Reproduction(preset, args).run()
