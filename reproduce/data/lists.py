"""Image lists in the field's format, as the authors' multi-label ImageData layer reads them.

One image per line: `relative/path.jpg l1 l2 ... lC` with 0/1 labels (C = 21 for NUS-WIDE), or
`relative/path.jpg c` with a single integer class (Caffe's stock ImageData format), which becomes a
one-hot row. Paths are relative to a dataset root given at run time.

Labels are ASCII integers (`[+-]?[0-9]+`). A class index is at most MAX_CLASSES - 1 and the one-hot
matrix at most MAX_LABEL_BYTES, both checked before anything is allocated, so a typo such as class
99999999999 is a one-line UserError naming file:line, not a 186 GiB allocation.

Absolute paths and paths that climb out of the root with `..` are accepted (the images may really
be there) but counted: `ImageList.outside_root` is how many entries have one, so that a caller can
warn once ("3 paths of list.txt are absolute or leave the dataset root"); `path_outside_root(p)`
tells for one path.
"""
import re
from dataclasses import dataclass

import numpy as np

from ..errors import UserError
from ..utils.fileio import refuse_special, write_text_atomic

MAX_CLASSES = 100_000            # class indices 0..99999 (ImageNet-21k has 21,841 classes)
MAX_LABEL_BYTES = 1 << 32        # 4 GiB of uint8 one-hot labels (ImageNet: 1.28M x 1000 = 1.2 GiB)
_INTEGER = re.compile(r"[+-]?[0-9]+\Z", re.ASCII)
_MAX_DIGITS = 18                 # significant digits of a label; more is out of any range
_BIT = {"0": 0, "1": 1}


def _integers(texts, where):
    """The labels of one line as ints; UserError naming `where` (file:line) for anything but an
    ASCII integer (not `²`, `--1`, `1_0`) or one of more than _MAX_DIGITS digits."""
    bad = next((v for v in texts if not _INTEGER.match(v)), None)
    if bad is not None:
        raise UserError(f"{where}: label {bad!r} is not an integer")
    bad = next((v for v in texts if len(v.lstrip("+-").lstrip("0")) > _MAX_DIGITS), None)
    if bad is not None:     # also keeps int() below its 4300-digit limit
        raise UserError(f"{where}: label {bad!r} is out of range")
    return [int(v.lstrip("+-").lstrip("0") or "0") * (-1 if v[0] == "-" else 1) for v in texts]


def path_outside_root(path):
    """True if a list path is absolute (`/x`, `\\x`, `C:\\x`) or climbs out of the dataset root
    with `..` (`../x`, `a/../../x`); `/` and `\\` both count as separators."""
    if path[:1] in "/\\" or re.match(r"[A-Za-z]:[/\\]", path):
        return True
    depth = 0
    for part in re.split(r"[/\\]", path):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return False


@dataclass
class ImageList:
    """paths: N relative paths; labels: N x C uint8 0/1 multi-hot; source: the list file;
    linenos: the 1-based line of each entry in `source` (None for lists built in memory)."""
    paths: list
    labels: np.ndarray
    source: str = "<memory>"
    linenos: list = None

    def __len__(self):
        return len(self.paths)

    @property
    def outside_root(self):
        """How many entries have an absolute path or one climbing out of the root with `..`
        (accepted, but worth one warning: see `path_outside_root`)."""
        return sum(map(path_outside_root, self.paths))

    def where(self, i):
        """`list.txt:12` for entry i, for error messages."""
        return f"{self.source}:{self.linenos[i]}" if self.linenos else f"{self.source} entry {i + 1}"

    def subset(self, index):
        index = np.asarray(index, dtype=np.int64)
        linenos = [self.linenos[i] for i in index] if self.linenos else None
        return ImageList([self.paths[i] for i in index], self.labels[index], self.source, linenos)


def _one_hot(values, linenos, path, num_labels):
    """Stock Caffe format, one class index per line -> (N, classes) uint8 one-hot. Sizes are
    checked on the Python ints, before numpy sees them (no OverflowError, no huge allocation)."""
    if num_labels is None:
        top = max(values)
        if top >= MAX_CLASSES:
            i = next(i for i, v in enumerate(values) if v >= MAX_CLASSES)
            raise UserError(f"{path}:{linenos[i]}: class {values[i]} is outside 0..{MAX_CLASSES - 1} "
                            f"(at most {MAX_CLASSES} classes)")
    classes = num_labels or top + 1
    i = next((i for i, v in enumerate(values) if not 0 <= v < classes), None)
    if i is not None:
        raise UserError(f"{path}:{linenos[i]}: class {values[i]} is outside 0..{classes - 1}")
    if len(values) * classes > MAX_LABEL_BYTES:
        raise UserError(f"{path}: {len(values)} images x {classes} classes of one-hot labels exceed "
                        f"{MAX_LABEL_BYTES >> 30} GiB")
    labels = np.zeros((len(values), classes), dtype=np.uint8)
    labels[np.arange(len(values)), np.asarray(values, dtype=np.int64)] = 1
    return labels


def read_list(path, num_labels=None):
    """Parse a list file; every malformed line is a UserError naming file and line.

    num_labels: the dataset's C; a list of another label dimension is refused. With a single
    integer label per line, num_labels (or max class + 1) sets the one-hot width.
    """
    refuse_special(path, "list file")
    try:
        with open(path, encoding="utf-8") as f:    # not the locale's (LC_ALL=C: ASCII)
            lines = f.read().splitlines()
    except OSError as e:
        raise UserError(f"{path}: cannot read list ({e.strerror})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text list file") from None
    paths, rows, linenos, width, binary = [], [], [], None, True
    for lineno, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 2:
            raise UserError(f"{path}:{lineno}: no label after the image path {fields[0]!r}")
        if width is None:
            width = len(fields) - 1
        elif len(fields) - 1 != width:
            raise UserError(f"{path}:{lineno}: {len(fields) - 1} labels, but earlier lines have {width}")
        if width == 1 and fields[1].isdigit() and fields[1].isascii() and len(fields[1]) <= _MAX_DIGITS:
            row = [int(fields[1])]                          # the common case: a class index
            binary = binary and row[0] <= 1
        else:
            row = [_BIT.get(v) for v in fields[1:]]         # the common case: 0/1 labels
            if None in row:
                row, binary = _integers(fields[1:], f"{path}:{lineno}"), False
        rows.append(row)
        paths.append(fields[0])
        linenos.append(lineno)
    if not paths:
        raise UserError(f"{path}: the list is empty")
    if width == 1 and (num_labels is None or num_labels > 1):
        labels = _one_hot([row[0] for row in rows], linenos, path, num_labels)
    else:
        if num_labels is not None and width != num_labels:
            raise UserError(f"{path}: lines have {width} labels, but this dataset has {num_labels}")
        for r, row in enumerate([] if binary else rows):
            bad = next((v for v in row if v not in (0, 1)), None)
            if bad is not None:
                raise UserError(f"{path}:{linenos[r]}: label {bad} is not 0 or 1")
        labels = np.asarray(rows, dtype=np.uint8).reshape(len(rows), width)
    return ImageList(paths, labels, str(path), linenos)


def format_list(paths, labels):
    """The text of a list file: `path l1 ... lC` per line."""
    labels = np.asarray(labels)
    return "".join(p + " " + " ".join(map(str, row)) + "\n" for p, row in zip(paths, labels.tolist()))


def write_list(path, paths, labels, overwrite=True):
    """Write a list file atomically."""
    write_text_atomic(path, format_list(paths, labels), overwrite=overwrite)
