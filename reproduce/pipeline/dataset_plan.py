"""The per-dataset reproduction's plan: the grid (reproduce.pipeline.grid) made of image-list jobs
(reproduce.pipeline.jobs) — image caches, trainings of the backbone (--arch), encodings,
evaluations, penultimate features and shallow baselines, sweeps, and the tables.

The backbone enters every identity: a training's through its model.arch (and the arch's mean);
caches, encodings, features and sweeps through identity.backbone_settings (its arch and image
convention; nothing for the networks of before, whose outputs keep their identities), and the
summary names it in its titles. No output made for another backbone is taken as done.

Where the outputs go (`work` = runs/<dataset>, `out` = results/<dataset> by default):

    work/cache/<list>.h5                     image cache of a training list     cache/<list>
    work/train/<run>/                        training run (final.pth: stamp)     train/<run>
    work/features/<split>.h5                 fc7 of the ImageNet network         features/<split>
    work/sweep/<unit>/<trial>/               one value of a sweep                sweep/<unit>/<trial>
    out/sweep/<unit>.json                    a sweep's choice                    sweep/<unit>
    out/codes/<run>_<split>.h5               codes of a run                      encode/<run>/<split>
    out/metrics/<method>_<bits>bits_seed<s>/ metrics.json + curves               evaluate/..., baseline/...
    out/run.json, table*, fig_*, sweep.md    the summary                         summary
    work/jobs/<job>.json                     a job's last failure (reproduce.pipeline.plan)
"""
import dataclasses
import os

from . import identity as ids
from ..errors import UserError
from ..reporting.paper import canonical_method
from ..model.archs import arch_spec
from ..training.config import VARIANTS, DataSettings, MethodSettings, ModelSettings, RunConfig, default_mean
from ..training.losses import LossSettings
from ..training.solver import SolverSettings
from .grid import GridBuilder, make_sweep_job, run_name
from .plan import Job


@dataclasses.dataclass(frozen=True)
class ListSource:
    """An image list of the reproduction: where it is written, and its identity document."""
    path: str
    num_labels: int
    identity: dict

    def spec(self):
        """The argument jobs check it with (reproduce.pipeline.jobs.read_checked_list)."""
        return {"path": self.path, "name": self.identity["job"], "hex": self.identity["hex"],
                "num_labels": self.num_labels}


@dataclasses.dataclass(frozen=True)
class DatasetSetup:
    """Everything the per-dataset chain needs below its command line, as data."""
    dataset: str
    title: str
    out: str
    work: str
    root: str
    solver: SolverSettings
    loss: LossSettings
    arch: str
    weights: str
    weights_identity: dict
    lists: dict                      # {"train", "query", "database", and with a sweep "sweep-train",
                                     #  "sweep-query": ListSource}
    protocol: dict
    pipeline: str = "imagedata"
    oversample: bool = False
    workers: int = 2
    device: str = "auto"
    sweep_max_iter: int | None = None
    paper_csv: str | None = None
    paper_default: bool = True
    run_info: dict = dataclasses.field(default_factory=dict)   # what run.json records beside


class DatasetGrid(GridBuilder):
    """The grid's jobs on image lists (see the module docstring)."""

    def __init__(self, spec, setup):
        super().__init__(spec)
        self.setup = setup
        self.caches = {}

    # ---------------------------------------------------------------- helpers
    def _path(self, *parts, out=False):
        return os.path.join(self.setup.out if out else self.setup.work, *parts)

    @property
    def preprocessing(self):
        """The backbone's image convention (reproduce.data.preprocessing)."""
        return arch_spec(self.setup.arch).preprocessing

    def _encode_options(self):
        s = self.setup
        return {"pipeline": s.pipeline, "oversample": s.oversample, "workers": s.workers, "device": s.device}

    def _cache(self, list_name):
        """The image cache job of a training list (made once, placed before its first reader)."""
        if list_name not in self.caches:
            source = self.setup.lists[list_name]
            path = self._path("cache", f"{list_name}.h5")
            # what a cache holds depends on the image convention only (vgg16 reads caffenet's
            # 256 x 256 images); the Caffe convention's identity is that of the caches of before
            settings = {"list": list_name}
            if self.preprocessing != "caffe":
                settings["preprocessing"] = self.preprocessing
            self.caches[list_name] = Job(
                f"cache/{list_name}", "cache", settings, "reproduce.pipeline.jobs:build_image_cache",
                {"image_list": source.spec(), "root": self.setup.root, "cache": path,
                 "workers": self.setup.workers, "preprocessing": self.preprocessing},
                stamp=path, inputs={source.identity["job"]: source.identity}, verb="built",
                intermediate=True)
            self.pending_caches.append(self.caches[list_name])
        return self.caches[list_name]

    def jobs(self):
        self.pending_caches = []
        jobs = super().jobs()
        # each cache job goes right before the first job that reads it
        for cache in self.pending_caches:
            first = next(i for i, j in enumerate(jobs) if cache.name in j.deps)
            jobs.insert(first, cache)
        return jobs

    def _run_config(self, run, out, list_name, bits, seed, solver=None, loss=None):
        s = self.setup
        source = s.lists[list_name]
        method = MethodSettings(run) if run not in VARIANTS else None
        loss = loss or (VARIANTS[run].loss(s.loss) if run in VARIANTS else s.loss)
        try:
            return RunConfig(DataSettings(source.path, s.root, source.num_labels,
                                          self._path("cache", f"{list_name}.h5"), mean=default_mean(s.arch),
                                          workers=s.workers),
                             ModelSettings(s.weights, s.arch, bits), out=out, solver=solver or s.solver,
                             loss=loss, seed=seed, device=s.device, keep_snapshots=1, method=method)
        except ValueError as e:
            raise UserError(f"settings: {e}") from None

    # ---------------------------------------------------------------- the grid's jobs
    def train_job(self, run, sweep):
        s = self.setup
        cfg = self._run_config(run.name, self._path("train", run.folder), "train", run.bits, run.seed)
        settings = cfg.identity_settings()
        inputs = {"weights": s.weights_identity, "lists/train": s.lists["train"].identity}
        args = {"config": cfg.to_dict(), "train_list": s.lists["train"].spec()}
        cache = self._cache("train")
        args["cache"] = {"path": cache.stamp, "hex": cache.identity["hex"]}
        deps = [cache.name]
        if sweep is not None:
            keys = ["base_lr"]
            if sweep.settings["quant_weights"] != [None] and not run.is_method \
                    and "quant_weight" not in dict(VARIANTS[run.name].loss_overrides):
                keys.append("quant_weight")        # DHN-Q keeps its λ = 0 whatever the sweep chose
            for key in keys:
                settings["solver.base_lr" if key == "base_lr" else "loss.quant_weight"] = f"chosen by {sweep.name}"
            inputs[sweep.name] = sweep.identity
            args["sweep"] = {"path": sweep.stamp, "hex": sweep.identity["hex"], "keys": keys}
            deps.append(sweep.name)
        stamp = os.path.join(cfg.out, "final.pth")
        return Job(f"train/{run.folder}", "train", settings, "reproduce.pipeline.jobs:train_run", args, stamp=stamp,
                   outputs=(cfg.out, stamp, os.path.join(cfg.out, "config.json")), inputs=inputs, deps=tuple(deps),
                   verb="trained", locks=(cfg.out,))      # `train --resume --out` it: one writer of the run

    def encode_jobs(self, run, train):
        jobs, codes = [], {}
        for split in ("query", "database"):
            source = self.setup.lists[split]
            path = self._path("codes", f"{run.folder}_{split}.h5", out=True)
            jobs.append(Job(
                f"encode/{run.folder}/{split}", "encode",
                dict(self._encode_settings(), split=split), "reproduce.pipeline.jobs:encode_codes",
                dict(self._encode_options(), checkpoint={"path": train.stamp, "hex": train.identity["hex"]},
                     image_list=source.spec(), root=self.setup.root, out=path,
                     attrs={"dataset": self.setup.dataset, "split": split}),
                stamp=path, inputs={train.name: train.identity, source.identity["job"]: source.identity},
                deps=(train.name,), verb="encoded"))
            codes[split] = (jobs[-1], path)
        return jobs, codes

    def _encode_settings(self):
        return {"pipeline": self.setup.pipeline, "oversample": self.setup.oversample,
                **ids.backbone_settings(self.setup.arch, self.preprocessing)}

    def evaluate_job(self, label, run, codes, binary):
        label = label or canonical_method(run.name)
        name = run_name(label, run.bits, run.seed)
        out = self._path("metrics", name, out=True)
        return Job(f"evaluate/{name}", "evaluate",
                   {"method": label, "binary": binary, "seed": run.seed, "dataset": self.setup.dataset,
                    "protocol": self.setup.protocol}, "reproduce.pipeline.jobs:evaluate_run",
                   {"dataset": self.setup.dataset, "method": label, "seed": run.seed, "binary": binary,
                    "protocol": self.setup.protocol, "out": out,
                    **{split: {"path": path, "hex": job.identity["hex"]} for split, (job, path) in codes.items()}},
                   stamp=os.path.join(out, "metrics.json"), outputs=(out, os.path.join(out, "metrics.json")),
                   inputs={job.name: job.identity for job, _ in codes.values()},
                   deps=tuple(job.name for job, _ in codes.values()), verb="evaluated")

    def trial_template(self, unit):
        s = self.setup
        solver = s.solver if s.sweep_max_iter is None else dataclasses.replace(s.solver, max_iter=s.sweep_max_iter)
        cfg = self._run_config(unit.trained, "", "sweep-train", unit.bits, 0, solver=solver)
        cache = self._cache("sweep-train")
        train_list, query_list = s.lists["sweep-train"], s.lists["sweep-query"]
        method = "DHN" if unit.trained in VARIANTS else canonical_method(unit.trained)
        settings = dict(cfg.identity_settings(), trained=unit.trained, encode=self._encode_settings(),
                        protocol=s.protocol)
        return {"func": "reproduce.pipeline.jobs:sweep_trial", "folder": self._path("sweep", unit.name),
                "settings": settings, "deps": [cache.name],
                "inputs": {"weights": s.weights_identity, "lists/sweep-train": train_list.identity,
                           "lists/sweep-query": query_list.identity},
                "args": {"config": cfg.to_dict(), "train_list": train_list.spec(), "query_list": query_list.spec(),
                         "cache": {"path": cache.stamp, "hex": cache.identity["hex"]},
                         "encode": self._encode_options(), "dataset": s.dataset, "method": method,
                         "protocol": s.protocol}}

    def sweep_job(self, unit, trials):
        return make_sweep_job(unit, trials, self.trial_template(unit),
                              self._path("sweep", f"{unit.name}.json", out=True))

    def features_jobs(self):
        s, jobs = self.setup, {}
        for split in ("train", "query", "database"):
            source = s.lists[split]
            path = self._path("features", f"{split}.h5")
            jobs[split] = Job(
                f"features/{split}", "features", dict(self._encode_settings(), split=split),
                "reproduce.pipeline.jobs:encode_codes",
                dict(self._encode_options(), checkpoint={"path": s.weights, "sha1": s.weights_identity["settings"]["sha1"]},
                     image_list=source.spec(), root=s.root, out=path, features=True,
                     attrs={"dataset": s.dataset, "split": split}),
                stamp=path, inputs={"weights": s.weights_identity, source.identity["job"]: source.identity},
                verb="encoded")
        return jobs

    def baseline_job(self, name, bits, seed, features):
        label = name.upper()
        folder = run_name(label, bits, seed)
        out = self._path("metrics", folder, out=True)
        return Job(f"baseline/{folder}", "baseline",
                   {"baseline": name, "bits": bits, "seed": seed, "dataset": self.setup.dataset,
                    "protocol": self.setup.protocol}, "reproduce.pipeline.jobs:fit_baseline",
                   {"dataset": self.setup.dataset, "name": name, "bits": bits, "seed": seed,
                    "protocol": self.setup.protocol, "out": out,
                    "features": {k: {"path": j.stamp, "hex": j.identity["hex"]} for k, j in features.items()}},
                   stamp=os.path.join(out, "metrics.json"), outputs=(out, os.path.join(out, "metrics.json")),
                   inputs={j.name: j.identity for j in features.values()},
                   deps=tuple(j.name for j in features.values()), verb="fitted")

    def summary_job(self, evaluations, sweeps):
        s = self.setup
        out = s.out
        inputs = {j.name: j.identity for j in evaluations + sweeps}
        if s.paper_csv:
            inputs["paper_numbers"] = ids.file_identity("paper_numbers", s.paper_csv)
        # the titles name the backbone unless it is the authors' (the paper's tables are caffenet's)
        backbone = None if s.arch == "caffenet" else s.arch
        settings = {"dataset": s.dataset, "title": s.title, "paper_default": s.paper_default}
        if backbone:
            settings["backbone"] = backbone
        return Job("summary", "summary", settings,
                   "reproduce.pipeline.jobs:summarize",
                   {"dataset": s.dataset, "title": s.title, "out": out, "run": s.run_info, "backbone": backbone,
                    "records": [{"path": j.stamp, "hex": j.identity["hex"]} for j in evaluations],
                    "sweeps": [{"path": j.stamp, "hex": j.identity["hex"]} for j in sweeps],
                    "paper_csv": s.paper_csv, "paper_default": s.paper_default},
                   stamp=os.path.join(out, "run.json"),
                   # out itself: what a killed summary left there (.staging-*) goes before it runs
                   outputs=(os.path.join(out, "run.json"), out),
                   inputs=inputs, deps=tuple(j.name for j in evaluations + sweeps), verb="summarised", summary=True,
                   lineage=False)


__all__ = ["DatasetGrid", "DatasetSetup", "ListSource"]
