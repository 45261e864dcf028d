"""What the commands share on the command line: option types, the parser, and how a command runs.

Option types are argparse `type=` callables: a bad value becomes argparse's "argument --x: ..."
usage error, which `ArgumentParser` turns into one line and exit status 2. Every number a user
passes is range-checked here (reproduce.utils.limits), before any work starts. `run_cli` runs a
command's `main`: a UserError becomes `error: <message>` on stderr and its exit status, Ctrl-C
and SIGTERM one line and 130 / 143 (reproduce.utils.signals). The options several commands share
are declared once: `add_solver_options` (train and the per-dataset commands, resolved by
`preset_settings`: the preset, then the options given) and `add_plan_options` (the per-dataset
commands and the demo, read by `executor_settings`).
"""
import argparse
import dataclasses
import math
import sys

from .caffe.caffe_format import PIXEL_RANGE
from .data.transforms import MEAN_VALUE
from .errors import UserError
from .model.nets import MAX_BITS
from .pipeline.executors import EXECUTORS, ExecutorSettings
from .training.losses import LOSS_PRESETS
from .training.solver import PRESETS, SolverSettings
from .utils import signals
from .utils.limits import FLOAT32_MAX, INT_MAX, MAX_BATCH, MAX_WORKERS
from .utils.messages import printable


# --------------------------------------------------------------------------------- option types
def integer(low=None, high=None):
    """An int in [low, high] (either bound optional); also accepts `1e3`-style whole numbers."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            try:
                number = float(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
            if not math.isfinite(number) or number != int(number):
                raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
            value = int(number)
        if (low is not None and value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{text!r} is out of range ({_bounds(low, high)})")
        return value
    parse.__name__ = "integer"
    return parse


def number(low=None, high=None, low_open=False, high_open=False):
    """A finite float in the interval given by low/high (open ends with low_open/high_open)."""
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if abs(value) > FLOAT32_MAX:     # every real setting ends in a float32 tensor (Caffe's too)
            raise argparse.ArgumentTypeError(f"{text!r} is beyond float32's range")
        if (low is not None and (value < low or (low_open and value == low))) or \
                (high is not None and (value > high or (high_open and value == high))):
            raise argparse.ArgumentTypeError(
                f"{text!r} is out of range ({_bounds(low, high, low_open, high_open)})")
        return value
    parse.__name__ = "number"
    return parse


def _bounds(low, high, low_open=False, high_open=False):
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low:{'d' if isinstance(low, int) else 'g'}}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {high:{'d' if isinstance(high, int) else 'g'}}")
    return " and ".join(parts)


POSITIVE = integer(1, INT_MAX)       # counts that must be at least 1 (bits, iterations)
NON_NEGATIVE = integer(0, INT_MAX)   # counts that may be 0 (seeds, snapshots kept)
BATCH_SIZE = integer(1, MAX_BATCH)
WORKERS = integer(0, MAX_WORKERS)
BITS = integer(1, MAX_BITS)          # --bits of every command


def topk_option(text):
    """`--topk R|all` -> R (a positive integer) or None (the whole database)."""
    if text == "all":
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a positive integer nor 'all'")
    return value


def format_mean(mean):
    """(104.0, 117.0, 123.0) -> "104,117,123", as --mean takes it."""
    return ",".join(f"{v:.10g}" for v in mean)


def parse_mean_value(text):
    """`--mean 104,117,123` -> [104.0, 117.0, 123.0] (B, G, R); UserError otherwise."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) == 3 and not all(math.isfinite(v) for v in values):
        raise UserError(f"--mean {text!r}: the mean must be three finite numbers")
    if len(values) != 3:
        raise UserError(f"--mean {text!r}: expected three comma-separated numbers B,G,R "
                        f"(e.g. {format_mean(MEAN_VALUE)})")
    if not all(PIXEL_RANGE[0] <= v <= PIXEL_RANGE[1] for v in values):
        raise UserError(f"--mean {text!r}: a mean of pixels lies in {PIXEL_RANGE[0]}..{PIXEL_RANGE[1]} "
                        "(Caffe's images are 8-bit, pycaffe's are scaled by raw_scale 255)")
    return values


# --------------------------------------------------------------------------------- the parser
class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are a UserError too: one line, exit status 2 via run_cli."""

    def error(self, message):
        raise UserError(f"{self.prog}: {message}")

    def parse_known_args(self, args=None, namespace=None):
        # An empty value (`--cache ""`, `--mean ""`) is a mistake in a script, never a setting:
        # refused here for every option rather than read as "." or as "use the default".
        namespace, rest = super().parse_known_args(args, namespace)
        for action in self._actions:
            value = getattr(namespace, action.dest, None)
            if any(isinstance(v, str) and not v.strip()
                   for v in (value if isinstance(value, (list, tuple)) else [value])):
                self.error(f"argument {'/'.join(action.option_strings) or action.dest}: empty value")
        return namespace, rest


# --------------------------------------------------------------------------------- running a command
def run_cli(main, argv=None):
    """Call `main(argv)`; map UserError to `error: <message>` on stderr and its exit status (2),
    Ctrl-C to exit status 130 and SIGTERM to 143, each after the outputs being written were
    removed. An error that follows a signal (a loader worker gone) is reported as the signal."""
    signals.install_command_handlers()
    try:
        main(argv)
        signals.check_signal()
    except UserError as e:
        if signals.received() is None:
            signals.close_progress_bars()   # an image found undecodable mid-run: the line stands alone
            print(f"error: {printable(str(e))}", file=sys.stderr)
            sys.exit(e.exit_code)
        signals.exit_on_signal()
    except (KeyboardInterrupt, signals.Terminated):
        signals.record_interrupt()
        signals.exit_on_signal()
    except Exception:
        if signals.received() is None:
            raise
        signals.exit_on_signal()
    finally:
        signals.ignore_after_command()


# ------------------------------------------------------------------ the solver and loss options
DEFAULT_PRESET = "dhn-caffe"       # the authors' solver.prototxt and loss


def add_solver_options(parser):
    """The options `train` and the per-dataset commands share, declared once: the solver and loss
    preset, the overrides of its base_lr, max_iter, batch size and λ (resolved by
    `preset_settings`), and the loader processes and device of the runs."""
    solver, loss = PRESETS[DEFAULT_PRESET], LOSS_PRESETS[DEFAULT_PRESET]
    g = parser.add_argument_group("solver and loss (a preset, then the options given)")
    g.add_argument("--preset", choices=sorted(PRESETS), default=DEFAULT_PRESET,
                   help=f"named solver and loss settings (default {DEFAULT_PRESET}: the authors' "
                        "solver.prototxt and loss)")
    g.add_argument("--base-lr", type=number(0, low_open=True), default=None,
                   help=f"override the preset's base_lr ({DEFAULT_PRESET}: {solver.base_lr:g})")
    g.add_argument("--max-iter", type=POSITIVE, default=None,
                   help=f"override the preset's max_iter ({DEFAULT_PRESET}: {solver.max_iter})")
    g.add_argument("--batch-size", type=BATCH_SIZE, default=None,
                   help=f"override the preset's batch, the global batch over all processes "
                        f"({DEFAULT_PRESET}: {solver.batch_size})")
    g.add_argument("--quant-weight", type=number(0), default=None,
                   help=f"override the preset's λ of the quantization loss ({DEFAULT_PRESET}: "
                        f"{loss.quant_weight:g}, the authors' q_gamma); 0 = DHN-Q")
    g.add_argument("--workers", type=WORKERS, default=2, help="image loader processes (default 2)")
    g.add_argument("--device", default="auto", help="auto (default: cuda if available), cpu, cuda, cuda:N")
    return g


def preset_settings(preset, overrides, solver=None):
    """(SolverSettings, LossSettings) of a run: the preset's (its solver replaced by `solver` when
    given, e.g. read from a solver.prototxt), then every override that is not None, by name:
    SolverSettings fields, and `quant_weight` for the loss. ValueError on settings the solver
    refuses."""
    fields = {f.name for f in dataclasses.fields(SolverSettings)}
    unknown = set(overrides) - fields - {"quant_weight"}
    if unknown:
        raise ValueError(f"no such solver or loss setting: {', '.join(sorted(unknown))}")
    solver = solver or PRESETS[preset]
    given = {k: v for k, v in overrides.items() if k in fields and v is not None}
    loss = LOSS_PRESETS[preset]
    if overrides.get("quant_weight") is not None:
        loss = dataclasses.replace(loss, quant_weight=overrides["quant_weight"])
    return dataclasses.replace(solver, **given), loss


# ------------------------------------------------------------------ the plan and its executors
def add_plan_options(parser):
    """--plan, --rerun-stale and the executor options of the per-dataset commands and the demo
    (reproduce.pipeline.plan, reproduce.pipeline.executors); `executor_settings` reads them."""
    d = ExecutorSettings()
    g = parser.add_argument_group("the plan (reproduce.pipeline.plan)")
    g.add_argument("--plan", action="store_true",
                   help="print every job with its state (done, pending, stale, failed) and output; run nothing")
    g.add_argument("--rerun-stale", action="store_true",
                   help="recompute outputs made with other settings (and what depends on them) instead "
                        "of stopping")
    g = parser.add_argument_group("running the plan (reproduce.pipeline.executors)")
    g.add_argument("--jobs", type=POSITIVE, default=d.jobs,
                   help="jobs at once on this machine (default 1: one after another in this process)")
    g.add_argument("--devices", default=d.devices,
                   help="comma-separated devices the jobs are spread over, e.g. cuda:0,cuda:1 or cpu "
                        "(default: every visible GPU, else cpu)")
    g.add_argument("--threads-per-job", type=POSITIVE, default=d.threads_per_job,
                   help="CPU threads of each job (default: this machine's cores divided by --jobs; "
                        "SLURM: --slurm-cpus-per-job); CPU results depend on it")
    g.add_argument("--executor", choices=EXECUTORS, default=d.executor, help="local (default) or slurm")
    g.add_argument("--no-wait", action="store_true", help="slurm: return once the jobs are submitted")
    g.add_argument("--slurm-partition", default=d.slurm_partition, help="slurm: partition (default: the cluster's)")
    g.add_argument("--slurm-cpus-per-job", type=POSITIVE, default=d.slurm_cpus_per_job,
                   help=f"slurm: CPUs per job (default {d.slurm_cpus_per_job})")
    g.add_argument("--slurm-gpus-per-job", type=int, default=d.slurm_gpus_per_job,
                   help=f"slurm: GPUs per job (default {d.slurm_gpus_per_job})")
    g.add_argument("--slurm-mem-gb", type=POSITIVE, default=d.slurm_mem_gb,
                   help=f"slurm: memory per job in GB (default {d.slurm_mem_gb})")
    g.add_argument("--slurm-time-min", type=POSITIVE, default=d.slurm_time_min,
                   help=f"slurm: time limit per job in minutes (default {d.slurm_time_min})")
    g.add_argument("--slurm-max-concurrent", type=POSITIVE, default=d.slurm_max_concurrent,
                   help="slurm: at most this many of the command's jobs queued or running at once")


def executor_settings(args, device=None):
    """The ExecutorSettings of options declared by add_plan_options; `device`: the command's own
    --device (refused together with --devices)."""
    options = vars(args)
    own = {"show_plan": options["plan"], "rerun_stale": options["rerun_stale"], "device": device}
    return ExecutorSettings(**own, **{f.name: options[f.name] for f in dataclasses.fields(ExecutorSettings)
                                      if f.name not in own})
