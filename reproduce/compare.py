"""Build the paper's comparison for one dataset: Tables 1-2 and Figures (a)-(c) from DHN runs,
imported codes of other methods and shallow baselines on the same fc7 features.

    python -m reproduce.compare --dataset {cifar10,nus_wide,flickr} --runs DIR [DIR ...] --out DIR
        [--import NAME:BITS:QUERY_CODES:DB_CODES ...] [--labels QUERY DB] [--sign]
        [--baselines lsh sh itq itq-cca ksh --features TRAIN.h5 QUERY.h5 DB.h5]
        [--bits 12 24 32 48] [--baseline-option ksh:n_anchors=300 ...] [--curve-bits 48]
        [--seed 0] [--force]

Runs: every metrics.json under the --runs folders (written by reproduce.evaluate). Imported codes
(.h5 .mat .npy .npz, read by reproduce.evaluate's reader) and baselines (fitted on the training
features, with labels for the supervised ones; query and database encoded) are evaluated here with
the dataset's protocol (MAP@MAP_TOPK of reproduce.datasets.<dataset>; ties by database order,
queries without hits left out, radius 2, top-N 100..1000: reproduce.evaluate's defaults), each
into `--out/methods/<name>_<bits>/` (metrics.json and the curves as CSV, as reproduce.evaluate
writes them). Then `--out` receives table1/table2 (.md .csv .tex) and the three figures
(.png .pdf). `build_comparison` is the core the per-dataset commands call.
"""
import importlib
import os
import re
import sys

import h5py
import numpy as np

from . import __version__
from .errors import ArgumentParser, UserError, run_cli
from .fileio import sha1_file
from .figures import default_curve_bits, figure_names, write_figures
from .reports import canonical_method, check_records, collect_metrics, write_tables

DATASETS = ("cifar10", "nus_wide", "flickr")   # the paper's three (reproduce.datasets.<name>)
PAPER_BITS = (12, 24, 32, 48)                  # the paper's bit lengths (Tables 1-2)
BASELINE_NAMES = ("lsh", "sh", "itq", "itq-cca", "ksh")  # reproduce.baselines registry names
METHODS_DIR = "methods"


def dataset_protocol(dataset):
    """evaluate_codes keywords for `dataset`: MAP_TOPK of reproduce.datasets.<dataset> (the whole
    database for a dataset without a module) and reproduce.evaluate's default conventions."""
    from .metrics import DEFAULT_NS
    try:
        topk = importlib.import_module(f"reproduce.datasets.{dataset}").MAP_TOPK
    except ModuleNotFoundError:
        topk = None
    return {"topk": topk, "ties": "index", "zero_hit": "skip", "radius": 2, "ns": list(DEFAULT_NS)}


def method_dir(out_dir, name, bits):
    """`out_dir/methods/<name>_<bits>`, the name made safe as a folder name (`CNNH*` -> `CNNH_`)."""
    safe = re.sub(r"[^A-Za-z0-9._+-]", "_", str(name))
    return os.path.join(os.fspath(out_dir), METHODS_DIR, f"{safe}_{bits}")


def evaluate_method(name, dataset, query_codes, db_codes, query_labels, db_labels, seed=None,
                    inputs=None, binary=True):
    """The metrics.json document (reproduce.evaluate's schema) of ±1 codes (Q, K) / (N, K) with
    multi-hot labels (Q, C) / (N, C), evaluated with the dataset's protocol. binary=False ranks
    real-valued codes by their inner product (DHN-B: no sign)."""
    from .evaluate import SIGN_RULE
    from .metrics import evaluate_codes
    protocol = dataset_protocol(dataset)
    try:
        metrics = evaluate_codes(query_codes, db_codes, query_labels, db_labels, binary=binary, **protocol)
    except ValueError as e:
        raise UserError(f"{name}: {e}") from None
    # as reproduce.evaluate records them
    conventions = dict(protocol, ranking="hamming" if binary else "inner_product",
                       sign_rule=SIGN_RULE if binary else "none (codes as stored)")
    return {"method": canonical_method(name), "dataset": dataset, "bits": int(metrics["bits"]),
            "seed": seed, "conventions": conventions, "metrics": metrics,
            "inputs": dict(inputs or {}), "version": __version__}


# ----------------------------------------------------------------------------- inputs

def read_features(path, with_features=True):
    """(features (N, D) h5py dataset, read lazily, or None; labels (N, C) uint8; the open
    h5py.File, to close) of a `reproduce.encode --features` file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such features file")
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
    except BaseException:
        f.close()
        raise
    return feats, labels, f


def read_labels(path):
    """Labels for imported codes: an HDF5 file's 'labels' (reproduce.encode outputs), else what
    reproduce.evaluate.read_external_labels reads (list file, .npy)."""
    from .evaluate import read_external_labels
    if os.path.isfile(path) and h5py.is_hdf5(path):
        _, labels, f = read_features(path, with_features=False)
        f.close()
        return labels
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such labels file")
    return read_external_labels(path)


def load_import(spec, sign=False, labels=None):
    """`NAME:BITS:QUERY_CODES:DB_CODES` -> (name, bits, [query, database] as (codes (N, K) int8,
    labels (N, C) uint8), inputs). Labels: the code file's own, else labels[0] / labels[1]."""
    from .evaluate import read_codes
    parts = spec.split(":", 3)
    if len(parts) != 4 or not parts[0] or not parts[1].isdigit() or int(parts[1]) < 1:
        raise UserError(f"--import {spec}: expected NAME:BITS:QUERY_CODES:DB_CODES with BITS a "
                        "positive integer")
    name, bits, paths = parts[0], int(parts[1]), parts[2:]
    files = []
    for which, path in enumerate(paths):
        f = read_codes(path)
        if f.labels is None:
            if labels is None:
                raise UserError(f"{path}: holds no labels; give them with --labels QUERY DB "
                                "(or --features TRAIN QUERY DB)")
            f = read_codes(path, labels=labels[which])
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
    return name, bits, sets, inputs


def run_baseline(name, bits, train, query, database, seed=0, options=None):
    """Fit baseline `name` (reproduce.baselines) with `bits` on the training features (with the
    labels for the supervised ones) and encode query and database (h5py datasets are read in
    chunks, so a 149,736 x 4,096 database needs no copy in memory). train/query/database:
    (features (N, D), labels (N, C), path). Returns (query codes, db codes, settings)."""
    from .baselines import make_baseline
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
        value = m.group(3)
        for kind in (int, float):
            try:
                value = kind(value)
                break
            except ValueError:
                pass
        out.setdefault(m.group(1), {})[m.group(2)] = value
    return out


# ----------------------------------------------------------------------------- the comparison

def build_comparison(dataset, metrics_records, out_dir, curve_bits=None, overwrite=False,
                     dataset_title=None):
    """Tables 1-2 (.md .csv .tex) and Figures (a)-(c) (.png .pdf) of `dataset` from records
    (reproduce.reports.collect_metrics) into out_dir; curve_bits: bits of figures (b)/(c)
    (default 48, else the largest present). Nothing is written if an output exists and not
    overwrite. Returns the written paths."""
    records = check_records(metrics_records, dataset)
    curve_bits = default_curve_bits(records) if curve_bits is None else int(curve_bits)
    for p in comparison_outputs(out_dir, curve_bits):
        if os.path.exists(p) and not overwrite:
            raise UserError(f"{p}: already exists; refusing to overwrite it (use --force)")
    paths = write_tables(records, dataset, out_dir, overwrite=True)
    return paths + write_figures(records, dataset, out_dir, bits=curve_bits, overwrite=True,
                                 dataset_title=dataset_title)


def comparison_outputs(out_dir, curve_bits):
    """The paths build_comparison writes."""
    names = [f"table{n}.{e}" for n in (1, 2) for e in ("md", "csv", "tex")]
    names += [f"{n}.{e}" for n in figure_names(curve_bits) for e in ("png", "pdf")]
    return [os.path.join(os.fspath(out_dir), n) for n in names]


def get_args_parser():
    p = ArgumentParser(prog="python -m reproduce.compare", description=__doc__.split("\n")[0])
    p.add_argument("--dataset", required=True, choices=DATASETS,
                   help="which of the paper's datasets: its protocol (MAP cut-off) and paper numbers")
    p.add_argument("--runs", nargs="*", default=[], metavar="DIR",
                   help="folders (or files) with the runs' metrics.json, walked recursively")
    p.add_argument("--out", required=True, help="output folder of tables, figures and methods/")
    p.add_argument("--import", dest="imports", action="append", default=[],
                   metavar="NAME:BITS:QUERY_CODES:DB_CODES",
                   help="codes of another method (.h5 .mat .npy .npz); repeat per method and bits")
    p.add_argument("--labels", nargs=2, metavar=("QUERY", "DB"),
                   help="labels of imported codes whose files hold none: .h5 with 'labels', list "
                        "file or .npy (default: the --features query and database files)")
    p.add_argument("--sign", action="store_true",
                   help="binarise real-valued imported codes by sign (code >= 0 -> +1)")
    p.add_argument("--baselines", nargs="*", default=[], choices=BASELINE_NAMES,
                   help="shallow baselines to fit on --features (reproduce.baselines)")
    p.add_argument("--features", nargs=3, metavar=("TRAIN", "QUERY", "DB"),
                   help="fc7 features and labels (`reproduce.encode --features`) of the three splits")
    p.add_argument("--bits", nargs="+", type=int,
                   help="bit lengths of the baselines (default: those of the runs, else the "
                        "paper's 12 24 32 48)")
    p.add_argument("--baseline-option", action="append", default=[], metavar="NAME:KEY=VALUE",
                   help="a baseline setting other than its published default (e.g. ksh:n_anchors=300)")
    p.add_argument("--curve-bits", type=int, default=None,
                   help="bit length of figures (b)/(c) (default: the paper's 48 when present, "
                        "else the largest)")
    p.add_argument("--seed", type=int, default=0, help="seed of the baselines' randomness (default 0)")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    return p


def evaluate_baselines(dataset, names, bits_list, feature_paths, seed=0, options=None, log=print):
    """Fit each baseline at each bit length on the training features of `feature_paths`
    (TRAIN, QUERY, DB .h5 of `reproduce.encode --features`), encode query and database and
    evaluate them with the dataset's protocol. Returns the metrics.json documents in order
    (names outer, bits inner)."""
    opened, docs = [], []
    try:
        for p in feature_paths:
            opened.append(read_features(p))
        if len({f[0].shape[1] for f in opened}) > 1 or len({f[1].shape[1] for f in opened}) > 1:
            raise UserError(f"{', '.join(map(str, feature_paths))}: the files differ in feature width "
                            f"{[f[0].shape[1] for f in opened]} or label count {[f[1].shape[1] for f in opened]}")
        parts = [(f[0], f[1], p) for f, p in zip(opened, feature_paths)]
        digests = {os.fspath(p): sha1_file(p) for p in feature_paths}
        for name in names:
            for bits in bits_list:
                log(f"{name} {bits} bits: fitting on {parts[0][0].shape[0]} x {parts[0][0].shape[1]} "
                    "features, encoding query and database")
                qc, dc, settings = run_baseline(name, bits, *parts, seed=seed,
                                                options=(options or {}).get(name))
                docs.append(evaluate_method(name, dataset, qc, dc, parts[1][1], parts[2][1], seed=seed,
                                            inputs={"features": digests, "baseline": settings}))
                log(f"{name} {bits} bits: MAP {docs[-1]['metrics']['map']:.4f}")
    finally:
        for f in opened:
            f[2].close()
    return docs


def _plan(args, records):
    """(bit lengths of the baselines, the methods/<name>_<bits> folder of each method evaluated
    here in order, bits of figures (b)/(c)); an existing output without --force, or a method
    asked for twice, is an error before any work."""
    bits_list = args.bits or sorted({r["bits"] for r in records}) or list(PAPER_BITS)
    if min(bits_list) < 1:
        raise UserError(f"--bits: bit lengths must be positive, got {bits_list}")
    unused = sorted(set(parse_baseline_options(args.baseline_option)) - set(args.baselines))
    if unused:
        raise UserError(f"--baseline-option for {', '.join(unused)}, which is not in --baselines")
    planned = [(spec.split(":")[0], spec.split(":")[1] if spec.count(":") >= 3 else "?")
               for spec in args.imports]
    planned += [(b, k) for b in args.baselines for k in bits_list]
    folders = [method_dir(args.out, n, k) for n, k in planned]
    for i, f in enumerate(folders):
        if f in folders[:i]:
            raise UserError(f"{planned[i][0]} {planned[i][1]} bits is asked for twice "
                            f"(--import / --baselines); both would be {f}")
    known_bits = [int(k) for _, k in planned if str(k).isdigit()] + [r["bits"] for r in records]
    curve_bits = args.curve_bits or default_curve_bits([{"bits": b} for b in known_bits])
    for p in [os.path.join(f, "metrics.json") for f in folders] + comparison_outputs(args.out, curve_bits):
        if os.path.exists(p) and not args.force:
            raise UserError(f"{p}: already exists; refusing to overwrite it (use --force)")
    return bits_list, folders, curve_bits


def main(argv=None):
    from .evaluate import write_outputs
    args = get_args_parser().parse_args(argv)
    if args.baselines and not args.features:
        raise UserError("--baselines needs --features TRAIN.h5 QUERY.h5 DB.h5")
    if not (args.runs or args.imports or args.baselines):
        raise UserError("nothing to compare: give --runs, --import or --baselines")
    records = check_records(collect_metrics(args.runs), args.dataset) if args.runs else []
    protocol = dataset_protocol(args.dataset)
    for r in records:
        if r["conventions"].get("topk", protocol["topk"]) != protocol["topk"]:
            print(f"note: {r['path']}: evaluated with topk={r['conventions']['topk']}, the "
                  f"{args.dataset} protocol is topk={protocol['topk']}", file=sys.stderr)
    bits_list, folders, curve_bits = _plan(args, records)
    # Results of an earlier compare in the methods folders made again now are replaced.
    redo = {os.path.realpath(f) for f in folders}
    records = [r for r in records if os.path.realpath(os.path.dirname(r["path"])) not in redo]

    labels = None
    if args.labels:
        labels = [read_labels(p) for p in args.labels]
    elif args.features and args.imports:
        labels = [read_labels(p) for p in args.features[1:]]
    docs = []
    for spec in args.imports:
        name, bits, ((qc, ql), (dc, dl)), inputs = load_import(spec, args.sign, labels)
        docs.append(evaluate_method(name, args.dataset, qc, dc, ql, dl, inputs=inputs))
        print(f"{name} {bits} bits: MAP {docs[-1]['metrics']['map']:.4f}")
    if args.baselines:
        docs += evaluate_baselines(args.dataset, args.baselines, bits_list, args.features, args.seed,
                                   parse_baseline_options(args.baseline_option))
    for folder, doc in zip(folders, docs):
        written = write_outputs(folder, doc, force=True)  # existence was checked in _plan
        records += collect_metrics([written[0]])
    for p in build_comparison(args.dataset, records, args.out, curve_bits=curve_bits, overwrite=args.force):
        print(p)


if __name__ == "__main__":
    run_cli(main)
