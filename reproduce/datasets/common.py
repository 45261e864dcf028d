"""Helpers every dataset's list builder shares: seeded sampling, writing a split, the build report.

Nothing here knows a dataset. A split is a dict `{"train": ImageList, "query": ImageList,
"database": ImageList}` (the names Caffe's and the authors' list files have, except that their
`test.txt` is our `query.txt`); list paths are relative to a dataset root given at run time.

Seeded sampling is defined on the raw 64-bit output of numpy's PCG64 bit generator, which is fixed
by the algorithm, not on `Generator.choice`/`permutation`, whose streams numpy may change between
releases (NEP 19). So a committed split is regenerated bit for bit from its labels and its seed by
any numpy that has PCG64 (>= 1.17).
"""
import gzip
import os
from importlib import resources
from pathlib import Path

import numpy as np

from ..data.images import warn_outside_root
from ..data.lists import ImageList, read_list, write_list
from ..errors import UserError
from ..utils.fileio import write_text_atomic

SPLITS = ("train", "query", "database")
"""The three list files every build writes: `<name>.txt` in the output folder."""


def _data_lists():
    """The folder of the committed split files: the package data `reproduce.data_lists` of an
    installed package (a wheel, `pip install .`, or `pip install -e .`, whose finder maps it to the
    checkout's data_lists/), else, running from a checkout that is not installed, its data_lists/."""
    try:
        return Path(os.fspath(resources.files("reproduce.data_lists")))
    except ModuleNotFoundError:
        return Path(__file__).resolve().parents[2] / "data_lists"


DATA_LISTS = _data_lists()
"""The committed split files, `data_lists/<dataset NAME>/<split>.txt` of this repository."""

MAX_EXAMPLES = 5
"""How many offending paths a report or an error message names."""


# ----------------------------------------------------------------------------------------------
# Seeded sampling


def split_bit_generator(seed):
    """The bit generator every split draws from: PCG64 seeded with the integer `seed`."""
    return np.random.PCG64(int(seed))


def rank_candidates(bit_generator, candidates):
    """`candidates` (1-D int array) in a seeded random order.

    One raw 64-bit draw per candidate, in the candidates' given order; candidates are ordered by
    their draw (a stable sort, so the impossible-in-practice tie keeps the given order). Taking the
    first k is a uniform sample of k without replacement.
    """
    candidates = np.asarray(candidates, dtype=np.int64)
    keys = bit_generator.random_raw(len(candidates))
    return candidates[np.argsort(keys, kind="stable")]


def sample_per_label(labels, sizes, seed, label_names=None, source="<labels>", eligible=None):
    """Per label, draw disjoint samples of the given sizes (e.g. 100 queries, then 500 training).

    labels: N x C 0/1 array. sizes: part sizes per label, e.g. (100, 500).
    Labels are visited in column order 0..C-1; for label c the candidates are the images that
    carry c (and are `eligible`, a boolean N mask, if given) and that no earlier label has already
    drawn, in increasing index order. They are ranked with `rank_candidates` and cut into the parts.
    For single-label data this is plain stratified sampling; for multi-label data an image drawn
    for one label (and counted there) is never drawn again for a later label it also carries, so
    every label contributes exactly sizes[p] images to part p and the parts stay disjoint.

    Returns one sorted int64 index array per part. Raises UserError naming `source` and the label
    if a label has fewer candidates left than sum(sizes).
    """
    labels = np.asarray(labels)
    taken = np.zeros(len(labels), dtype=bool) if eligible is None else ~np.asarray(eligible, bool)
    bit_generator = split_bit_generator(seed)
    parts = [[] for _ in sizes]
    need = int(sum(sizes))
    for c in range(labels.shape[1]):
        candidates = np.flatnonzero((labels[:, c] != 0) & ~taken)
        if len(candidates) < need:
            name = label_names[c] if label_names is not None else c
            raise UserError(f"{source}: label {name!r} has {len(candidates)} images left to sample, "
                            f"but {need} are needed ({' + '.join(map(str, sizes))})")
        ranked = rank_candidates(bit_generator, candidates)[:need]
        taken[ranked] = True
        start = 0
        for part, size in zip(parts, sizes):
            part.append(ranked[start:start + size])
            start += size
    return [np.sort(np.concatenate(part)) if part else np.zeros(0, np.int64) for part in parts]


# ----------------------------------------------------------------------------------------------
# Writing and reading a split


def check_paths(paths, source):
    """List paths are whitespace-separated from their labels: refuse a path with a blank in it."""
    for i, p in enumerate(paths):
        if not p or any(ch.isspace() for ch in p):
            raise UserError(f"{source}: image path {p!r} (entry {i + 1}) is empty or contains "
                            "whitespace, which the list format cannot hold")


def write_split(lists, out_dir, overwrite=False):
    """Write `<out_dir>/<name>.txt` for each ImageList in `lists` (atomically, each file).

    With overwrite=False an existing file is an error raised before any file is written.
    Returns {name: path written}.
    """
    out_dir = Path(out_dir)
    targets = {name: out_dir / f"{name}.txt" for name in lists}
    if not overwrite:
        existing = [str(p) for p in targets.values() if p.exists()]
        if existing:
            raise UserError(f"{existing[0]}: already exists; refusing to overwrite it "
                            "(remove it or ask for overwriting)")
    for name, il in lists.items():
        check_paths(il.paths, f"{name} list")
        write_list(targets[name], il.paths, il.labels, overwrite=overwrite)
    return {name: str(p) for name, p in targets.items()}


def read_split(folder, num_labels=None, names=SPLITS):
    """Read `<folder>/<name>.txt` for each split name -> {name: ImageList}."""
    folder = Path(folder)
    return {name: read_list(folder / f"{name}.txt", num_labels=num_labels) for name in names}


def relative_to(image_list, prefix):
    """The list with `prefix` removed from every path (lists published with their authors'
    absolute or repository paths, rewritten to be relative to the user's --root). A path not
    under the prefix is a UserError naming file and line."""
    rel = []
    for i, p in enumerate(image_list.paths):
        if not p.startswith(prefix) or len(p) == len(prefix):
            raise UserError(f"{image_list.where(i)}: path {p!r} does not start with the prefix "
                            f"{prefix!r} to strip")
        r = p[len(prefix):]
        if r.startswith("/"):
            raise UserError(f"{image_list.where(i)}: path {p!r} stays absolute after stripping "
                            f"{prefix!r}")
        rel.append(r)
    return ImageList(rel, image_list.labels, image_list.source, image_list.linenos)


def read_gzip_list(path, out_path, num_labels=None):
    """Read a gzip-compressed list (data_lists/<dataset>/*.txt.gz) by decompressing it to
    `out_path` (atomically) and reading that: errors then name a file a user can open."""
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            text = f.read()
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not a readable gzip-compressed list ({e})") from None
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    write_text_atomic(out_path, text, overwrite=True)
    return read_list(out_path, num_labels=num_labels)


PUBLISHED_FILES = {"train": "train.txt.gz", "query": "test.txt.gz", "database": "database.txt.gz"}


def published_split(folder, prefix, num_labels, lists_dir):
    """The lists a paper's authors published, committed as folder/{train,test,database}.txt.gz
    (test = the queries), with their path `prefix` stripped so that paths are relative to the
    user's --root; written to lists_dir as train/query/database.txt -> {split: ImageList}."""
    lists = {}
    for split, name in PUBLISHED_FILES.items():
        published = read_gzip_list(Path(folder) / name, os.path.join(lists_dir, "published", name[:-3]),
                                   num_labels)
        lists[split] = relative_to(published, prefix)
    write_split(lists, lists_dir, overwrite=True)
    return lists


def exclude(database, other):
    """The entries of `database` whose path is not in `other` (ImageLists; order kept)."""
    drop = set(other.paths)
    keep = [i for i, p in enumerate(database.paths) if p not in drop]
    return database.subset(keep)


# ----------------------------------------------------------------------------------------------
# The build report


def missing_images(paths, root):
    """The paths (relative to `root`) that are not a file under `root`, in list order."""
    root = os.fspath(root)
    return [p for p in paths if not os.path.isfile(os.path.join(root, p))]


def require_images(lists, root):
    """Raise UserError before any work if an image a list names is not under `root`.

    The one-line message names the list, how many are missing and the first few.
    """
    for name, il in lists.items():
        warn_outside_root(il, root)
        missing = missing_images(il.paths, root)
        if missing:
            first = ", ".join(missing[:MAX_EXAMPLES])
            raise UserError(f"{il.source}: {len(missing)} of the {len(il)} images of the {name} list "
                            f"are missing under {root} (first: {first})")


def build_report(lists, root=None):
    """Counts and sanity checks of a split, as a JSON-ready dict.

    lists: {split name: ImageList}; root: the dataset root to look the images up under (None: no
    look-up). Per split: count, number of labels C, images per label (C ints), all-zero label
    rows (how many + the first few paths), images missing under root (how many + the first few;
    None without root). Overlaps: for every pair of splits, how many paths they share.
    """
    splits = {}
    for name, il in lists.items():
        labels = np.asarray(il.labels)
        zero = np.flatnonzero(labels.sum(axis=1) == 0)
        entry = {
            "count": len(il),
            "num_labels": int(labels.shape[1]),
            "per_label": [int(v) for v in labels.sum(axis=0)],
            "zero_label_rows": int(len(zero)),
            "zero_label_first": [il.paths[i] for i in zero[:MAX_EXAMPLES]],
            "missing": None,
            "missing_first": [],
        }
        if root is not None:
            missing = missing_images(il.paths, root)
            entry["missing"] = len(missing)
            entry["missing_first"] = missing[:MAX_EXAMPLES]
        splits[name] = entry
    names = list(lists)
    path_sets = {name: set(lists[name].paths) for name in names}
    overlaps = {}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            overlaps[f"{a}&{b}"] = len(path_sets[a] & path_sets[b])
    duplicates = {name: len(lists[name]) - len(path_sets[name]) for name in names}
    return {"root": None if root is None else os.fspath(root), "splits": splits,
            "overlaps": overlaps, "duplicates": duplicates}


def format_report(report, label_names=None):
    """A printable summary of `build_report`'s dict (a few lines per split)."""
    lines = []
    for name, s in report["splits"].items():
        lines.append(f"{name}: {s['count']} images, {s['num_labels']} labels, "
                     f"{report['duplicates'][name]} duplicate paths")
        if label_names is not None and len(label_names) == s["num_labels"]:
            per = ", ".join(f"{n} {v}" for n, v in zip(label_names, s["per_label"]))
        else:
            per = " ".join(map(str, s["per_label"]))
        lines.append(f"  per label: {per}")
        zero = f"  all-zero label rows: {s['zero_label_rows']}"
        if s["zero_label_rows"]:
            zero += " (first: " + ", ".join(s["zero_label_first"]) + ")"
        lines.append(zero)
        if s["missing"] is None:
            lines.append("  images on disk: not checked (no dataset root given)")
        else:
            miss = f"  missing under {report['root']}: {s['missing']}"
            if s["missing"]:
                miss += " (first: " + ", ".join(s["missing_first"]) + ")"
            lines.append(miss)
    if report["overlaps"]:
        lines.append("overlaps: " + ", ".join(f"{k} {v}" for k, v in report["overlaps"].items()))
    return "\n".join(lines)
