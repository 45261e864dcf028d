"""The typed configuration of one training run, and the DHN variants of the paper's Table 2.

A `RunConfig` is built once — by `python -m reproduce.train` from its command line, by the
per-dataset engine from its own — and passed on as an object: the engine reads its fields, the
optimizer is made by its `SolverSettings`, the loss by its `LossSettings`, the sweep and the
variants derive new configurations with `dataclasses.replace`. `config.json` in a run folder is
`RunConfig.to_dict()`, and `--resume` reads it back with `RunConfig.from_dict`.
"""
import dataclasses
import json
import math
import os

from ..data.transforms import MEAN_VALUE
from ..errors import UserError
from ..methods import make_method
from ..model.archs import arch_spec
from ..model.nets import ARCHS
from ..utils.fileio import read_json
from .losses import LossSettings
from .solver import SolverSettings

CONFIG_FORMAT = "reproduce-dhn-run/2"


@dataclasses.dataclass(frozen=True)
class DataSettings:
    """The training data as the authors' ImageData layer (train_val.prototxt) reads it."""
    train_list: str
    root: str
    num_labels: int | None = None    # C, checked against the list (None: the list's own)
    cache: str | None = None         # HDF5 cache of the resized images (None: decode each batch)
    # transform_param mean_value (B, G, R) of the Caffe convention: the authors' (caffenet and
    # alexnet), the arch's for vgg16 (default_mean); None for the torchvision backbones
    mean: tuple | None = MEAN_VALUE
    mean_file: str | None = None     # a mean image (binaryproto / npy) instead of `mean`
    mirror: bool = True              # transform_param mirror: true (torchvision: RandomHorizontalFlip)
    workers: int = 2                 # loader processes (no effect on the batches)

    def __post_init__(self):
        if self.mean is not None:
            object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))


def default_mean(arch):
    """DataSettings.mean of `--arch arch` when none is given: its ArchSpec's mean_value (None for
    the torchvision convention, which normalizes with ImageNet's mean and std instead)."""
    return arch_spec(arch).mean_value


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    """The network: CaffeNet/AlexNet from a converted checkpoint, and the hash layer."""
    weights: str                     # converted ImageNet checkpoint, or a DHN checkpoint
    arch: str = "caffenet"           # the network the authors fine-tuned (official_settings.md)
    bits: int = 48                   # K, the hash layer's outputs
    dropout: float = 0.5             # drop6 / drop7 dropout_ratio of the zoo nets

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {', '.join(ARCHS)}, got {self.arch!r}")


@dataclasses.dataclass(frozen=True)
class MethodSettings:
    """A deep baseline of Table 1 trained instead of DHN (reproduce.methods): its registry name
    (cnnh, cnnh*, dnnh) and options."""
    name: str
    options: dict = dataclasses.field(default_factory=dict)

    def make(self, bits):
        return make_method(self.name, bits, **self.options)


# Fields that change where and how a run runs, not what it computes: not part of its identity.
# The list file, the dataset root, the weights and mean files are identified by content instead
# (reproduce.pipeline.identity: the list's entries, the root and every image's size and mtime; sha1s).
RUNTIME_FIELDS = ("data.workers", "data.cache", "data.train_list", "data.root", "data.mean_file",
                  "model.weights", "device", "keep_snapshots", "solver.snapshot", "solver.display", "out")
# ... and max_iter may grow on --resume: the run continues on the same trajectory (see engine).
RESUME_MAY_DIFFER = RUNTIME_FIELDS + ("solver.max_iter",)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """One DHN training run: data, model, solver, loss, and where and how it runs."""
    data: DataSettings
    model: ModelSettings
    out: str                                          # the run folder
    solver: SolverSettings = SolverSettings()         # the authors' dhn-caffe solver
    loss: LossSettings = LossSettings()               # the authors' PairwiseLoss
    seed: int = 0                                     # batch order, crops, mirrors, dropout, fch filler
    device: str = "auto"
    keep_snapshots: int = 0                           # 0: keep every snapshot, as Caffe
    method: MethodSettings | None = None              # a deep baseline instead of DHN's head and loss

    def __post_init__(self):
        for key, value in (("bits", self.model.bits), ("max_iter", self.solver.max_iter),
                           ("batch_size", self.solver.batch_size)):
            if value is None or value <= 0:
                raise ValueError(f"{key} must be positive, got {value}")
        # Caffe's SolverParameter defaults snapshot and display to 0, which solver.cpp reads as
        # "no periodic snapshot / display" (Step: `param_.snapshot() && iter_ % ...`); the engine
        # then snapshots and logs only at the end (Solve: snapshot_after_train, default true).
        for key in ("snapshot", "display"):
            value = getattr(self.solver, key)
            if value is None or value < 0:
                raise ValueError(f"{key} must be 0 (only at the end) or positive, got {value}")
        if not (isinstance(self.model.dropout, (int, float)) and 0 <= self.model.dropout < 1):
            raise ValueError(f"dropout must be in [0, 1), got {self.model.dropout}")
        caffe = arch_spec(self.model.arch).preprocessing == "caffe"
        if not caffe and (self.data.mean is not None or self.data.mean_file is not None):
            raise ValueError(f"mean: --arch {self.model.arch} normalizes as torchvision does; a mean "
                             "(mean_value, mean file) belongs to the Caffe convention")
        if caffe and self.data.mean is None:
            raise ValueError(f"mean: --arch {self.model.arch} subtracts a mean (Caffe convention), got none")

    def to_dict(self):
        """The JSON document of config.json."""
        return {"format": CONFIG_FORMAT, "data": dataclasses.asdict(self.data),
                "model": dataclasses.asdict(self.model), "solver": self.solver.to_dict(),
                "loss": dataclasses.asdict(self.loss), "out": self.out, "seed": self.seed,
                "device": self.device, "keep_snapshots": self.keep_snapshots,
                "method": None if self.method is None else dataclasses.asdict(self.method)}

    @classmethod
    def from_dict(cls, doc, source):
        """The RunConfig a to_dict() document describes; UserError naming `source` otherwise
        (runs started by versions before this format are refused: start them again)."""
        if not isinstance(doc, dict) or doc.get("format") != CONFIG_FORMAT:
            raise UserError(f"{source}: not a run configuration of this version (no "
                            f"'{CONFIG_FORMAT}' format tag); a run started by an older version "
                            "cannot be resumed: start it again in another folder")
        try:
            parts = {"data": DataSettings(**doc["data"]), "model": ModelSettings(**doc["model"]),
                     "solver": SolverSettings(**doc["solver"]), "loss": LossSettings(**doc["loss"])}
            rest = {k: doc[k] for k in ("out", "seed", "device", "keep_snapshots")}
            method = doc.get("method")
            return cls(**parts, **rest, method=None if method is None else MethodSettings(**method))
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"{source}: not a valid run configuration ({type(e).__name__}: {e})") from None

    def flat(self):
        """{"section.key": value} of every setting (JSON values), for comparisons and messages."""
        out = {}
        for key, value in self.to_dict().items():
            if isinstance(value, dict) and key != "method":
                out.update({f"{key}.{k}": v for k, v in value.items()})
            else:
                out[key] = value
        return out

    def identity_settings(self):
        """What this run computes, as flat settings: every field but RUNTIME_FIELDS (the files
        they name enter a run's identity by content, as its inputs: reproduce.training.engine.run_identity)."""
        return {k: v for k, v in self.flat().items() if k not in RUNTIME_FIELDS}

    def resume_differences(self, other):
        """The settings (section.key) in which `other` would continue this run on another
        trajectory: everything but RESUME_MAY_DIFFER."""
        a, b = self.flat(), other.flat()
        return sorted(k for k in set(a) | set(b)
                      if k not in RESUME_MAY_DIFFER and not _same(a.get(k), b.get(k)))


def _same(a, b):
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return json.dumps(a) == json.dumps(b)


def read_run_config(run_dir):
    """The RunConfig of an existing run folder's config.json, or None when there is none."""
    path = os.path.join(run_dir, "config.json")
    if not os.path.exists(path):
        return None
    return RunConfig.from_dict(read_json(path, "run configuration"), path)


# ---------------------------------------------------------------------------------- variants
@dataclasses.dataclass(frozen=True)
class Variant:
    """A DHN variant of the paper's Table 2: its name in the tables, how its loss differs from
    DHN's (LossSettings fields), whether codes are ranked by sign, and which run it evaluates."""
    method: str
    loss_overrides: tuple = ()          # (field, value) pairs applied with dataclasses.replace
    binary: bool = True                 # False: rank by the inner product of the tanh codes
    trained_as: str | None = None       # evaluates another variant's run (DHN-B: DHN's)

    def loss(self, base):
        """The LossSettings of this variant, derived from `base` (e.g. a cross-validated one)."""
        return dataclasses.replace(base, **dict(self.loss_overrides))


VARIANTS = {
    "dhn": Variant("DHN"),
    "dhn-q": Variant("DHN-Q", (("quant_weight", 0.0),)),        # no quantization loss
    "dhn-e": Variant("DHN-E", (("pair_loss", "squared"),)),     # squared pair loss
    "dhn-b": Variant("DHN-B", binary=False, trained_as="dhn"),  # DHN's codes without sign
}
