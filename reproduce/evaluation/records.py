"""The metrics record: one evaluation as `metrics.json` and its curves as CSV, built here, written
here and read here (by reproduce.evaluate, the per-dataset engine, compare, the demo, the tables).

    {"method": "DHN", "dataset": "cifar10", "bits": 48, "seed": 0,
     "conventions": {"topk": null, "ties": "index", "zero_hit": "skip", "radius": 2, "ns": [...],
                     "ranking": "hamming", "sign_rule": "..."},
     "metrics": {"map": 0.61, "precision_within_radius": ..., "pr_curve": {...}, ...},
     "inputs": {...}, "version": "0.1.0"}

`evaluate_record` computes one (reproduce.evaluation.metrics.evaluate_codes) with its conventions;
`write_record` writes metrics.json, pr_curve.csv and precision_at_n.csv; `read_record` /
`collect_records` read them back as flat records for the tables and figures.
"""
import json
import os
import re

from .. import __version__
from ..errors import UserError
from ..model.archs import ARCHS
from ..reporting.paper import RADIUS, canonical_method
from ..utils.fileio import read_json, staged_outputs
from ..utils.limits import is_finite_number
from .metrics import DEFAULT_NS, evaluate_codes

METRICS_FILE = "metrics.json"
# How real-valued codes become ±1 (reproduce.evaluate, the per-dataset engine, reproduce.evaluation.metrics).
SIGN_RULE = "code >= 0 -> +1, code < 0 -> -1; 0/1 codes: 1 -> +1, 0 -> -1"


def protocol(topk=None, ties="index", zero_hit="skip", radius=RADIUS, ns=DEFAULT_NS):
    """The evaluation conventions (evaluate_codes keywords); defaults: the authors' (ties by
    database order, queries without hits left out) and the paper's radius and top-N grid."""
    return {"topk": topk, "ties": ties, "zero_hit": zero_hit, "radius": radius, "ns": list(ns)}


def evaluate_record(method, dataset, query_codes, db_codes, query_labels, db_labels, protocol,
                    seed=None, inputs=None, binary=True, where=None, backbone=None):
    """The metrics record of codes (Q, K) / (N, K) with multi-hot labels (Q, C) / (N, C) under
    `protocol` (see `protocol()`). binary=False ranks real-valued codes by their inner product
    (DHN-B: no sign). A metrics problem (sizes, labels) is a UserError naming `where` (default:
    the method). backbone: the --arch of the codes when not the paper's network
    (model.archs.named_backbone), recorded as "backbone"; absent for the paper's networks and
    for codes of other origin, so that their records stay as they were."""
    try:
        metrics = evaluate_codes(query_codes, db_codes, query_labels, db_labels, binary=binary,
                                 **protocol)
    except ValueError as e:
        raise UserError(f"{where or method}: {e}") from None
    conventions = dict(protocol, ranking="hamming" if binary else "inner_product",
                       sign_rule=SIGN_RULE if binary else "none (codes as stored)")
    doc = {"method": canonical_method(method) if method else method, "dataset": dataset,
           "bits": int(metrics["bits"]), "seed": seed, "conventions": conventions,
           "metrics": metrics, "inputs": dict(inputs or {}), "version": __version__}
    if backbone is not None:
        doc["backbone"] = backbone
    return doc


def _csv(header, *columns):
    rows = [",".join(header)] + [",".join(repr(v) for v in row) for row in zip(*columns)]
    return "\n".join(rows) + "\n"


def output_texts(doc):
    """{file name: text} of an evaluation document: metrics.json and the curves as CSV."""
    m = doc["metrics"]
    texts = {"metrics.json": json.dumps(doc, indent=1, sort_keys=True) + "\n"}
    if m.get("pr_curve"):
        c = m["pr_curve"]
        texts["pr_curve.csv"] = _csv(("radius", "precision", "recall"), c["radius"],
                                     c["precision"], c["recall"])
    c = m["precision_at_n"]
    texts["precision_at_n.csv"] = _csv(("n", "precision", "recall"), c["n"], c["precision"],
                                       c["recall"])
    return texts


def write_record(out_dir, doc, force=False):
    """Write output_texts(doc) into out_dir as one set (reproduce.utils.fileio.staged_outputs: all files
    or, on any failure, none). Nothing is written when an existing file has different content and
    not force; with force a stale pr_curve.csv is removed in the same step. Returns the paths."""
    out_dir = os.fspath(out_dir)
    texts = output_texts(doc)
    for name, text in texts.items():
        target = os.path.join(out_dir, name)
        if os.path.exists(target) and not force:
            with open(target, encoding="utf-8", errors="replace") as f:
                if f.read() != text:
                    raise UserError(f"{target}: exists with different content; refusing to "
                                    "overwrite it (use --force, or another --out)")
    stale = ["pr_curve.csv"] if force and "pr_curve.csv" not in texts else []
    with staged_outputs(out_dir, remove=stale) as stage:
        for name, text in texts.items():
            with open(os.path.join(stage, name), "w", encoding="utf-8") as f:
                f.write(text)
    return [os.path.join(out_dir, name) for name in texts]


# ----------------------------------------------------------------------------- reading metrics.json

def read_record(path):
    """One metrics.json as a record dict: method (paper spelling), dataset, bits, seed, map,
    conventions, metrics (the file's whole "metrics" mapping) and path. UserError on a malformed file."""
    path = os.fspath(path)
    doc = read_json(path, "metrics.json")
    if not isinstance(doc, dict):
        raise UserError(f"{path}: not a metrics.json (top level is {type(doc).__name__}, not an object)")
    for key in ("method", "bits", "metrics"):
        if key not in doc:
            raise UserError(f"{path}: metrics.json has no '{key}' key")
    if not isinstance(doc["method"], str) or not doc["method"].strip() or not doc["method"].isprintable():
        raise UserError(f"{path}: 'method' must be a non-empty string on one line, got {doc['method']!r:.80} "
                        "(name it with `python -m reproduce.evaluate --method`)")
    if doc.get("dataset") is not None and not isinstance(doc["dataset"], str):
        raise UserError(f"{path}: 'dataset' must be a string or null, got {doc['dataset']!r:.80}")
    bits = doc["bits"]
    if isinstance(bits, bool) or not isinstance(bits, int) or not 0 < bits <= 4096:
        raise UserError(f"{path}: 'bits' must be a positive integer (at most 4096), got {bits!r:.80}")
    seed = doc.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise UserError(f"{path}: 'seed' must be an integer or null, got {seed!r}")
    metrics = doc["metrics"]
    if not isinstance(metrics, dict) or "map" not in metrics:
        raise UserError(f"{path}: 'metrics' must be an object with a 'map' entry")
    value = metrics["map"]
    if not (is_finite_number(value) and 0.0 <= value <= 1.0):
        raise UserError(f"{path}: metrics.map must be a number in [0, 1], got {value!r}")
    conventions = doc.get("conventions", {})
    if conventions is None:
        conventions = {}
    if not isinstance(conventions, dict):
        raise UserError(f"{path}: 'conventions' must be an object")
    backbone = doc.get("backbone")
    if backbone is not None and backbone not in ARCHS:
        raise UserError(f"{path}: 'backbone' must be one of {', '.join(ARCHS)} or absent, got {backbone!r:.80}")
    _check_curves(metrics, path)
    return {"method": canonical_method(doc["method"].strip()), "dataset": doc.get("dataset"),
            "bits": bits, "seed": seed, "map": float(value), "conventions": conventions,
            "metrics": metrics, "path": path, "backbone": backbone,
            "identity": doc.get("identity") if isinstance(doc.get("identity"), dict) else None}


def _check_curves(metrics, path):
    """The numbers the tables and figures read: precisions and recalls finite in [0, 1] (or
    null, where a ranking has none), radii and cut-offs non-negative integers. A record from
    elsewhere may hold anything; evaluate_codes writes only these."""
    for key in ("precision_within_radius", "recall_within_radius"):
        value = metrics.get(key)
        if value is not None and not (is_finite_number(value) and 0 <= value <= 1):
            raise UserError(f"{path}: metrics.{key} must be a number in [0, 1] or null, got {value!r:.80}")
    for key, axis in (("pr_curve", "radius"), ("precision_at_n", "n")):
        curve = metrics.get(key)
        if curve is None:
            continue
        if not isinstance(curve, dict) or not all(isinstance(v, list) for v in curve.values()):
            raise UserError(f"{path}: metrics.{key} must be an object of lists")
        if len({len(v) for v in curve.values()}) > 1:
            raise UserError(f"{path}: metrics.{key} has lists of different lengths")
        for name, values in curve.items():
            if name == axis:
                ok = all(is_finite_number(v) and v >= 0 and v == int(v) for v in values)
                what = "non-negative integers"
            else:
                ok = all(v is None or (is_finite_number(v) and 0 <= v <= 1) for v in values)
                what = "numbers in [0, 1] (or null)"
            if not ok:
                raise UserError(f"{path}: metrics.{key}.{name} must hold {what}")


def collect_records(paths):
    """Records of every metrics.json named in `paths` (files) or found under them (folders, walked
    in sorted order). A folder without any metrics.json, or a missing path, is a UserError.
    The same file reached twice is read once."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files = []
    for p in paths:
        p = os.fspath(p)
        if os.path.isfile(p):
            files.append(p)
        elif os.path.isdir(p):
            found = []
            for root, dirs, names in os.walk(p):
                # hidden folders are a killed writer's staging folders (.staging-*), never results
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                if METRICS_FILE in names:
                    found.append(os.path.join(root, METRICS_FILE))
            if not found:
                raise UserError(f"{p}: no {METRICS_FILE} in this folder or below it")
            files.extend(found)
        else:
            raise UserError(f"{p}: no such file or folder")
    seen, records = set(), []
    for f in files:
        real = os.path.realpath(f)
        if real not in seen:
            seen.add(real)
            records.append(read_record(f))
    return records


def check_records(records, dataset):
    """The records of `dataset`, checked: every one names this dataset (or none), and no
    (method, bits, seed) comes from two files. Returns the records sorted by method, bits, seed."""
    out, owner = [], {}
    for r in records:
        if r.get("dataset") not in (None, dataset):
            raise UserError(f"{r['path']}: a run of dataset {r['dataset']!r}, not {dataset!r}")
        key = (r["method"], r["bits"], r["seed"])
        if key in owner:
            raise UserError(f"{r['path']}: a second result for {r['method']} {r['bits']} bits "
                            f"seed {r['seed']} (the first is {owner[key]})")
        owner[key] = r["path"]
        out.append(r)
    return sorted(out, key=lambda r: (r["method"], r["bits"], -1 if r["seed"] is None else r["seed"]))


# Sources identified by content that every seed of one method shares (the ImageNet weights, a mean
# file); a checkpoint or a code file of another program is identified by its sha1 too, and differs
# from seed to seed by nature.
_SHARED_SOURCES = ("weights", "mean_file")


def _apart_from_seed(identity):
    """{job: settings} of a record's identity lineage with every seed left out (job names
    `..._seed<N>` and settings named seed), and the sha1 of per-seed files (checkpoints, codes of
    other programs): what the seeds of one method at one length must share."""
    out, lineage = {}, identity.get("lineage")
    for name, settings in (lineage if isinstance(lineage, dict) else {}).items():
        if not isinstance(settings, dict):
            continue
        if set(settings) == {"sha1"} and name not in _SHARED_SOURCES:
            continue
        out[re.sub(r"_seed\d+", "_seed*", name)] = {k: v for k, v in settings.items()
                                                      if k != "seed" and not k.endswith(".seed")}
    return out


def check_same_settings(records):
    """Records of one method and length from several folders (compare --runs) are averaged as
    seeds: refused, naming both files and the first setting, when their identities say they were
    made with other settings, weights, lists or images (another --max-iter, other lists ...) than
    by their seed. Records without an identity (other programs, older versions) are not checked."""
    first = {}
    for r in records:
        if not isinstance(r.get("identity"), dict):
            continue
        made = _apart_from_seed(r["identity"])
        other = first.setdefault((r["method"], r["bits"]), (r, made))
        before = other[1]
        for job in list(before) + [j for j in made if j not in before]:
            a, b = before.get(job), made.get(job)
            if a == b:
                continue
            if a is None or b is None:
                what = f"made {'with' if a is None else 'without'} {job}"
            else:
                setting = next(k for k in list(a) + list(b) if a.get(k) != b.get(k))
                what = f"{job} with {setting} {json.dumps(a.get(setting))}, here {json.dumps(b.get(setting))}"
            raise UserError(f"{r['path']}: {r['method']} {r['bits']} bits seed {r['seed']} was not made like "
                            f"seed {other[0]['seed']} in {other[0]['path']} ({what}); the seeds of one method "
                            "are averaged, so they must differ by their seed only: compare the runs of "
                            "one setting at a time")
