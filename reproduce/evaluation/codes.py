"""Reading code files: this package's `reproduce.encode` outputs and other methods' codes.

Accepted code files (query and database may differ in format):

  file                      codes (first name found)       labels (first name found)
  .h5 of reproduce.encode   codes: float32 N x K tanh       labels: uint8 N x C
  other .h5 / .hdf5, and    codes, B, hash_codes,           labels, L, label, gnd, Y, y,
  MATLAB v7.3 .mat          binary_codes, hashcodes, H      classes, class
  .mat (v5 to v7.2, scipy)  same names                      same names
  .npz                      same names                      same names
  .npy                      the array itself                --query-labels/--database-labels

--query-codes-key etc. name other variables (e.g. B_tst / B_trn of one .mat file); --query-labels
/ --database-labels read labels from a list file (`path l1 .. lC` or `path c`) or a .npy array.
Labels are 0/1 matrices (N x C or C x N) or class-index vectors (one-hot: relevance is then "same
class", whatever the first index). Foreign codes may be stored N x K or K x N (MATLAB toolboxes
differ): the orientation whose sample count matches the labels' is taken (both match: the larger
dimension is N) and recorded in metrics.json. Values may be ±1, 0/1 (0 -> -1), logical, or packed
uint8 (MATLAB compactbit: bit k in byte k // 8, least significant bit first; --bits K when K is not
a multiple of 8). Real-valued codes (reproduce.encode's tanh outputs, or foreign ones with --sign)
are binarised by sign with code >= 0 -> +1, code < 0 -> -1 (an exact 0 goes to +1). With
--continuous (DHN-B) nothing is binarised: the ranking is by the inner product of the values.

Any file, however damaged, is read or refused with a one-line UserError naming it: sizes declared in
a file (.npy headers, .npz members, HDF5 datasets, MATLAB variables) are checked against the bytes
it holds before anything is allocated (reproduce.utils.arrayfiles), only
numeric/logical MATLAB variables are loaded, and class indices are at most MAX_CLASSES - 1 (a
one-hot matrix at most MAX_LABEL_BYTES) so that a label of 1e11 is refused, not allocated.
"""
import os
from dataclasses import dataclass, field

import h5py
import numpy as np

from ..data.lists import MAX_CLASSES, MAX_LABEL_BYTES, read_list
from ..errors import UserError
from ..model.archs import ARCHS, named_backbone
from ..utils.arrayfiles import READ_ERRORS, load_npy, load_npz, mat_variables, read_h5_attrs, read_h5_dataset
from ..utils.fileio import require_file
from ..utils.messages import one_line

ENCODE_FORMAT = "reproduce-dhn-codes/1"     # reproduce.encode.CODES_FORMAT (not imported: torch)
CODE_KEYS = ("codes", "B", "hash_codes", "binary_codes", "hashcodes", "H")
LABEL_KEYS = ("labels", "L", "label", "gnd", "Y", "y", "classes", "class")
def sign_codes(values):
    """The binary codes of real-valued ones: int8 ±1, code >= 0 -> +1, code < 0 -> -1 (an exact 0
    goes to +1), as DHN's sign function and the authors' evaluation scripts binarise."""
    return np.where(np.asarray(values) >= 0, 1, -1).astype(np.int8)


@dataclass
class CodeFile:
    """One code file, oriented as samples x bits. codes: (N, K) float32 as stored (0/1 already
    mapped to ±1); real: the values are not binary; labels: (N, C) uint8 or (N,) class indices
    or None; info: how it was read (recorded in metrics.json); attrs: HDF5 root attributes."""
    path: str
    codes: np.ndarray
    real: bool
    labels: np.ndarray
    info: dict
    attrs: dict = field(default_factory=dict)

    def binary_codes(self, sign=False):
        """(N, K) int8 ±1. Real-valued codes need the sign rule: reproduce.encode's or `sign`."""
        if self.real and not (sign or self.info["format"] == "reproduce.encode"):
            i, k = np.argwhere((self.codes != 1) & (self.codes != -1))[0]
            raise UserError(f"{self.path}: codes are not ±1 or 0/1 (value {self.codes[i, k]:g} at "
                            f"row {i}, bit {k}); pass --sign to binarise real-valued codes")
        return sign_codes(self.codes)

    def label_matrix(self, width=None):
        """(N, C) uint8 multi-hot; class-index vectors become one-hot of `width` (max + 1).
        Sizes are checked first: at most MAX_CLASSES classes and MAX_LABEL_BYTES of one-hot."""
        if self.labels.ndim == 2:
            return self.labels
        top = int(self.labels.max()) if self.labels.size else -1
        width = width or top + 1
        if top >= width or width > MAX_CLASSES or self.labels.shape[0] * width > MAX_LABEL_BYTES:
            raise UserError(f"{self.path}: {self.labels.shape[0]} class labels up to {top} cannot be "
                            f"one-hot in {width} classes (at most {MAX_CLASSES} classes and "
                            f"{MAX_LABEL_BYTES >> 30} GiB)")
        onehot = np.zeros((self.labels.shape[0], width), np.uint8)
        onehot[np.arange(self.labels.shape[0]), self.labels] = 1
        return onehot


# What makes codes (or features) of one model comparable: written by reproduce.encode.
ENCODING_ATTRS = ("checkpoint_sha1", "arch", "pipeline", "transform", "resize", "mean", "mean_file_sha1")


# The splits the per-dataset commands' codes and features record (attribute `split`).
SPLITS = ("train", "query", "database")


def encoding_difference(files, what="codes", roles=None):
    """None if the reproduce.encode files `files` ([(path, attrs)]) come from one checkpoint with
    one pipeline, mean and crop; else one phrase naming both files and the first difference.
    Files of other programs record none of these and are not compared. roles: the split each
    file is given as ("query", "database", "train"): a file that records another split (query
    and database swapped, or one file given as both) is named too."""
    for (p, a), role in zip(files, roles or ()):
        split = a.get("split")
        split = split.decode("utf-8", "replace") if isinstance(split, bytes) else split
        if isinstance(split, str) and split in SPLITS and split != role:
            return f"{p}: {what} of the {split} split (its attribute split), given as the {role}"
    ours = [(p, a) for p, a in files if a.get("format") == ENCODE_FORMAT or "checkpoint_sha1" in a]
    for (p1, a1), (p2, a2) in zip(ours, ours[1:]):
        for key in ENCODING_ATTRS:
            v1, v2 = a1.get(key), a2.get(key)
            if not np.array_equal(np.asarray(v1, dtype=object), np.asarray(v2, dtype=object)):
                return (f"{p1} and {p2}: {what} of different models or image pipelines ({key} "
                        f"{_short(v1)} vs {_short(v2)})")
    return None


def codes_arch(files):
    """The arch that CodeFiles `files` say they were encoded with (reproduce.encode's `arch`
    attribute), or None: files of other programs (no such attribute) and files of different archs
    (evaluated only with --allow-mixed, which the record states)."""
    archs = {f.attrs.get("arch") for f in files}
    arch = archs.pop() if len(archs) == 1 else None
    return arch if isinstance(arch, str) and arch in ARCHS else None


def codes_backbone(files):
    """The backbone (model.archs.named_backbone) to name in the files' metrics record: None for
    the paper's networks and where codes_arch is None."""
    arch = codes_arch(files)
    return named_backbone(arch) if arch else None


def _short(value):
    text = str(value.tolist() if isinstance(value, np.ndarray) else value)
    return text if len(text) <= 50 else text[:47] + "..."


def code_paths(path):
    """The image paths stored in a code file (reproduce.encode's `paths`), or None."""
    if not h5py.is_hdf5(path):
        return None
    try:
        with h5py.File(path, "r") as f:
            d = f.get("paths")
            if not isinstance(d, h5py.Dataset) or d.ndim != 1:
                return None
            return [p.decode("utf-8", "replace") if isinstance(p, bytes) else str(p) for p in d[()]]
    except (OSError, ValueError):
        return None


def labels_by_path(list_path, paths, code_path):
    """The labels of a list file in the order of a code file's `paths` (matched by path, not by
    row); UserError naming the path the list lacks or holds twice."""
    image_list = read_list(list_path)
    row = {}
    for i, p in enumerate(image_list.paths):
        if p in row:
            raise UserError(f"{image_list.where(i)}: {p} is listed twice; its labels for {code_path} "
                            "would be ambiguous")
        row[p] = i
    missing = next((p for p in paths if p not in row), None)
    if missing is not None:
        raise UserError(f"{list_path}: has no line for {missing}, an image of {code_path}")
    return image_list.labels[[row[p] for p in paths]]


def _open(path):
    """(format, {name: shape}, load(name) -> ndarray, attrs) for any accepted file."""
    require_file(path, "code file")
    ext = os.path.splitext(path)[1].lower()
    try:
        if ext == ".npy":
            array = load_npy(path, "code file")
            return "npy", {None: array.shape}, lambda name: array, {}
        if ext == ".npz":
            arrays = load_npz(path)
            return "npz", {k: a.shape for k, a in arrays.items()}, arrays.__getitem__, {}
        if ext == ".mat" and not h5py.is_hdf5(path):
            shapes, load = mat_variables(path)
            return "mat", shapes, load, {}
        with h5py.File(path, "r") as f:
            shapes = {k: v.shape for k, v in f.items() if isinstance(v, h5py.Dataset)}
            attrs = read_h5_attrs(f, path)
            fmt = ("reproduce.encode" if isinstance(attrs.get("format"), str)
                   and attrs["format"] == ENCODE_FORMAT
                   or {"codes", "labels", "paths"} <= set(shapes) else "hdf5")

        def load(name):
            with h5py.File(path, "r") as f:
                return read_h5_dataset(f[name], path, f"dataset {name!r}")
        return fmt, shapes, load, attrs
    except READ_ERRORS as e:
        raise UserError(f"{path}: cannot read as a {ext or 'HDF5'} code file (truncated or not "
                        f"this format): {one_line(e)}") from None


def _pick(shapes, key, candidates, path, what, option):
    if key is not None:
        if key not in shapes:
            raise UserError(f"{path}: no variable {key!r} (it has: {', '.join(map(str, shapes))})")
        return key
    found = next((k for k in candidates if k in shapes), None)
    if found is None and what == "codes":
        have = ", ".join(f"{k} {'x'.join(map(str, s))}" for k, s in shapes.items()) or "nothing"
        raise UserError(f"{path}: no codes (looked for {', '.join(candidates)}; it has: {have}); "
                        + (f"name them with {option}" if option else "save them under one of those names"))
    return found


def _label_orientation(labels, n, orientation, codes_shape):
    """A square label matrix (as many classes as items) is stored as the codes are: the stated
    orientation, else the one the codes' shape shows; any other label matrix tells by itself."""
    if labels.shape[0] != labels.shape[1] or orientation is not None:
        return orientation
    a, b = codes_shape
    return "NxK" if a == n != b else "KxN" if b == n != a else None


def _sample_count(codes_shape, labels, path, orientation=None):
    """N: the labels' sample count (a vector's length; of a matrix, the dimension shared with the
    codes — the stated orientation's if both are, the larger one if the codes are not square)."""
    if labels.ndim == 1:
        return labels.shape[0]
    if orientation is not None:
        return codes_shape[0] if orientation == "NxK" else codes_shape[1]
    shared = {labels.shape[0], labels.shape[1]} & set(codes_shape)
    if not shared:
        raise UserError(f"{path}: codes are {codes_shape[0]} x {codes_shape[1]} and labels "
                        f"{labels.shape[0]} x {labels.shape[1]}: no common sample count")
    return max(shared)


ORIENTATIONS = ("NxK", "KxN")     # --orientation: samples x bits (rows are items) or bits x samples


def _orient(matrix, n, path, what, orientation=None):
    """(matrix as N x D, orientation text); n None: the larger dimension is N. A square matrix
    (as many bits, or classes, as items) cannot tell: `orientation` (NxK, KxN) must say it."""
    a, b = matrix.shape
    if orientation is not None:
        matrix, text = (matrix, "N x K (given)") if orientation == "NxK" else (matrix.T, "K x N, transposed (given)")
        if n is not None and matrix.shape[0] != n:
            raise UserError(f"{path}: {what} read as {text} are {matrix.shape[0]} x {matrix.shape[1]}, "
                            f"but there are {n} samples (labels)")
        return matrix, text
    if a == b and (n is None or a == n):
        raise UserError(f"{path}: {what} are {a} x {b}: the samples could be the rows or the columns; "
                        "say which with --orientation NxK (rows) or KxN (columns)")
    if n is None:
        return (matrix, "N x K (assumed: more rows than columns)") if a > b else \
            (matrix.T, "K x N, transposed (assumed: more columns than rows)")
    if a == n:
        return matrix, "N x K"
    if b == n:
        return matrix.T, "K x N, transposed"
    raise UserError(f"{path}: {what} are {a} x {b}, but there are {n} samples (labels)")


def _check_labels(labels, path):
    if labels.dtype.kind not in "biuf":
        raise UserError(f"{path}: labels must be numbers, got {labels.dtype}")
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim == 1:
        if ((labels < 0) | ~(labels == np.round(labels))).any():
            raise UserError(f"{path}: class labels must be non-negative integers")
        if labels.size and labels.max() >= MAX_CLASSES:
            raise UserError(f"{path}: class label {labels.max()} is above the limit of "
                            f"{MAX_CLASSES} classes (0..{MAX_CLASSES - 1})")
        return labels.astype(np.int64)
    bad = np.argwhere((labels != 0) & (labels != 1))
    if bad.size:
        i, j = bad[0]
        raise UserError(f"{path}: labels must be 0/1; found {labels[i, j]!r} at row {i}, column {j}")
    return labels.astype(np.uint8)


def read_external_labels(path):
    """Labels from a list file (reproduce.data.lists format) or a .npy array."""
    if str(path).lower().endswith(".npy"):
        require_file(path, "label file")
        labels = load_npy(path, "label file")
    else:
        labels = read_list(path).labels
    if labels.ndim not in (1, 2):
        raise UserError(f"{path}: labels must be a vector or a matrix, got shape {labels.shape}")
    if labels.dtype.kind not in "biuf" or labels.size == 0:
        raise UserError(f"{path}: labels must be a non-empty array of numbers, got {labels.dtype} "
                        f"{labels.shape}")
    if ((labels < 0) | ~(labels == np.round(labels)) | (labels >= MAX_CLASSES)).any():
        raise UserError(f"{path}: labels must be 0/1 or class indices 0..{MAX_CLASSES - 1}")
    return labels


def _oriented_labels(labels, codes_shape, path, orientation=None):
    """External or stored labels checked and oriented to (N, C) / (N,); returns (labels, N or None)."""
    if labels is None:
        return None, None
    labels = np.asarray(labels)
    if labels.ndim not in (1, 2) or labels.dtype.kind not in "biuf" or labels.size == 0:
        raise UserError(f"{path}: labels must be a non-empty numeric vector or matrix, got "
                        f"{labels.dtype} {labels.shape}")
    if labels.ndim == 2 and 1 in labels.shape and 1 not in codes_shape:
        labels = labels.reshape(-1)   # MATLAB class vectors are 1 x N or N x 1 (N > 1 codes)
    n = _sample_count(codes_shape, labels, path, orientation)
    if labels.ndim == 2:
        labels = _orient(labels, n, path, "labels", _label_orientation(labels, n, orientation, codes_shape))[0]
    return _check_labels(labels, path), n


def _unpacked_float32(codes, fmt, bits, path):
    """(N, K) float32 codes: packed uint8 unpacked (LSB first, as compactbit), K checked against
    --bits, NaN / infinity / values beyond float32 refused. Returns (codes, packed)."""
    nbytes = codes.shape[1]
    packed = (codes.dtype == np.uint8 and fmt != "reproduce.encode"
              and (bool((codes > 1).any()) or (bits is not None and bits != nbytes)))
    if packed:
        k = bits or nbytes * 8
        if not nbytes * 8 - 8 < k <= nbytes * 8:
            raise UserError(f"{path}: {k} bits do not fit {nbytes} packed bytes per code (--bits)")
        codes = np.unpackbits(codes, axis=1, bitorder="little")[:, :k]
    if bits is not None and codes.shape[1] != bits:
        raise UserError(f"{path}: codes have {codes.shape[1]} bits, but --bits says {bits}")
    if codes.dtype.kind == "f" and not np.isfinite(codes).all():
        i = np.flatnonzero(~np.isfinite(codes).all(axis=1))[0]
        raise UserError(f"{path}: codes contain NaN or infinity (row {i})")
    with np.errstate(over="ignore"):
        codes = codes.astype(np.float32)
    if not np.isfinite(codes).all():          # finite float64 beyond float32's range
        i = np.flatnonzero(~np.isfinite(codes).all(axis=1))[0]
        raise UserError(f"{path}: codes exceed float32's range (row {i})")
    return codes, packed


def read_codes(path, codes_key=None, labels_key=None, labels=None, bits=None,
               key_option="--query-codes-key / --database-codes-key", orientation=None):
    """Read and orient one code file (see the module docstring). labels: an external (N, C) or
    (N,) array that replaces the file's; bits: K of packed uint8 codes (default 8 x bytes);
    key_option: the command's option that names the codes variable (None: it has none);
    orientation: NxK or KxN for a file whose shape cannot tell (as many bits as items)."""
    path = os.fspath(path)
    fmt, shapes, load, attrs = _open(path)
    ckey = None if fmt == "npy" else _pick(shapes, codes_key, CODE_KEYS, path, "codes", key_option)
    lkey = None if labels is not None or fmt == "npy" else \
        _pick(shapes, labels_key, LABEL_KEYS, path, "labels", None)
    try:
        codes = np.asarray(load(ckey))
        if labels is None and lkey is not None:
            labels = np.asarray(load(lkey))
    except READ_ERRORS as e:
        raise UserError(f"{path}: cannot read its arrays (truncated?): {one_line(e)}") from None
    if codes.ndim != 2 or codes.dtype.kind not in "biuf":
        raise UserError(f"{path}: codes must be a numeric matrix, got {codes.dtype} {codes.shape}")
    if codes.size == 0:
        raise UserError(f"{path}: the code set is empty ({codes.shape[0]} x {codes.shape[1]})")
    if fmt == "reproduce.encode":      # written N x K by reproduce.encode
        orientation = "NxK"
    labels, n = _oriented_labels(labels, codes.shape, path, orientation)
    if fmt == "reproduce.encode":
        orientation = "N x K"
        if labels is not None and labels.shape[0] != codes.shape[0]:
            raise UserError(f"{path}: {codes.shape[0]} codes but {labels.shape[0]} label rows")
    else:
        codes, orientation = _orient(codes, n, path, "codes", orientation)
    codes, packed = _unpacked_float32(codes, fmt, bits, path)
    encoded = fmt == "reproduce.encode"     # tanh outputs: always the sign rule, 0 -> +1
    binary01 = not encoded and bool(((codes == 0) | (codes == 1)).all())
    real = encoded or not (binary01 or bool(((codes == 1) | (codes == -1)).all()))
    values = ("packed uint8 (compactbit, LSB first)" if packed else "0/1" if binary01
              else "tanh outputs (real-valued)" if encoded else "real-valued" if real else "±1")
    if binary01:
        codes = codes * 2 - 1
    info = {"path": path, "format": fmt, "codes_key": ckey, "labels_key": lkey,
            "orientation": orientation, "values": values, "n": int(codes.shape[0]),
            "bits": int(codes.shape[1])}
    return CodeFile(path, codes, real, labels, info, attrs)


def load_codes(path, codes_key=None, labels_key=None, bits=None, sign=False):
    """(codes (N, K) int8 ±1, labels (N, C) uint8 or None) of a code file; real-valued codes
    other than reproduce.encode's need sign=True. Class-index labels become one-hot (max + 1)."""
    f = read_codes(path, codes_key, labels_key, bits=bits)
    return f.binary_codes(sign), (None if f.labels is None else f.label_matrix())
