"""Caffe's solver.prototxt (protobuf text format) read into reproduce.training.solver.SolverSettings: the
authors' solver file can be given as is (`python -m reproduce.train --solver-prototxt`)."""
import math
import re

from ..errors import UserError
from ..training.solver import PRESETS, SolverSettings
from ..utils.fileio import refuse_special

# solver.prototxt keys (caffe.proto SolverParameter) and how each is read.
_FLOAT_KEYS = ("base_lr", "gamma", "power", "momentum", "weight_decay")
_INT_KEYS = ("stepsize", "max_iter", "snapshot", "display")
# Caffe's proto defaults for keys a file may leave out (momentum, weight_decay: 0).
_CAFFE_DEFAULTS = dict(gamma=None, stepsize=None, power=None, momentum=0.0, weight_decay=0.0,
                       snapshot=0, display=0)
_REQUIRED = ("base_lr", "lr_policy", "max_iter")
# Keys that do not change the training trajectory here (nets, testing, snapshot naming, device);
# random_seed seeds Caffe's own generators, which this package cannot replay.
_IGNORED_KEYS = frozenset((
    "net", "train_net", "test_net", "test_iter", "test_interval", "test_compute_loss",
    "test_initialization", "snapshot_prefix", "snapshot_diff", "snapshot_format",
    "snapshot_after_train", "solver_mode", "device_id", "random_seed", "debug_info",
    "average_loss", "layer_wise_reduce", "weights", "delta", "momentum2", "rms_decay"))
# Keys accepted only with the value that means plain Caffe SGD.
_CHECKED_KEYS = {"type": ("SGD",), "solver_type": ("SGD",), "regularization_type": ("L2",),
                 "iter_size": ("1",), "clip_gradients": None}
# one `key: value` field: a name, a colon, then a quoted string or a bare token; an optional
# `;` or `,` separator after it (protobuf text format)
_FIELD = re.compile(r"""\s*([A-Za-z_]\w*)\s*:\s*"""
                    r"""("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^\s"'#{}:;,]+)\s*[;,]?""")


# Numbers as protobuf's text format writes them (ASCII only: not Python's `1_000` or `١`); an
# integer of more than 18 digits overflows Caffe's int32/int64 fields anyway.
_INT_TEXT = re.compile(r"[+-]?[0-9]{1,18}\Z", re.ASCII)
_FLOAT_TEXT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?[fF]?\Z", re.ASCII)
_NON_FINITE = re.compile(r"[+-]?(inf|infinity|nan)[fF]?\Z", re.ASCII | re.IGNORECASE)


def _parse_number(text, kind, where):
    if kind is int:
        if not _INT_TEXT.match(text):
            raise UserError(f"{where}: {text!r} is not an integer" +
                            (" (too many digits)" if text.lstrip("+-").isdigit() else ""))
        return int(text, 10)
    if _NON_FINITE.match(text):
        raise UserError(f"{where}: {text!r} is not a finite number")
    if not _FLOAT_TEXT.match(text):
        raise UserError(f"{where}: {text!r} is not a number")
    value = float(text.rstrip("fF"))
    if not math.isfinite(value):       # 1e999
        raise UserError(f"{where}: {text!r} is not a finite number")
    return value


def _error_line(message, line_of, stepvalue, stepvalue_lines):
    """The line a SolverSettings error is about: the first key of the message that the file sets
    (`lr_policy 'step' needs stepsize > 0` -> stepsize's line; stepvalue: its first negative
    one), else lr_policy's."""
    for word in re.findall(r"[a-z_]+", message):
        if word == "stepvalue" and stepvalue_lines:
            return next((n for v, n in zip(stepvalue, stepvalue_lines) if v < 0), stepvalue_lines[0])
        if word in line_of and word != "lr_policy":
            return line_of[word]
    return line_of.get("lr_policy")


def _fields(path, lines):
    """Yield (line number, key, raw value, value without quotes) of every `key: value` field."""
    for lineno, line in enumerate(lines, 1):
        pos = 0
        while pos < len(line):
            rest = line[pos:].strip()
            if not rest or rest.startswith("#"):
                break
            m = _FIELD.match(line, pos)
            if m is None:
                what = ("nested messages (`name { ... }`) are not supported" if "{" in rest
                        else "expected `key: value`")
                raise UserError(f"{path}:{lineno}: cannot parse {rest!r}: {what}")
            pos = m.end()
            key, raw = m.group(1), m.group(2)
            yield lineno, key, raw, raw[1:-1] if raw[0] in "\"'" else raw


def _check_supported(key, value, raw, where):
    """The solver options whose only supported value is plain Caffe SGD's (_CHECKED_KEYS)."""
    allowed = _CHECKED_KEYS[key]
    if allowed is None:     # clip_gradients: Caffe's default -1 means off
        ok = _parse_number(value, float, where) < 0
    else:
        ok = value in allowed
    if not ok:
        raise UserError(f"{where}: {key}: {raw} is not supported (only plain Caffe SGD: type SGD, "
                        "L2 regularization, iter_size 1, no clip_gradients)")


def read_solver_prototxt(path, defaults=None):
    """Parse a Caffe solver.prototxt (protobuf text format) into SolverSettings.

    `key: value` fields (several per line allowed), quoted or bare strings, `#` comments,
    repeated `stepvalue`. Solver keys absent from the file take Caffe's proto defaults
    (momentum 0, weight_decay 0, ...); base_lr, lr_policy and max_iter are required. batch_size
    is not a solver key: it comes from `defaults` (the dhn-caffe preset).
    Unknown keys, nested messages, repeated singular keys, bad values -> UserError "<path>:<line>"
    (a missing required key, which has no line: "<path>: missing ..."). Numbers are ASCII
    protobuf-text numbers; NaN and infinities are refused.
    """
    defaults = PRESETS["dhn-caffe"] if defaults is None else defaults
    refuse_special(path, "solver prototxt")
    try:
        with open(path, encoding="utf-8") as f:    # protobuf text format is UTF-8
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        reason = getattr(e, "strerror", None) or e
        raise UserError(f"{path}: cannot read solver prototxt ({reason})") from None
    found, line_of, stepvalue, stepvalue_lines = {}, {}, [], []
    for lineno, key, raw, value in _fields(path, lines):
        where = f"{path}:{lineno}"
        if key == "stepvalue":
            stepvalue.append(_parse_number(value, int, where))
            stepvalue_lines.append(lineno)
            continue
        if key in line_of and key not in _IGNORED_KEYS:   # singular field given twice
            raise UserError(f"{where}: {key} is given twice (first on line {line_of[key]})")
        line_of[key] = lineno
        if key in _IGNORED_KEYS:
            continue
        if key in _CHECKED_KEYS:
            _check_supported(key, value, raw, where)
        elif key in _FLOAT_KEYS:
            found[key] = _parse_number(value, float, where)
        elif key in _INT_KEYS:
            found[key] = _parse_number(value, int, where)
        elif key == "lr_policy":
            found[key] = value
        else:
            raise UserError(f"{where}: unknown solver key {key!r}")
    missing = [key for key in _REQUIRED if key not in found]
    if missing:
        raise UserError(f"{path}: missing required key(s) {', '.join(missing)}")
    values = dict(_CAFFE_DEFAULTS, **found)
    try:
        return SolverSettings(stepvalue=tuple(stepvalue), batch_size=defaults.batch_size, **values)
    except (ValueError, TypeError, OverflowError) as e:
        message = " ".join(str(e).split())
        line = _error_line(message, line_of, stepvalue, stepvalue_lines)
        raise UserError(f"{path}:{line}: {message}" if line else f"{path}: {message}") from None


def where(path, key):
    """"<path>:<line>" of the field `key` in the solver file `path` (an error about a setting it
    gave that a later check refuses, e.g. RunConfig's max_iter 0), or "<path>" when it is absent
    (a Caffe default) or the file cannot be read again."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
        line = next((n for n, k, _, _ in _fields(path, lines) if k == key), None)
    except (OSError, UnicodeDecodeError, UserError):
        line = None
    return f"{path}:{line}" if line else path
