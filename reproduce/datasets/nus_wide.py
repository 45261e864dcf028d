"""NUS-WIDE with its 21 most frequent concepts ("NUS-WIDE-21"), two ways to the lists.

The images must be obtained by the user. Two ways to train/query/database lists:

1. `import_authors_lists`: the authors' own train.txt / test.txt / database.txt (absolute paths
   from their machine, `/home/caffe/aaai-caffe/data/nus_wide/images/<flickr name>.jpg`, then 21
   0/1 labels) with the path prefix rewritten so paths are relative to the user's image folder;
   their test.txt is our query.txt. 10,500 / 2,100 / 149,736 images, disjoint
   (official_settings.md "Data protocols"). This is the split the paper's numbers come from.
2. `build_from_metadata`: the paper's protocol applied to the official NUS-WIDE metadata
   (ImageList/Imagelist.txt, Groundtruth/AllLabels/Labels_<concept>.txt, Concepts81.txt): the 21
   most frequent concepts, the images carrying at least one of them (195,834 on the real data),
   100 queries and 500 training images per concept, database = all the other such images
   (183,234 on the real data: the authors' 149,736 is smaller, for reasons their lists do not
   record). Paths are the official layout's `Flickr/<folder>/<file>.jpg`.

Label columns are in decreasing concept frequency: the authors' lists are (their database's column
sums fall from 56,424 to 3,171, with two near-ties inverted by the sampling), and
`build_from_metadata` orders its columns the same way.

The command (`python -m reproduce.nus_wide`, see `main`): DHN on NUS-WIDE-21.
"""
import dataclasses
import posixpath
from pathlib import Path

import numpy as np

from ..data.lists import ImageList, read_list
from ..errors import UserError
from ..pipeline.reproduction import Preset, run_preset
from ..utils.fileio import refuse_special, write_text_atomic
from .common import check_paths, relative_to, sample_per_label, write_split

NAME = "nus_wide"
NUM_LABELS = 21
# The 21 concepts as hashing papers list NUS-WIDE-21, in the decreasing-frequency order of the
# columns. The authors' lists carry no names, so which column is which concept is not recorded
# anywhere we can check; `build_from_metadata` writes the names it actually used (label_names.txt).
LABEL_NAMES = ("sky", "clouds", "person", "water", "animal", "grass", "buildings", "window",
               "plants", "lake", "ocean", "road", "flowers", "sunset", "reflection", "rocks",
               "vehicle", "snow", "tree", "beach", "mountain")
SPLIT_SEED = 2016  # ours, for build_from_metadata (the authors' lists are used as published)
QUERY_PER_LABEL = 100  # paper: 100 images per concept as queries (2,100)
TRAIN_PER_LABEL = 500  # paper: 500 images per concept for training (10,500)
AUTHORS_FILES = {"train": "train.txt", "query": "test.txt", "database": "database.txt"}


# ----------------------------------------------------------------------------------------------
# 1. The authors' lists


def common_directory(paths):
    """Longest common directory prefix of POSIX paths, with a trailing '/' ("" if none)."""
    dirs = {posixpath.dirname(p) for p in paths}
    if len({d.startswith("/") for d in dirs}) > 1:       # absolute and relative paths: none shared
        return ""
    prefix = posixpath.commonpath(list(dirs)) if dirs else ""
    if prefix in ("", "."):
        return ""
    return prefix.rstrip("/") + "/"


def import_authors_lists(src_dir, out_dir, strip_prefix=None, overwrite=False):
    """Rewrite the authors' three lists so their paths are relative to the user's image folder.

    src_dir holds train.txt, test.txt, database.txt (path + 21 labels per line). strip_prefix:
    the prefix to remove from every path; default the longest common directory prefix of all
    three files (on the published lists `/home/caffe/aaai-caffe/data/nus_wide/images/`). A path
    not under the prefix is a UserError naming file and line. Writes train.txt, query.txt (their
    test.txt), database.txt into out_dir; returns {"train", "query", "database": ImageList}.
    """
    src = {name: read_list(Path(src_dir) / fname, num_labels=NUM_LABELS)
           for name, fname in AUTHORS_FILES.items()}
    prefix = strip_prefix
    if prefix is None:
        _check_same_prefix(src)
        prefix = common_directory([p for il in src.values() for p in il.paths])
    elif prefix and not prefix.endswith("/"):
        prefix += "/"
    lists = {name: relative_to(il, prefix) for name, il in src.items()}
    write_split(lists, out_dir, overwrite=overwrite)
    return lists


def _check_same_prefix(src):
    """The three lists must share their image folder: a list whose paths lie under another folder
    than the other two (not a subfolder of theirs) is named, not the first list checked later."""
    prefixes = {name: common_directory(il.paths) for name, il in src.items()}
    for name, prefix in prefixes.items():
        others = {p for n, p in prefixes.items() if n != name}
        if len(others) == 1:
            (shared,) = others
            if not prefix.startswith(shared):
                raise UserError(f"{src[name].source}: its paths lie under {prefix!r}, but the other "
                                f"two lists' lie under {shared!r}; fix the list or give "
                                "--strip-prefix")


# ----------------------------------------------------------------------------------------------
# 2. The official metadata


def _read_lines(path, what):
    """Lines of a text file with trailing blank lines dropped; a blank line inside is an error."""
    refuse_special(path, f"NUS-WIDE {what}")
    try:
        with open(path, encoding="utf-8", errors="strict") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise UserError(f"{path}: missing (the NUS-WIDE {what})") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text file (the NUS-WIDE {what})") from None
    lines = [line.strip() for line in lines]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise UserError(f"{path}: empty (the NUS-WIDE {what})")
    if "" in lines:
        raise UserError(f"{path}:{lines.index('') + 1}: blank line")
    return lines


def relative_image_path(windows_path):
    r"""`C:\ImageData\Flickr\actor\0001_2124494179.jpg` -> `Flickr/actor/0001_2124494179.jpg`.

    Backslashes become '/', a drive letter and a leading `ImageData` folder (where the official
    Imagelist.txt was made) are dropped.
    """
    p = windows_path.replace("\\", "/")
    if len(p) >= 2 and p[1] == ":":
        p = p[2:]
    p = p.lstrip("/")
    if p.split("/", 1)[0].lower() == "imagedata" and "/" in p:
        p = p.split("/", 1)[1]
    return p


def read_metadata(meta_dir):
    """The official metadata -> (relative paths N, concept names 81, labels N x 81 uint8).

    Every Labels_<concept>.txt must have one 0/1 per line and as many lines as Imagelist.txt.
    """
    meta_dir = Path(meta_dir)
    concepts = _read_lines(meta_dir / "Concepts81.txt", "concept list")
    seen = set()
    for i, c in enumerate(concepts):
        if c in seen or any(ch.isspace() for ch in c):
            raise UserError(f"{meta_dir / 'Concepts81.txt'}:{i + 1}: concept {c!r} is repeated "
                            "or contains whitespace")
        seen.add(c)
    image_file = meta_dir / "ImageList" / "Imagelist.txt"
    paths = [relative_image_path(line) for line in _read_lines(image_file, "image list")]
    check_paths(paths, str(image_file))
    labels = np.zeros((len(paths), len(concepts)), dtype=np.uint8)
    for c, concept in enumerate(concepts):
        label_file = meta_dir / "Groundtruth" / "AllLabels" / f"Labels_{concept}.txt"
        values = _read_lines(label_file, f"labels of concept {concept!r}")
        if len(values) != len(paths):
            raise UserError(f"{label_file}: {len(values)} lines, but {image_file} lists "
                            f"{len(paths)} images")
        if not set(values) <= {"0", "1"}:
            bad = next(i for i, v in enumerate(values) if v not in ("0", "1"))
            raise UserError(f"{label_file}:{bad + 1}: {values[bad]!r} is not 0 or 1")
        labels[:, c] = np.asarray(values) == "1"
    return paths, concepts, labels


def most_frequent(concepts, labels, k=NUM_LABELS):
    """Column indices of the k most frequent concepts, most frequent first.

    Ties in frequency are broken by the order of Concepts81.txt (the earlier concept first): a
    stable sort of the negated counts.
    """
    counts = np.asarray(labels).sum(axis=0, dtype=np.int64)
    if len(concepts) < k:
        raise UserError(f"Concepts81.txt: {len(concepts)} concepts, fewer than the {k} needed")
    return np.argsort(-counts, kind="stable")[:k]


def build_from_metadata(meta_dir, out_dir, seed=SPLIT_SEED, overwrite=False,
                        query_per_label=QUERY_PER_LABEL, train_per_label=TRAIN_PER_LABEL,
                        num_labels=NUM_LABELS):
    """The paper's NUS-WIDE-21 protocol from the official metadata.

    Columns: the `num_labels` most frequent concepts (`most_frequent`). Images: those with at
    least one of them. Sampling (`common.sample_per_label`): concept by concept in column order,
    the concept's images not yet drawn are ranked by one raw PCG64 draw each; the first 100 are
    queries and the next 500 training images. An image carrying several concepts is drawn at most
    once, for the first concept that draws it, so the counts are exactly 2,100 and 10,500.
    Database: every other image with at least one of the concepts (disjoint from query and
    train, as in the authors' lists). Writes train.txt, query.txt, database.txt and
    label_names.txt (the column names, one a line) into out_dir; returns
    {"train", "query", "database": ImageList} with paths relative to the folder holding `Flickr/`.
    """
    names_file = Path(out_dir) / "label_names.txt"
    if names_file.exists() and not overwrite:
        raise UserError(f"{names_file}: already exists; refusing to overwrite it "
                        "(remove it or ask for overwriting)")
    paths, concepts, all_labels = read_metadata(meta_dir)
    columns = most_frequent(concepts, all_labels, num_labels)
    names = [concepts[c] for c in columns]
    labels = all_labels[:, columns]
    keep = np.flatnonzero(labels.any(axis=1))
    labels = labels[keep]
    images = ImageList([paths[i] for i in keep], labels, str(Path(meta_dir)))
    query, train = sample_per_label(labels, (query_per_label, train_per_label), seed, names,
                                    source=str(Path(meta_dir) / "Groundtruth" / "AllLabels"))
    database = np.setdiff1d(np.arange(len(images)), np.concatenate([query, train]))
    lists = {"train": images.subset(train), "query": images.subset(query),
             "database": images.subset(database)}
    write_split(lists, out_dir, overwrite=overwrite)
    write_text_atomic(names_file, "".join(n + "\n" for n in names), overwrite=overwrite)
    return lists


def build_lists(src_dir, out_dir, seed=SPLIT_SEED, overwrite=False, strip_prefix=None):
    """Either way, chosen by what `src_dir` holds: the official metadata (Concepts81.txt) ->
    `build_from_metadata`; the authors' train.txt/test.txt/database.txt -> `import_authors_lists`.
    """
    src = Path(src_dir)
    if (src / "Concepts81.txt").is_file():
        return build_from_metadata(src, out_dir, seed=seed, overwrite=overwrite)
    if all((src / f).is_file() for f in AUTHORS_FILES.values()):
        return import_authors_lists(src, out_dir, strip_prefix=strip_prefix, overwrite=overwrite)
    raise UserError(f"{src}: neither the NUS-WIDE metadata (Concepts81.txt, ImageList/, "
                    "Groundtruth/) nor the authors' lists (train.txt, test.txt, database.txt)")


# -------------------------------------------------------------------------------- the command
SMOKE_PER_LABEL = dict(query_per_label=1, train_per_label=2)


def add_arguments(p):
    g = p.add_argument_group("NUS-WIDE (one of the two)")
    g.add_argument("--authors-lists", default=None, help="folder with the authors' train.txt, test.txt, database.txt")
    g.add_argument("--strip-prefix", default=None,
                   help="path prefix of the authors' lists to replace by --root (default: their common folder)")
    g.add_argument("--metadata", default=None,
                   help="official NUS-WIDE metadata folder (ImageList/, Groundtruth/AllLabels/, Concepts81.txt)")


@dataclasses.dataclass(frozen=True)
class Options:
    """The options of add_arguments."""
    authors_lists: str | None = None
    strip_prefix: str | None = None
    metadata: str | None = None


def make_lists(config, lists_dir):
    o = config.options
    if bool(o.authors_lists) == bool(o.metadata):
        raise UserError("NUS-WIDE: give exactly one of --authors-lists DIR and --metadata DIR")
    if o.authors_lists:
        return import_authors_lists(o.authors_lists, lists_dir, strip_prefix=o.strip_prefix, overwrite=True)
    sizes = SMOKE_PER_LABEL if config.smoke else {}
    return build_from_metadata(o.metadata, lists_dir, overwrite=True, **sizes)


PRESET = Preset(NAME, "NUS-WIDE", NUM_LABELS, make_lists, add_arguments, options=Options)


def main(argv=None):
    """`python -m reproduce.nus_wide`: the whole reproduction on this dataset."""
    run_preset(PRESET, argv)
