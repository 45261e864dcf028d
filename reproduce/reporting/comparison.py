"""The paper's comparison for one dataset, as a library: evaluate DHN runs, imported codes of other
methods and shallow baselines with the dataset's protocol, then Tables 1-2 and Figures (a)-(c).

`build_comparison` is what `python -m reproduce.compare`, the per-dataset commands and the demo
call; `evaluate_baselines` fits the shallow baselines on fc7 features; `load_import` reads another
method's codes (reproduce.evaluation.codes).
"""
import math
import os
import re

import h5py
import numpy as np

from ..baselines import make_baseline
from ..errors import UserError
from ..evaluation.codes import codes_arch, codes_backbone, encoding_difference, read_codes, read_external_labels
from ..evaluation.protocols import dataset_protocol
from ..evaluation.records import check_records, evaluate_record
from ..utils.arrayfiles import H5_ERRORS, read_h5_attrs
from ..utils.fileio import folder_name, require_file, sha1_file, staged_outputs
from ..utils.limits import FLOAT32_MAX
from .figures import default_curve_bits, figure_names, write_figures
from .paper import DATASET_TITLES
from .tables import backbone_suffix, write_tables

METHODS_DIR = "methods"


def method_dir(out_dir, name, bits):
    """`out_dir/methods/<name>_<bits>`, the name made safe as a folder name (fileio.folder_name:
    `CNNH*` -> `CNNH-star`)."""
    return os.path.join(os.fspath(out_dir), METHODS_DIR, f"{folder_name(name)}_{bits}")


def evaluate_method(name, dataset, query_codes, db_codes, query_labels, db_labels, seed=None,
                    inputs=None, binary=True, protocol=None, backbone=None):
    """The metrics record (reproduce.evaluation.records) of ±1 codes (Q, K) / (N, K) with multi-hot labels
    (Q, C) / (N, C), evaluated with `protocol` (default: the dataset's preset). binary=False
    ranks real-valued codes by their inner product (DHN-B: no sign); backbone: recorded when
    not the paper's network (evaluation.records.evaluate_record)."""
    return evaluate_record(name, dataset, query_codes, db_codes, query_labels, db_labels,
                           protocol or dataset_protocol(dataset), seed=seed, inputs=inputs,
                           binary=binary, backbone=backbone)


# ----------------------------------------------------------------------------- inputs

def read_features(path, with_features=True):
    """(features (N, D) h5py dataset, read lazily, or None; labels (N, C) uint8; the open
    h5py.File, to close) of a `reproduce.encode --features` file."""
    path = os.fspath(path)
    require_file(path, "features file")
    try:
        f = h5py.File(path, "r")
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: not a readable HDF5 features file ({e})") from None
    try:
        for key in ("features", "labels") if with_features else ("labels",):
            if not isinstance(f.get(key), h5py.Dataset) or f[key].ndim != 2:
                raise UserError(f"{path}: no 2-D '{key}' dataset (write it with "
                                "`python -m reproduce.encode --features`)")
        labels = np.asarray(f["labels"][()])
        feats = f["features"] if with_features else None
        if labels.shape[0] == 0 or (feats is not None and feats.shape[0] != labels.shape[0]):
            raise UserError(f"{path}: {labels.shape[0]} label rows and "
                            f"{'no' if feats is None else feats.shape[0]} feature rows")
        if feats is not None:
            _check_feature_values(feats, path)
    except BaseException:
        f.close()
        raise
    return feats, labels, f


def _check_feature_values(feats, path, rows=8192):
    """Every feature a real number within float32's range (what encode writes), checked block by
    block before any baseline is fitted, so that a bad file is named before the work starts."""
    if feats.dtype.kind not in "iuf":
        raise UserError(f"{path}: features of type {feats.dtype}, not numbers")
    for start in range(0, feats.shape[0], rows):
        try:
            block = np.asarray(feats[start:start + rows], dtype=np.float64)
        except (OSError, ValueError) as e:
            raise UserError(f"{path}: cannot read features rows {start}..: {' '.join(str(e).split())}") from None
        bad = ~(np.abs(block) <= FLOAT32_MAX)              # NaN, infinity, beyond float32
        if bad.any():
            row = start + int(np.flatnonzero(bad.any(axis=1))[0])
            raise UserError(f"{path}: features row {row} holds NaN, infinity or a value beyond "
                            "float32's range")


def read_labels(path):
    """Labels for imported codes: an HDF5 file's 'labels' (reproduce.encode outputs), else what
    reproduce.evaluate.read_external_labels reads (list file, .npy)."""
    if os.path.isfile(path) and h5py.is_hdf5(path):
        _, labels, f = read_features(path, with_features=False)
        f.close()
        return labels
    require_file(path, "labels file")
    return read_external_labels(path)


def check_same_source(paths, what, allow_mixed=False, roles=None):
    """UserError unless the reproduce.encode files `paths` come from one checkpoint, pipeline,
    mean and crop, and each that records its split is given as that split (`roles`;
    codes.encoding_difference); with allow_mixed the difference is returned."""
    attrs = []
    for p, role in zip(paths, roles or [None] * len(paths)):
        if os.path.isfile(p) and h5py.is_hdf5(p):
            try:
                with h5py.File(p, "r") as f:
                    attrs.append((p, read_h5_attrs(f, p), role))
            except H5_ERRORS as e:
                raise UserError(f"{p}: not a readable HDF5 file ({e})") from None
    mixed = encoding_difference([(p, a) for p, a, _ in attrs], what, roles and [r for _, _, r in attrs])
    if mixed and not allow_mixed:
        raise UserError(f"{mixed}; pass --allow-mixed to use them together anyway")
    return mixed


def load_import(spec, sign=False, labels=None, orientation=None, allow_mixed=False):
    """`NAME:BITS:QUERY_CODES:DB_CODES` -> (name, bits, [query, database] as (codes (N, K) int8,
    labels (N, C) uint8), inputs). Labels: the code file's own, else labels[0] / labels[1].
    Query and database codes of different models (reproduce.encode files) are refused unless
    allow_mixed. Returns also the arch the files say they were encoded with (reproduce.encode
    files: their `arch` attribute, when both say one), else None (codes of another program)."""
    parts = spec.split(":", 3)
    if len(parts) != 4 or not parts[0].strip() or not parts[1].isdigit() or int(parts[1]) < 1:
        raise UserError(f"--import {spec}: expected NAME:BITS:QUERY_CODES:DB_CODES with BITS a "
                        "positive integer")
    if not parts[0].isprintable():
        raise UserError(f"--import {spec!r}: NAME must be printable text on one line")
    name, bits, paths = parts[0], int(parts[1]), parts[2:]
    files = []
    for which, path in enumerate(paths):
        f = read_codes(path, key_option=None, orientation=orientation)
        if f.labels is None:
            if labels is None:
                raise UserError(f"{path}: holds no labels; give them with --labels QUERY DB "
                                "(or --features TRAIN QUERY DB)")
            f = read_codes(path, labels=labels[which], key_option=None, orientation=orientation)
        if f.codes.shape[1] != bits:
            raise UserError(f"{path}: codes of {f.codes.shape[1]} bits, but --import says {name} "
                            f"has {bits}")
        files.append(f)
    width = None
    if all(f.labels.ndim == 1 for f in files):  # class indices: one-hot over both sets' classes
        width = int(max(f.labels.max() for f in files)) + 1
    sets = [(f.binary_codes(sign), f.label_matrix(width)) for f in files]
    if sets[0][1].shape[1] != sets[1][1].shape[1]:
        raise UserError(f"{paths[0]}: labels have {sets[0][1].shape[1]} classes, but {paths[1]} "
                        f"labels have {sets[1][1].shape[1]}")
    inputs = {w: dict(f.info, sha1=sha1_file(f.path)) for w, f in zip(("query", "database"), files)}
    mixed = encoding_difference([(f.path, f.attrs) for f in files], roles=("query", "database"))
    if mixed and not allow_mixed:
        raise UserError(f"--import {spec}: {mixed}; pass --allow-mixed to evaluate them together anyway")
    if mixed:
        inputs["mixed"] = mixed
    return name, bits, sets, inputs, codes_arch(files)


def run_baseline(name, bits, train, query, database, seed=0, options=None):
    """Fit baseline `name` (reproduce.baselines) with `bits` on the training features (with the
    labels for the supervised ones) and encode query and database (h5py datasets are read in
    chunks, so a 149,736 x 4,096 database needs no copy in memory). train/query/database:
    (features (N, D), labels (N, C), path). Returns (query codes, db codes, settings)."""
    model = make_baseline(name, bits, seed=seed, **(options or {}))
    try:
        model.fit(np.asarray(train[0][()]), labels=train[1] if model.supervised else None)
        codes = [model.encode(part[0]) for part in (query, database)]
    except UserError as e:
        raise UserError(f"{train[2]}: {e}") from None
    return codes[0], codes[1], model.settings()


def parse_baseline_options(items):
    """`ksh:n_anchors=300` items -> {"ksh": {"n_anchors": 300}} (numbers become numbers)."""
    out = {}
    for item in items or []:
        m = re.fullmatch(r"([a-z-]+):([A-Za-z_]\w*)=(.+)", item)
        if not m:
            raise UserError(f"--baseline-option {item}: expected NAME:KEY=VALUE (e.g. ksh:n_anchors=300)")
        if m.group(2) in ("bits", "seed"):
            raise UserError(f"--baseline-option {item}: {m.group(2)} is set by --{m.group(2)}")
        value = m.group(3)
        for kind in (int, float):
            try:
                value = kind(value)
                break
            except ValueError:
                pass
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"--baseline-option {item}: {m.group(3)} is not a finite number")
        out.setdefault(m.group(1), {})[m.group(2)] = value
    return out


# ----------------------------------------------------------------------------- the comparison

def build_comparison(dataset, metrics_records, out_dir, curve_bits=None, overwrite=False,
                     dataset_title=None, paper=None):
    """Tables 1-2 (.md .csv .tex) and Figures (a)-(c) (.png .pdf) of `dataset` from records
    (reproduce.evaluation.records.collect_records) into out_dir, as one set (all or, on any failure, none);
    curve_bits: bits of figures (b)/(c) (default 48, else the largest present). Nothing is
    written if an output exists and not overwrite. Returns the written paths."""
    records = check_records(metrics_records, dataset)
    curve_bits = default_curve_bits(records) if curve_bits is None else int(curve_bits)
    for p in comparison_outputs(out_dir, curve_bits):
        if os.path.exists(p) and not overwrite:
            raise UserError(f"{p}: already exists; refusing to overwrite it (use --force)")
    with staged_outputs(out_dir) as stage:
        paths = write_comparison(records, dataset, stage, curve_bits, dataset_title, paper)
    return [os.path.join(os.fspath(out_dir), os.path.relpath(p, stage)) for p in paths]


def write_comparison(records, dataset, out_dir, curve_bits, dataset_title=None, paper=None, backbone=None):
    """Write the tables and figures of checked records into out_dir (a staging folder: callers
    commit it as one set); paper: the published numbers beside ours (default: the paper's);
    backbone: the --arch of our runs, named in every title when not the authors' network
    (None: caffenet, as in the paper). Returns the paths."""
    paths = write_tables(records, dataset, out_dir, overwrite=True, paper=paper, backbone=backbone)
    title = (dataset_title or DATASET_TITLES.get(dataset, dataset)) + backbone_suffix(backbone)
    return paths + write_figures(records, dataset, out_dir, bits=curve_bits, overwrite=True,
                                 dataset_title=title)


def comparison_outputs(out_dir, curve_bits):
    """The paths build_comparison writes."""
    names = [f"table{n}.{e}" for n in (1, 2) for e in ("md", "csv", "tex")]
    names += [f"{n}.{e}" for n in figure_names(curve_bits) for e in ("png", "pdf")]
    return [os.path.join(os.fspath(out_dir), n) for n in names]


def evaluate_baselines(dataset, names, bits_list, feature_paths, seed=0, options=None, log=print,
                       protocol=None):
    """Fit each baseline at each bit length on the training features of `feature_paths`
    (TRAIN, QUERY, DB .h5 of `reproduce.encode --features`), encode query and database and
    evaluate them with the dataset's protocol. Returns the metrics.json documents in order
    (names outer, bits inner); they record the features' backbone as DHN's records record their
    codes' (evaluation.codes.codes_backbone: none for the paper's networks)."""
    opened, docs = [], []
    try:
        for p in feature_paths:
            opened.append(read_features(p))
        if len({f[0].shape[1] for f in opened}) > 1 or len({f[1].shape[1] for f in opened}) > 1:
            raise UserError(f"{', '.join(map(str, feature_paths))}: the files differ in feature width "
                            f"{[f[0].shape[1] for f in opened]} or label count {[f[1].shape[1] for f in opened]}")
        parts = [(f[0], f[1], p) for f, p in zip(opened, feature_paths)]
        digests = {os.fspath(p): sha1_file(p) for p in feature_paths}
        backbone = codes_backbone([f[2] for f in opened])
        for name in names:
            for bits in bits_list:
                log(f"{name} {bits} bits: fitting on {parts[0][0].shape[0]} x {parts[0][0].shape[1]} "
                    "features, encoding query and database")
                qc, dc, settings = run_baseline(name, bits, *parts, seed=seed,
                                                options=(options or {}).get(name))
                docs.append(evaluate_method(name, dataset, qc, dc, parts[1][1], parts[2][1], seed=seed,
                                            protocol=protocol, backbone=backbone,
                                            inputs={"features": digests, "baseline": settings}))
                log(f"{name} {bits} bits: MAP {docs[-1]['metrics']['map']:.4f}")
    finally:
        for f in opened:
            f[2].close()
    return docs
