"""The reproduction grid as a job plan: one builder for the per-dataset commands and the demo.

A reproduction trains every Table 2 variant and deep baseline at every code length and seed,
encodes query and database with each model, evaluates them, fits the shallow baselines on
features, and writes the tables; with a sweep, base_lr (and λ) are first cross-validated on a
validation split of the training set. `GridBuilder.jobs()` lays this out as reproduce.pipeline.plan jobs,
in the order one process runs them (today's order): variant sweeps; for each seed and bit length
the trained variants (train, encode, evaluate — DHN-B evaluates DHN's codes without sign); for
each deep baseline its sweep, then its runs; features and shallow baselines; the summary.

What a job does depends on the data (image lists and a CaffeNet, or the demo's digits and small
network): subclasses provide the job constructors (`train_job`, `encode_jobs`, `evaluate_job`,
`trial_template`, `features_jobs`, `baseline_job`, `summary_job`); the grid, the names and the
sweep's search are written once, here.

A sweep unit is one cross-validation: its trials (one job per value of the grid) and a `sweep`
job that reads them, extends the grid past an edge that holds the best (reproduce.pipeline.sweep.search;
the added trials run inside it: which ones depends on the scores) and writes the choice. The
trainings it applies to depend on it and read the choice when they run.
"""
import dataclasses
import json
import math
import os

from . import identity as ids
from ..errors import UserError
from ..evaluation.records import read_record
from ..training.config import VARIANTS
from ..utils.fileio import folder_name, write_text_atomic
from .plan import Job, call, recorded_identity
from .sweep import search


def run_name(name, bits, seed):
    """The name of one training and of its outputs: `<name>_<bits>bits_seed<seed>`."""
    return f"{folder_name(name)}_{bits}bits_seed{seed}"


@dataclasses.dataclass(frozen=True)
class Run:
    """One training of the grid: a trained variant (dhn, dhn-q, dhn-e) or a deep baseline."""
    name: str
    bits: int
    seed: int

    @property
    def is_method(self):
        return self.name not in VARIANTS

    @property
    def folder(self):
        return run_name(self.name, self.bits, self.seed)


def distinct(option, values, name=str):
    """UserError when two values of a list option would name one job (`--bits 12 12`, `--seeds 0
    0`; sweep values that trial_folder writes alike): two jobs of one name and one output."""
    seen = {}
    for value in values:
        key = name(value)
        if key in seen:
            same = f"{value} is given twice" if seen[key] == value else f"{seen[key]} and {value} name one job ({key})"
            raise UserError(f"{option}: {same}; give each value once")
        seen[key] = value


@dataclasses.dataclass(frozen=True)
class SweepSpec:
    """How base_lr (and λ) are cross-validated. per_bits: one unit per (variant, bits) (the demo)
    instead of one DHN unit at `bits` for every variant (the paper); quant_weights None: base_lr
    only, each variant keeping its λ. Deep baselines: base_lr only, at `method_bits`."""
    lrs: tuple
    quant_weights: tuple | None
    bits: int | None
    method_bits: int
    lr_limits: tuple
    quant_weight_limits: tuple
    per_bits: bool = False

    def __post_init__(self):
        distinct("--sweep-lrs", self.lrs, lambda lr: trial_folder(lr, None))
        distinct("--sweep-quant-weights", self.quant_weights or (), lambda qw: f"{qw:g}")


@dataclasses.dataclass(frozen=True)
class GridSpec:
    """The grid of one reproduction: what is trained, evaluated and fitted."""
    dataset: str
    bits: tuple
    seeds: tuple
    variants: tuple
    methods: tuple
    baselines: tuple
    baseline_seeds: tuple
    sweep: SweepSpec | None = None

    def __post_init__(self):
        for option, values in (("--bits", self.bits), ("--seeds", self.seeds), ("--variants", self.variants),
                               ("--methods", self.methods), ("--baselines", self.baselines)):
            distinct(option, values)

    @property
    def trained(self):
        """The variants that are trained (DHN-B evaluates the DHN run), in the requested order."""
        return tuple(dict.fromkeys(VARIANTS[v].trained_as or v for v in self.variants))


@dataclasses.dataclass(frozen=True)
class SweepUnit:
    """One cross-validation: the trials train `trained` at `bits` for every (lr, λ) of the grid
    (λ None: the variant's own)."""
    name: str
    trained: str
    bits: int
    lrs: tuple
    quant_weights: tuple
    lr_limits: tuple
    quant_weight_limits: tuple


class GridBuilder:
    """Lays the grid out as jobs; subclasses make the jobs (see the module docstring)."""

    def __init__(self, spec):
        self.spec = spec

    # ---------------------------------------------------------------- the grid
    def sweep_units(self):
        """{(trained name, bits or None): SweepUnit} of the variants, and of the methods."""
        s = self.spec.sweep
        if s is None:
            return {}, {}
        variants = {}
        if s.per_bits:
            for bits in self.spec.bits:
                for name in self.spec.trained:
                    variants[name, bits] = SweepUnit(f"{folder_name(name)}_{bits}bits", name, bits, s.lrs,
                                                     (None,), s.lr_limits, s.quant_weight_limits)
        elif self.spec.trained:
            unit = SweepUnit("dhn", "dhn", s.bits, s.lrs, tuple(s.quant_weights or (None,)),
                             s.lr_limits, s.quant_weight_limits)
            variants = {(name, None): unit for name in self.spec.trained}
        methods = {(m, None): SweepUnit(folder_name(m), m, s.method_bits, s.lrs, (None,), s.lr_limits,
                                        s.quant_weight_limits) for m in self.spec.methods}
        return variants, methods

    def jobs(self):
        spec, out, done_units = self.spec, [], {}
        variant_units, method_units = self.sweep_units()

        def sweep_for(units, name, bits):
            unit = units.get((name, bits)) or units.get((name, None))
            if unit is not None and unit.name not in done_units:
                trials = [make_trial(self.trial_template(unit), unit, lr, qw)
                          for lr in unit.lrs for qw in unit.quant_weights]
                done_units[unit.name] = self.sweep_job(unit, trials)
                out.extend(trials + [done_units[unit.name]])
            return done_units.get(unit.name) if unit else None

        for bits in spec.bits:                  # the sweeps of the variants come first
            for name in spec.trained:
                sweep_for(variant_units, name, bits)
        evaluations = []
        for seed in spec.seeds:
            for bits in spec.bits:
                for name in spec.trained:
                    run = Run(name, bits, seed)
                    evaluations += self._run_jobs(out, run, sweep_for(variant_units, name, bits),
                                                  [(VARIANTS[v].method, VARIANTS[v].binary) for v in spec.variants
                                                   if (VARIANTS[v].trained_as or v) == name])
        for method in spec.methods:
            unit_job = sweep_for(method_units, method, None)
            for seed in spec.seeds:
                for bits in spec.bits:
                    evaluations += self._run_jobs(out, Run(method, bits, seed), unit_job, [(None, True)])
        if spec.baselines:
            features = self.features_jobs()
            out.extend(features.values() if isinstance(features, dict) else ())
            for seed in spec.baseline_seeds:
                for name in spec.baselines:
                    for bits in spec.bits:
                        evaluations.append(self.baseline_job(name, bits, seed, features))
                        out.append(evaluations[-1])
        out.append(self.summary_job(evaluations, list(done_units.values())))
        return out

    def _run_jobs(self, out, run, sweep, evaluations):
        train = self.train_job(run, sweep)
        encode_jobs, codes = self.encode_jobs(run, train)
        out.extend([train] + encode_jobs)
        made = [self.evaluate_job(label, run, codes, binary) for label, binary in evaluations]
        out.extend(made)
        return made

    # ---------------------------------------------------------------- what subclasses make
    def train_job(self, run, sweep):
        raise NotImplementedError

    def encode_jobs(self, run, train):
        """([jobs], {"query": (job, path), "database": (job, path)})."""
        raise NotImplementedError

    def evaluate_job(self, label, run, codes, binary):
        raise NotImplementedError

    def trial_template(self, unit):
        """The trials' common part: {"func", "args", "settings", "inputs", "folder", "deps"}."""
        raise NotImplementedError

    def sweep_job(self, unit, trials):
        raise NotImplementedError

    def features_jobs(self):
        return {}

    def baseline_job(self, name, bits, seed, features):
        raise NotImplementedError

    def summary_job(self, evaluations, sweeps):
        raise NotImplementedError


def trial_folder(lr, qw):
    return f"lr{lr:g}" + ("" if qw is None else f"_lambda{qw:g}")


def make_trial(template, unit, lr, qw):
    """The trial job of `unit` (a SweepUnit or its dict) at base_lr `lr` and λ `qw` (None: the
    variant's own): training, encoding and validation MAP in one job, stamped by its metrics.json.
    Built here both for the grid's trials and, inside the sweep job, for the values it adds."""
    name = unit["name"] if isinstance(unit, dict) else unit.name
    out = os.path.join(template["folder"], trial_folder(lr, qw))
    return Job(f"sweep/{name}/{trial_folder(lr, qw)}", "trial",
               dict(template["settings"], base_lr=lr, quant_weight=qw), template["func"],
               dict(template["args"], base_lr=lr, quant_weight=qw, out=out),
               stamp=os.path.join(out, "metrics.json"), outputs=(out, os.path.join(out, "metrics.json")),
               inputs=template["inputs"],
               deps=tuple(template.get("deps", ())), verb="trained",
               locks=(out,))           # a run folder too (`train --resume --out` it): one writer


def sweep_settings(unit):
    return {"trained": unit.trained, "bits": unit.bits, "lrs": list(unit.lrs),
            "quant_weights": list(unit.quant_weights), "lr_limits": list(unit.lr_limits),
            "quant_weight_limits": list(unit.quant_weight_limits)}


def make_sweep_job(unit, trials, template, out):
    """The job that chooses a unit's values from its trials (`run_sweep`), stamped by `out`."""
    return Job(f"sweep/{unit.name}", "sweep", sweep_settings(unit), "reproduce.pipeline.grid:run_sweep",
               {"unit": dataclasses.asdict(unit), "template": template, "out": out}, stamp=out,
               inputs={t.name: t.identity for t in trials}, deps=tuple(t.name for t in trials),
               verb="chosen")


def trial_map(job):
    """The validation MAP of a trial, running it first unless its metrics.json has its identity;
    None for a trial whose training diverged (`write_diverged`)."""
    found = recorded_identity(job.stamp)
    if not (isinstance(found, dict) and found["hex"] == job.identity["hex"]):
        call(job)
    with open(job.stamp, encoding="utf-8") as f:
        if json.load(f).get("diverged"):
            return None
    return read_record(job.stamp)["map"]


def write_diverged(path, identity, error):
    """A trial whose loss became NaN or infinite: a result of the sweep (that value is too large),
    not a failure of the command. Recorded with MAP null; the search ranks it below every MAP."""
    doc = {"identity": identity, "diverged": str(error), "metrics": {"map": None}}
    write_text_atomic(path, json.dumps(doc, indent=1) + "\n")


def run_sweep(identity, unit, template, out):
    """Job function: the paper's cross-validation of one unit: the whole grid (its trials are jobs
    of the plan), the best (first of equals, grid order), then base_lr extended past an edge that
    holds the best at the best λ, then λ at the best base_lr (reproduce.pipeline.sweep.search). Writes
    `out`: {"identity", "unit", "rows": [{base_lr, quant_weight, validation_map, extended}], "best"}."""
    scores = {}

    def score(lr, qw):
        if (lr, qw) not in scores:
            scores[lr, qw] = trial_map(make_trial(template, unit, lr, qw))
        return -math.inf if scores[lr, qw] is None else scores[lr, qw]   # diverged: the worst

    grid = [(lr, qw) for lr in unit["lrs"] for qw in unit["quant_weights"]]
    for lr, qw in grid:
        score(lr, qw)
    best_lr, best_qw = max(grid, key=lambda k: score(*k))
    best_lr, _ = search(unit["lrs"], lambda lr: score(lr, best_qw), tuple(unit["lr_limits"]))
    if best_qw is not None:
        best_qw, _ = search(unit["quant_weights"], lambda qw: score(best_lr, qw),
                            tuple(unit["quant_weight_limits"]))
    rows = [{"base_lr": lr, "quant_weight": qw, "validation_map": m, "extended": (lr, qw) not in grid,
             "diverged": m is None} for (lr, qw), m in scores.items()]
    best = {"base_lr": best_lr, "quant_weight": best_qw, "validation_map": scores[best_lr, best_qw]}
    write_text_atomic(out, json.dumps({"identity": identity, "unit": unit, "rows": rows, "best": best},
                                      indent=1) + "\n")


def sweep_choice(path, expected_hex):
    """The "best" of a sweep file, checked: written by the sweep job of this identity, with
    finite positive base_lr and λ >= 0 (or None: the variant's own)."""
    found = recorded_identity(path)
    if not (isinstance(found, dict) and found["hex"] == expected_hex):
        raise UserError(f"{path}: not the result of this run's sweep "
                        f"({ids.differences(found if isinstance(found, dict) else None, {'hex': expected_hex, 'job': '', 'lineage': {}}) or 'another sweep'}); "
                        "run the command again to redo it")
    with open(path, encoding="utf-8") as f:
        best = json.load(f)["best"]
    return best
