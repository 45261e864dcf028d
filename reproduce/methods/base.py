"""What every deep method shares: the `DeepMethod` interface, the `Head` base class, the loss base
class and the input checks. The methods themselves are in reproduce.methods.cnnh (CNNH, CNNH*)
and reproduce.methods.dnnh (DNNH); the registry is reproduce.methods.DEEP_METHODS.
"""
import inspect
import math

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from ..training.solver import PRESETS

FC7_DIM = 4096                  # CaffeNet/AlexNet fc7, what every head reads
NEW_WEIGHT_MULTS = (10.0, 1.0)  # DHN's new layer (authors' fch): weight lr_mult 10, decay_mult 1
NEW_BIAS_MULTS = (20.0, 0.0)    # ... bias lr_mult 20, decay_mult 0
FILLER_STD = 0.01               # DHN's fch filler: gaussian std 0.01, bias constant 0


# ----------------------------------------------------------------------------- heads
class Head(nn.Module):
    """Base of the method heads: fc7 (N x in_features) -> the outputs the loss sees (N x T').

    Parameters are named `<Caffe layer name>.weight` / `.bias` (blob 0 / blob 1 of that layer).
    `lr_mults()` gives {parameter name: (lr_mult, decay_mult)}; every layer of a head is new
    (trained from scratch on top of the pretrained fc7), so it takes DHN's multipliers for its new
    layer fch unless a subclass says otherwise.
    """

    weight_mults = NEW_WEIGHT_MULTS
    bias_mults = NEW_BIAS_MULTS

    def lr_mults(self, prefix=""):
        """{prefix + parameter name: (lr_mult, decay_mult)} for every parameter of the head; pass
        the attribute path the head is mounted under (e.g. "hash_layer.") as `prefix`."""
        mults = {}
        for name, _ in self.named_parameters():
            blob = name.rpartition(".")[2]
            if blob not in ("weight", "bias"):
                raise ValueError(f"{type(self).__name__}: no multipliers for parameter {name!r}")
            mults[prefix + name] = self.weight_mults if blob == "weight" else self.bias_mults
        return mults

    def reset_parameters(self, generator=None):
        """Caffe fillers of the head: weights gaussian(0, filler_std), biases 0."""
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith(".weight"):
                    p.normal_(0.0, self.filler_std, generator=generator)
                else:
                    p.zero_()


# ----------------------------------------------------------------------------- losses
class MethodLoss(nn.Module):
    """Base of the method losses: `loss(outputs, targets) -> 0-d tensor`.

    After each call `loss.last` gives the parts (detached) as floats; `total` is the returned value.
    Half-precision outputs are computed in float32 (as Caffe computed its layers).
    """

    _fields = ("total",)

    def __init__(self):
        super().__init__()
        self._last = None

    @property
    def last(self):
        if self._last is None:
            return {}
        values = dict(zip(self._fields, self._last.tolist()))
        for key in self._int_fields():
            values[key] = int(round(values[key]))
        return values

    def _int_fields(self):
        return ()

    def _record(self, *parts):
        """Keep the parts (tensors or numbers) as one float64 tensor on the outputs' device;
        `last` converts it (one sync, at display intervals)."""
        device = next((p.device for p in parts if torch.is_tensor(p)), None)
        with torch.no_grad():
            self._last = torch.stack([
                p.detach().to(torch.float64) if torch.is_tensor(p)
                else torch.tensor(float(p), dtype=torch.float64, device=device) for p in parts])

    @staticmethod
    def _check(outputs, targets, width=None, what="outputs"):
        if outputs.dim() != 2 or outputs.shape[0] == 0 or outputs.shape[1] == 0:
            raise ValueError(f"{what} must be N x K with N, K >= 1, "
                             f"got shape {tuple(outputs.shape)}")
        if width is not None and outputs.shape[1] != width:
            raise ValueError(f"{what} must have {width} columns, got {outputs.shape[1]}")
        if targets.dim() != 2 or targets.shape[0] != outputs.shape[0]:
            raise ValueError(f"targets must be {outputs.shape[0]} x T for {what} of shape "
                             f"{tuple(outputs.shape)}, got {tuple(targets.shape)}")
        if outputs.dtype in (torch.float16, torch.bfloat16):
            outputs = outputs.float()
        return outputs, targets.to(device=outputs.device, dtype=outputs.dtype)


# ----------------------------------------------------------------------------- methods
class DeepMethod:
    """A deep hashing method as the training engine uses it (see reproduce.methods).

    Subclasses set `name`, `settings` (setting -> (value, source)) and implement `make_head`,
    `make_loss`, `prepare_targets`, `codes`. Options are keyword arguments of `__init__`, checked
    there (a bad value is a UserError naming the method and the option).
    """

    name = ""
    settings = {}
    min_batch_size = 1      # images a batch needs for the loss to see anything (DNNH: 3)

    def __init__(self, bits):
        bits = int(bits) if isinstance(bits, (int, np.integer)) else bits
        if not isinstance(bits, int) or bits < 1:
            raise UserError(f"{self.name}: bits must be an integer >= 1, got {bits!r}")
        self.bits = bits

    # ------------------------------------------------------------------ the interface
    def make_head(self, bits=None, in_features=FC7_DIM, generator=None):
        raise NotImplementedError

    def make_loss(self):
        raise NotImplementedError

    def prepare_targets(self, train_labels, bits=None, seed=0):
        raise NotImplementedError

    def codes(self, outputs):
        raise NotImplementedError

    def solver_settings(self):
        """The Caffe solver to train with: DHN's (the dhn-caffe preset of reproduce.training.solver). No
        solver of these baselines for a pretrained CaffeNet is published (see the method's
        `settings`), so the reproduction trains them as DHN is trained."""
        return PRESETS["dhn-caffe"]

    # ------------------------------------------------------------------ helpers
    def _bits(self, bits):
        if bits is None:
            return self.bits
        if int(bits) != bits or bits < 1:
            raise UserError(f"{self.name}: bits must be an integer >= 1, got {bits!r}")
        return int(bits)

    def _option(self, key, value, low=None, high=None, integer=False, allow_none=False):
        if value is None and allow_none:
            return None
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise UserError(f"{self.name}: {key} must be a number, got {value!r}") from None
        if not math.isfinite(number) or (integer and number != int(number)):
            kind = "an integer" if integer else "a finite number"
            raise UserError(f"{self.name}: {key} must be {kind}, got {value!r}")
        if (low is not None and number < low) or (high is not None and number > high):
            bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
            raise UserError(f"{self.name}: {key} must be {bounds}, got {value!r}")
        return int(number) if integer else number

    def _choice(self, key, value, choices):
        if value not in choices:
            raise UserError(f"{self.name}: {key} must be one of {', '.join(map(str, choices))}, "
                            f"got {value!r}")
        return value

    @classmethod
    def option_names(cls):
        return [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "bits")]

    def __repr__(self):
        opts = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.option_names()
                         if hasattr(self, k))
        return f"{type(self).__name__}(bits={self.bits}{', ' + opts if opts else ''})"


def check_train_labels(train_labels, what):
    """train_labels as an (n, C) uint8 0/1 array (n >= 1, C >= 1); UserError otherwise."""
    L = np.asarray(train_labels)
    if L.ndim != 2 or L.shape[0] == 0 or L.shape[1] == 0:
        raise UserError(f"{what}: training labels must be a non-empty n x C multi-hot matrix, got "
                        f"shape {L.shape}")
    if not (np.issubdtype(L.dtype, np.integer) or L.dtype == bool or
            np.issubdtype(L.dtype, np.floating)):
        raise UserError(f"{what}: training labels must be numbers, got dtype {L.dtype}")
    if not np.all((L == 0) | (L == 1)):
        bad = np.unique(L[(L != 0) & (L != 1)])[:5].tolist()
        raise UserError(f"{what}: training labels must be 0/1, found {bad}")
    return L.astype(np.uint8)


def zeros_like_loss(outputs):
    """A 0 that keeps `outputs` in the graph (backward gives zero gradients, not an error)."""
    return outputs.sum() * 0.0
