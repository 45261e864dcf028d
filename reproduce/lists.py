"""Image lists in the field's format, as the authors' multi-label ImageData layer reads them.

One image per line: `relative/path.jpg l1 l2 ... lC` with 0/1 labels (C = 21 for NUS-WIDE), or
`relative/path.jpg c` with a single integer class (Caffe's stock ImageData format), which becomes a
one-hot row. Paths are relative to a dataset root given at run time.
"""
from dataclasses import dataclass

import numpy as np

from .errors import UserError
from .fileio import write_text_atomic


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

    def where(self, i):
        """`list.txt:12` for entry i, for error messages."""
        return f"{self.source}:{self.linenos[i]}" if self.linenos else f"{self.source} entry {i + 1}"

    def subset(self, index):
        index = np.asarray(index, dtype=np.int64)
        linenos = [self.linenos[i] for i in index] if self.linenos else None
        return ImageList([self.paths[i] for i in index], self.labels[index], self.source, linenos)


def read_list(path, num_labels=None):
    """Parse a list file; every malformed line is a UserError naming file and line.

    num_labels: the dataset's C; a list of another label dimension is refused. With a single
    integer label per line, num_labels (or max class + 1) sets the one-hot width.
    """
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise UserError(f"{path}: cannot read list ({e.strerror})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text list file") from None
    paths, rows, linenos, width = [], [], [], None
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
        try:
            rows.append([int(v) for v in fields[1:]])
        except ValueError:
            bad = next(v for v in fields[1:] if not v.lstrip("-").isdigit())
            raise UserError(f"{path}:{lineno}: label {bad!r} is not an integer") from None
        paths.append(fields[0])
        linenos.append(lineno)
    if not paths:
        raise UserError(f"{path}: the list is empty")
    values = np.asarray(rows, dtype=np.int64)
    if width == 1 and (num_labels is None or num_labels > 1):
        # Stock Caffe format: one class index per line -> one-hot.
        classes = num_labels or int(values.max()) + 1
        bad = np.flatnonzero((values[:, 0] < 0) | (values[:, 0] >= classes))
        if bad.size:
            raise UserError(f"{path}:{linenos[bad[0]]}: class {values[bad[0], 0]} is outside 0..{classes - 1}")
        labels = np.zeros((len(paths), classes), dtype=np.uint8)
        labels[np.arange(len(paths)), values[:, 0]] = 1
    else:
        if num_labels is not None and width != num_labels:
            raise UserError(f"{path}: lines have {width} labels, but this dataset has {num_labels}")
        bad = np.argwhere((values != 0) & (values != 1))
        if bad.size:
            r = bad[0, 0]
            raise UserError(f"{path}:{linenos[r]}: label {values[r, bad[0, 1]]} is not 0 or 1")
        labels = values.astype(np.uint8)
    return ImageList(paths, labels, str(path), linenos)


def format_list(paths, labels):
    """The text of a list file: `path l1 ... lC` per line."""
    labels = np.asarray(labels)
    return "".join(p + " " + " ".join(map(str, row)) + "\n" for p, row in zip(paths, labels.tolist()))


def write_list(path, paths, labels, overwrite=True):
    """Write a list file atomically."""
    write_text_atomic(path, format_list(paths, labels), overwrite=overwrite)
