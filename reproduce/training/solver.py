"""Caffe's SGD solver as a torch.optim.Optimizer and the authors' solver settings (their
solver.prototxt is read by reproduce.caffe.solver_prototxt).

One `CaffeSGD.step()` is one Caffe iteration of SGDSolver::ApplyUpdate (sgd_solver.cpp), per
parameter blob:

    Regularize          diff = grad + weight_decay * decay_mult * w        (L2)
    ComputeUpdateValue  history = momentum * history + (lr(iter) * lr_mult) * diff
    Net::Update         w = w - history
    then Solver::Step   iter += 1

with lr(iter) from GetLearningRate at iter = completed updates. torch.optim.SGD keeps lr *outside*
the momentum buffer (buf = m*buf + diff; w -= lr*buf): the same while the rate is constant, a
different trajectory after every step of the schedule -- hence this class.
"""
import dataclasses
import math

import torch

from ..model.nets import HASH_LAYER
from ..utils.limits import FLOAT32_MAX, INT_MAX, MAX_BATCH

LR_POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")
# Hyper-parameters each policy reads in GetLearningRate (Caffe reads 0 for an unset one; we
# refuse instead: step with stepsize 0 divides by zero, gamma 0 silently stops training).
POLICY_NEEDS = {"fixed": (), "step": ("gamma", "stepsize"), "exp": ("gamma",),
                "inv": ("gamma", "power"), "multistep": ("gamma", "stepvalue"),
                "poly": ("power", "max_iter"), "sigmoid": ("gamma", "stepsize")}


def check_lr_policy(lr_policy, gamma=None, stepsize=None, power=None, stepvalue=(),
                    max_iter=None):
    """Raise ValueError naming what `lr_policy` needs and was not given, or a value Caffe would
    refuse (sgd_solver.cpp GetLearningRate: CHECK_GE(gamma, 0) for step, exp, inv, multistep and
    sigmoid; CHECK_GT(stepsize, 0) for step and sigmoid) or that cannot train (gamma 0 of a
    decaying policy stops training after its first step; exp with gamma > 1 and poly with a
    negative power make the rate grow without bound; non-finite numbers)."""
    if lr_policy not in POLICY_NEEDS:
        raise ValueError(f"unknown lr_policy {lr_policy!r}; Caffe's are {', '.join(LR_POLICIES)}")
    given = dict(gamma=gamma, stepsize=stepsize, power=power, stepvalue=stepvalue or None,
                 max_iter=max_iter)
    missing = [key for key in POLICY_NEEDS[lr_policy] if given[key] is None]
    if missing:
        raise ValueError(f"lr_policy {lr_policy!r} needs {' and '.join(missing)}")
    for key in ("gamma", "power"):
        if key in POLICY_NEEDS[lr_policy] and not math.isfinite(given[key]):
            raise ValueError(f"{key} must be a finite number, got {given[key]}")
    needs = POLICY_NEEDS[lr_policy]
    if "gamma" in needs and (gamma < 0 or (gamma == 0 and lr_policy in ("step", "exp", "multistep"))):
        bound = "> 0" if lr_policy in ("step", "exp", "multistep") else ">= 0 (Caffe's CHECK)"
        raise ValueError(f"lr_policy {lr_policy!r} needs gamma {bound}, got {gamma}")
    if lr_policy == "exp" and gamma > 1:
        raise ValueError(f"lr_policy 'exp' with gamma {gamma} > 1 makes the rate grow without bound")
    if "stepsize" in needs and stepsize <= 0:
        raise ValueError(f"lr_policy {lr_policy!r} needs stepsize > 0, got {stepsize}")
    if lr_policy == "poly" and (max_iter <= 0 or power < 0):
        raise ValueError(f"lr_policy 'poly' needs max_iter > 0 and power >= 0, got max_iter "
                         f"{max_iter}, power {power}")
    if lr_policy == "multistep" and min(stepvalue) < 0:
        raise ValueError(f"stepvalue must be >= 0, got {list(stepvalue)}")


def multistep_current_step(stepvalue, iteration):
    """Caffe's current_step_ of the multistep policy once GetLearningRate ran at `iteration`.

    Caffe advances it by at most one per iteration (`if current_step_ < n && iter_ >=
    stepvalue(current_step_)`), so step k is taken at t_k = max(t_{k-1} + 1, stepvalue[k]);
    this counts the t_k <= iteration (equal to the number of stepvalues passed when they increase).
    """
    count, t = 0, -1
    for value in stepvalue:
        t = max(t + 1, int(value))
        if t > iteration:
            break
        count += 1
    return count


def learning_rate(iteration, base_lr, lr_policy, gamma=None, stepsize=None, power=None,
                  stepvalue=(), max_iter=None):
    """GetLearningRate of sgd_solver.cpp at `iteration` completed updates (in double precision;
    Caffe rounds the rate to its Dtype, float32, a relative difference < 1e-7)."""
    check_lr_policy(lr_policy, gamma, stepsize, power, stepvalue, max_iter)
    if lr_policy == "fixed":
        return base_lr
    if lr_policy == "step":
        return base_lr * gamma ** (iteration // stepsize)
    if lr_policy == "exp":
        return base_lr * gamma ** iteration
    if lr_policy == "inv":
        return base_lr * (1.0 + gamma * iteration) ** (-power)
    if lr_policy == "multistep":
        return base_lr * gamma ** multistep_current_step(stepvalue, iteration)
    if lr_policy == "poly":
        if iteration > max_iter:
            # Caffe's pow of a negative base gives NaN here; refuse rather than train on NaN.
            raise ValueError(f"lr_policy 'poly' is undefined past max_iter {max_iter} "
                             f"(iteration {iteration})")
        return base_lr * (1.0 - iteration / max_iter) ** power
    # sigmoid: base / (1 + exp(-gamma * (iter - stepsize))), written without overflow
    x = -gamma * (iteration - stepsize)
    if x <= 0:
        return base_lr / (1.0 + math.exp(x))
    return base_lr * math.exp(-x) / (math.exp(-x) + 1.0)


def caffe_multipliers(name):
    """(lr_mult, decay_mult) the authors' train_val.prototxt gives parameter `name`:
    conv/fc weights 1/1, biases 2/0, hash_layer (fch) weight 10/1, bias 20/0. The same rule serves
    every backbone of reproduce.model.archs (Caffe's convention for pretrained layers): VGG-16's
    conv1_1 ... fc7 and torchvision's `features.0.weight`, `layer1.0.conv1.weight` ... alike;
    ResNet-50's BatchNorm parameters are frozen (requires_grad False, no group: see
    reproduce.model.torchvision_nets)."""
    layer, _, blob = name.rpartition(".")
    is_hash = layer.split(".")[-1] == HASH_LAYER    # also under a DDP "module." prefix
    if blob == "weight":
        return (10.0, 1.0) if is_hash else (1.0, 1.0)
    if blob == "bias":
        return (20.0, 0.0) if is_hash else (2.0, 0.0)
    raise ValueError(f"no Caffe multipliers for parameter {name!r} (neither weight nor bias)")


def caffe_param_groups(model, lr_mults=None):
    """One param group per trainable parameter of `model` (e.g. a reproduce.model.nets.DHNNet):
    {"params": [p], "name": "conv1.weight", "lr_mult": 1.0, "decay_mult": 1.0}, with the authors'
    multipliers (`caffe_multipliers`) unless `lr_mults` = {parameter name: (lr_mult, decay_mult)}
    overrides them."""
    overrides = dict(lr_mults or {})
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    unknown = sorted(set(overrides) - {n for n, _ in named})
    if unknown:
        raise ValueError("lr_mults names no trainable parameter of the model: "
                         + ", ".join(unknown))
    groups = []
    for name, p in named:
        lr_mult, decay_mult = overrides.get(name) or caffe_multipliers(name)
        groups.append({"params": [p], "name": name, "lr_mult": float(lr_mult),
                       "decay_mult": float(decay_mult)})
    return groups


def _each(op, cpu, tensors, other, **kwargs):
    """tensor.<op>(other[i] or the scalar other, **kwargs) for every tensor: with `cpu` (all on
    the CPU) one torch._foreach_<op> call, which applies that very per-tensor operation to each
    (its only CPU implementation); elsewhere the per-tensor calls themselves, as CUDA's fused
    _foreach kernels are other kernels, not verified to round as the per-tensor ones do."""
    if cpu:
        return getattr(torch, f"_foreach_{op}")(tensors, other, **kwargs)
    others = other if isinstance(other, list) else [other] * len(tensors)
    return [getattr(t, op)(o, **kwargs) for t, o in zip(tensors, others)]


class CaffeSGD(torch.optim.Optimizer):
    """Caffe's SGDSolver update (see the module docstring); one step() = one Caffe iteration.

    params: parameters or param groups; a group may carry `lr_mult` and `decay_mult` (default 1,
        Caffe's ParamSpec defaults) and a `name` for logging (see `caffe_param_groups`).
    base_lr, momentum, weight_decay, lr_policy, gamma, stepsize, power, stepvalue, max_iter:
        the SolverParameter fields of the same names; defaults of momentum/weight_decay/lr_policy
        are the authors' (0.9, 5e-4, "step"; see SolverSettings for the rest).
    A parameter whose .grad is None gets a zero diff (Caffe zeroes every diff each iteration and
    updates every learnable blob, so weight decay and momentum still act). Each group's "lr" is
    set to the rate of its next update (lr(iter) * lr_mult), for logging only.
    state_dict() holds the iteration and every momentum history, so a resume continues the same
    trajectory bit for bit.
    """

    def __init__(self, params, base_lr, momentum=0.9, weight_decay=5e-4, lr_policy="step",
                 gamma=None, stepsize=None, power=None, stepvalue=(), max_iter=None):
        check_lr_policy(lr_policy, gamma, stepsize, power, stepvalue, max_iter)
        for key, value in (("base_lr", base_lr), ("momentum", momentum),
                           ("weight_decay", weight_decay)):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{key} must be a finite number >= 0, got {value}")
        self.hyper = dict(base_lr=float(base_lr), momentum=float(momentum),
                          weight_decay=float(weight_decay), lr_policy=lr_policy,
                          gamma=gamma, stepsize=stepsize, power=power,
                          stepvalue=[int(v) for v in stepvalue], max_iter=max_iter)
        self.iter = 0   # Caffe's iter_: updates completed
        super().__init__(params, dict(lr_mult=1.0, decay_mult=1.0, name=None, lr=float(base_lr)))
        self._set_group_lr()

    def get_lr(self, iter=None):
        """Policy rate (before lr_mult) of the update made at `iter` completed updates
        (default: the next one)."""
        iteration = self.iter if iter is None else int(iter)
        h = self.hyper
        return learning_rate(iteration, h["base_lr"], h["lr_policy"], h["gamma"], h["stepsize"],
                             h["power"], h["stepvalue"], h["max_iter"])

    @property
    def current_lr(self):
        """The rate the next step() applies (before lr_mult), what Caffe logs as `lr`."""
        return self.get_lr()

    def _set_group_lr(self):
        rate = self.get_lr()
        for group in self.param_groups:
            group["lr"] = rate * group["lr_mult"]

    @torch.no_grad()
    def step(self, closure=None):
        """One Caffe iteration; returns closure() if given (evaluated with grad enabled)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        plan, error = self._plan(self.get_lr())
        if plan[0]:
            self._update(*plan)
        if error is not None:
            raise error
        self.iter += 1
        self._set_group_lr()
        return loss

    def _plan(self, rate):
        """(parameters in update order, {local rate: their positions}, {local decay > 0: their
        positions}) and the error to raise after updating them (None: all were planned). The
        per-parameter loop this replaces updated every parameter before the first one it refused,
        so the same ones are updated."""
        params, by_rate, by_decay = [], {}, {}
        weight_decay = self.hyper["weight_decay"]
        for group in self.param_groups:
            local_rate = rate * group["lr_mult"]
            local_decay = weight_decay * group["decay_mult"]
            if not (abs(local_rate) <= FLOAT32_MAX and abs(local_decay) <= FLOAT32_MAX):
                # Caffe would apply an infinite float rate; torch cannot convert it (a growing
                # schedule, e.g. step with gamma > 1, or a huge multiplier)
                return (params, by_rate, by_decay), OverflowError(
                    f"the learning rate {local_rate:g} (or weight decay {local_decay:g}) of "
                    f"iteration {self.iter} is beyond float32's range")
            for p in group["params"]:
                if p.grad is not None and p.grad.is_sparse:
                    return (params, by_rate, by_decay), RuntimeError(
                        "CaffeSGD does not support sparse gradients")
                by_rate.setdefault(local_rate, []).append(len(params))
                if local_decay:
                    by_decay.setdefault(local_decay, []).append(len(params))
                params.append(p)
        return (params, by_rate, by_decay), None

    def _update(self, params, by_rate, by_decay):
        """SGDSolver::ApplyUpdate of `params`: each gets the elementwise operations it would get
        alone, one call (_each) over all the parameters that share the operation's scalar (a
        handful of calls instead of four per parameter; parameters are independent, so the order
        of the operations across them is free)."""
        histories = [self._history(p) for p in params]
        diffs = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        cpu = all(p.is_cpu for p in params)
        for decay, rows in by_decay.items():            # Regularize: caffe_axpy(decay, w, diff)
            decayed = _each("add", cpu, [diffs[i] for i in rows], [params[i] for i in rows], alpha=decay)
            for i, diff in zip(rows, decayed):
                diffs[i] = diff
        # ComputeUpdateValue: caffe_cpu_axpby(local_rate, diff, momentum, history)
        _each("mul_", cpu, histories, self.hyper["momentum"])
        for rate, rows in by_rate.items():
            _each("add_", cpu, [histories[i] for i in rows], [diffs[i] for i in rows], alpha=rate)
        _each("sub_", cpu, params, histories)           # Net::Update: data -= diff (= history)

    def _history(self, p):
        """Caffe's history_ of `p`, zeros before the first update (PreSolve)."""
        state = self.state[p]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state["momentum_buffer"]

    def zero_grad(self, set_to_none=True):
        """torch's zero_grad; set_to_none (the engine's) as a plain loop: torch's adds a profiler
        record and checks costing as much as a small network's update."""
        if not set_to_none:
            return super().zero_grad(set_to_none=False)
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None

    def state_dict(self):
        """torch's optimizer state (momentum histories, groups) + {"caffe": iteration and
        settings}; plain tensors/numbers/strings, loadable with weights_only=True."""
        sd = super().state_dict()
        sd["caffe"] = dict(self.hyper, iter=self.iter)
        return sd

    def load_state_dict(self, state_dict):
        """Restore iteration and histories; the settings that shape the trajectory must match."""
        state_dict = dict(state_dict)
        caffe = dict(state_dict.pop("caffe", None) or {})
        if "iter" not in caffe:
            raise ValueError("not a CaffeSGD state dict (no 'caffe' entry with the iteration)")
        keys = [k for k in self.hyper if k != "max_iter" or self.hyper["lr_policy"] == "poly"]
        differ = [f"{k} {caffe.get(k)!r} != {self.hyper[k]!r}" for k in keys
                  if caffe.get(k) != self.hyper[k]]
        if differ:
            raise ValueError("solver state was saved with other settings: " + "; ".join(differ))
        super().load_state_dict(state_dict)
        self.iter = int(caffe["iter"])
        self._set_group_lr()


@dataclasses.dataclass(frozen=True)
class SolverSettings:
    """Caffe's SolverParameter fields of a DHN run, and the batch size.

    Defaults: the authors' dhn-caffe solver.prototxt for NUS-WIDE (official_settings.md, Solver),
    their train_val.prototxt (batch_size). The loss settings are reproduce.training.losses.LossSettings.
    """
    base_lr: float = 2e-5             # dhn-caffe base_lr: 0.00002
    lr_policy: str = "step"           # dhn-caffe lr_policy: "step"
    gamma: float | None = 0.3         # dhn-caffe gamma: 0.3 (hash-caffe 0.5)
    stepsize: int | None = 500        # dhn-caffe stepsize: 500
    power: float | None = None        # unused by "step"
    stepvalue: tuple = ()             # unused by "step"
    max_iter: int | None = 10000      # dhn-caffe max_iter: 10000 (hash-caffe 3000)
    momentum: float = 0.9             # dhn-caffe momentum: 0.9
    weight_decay: float = 5e-4        # dhn-caffe weight_decay: 0.0005
    snapshot: int = 1000              # dhn-caffe snapshot: 1000
    display: int = 100                # our choice: not recorded in official_settings.md; log only
    batch_size: int = 64              # train_val.prototxt ImageData batch_size: 64

    def __post_init__(self):
        object.__setattr__(self, "stepvalue", tuple(int(v) for v in self.stepvalue))
        check_lr_policy(self.lr_policy, self.gamma, self.stepsize, self.power, self.stepvalue,
                        self.max_iter)
        for key in ("base_lr", "momentum", "weight_decay"):
            value = getattr(self, key)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{key} must be a finite number >= 0, got {value}")
        if not self.base_lr > 0:
            raise ValueError(f"base_lr must be > 0 (0 trains nothing), got {self.base_lr}")
        if not self.momentum < 1:
            raise ValueError(f"momentum must be < 1 (the history would never decay), got {self.momentum}")
        for key, low, high in (("max_iter", 0, INT_MAX), ("snapshot", 0, INT_MAX), ("display", 0, INT_MAX),
                               ("stepsize", 0, INT_MAX), ("batch_size", 1, MAX_BATCH)):
            value = getattr(self, key)
            if value is not None and (int(value) != value or not low <= value <= high):
                raise ValueError(f"{key} must be an integer in {low}..{high}, got {value}")
        if any(v > INT_MAX for v in self.stepvalue):
            raise ValueError(f"stepvalue must be <= {INT_MAX} (Caffe's int32), got {list(self.stepvalue)}")
        for key in ("base_lr", "momentum", "weight_decay", "gamma", "power"):
            value = getattr(self, key)
            if value is not None and abs(value) > FLOAT32_MAX:   # SolverParameter's fields are float
                raise ValueError(f"{key} {value} is beyond float32's range")
        # Every policy's rate is monotone in the iteration, so its largest value is at 0 or at
        # max_iter: a schedule that outgrows float32 (step/multistep with gamma > 1, inv with a
        # negative power) is refused here, before any work, not in the middle of the run.
        for it in (0, self.max_iter or 0):
            try:
                rate = learning_rate(it, self.base_lr, self.lr_policy, self.gamma, self.stepsize,
                                     self.power, self.stepvalue, self.max_iter)
            except OverflowError:
                rate = math.inf
            if not rate <= FLOAT32_MAX:
                raise ValueError(f"lr_policy {self.lr_policy!r}: the learning rate at iteration {it} is "
                                 "beyond float32's range")

    def optimizer_kwargs(self):
        """Keyword arguments of CaffeSGD (everything but params)."""
        return dict(base_lr=self.base_lr, momentum=self.momentum, weight_decay=self.weight_decay,
                    lr_policy=self.lr_policy, gamma=self.gamma, stepsize=self.stepsize,
                    power=self.power, stepvalue=self.stepvalue, max_iter=self.max_iter)

    def make_optimizer(self, params):
        """CaffeSGD over `params` (e.g. caffe_param_groups(model)) with these settings."""
        return CaffeSGD(params, **self.optimizer_kwargs())

    def to_dict(self):
        """A JSON-ready dict (stepvalue as a list)."""
        d = dataclasses.asdict(self)
        d["stepvalue"] = list(self.stepvalue)
        return d


PRESETS = {
    "dhn-caffe": SolverSettings(),
    # thuml/hash-caffe (the later release): gamma 0.5, max_iter 3000 (its QuantizationLoss weight
    # 0.2 is reproduce.training.losses.LOSS_PRESETS["hash-caffe"])
    "hash-caffe": SolverSettings(gamma=0.5, max_iter=3000),
}
