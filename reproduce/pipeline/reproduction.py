"""From nothing to `results/<dataset>/`: the engine behind `python -m reproduce.<dataset>`.

The command prepares what the plan is made from — the lists (built, checked, reported), the
images on disk, the ImageNet weights (fetched if absent), the sweep's validation split — and then
lays the reproduction out as a job plan (reproduce.pipeline.dataset_plan, reproduce.pipeline.grid): image caches,
every configuration (variant or deep baseline, bits, seed) trained, encoded and evaluated with the
dataset's protocol, fc7 features and the shallow baselines, the tables and figures next to the
paper's numbers. Each job has an identity (its settings and everything it is made from), which its
outputs record: a job whose outputs carry its identity is done and skipped, an interrupted
training resumes from its last snapshot, and an output made with other settings stops the command
before any work, with one line saying what changed, unless --rerun-stale (reproduce.pipeline.plan).
--plan prints the plan with each job's state and runs nothing. The command holds the writer
locks of --out and --work while it runs (reproduce.utils.locks).

The dataset modules (reproduce.datasets.<name>) are presets over this engine: how to get the
lists, and nothing else; `python -m reproduce.<dataset>` runs their `main`.
"""
import dataclasses
import os
import sys
import tempfile
import time

import numpy as np

from . import identity as ids
from ..baselines import BASELINES, make_baseline
from ..cli import (BITS, NON_NEGATIVE, POSITIVE, ArgumentParser, add_plan_options, add_solver_options,
                   executor_settings, number, preset_settings)
from ..data.lists import ImageList
from ..data.preprocessing import check_caffe_only
from ..datasets.common import build_report, format_report, require_images, write_split
from ..errors import UserError
from ..evaluation.encoding import PIPELINES
from ..evaluation.protocols import dataset_protocol
from ..methods import DEEP_METHODS
from ..model.archs import ARCHS, arch_spec
from ..model.checkpoint import load_checkpoint
from ..model.pretrained import checkpoint_path, ensure_pretrained
from ..reporting.paper import PAPER_BITS
from ..training.config import VARIANTS
from ..training.distributed import process_rank
from ..training.losses import LossSettings
from ..training.solver import SolverSettings
from ..utils.fileio import check_output_folder
from ..utils.locks import writer_lock
from .dataset_plan import DatasetGrid, DatasetSetup, ListSource
from .executors import ExecutorSettings, plan_main
from .grid import GridSpec, SweepSpec
from .plan import Plan
from .sweep import LR_LIMITS, QUANT_WEIGHT_LIMITS, SWEEP_LRS, SWEEP_QUANT_WEIGHTS

SMOKE = dict(train=32, query=8, database=40, max_iter=3, batch_size=8)
# --smoke's solver: SMOKE's iterations and batch, one snapshot at the end, a log line per iteration
SMOKE_SOLVER = dict(max_iter=SMOKE["max_iter"], batch_size=SMOKE["batch_size"], snapshot=SMOKE["max_iter"], display=1)


@dataclasses.dataclass(frozen=True)
class NoOptions:
    """The options of a dataset that has none of its own."""


@dataclasses.dataclass
class Preset:
    """What differs between datasets: the name, the label count, how the lists are made, the
    default bit lengths, the evaluation protocol and the published numbers shown beside ours.

    make_lists(config, lists_dir) -> {"train", "query", "database": ImageList}, writing the three
    list files into lists_dir (config: the ReproductionConfig, its `options` an instance of
    `options`, the dataclass of the dataset's own options, which add_arguments(parser) declares
    under the same names). num_labels None: the lists' own. protocol None: the dataset's
    (reproduce.evaluation.protocols.PROTOCOLS). paper None: the DHN paper's numbers (reproduce.reporting.paper), shown
    where they name this dataset; paper_csv: the file they were read from, if any.
    """
    name: str
    title: str
    num_labels: int | None
    make_lists: callable
    add_arguments: callable = lambda parser: None
    bits: tuple = PAPER_BITS
    protocol: dict | None = None
    paper: dict | None = None
    options: type = NoOptions
    paper_csv: str | None = None


@dataclasses.dataclass(frozen=True)
class SweepSettings:
    """The cross-validation (--sweep): the paper's grid at `bits`, each trial `max_iter`
    iterations (None: the runs'), on a seeded `validation_fraction` of the training list."""
    bits: int = 48
    max_iter: int | None = None
    lrs: tuple = SWEEP_LRS
    quant_weights: tuple = SWEEP_QUANT_WEIGHTS
    validation_fraction: float = 0.1


@dataclasses.dataclass(frozen=True)
class ReproductionConfig:
    """One dataset's reproduction as data: what its command line says (`config_from_args`),
    everything below it reads."""
    root: str
    bits: tuple
    seeds: tuple
    variants: tuple
    methods: tuple
    baselines: tuple
    solver: SolverSettings                   # the preset, then the options given (and --smoke's sizes)
    loss: LossSettings
    arch: str = "caffenet"
    weights: str | None = None               # None: weights_dir/<arch>.pth, fetched if absent
    weights_dir: str = "weights"
    out: str | None = None                   # None: results/<dataset> (results/smoke/<dataset>)
    work: str | None = None                  # None: runs/<dataset> (runs/smoke/<dataset>)
    pipeline: str = "imagedata"
    oversample: bool = False
    workers: int = 2
    device: str = "auto"
    smoke: bool = False
    sweep: SweepSettings | None = None
    executor: ExecutorSettings = ExecutorSettings()
    options: object = NoOptions()            # the dataset's own (Preset.options)
    command_line: dict = dataclasses.field(default_factory=dict)   # the options as given: run.json's record


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
                   help="backbone (README, Backbones); default caffenet: the network the authors fine-tuned")
    p.add_argument("--weights", default=None,
                   help="converted ImageNet checkpoint (default: weights/<arch>.pth, fetched if absent)")
    p.add_argument("--weights-dir", default="weights")
    p.add_argument("--out", default=None, help="results folder (default results/<dataset>)")
    p.add_argument("--work", default=None,
                   help="caches, lists, features and training runs (default runs/<dataset>)")
    p.add_argument("--oversample", action="store_true", help="encode with pycaffe's 10 crops (default: centre crop)")
    # default None, not "imagedata": a torchvision arch has neither pipeline and refuses one asked
    # for by name; config_from_args resolves None to imagedata
    p.add_argument("--pipeline", choices=PIPELINES, default=None,
                   help="Caffe archs only: image pipeline of the codes, imagedata (Caffe's TEST phase, default) "
                        "or pycaffe (the authors' evaluation scripts; see reproduce.encode)")
    p.add_argument("--smoke", action="store_true",
                   help=f"whole chain on {SMOKE['train']}/{SMOKE['query']}/{SMOKE['database']} images and "
                        f"{SMOKE['max_iter']} iterations, into results/smoke/<dataset>: checks an installation")
    add_solver_options(p)
    g = p.add_argument_group("cross-validation (the paper's grid, on a validation split of the training set)")
    g.add_argument("--sweep", action="store_true", help="choose base_lr and λ on a validation split first")
    g.add_argument("--sweep-bits", type=BITS, default=48)
    g.add_argument("--sweep-max-iter", type=POSITIVE, default=None, help="iterations per sweep run (default: max_iter)")
    g.add_argument("--sweep-lrs", type=number(0, low_open=True), nargs="+", default=list(SWEEP_LRS))
    g.add_argument("--sweep-quant-weights", type=number(0), nargs="+", default=list(SWEEP_QUANT_WEIGHTS))
    g.add_argument("--validation-fraction", type=number(0, 1, low_open=True, high_open=True), default=0.1,
                   help="share of the training list held out as validation queries (default 0.1)")
    add_plan_options(p)
    preset.add_arguments(p)
    return p


def config_from_args(preset, args):
    """The ReproductionConfig of a parsed command line (get_args_parser(preset))."""
    options = vars(args)
    given = dict(SMOKE_SOLVER) if args.smoke else {}
    # an option given explicitly wins over the preset and over --smoke's sizes
    given.update({k: options[k] for k in ("max_iter", "batch_size", "base_lr", "quant_weight")
                  if options[k] is not None})
    try:
        solver, loss = preset_settings(args.preset, given)
    except ValueError as e:
        raise UserError(f"solver settings: {e}") from None
    check_caffe_only(args.arch, **{f"--pipeline {args.pipeline}": args.pipeline is not None,
                                   "--oversample": args.oversample})
    pipeline = args.pipeline or "imagedata"
    sweep = SweepSettings(args.sweep_bits, args.sweep_max_iter, tuple(args.sweep_lrs), tuple(args.sweep_quant_weights),
                          args.validation_fraction) if args.sweep else None
    return ReproductionConfig(
        args.root, tuple(args.bits), tuple(args.seeds), tuple(args.variants), tuple(args.methods),
        tuple(args.baselines), solver, loss, arch=args.arch, weights=args.weights, weights_dir=args.weights_dir,
        out=args.out, work=args.work, pipeline=pipeline, oversample=args.oversample, workers=args.workers,
        device=args.device, smoke=args.smoke, sweep=sweep, executor=executor_settings(args, device=args.device),
        options=preset.options(**{f.name: options[f.name] for f in dataclasses.fields(preset.options)}),
        command_line=dict(options, pipeline=pipeline))


def subset(image_list, n):
    """The first n entries (smoke runs)."""
    return image_list.subset(np.arange(min(n, len(image_list))))


class NotPrepared(Exception):
    """--plan: what the plan is made from is not there yet (it would be fetched or downloaded)."""


class Reproduction:
    """One dataset's reproduction: what its plan is made from, the plan, and running it."""

    def __init__(self, preset, config):
        self.preset, self.config = preset, config
        smoke = "smoke/" if config.smoke else ""
        self.out = config.out or os.path.join("results", smoke + preset.name)
        self.work = config.work or os.path.join("runs", smoke + preset.name)
        self.lists_home = self.work      # where the lists are written (a scratch folder for --plan)
        self.protocol = preset.protocol or dataset_protocol(preset.name)
        self.log = print

    # ------------------------------------------------------------------------------ sources
    def prepare_lists(self):
        """The train / query / database lists (written into the work folder), the build report,
        every image on disk: all before any job. {split: ImageList}."""
        c = self.config
        if os.path.exists(c.root) and not os.path.isdir(c.root):
            raise UserError(f"--root {c.root}: is a file, not the dataset's folder")
        lists_dir = os.path.join(self.lists_home, "lists")
        lists = self.preset.make_lists(c, lists_dir)
        need = self._baseline_samples()
        if c.smoke:       # enough training images for the shallow baselines at the longest code
            lists = {k: subset(v, max(SMOKE[k], need) if k == "train" else SMOKE[k]) for k, v in lists.items()}
            lists_dir = os.path.join(self.lists_home, "lists_smoke")
            write_split(lists, lists_dir, overwrite=True)
        lists = {k: ImageList(v.paths, v.labels, os.path.join(lists_dir, f"{k}.txt"), None)
                 for k, v in lists.items()}
        self.num_labels = self.preset.num_labels or lists["train"].labels.shape[1]
        self.log(format_report(build_report(lists, c.root)))
        require_images(lists, c.root)
        if len(lists["train"]) < need:
            raise UserError(f"{lists['train'].source}: {len(lists['train'])} training images, but "
                            f"the shallow baselines at {max(c.bits)} bits need {need} (use fewer --bits, "
                            "more images, or leave those --baselines out)")
        if c.sweep:
            lists.update(self.validation_split(lists["train"]))
        return lists

    def _baseline_samples(self):
        """The fewest training images every requested shallow baseline can be fitted with."""
        dim = arch_spec(self.config.arch).feature_dim      # what the baselines are fitted on
        return max([make_baseline(name, bits).min_train_samples(dim)
                    for name in self.config.baselines for bits in self.config.bits], default=0)

    def validation_split(self, train_list):
        """The sweep's split of the training list (the query set is never used): a seeded
        validation_fraction of it as queries, the rest as training images and database;
        written to work/sweep/lists. {"sweep-train", "sweep-query": ImageList}."""
        order = np.random.default_rng([0, len(train_list)]).permutation(len(train_list))
        fraction = self.config.sweep.validation_fraction
        n_val = max(1, int(round(fraction * len(train_list))))
        if n_val >= len(train_list):
            # refused here, before the split is written and before any job (and so under --plan
            # too): otherwise the first sweep job stopped on the split's own empty train.txt, a
            # file the user never named, and --plan showed every job pending
            # (the list is not named: under --plan it is a scratch copy, gone once the plan is shown)
            raise UserError(f"--validation-fraction {fraction:g}: holds out {n_val} of the {len(train_list)} "
                            "training images, leaving none to train the sweep on (give a smaller fraction "
                            "or more training images)")
        split = {"train": train_list.subset(np.sort(order[n_val:])), "query": train_list.subset(np.sort(order[:n_val]))}
        folder = os.path.join(self.lists_home, "sweep", "lists")
        written = write_split(split, folder, overwrite=True)
        return {f"sweep-{k}": ImageList(v.paths, v.labels, written[k], None) for k, v in split.items()}

    def weights(self, dry):
        """The ImageNet checkpoint (fetched if absent, unless `dry`), checked to be of --arch
        before any job (read memory-mapped: its entries, not its tensors)."""
        c = self.config
        if c.weights:
            path = c.weights
        elif dry and not os.path.exists(checkpoint_path(c.arch, c.weights_dir)):
            raise NotPrepared(f"the {c.arch} weights are not fetched yet ({checkpoint_path(c.arch, c.weights_dir)})")
        else:
            path = ensure_pretrained(c.arch, c.weights_dir)
        arch = load_checkpoint(path, mmap=True)["arch"]
        if arch != c.arch:
            raise UserError(f"{path}: checkpoint is arch {arch!r}, but --arch {c.arch} was given")
        return path

    # ------------------------------------------------------------------------------ the plan
    def grid_spec(self):
        c = self.config
        sweep = None
        if c.sweep:
            sweep = SweepSpec(c.sweep.lrs, c.sweep.quant_weights, c.sweep.bits, c.sweep.bits,
                              LR_LIMITS, QUANT_WEIGHT_LIMITS)
        return GridSpec(self.preset.name, c.bits, c.seeds, c.variants, c.methods, c.baselines, c.seeds, sweep)

    def setup(self, lists, weights):
        c = self.config
        sources = {name: ListSource(il.source, self.num_labels, ids.images_identity(f"lists/{name}", il, c.root))
                   for name, il in lists.items()}
        spec = arch_spec(c.arch)
        run_info = {"command": [sys.executable, "-m", f"reproduce.{self.preset.name}"] + sys.argv[1:],
                    "config": c.command_line,
                    "backbone": {"arch": c.arch, "preprocessing": spec.preprocessing, "crop_size": spec.crop_size,
                                 "mean_value": spec.mean_value, "feature_dim": spec.feature_dim}, "seeds": c.seeds, "bits": c.bits,
                    "variants": c.variants, "methods": c.methods, "baselines": c.baselines, "weights": weights,
                    "work": self.work, "lists": {k: {"path": v.source, "images": len(v)} for k, v in lists.items()},
                    "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        return DatasetSetup(
            self.preset.name, self.preset.title, self.out, self.work, c.root, c.solver, c.loss, c.arch, weights,
            ids.file_identity("weights", weights), sources, self.protocol, c.pipeline, c.oversample, c.workers,
            c.device, c.sweep.max_iter if c.sweep else None, paper_csv=self.preset.paper_csv,
            paper_default=self.preset.paper is None, run_info=run_info)

    def plan(self, dry=False):
        """The reproduction's job plan (reproduce.pipeline.plan.Plan); dry: fetch nothing (--plan)."""
        lists = self.prepare_lists()
        weights = self.weights(dry)
        jobs = DatasetGrid(self.grid_spec(), self.setup(lists, weights)).jobs()
        return Plan(jobs, os.path.join(self.work, "jobs"))

    def run(self):
        executor = self.config.executor
        executor.check()
        self.grid_spec()          # a value given twice (--bits 12 12) is refused before any work
        # the training jobs inherit the environment: a torchrun one that cannot be (RANK=1 left in
        # a shell) stopped the first of them after the caches were built; refused now, --plan too
        process_rank()
        # what the run refuses (a file, a read-only place) --plan refuses too, creating nothing
        check_output_folder(self.out, "--out")
        check_output_folder(self.work, "--work")
        if executor.show_plan:
            # --plan writes nothing into --work: it runs without its lock, maybe beside a command
            # that runs from those lists (rewritten, they would stop its jobs as "changed")
            with tempfile.TemporaryDirectory(prefix="reproduce-plan-") as scratch:
                self.lists_home = scratch
                try:
                    plan = self.plan(dry=True)
                except NotPrepared as e:
                    print(f"{e}: every job is pending; the plan is made once it is there")
                    return
                plan_main(plan, executor, self.log)
            return
        with writer_lock(self.out, "--out", self.log), writer_lock(self.work, "--work", self.log):
            plan_main(self.plan(), executor, self.log)


def run_preset(preset, argv=None):
    """Parse a per-dataset command line and run its reproduction (reproduce.datasets.<name>.main)."""
    args = get_args_parser(preset).parse_args(argv)
    Reproduction(preset, config_from_args(preset, args)).run()
