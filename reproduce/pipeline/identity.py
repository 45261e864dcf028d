"""What an output was made from: the identity of the job that made it.

A job (a training, an encoding, an evaluation, a cache of images ...) is defined by its settings
and by what it reads: the weights file, the image lists and images, the outputs of other jobs. Its
identity is the JSON document

    {"format": IDENTITY_FORMAT, "job": "train/dhn_12bits_seed0", "kind": "train",
     "settings": {"solver.max_iter": 10000, ...},          # flat: "section.key" -> JSON value
     "inputs": {"weights": "<hex>", "lists/train": "<hex>", ...},
     "lineage": {"train/dhn_12bits_seed0": {...settings}, "weights": {"sha1": ...}, ...},
     "hex": "<sha1>"}

`hex` is the sha1 of the canonical JSON of (kind, settings, inputs): a Merkle hash, so it changes
when the job's own settings change or when anything it was made from changes, however far
upstream. `lineage` holds the settings of the job and of everything upstream of it, so that a
refusal can say what changed (`differences`). Every output records the identity of its job
(config.json and final.pth of a training, the attributes of code, feature and cache files,
metrics.json, sweep files, run.json), and a job is done only when its output carries its identity.

Files that no job makes are sources, identified by content: a weights file by its sha1, an image
list by its entries plus the dataset root and each image's size and modification time (one stat
per image, not a read: `images_identity`). Package versions and the git revision are recorded
beside results (reproduce.utils.provenance) but are not part of identities: a new torch does not make
every finished training stale. IDENTITY_FORMAT is raised when the meaning of a setting changes.
"""
import functools
import hashlib
import json
import math
import os

import numpy as np

from ..data.lists import format_list
from ..errors import UserError
from ..model.archs import PAPER_ARCHS
from ..utils.fileio import sha1_file

IDENTITY_FORMAT = "reproduce-dhn-identity/1"


def canonical(value):
    """The canonical JSON text of a value (sorted keys, no spaces): what identities hash."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False, default=_plain)


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not a JSON value")


def flat(settings, prefix=""):
    """{"section.key": value} of nested dicts of settings (lists and scalars are values)."""
    out = {}
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flat(value, name + "."))
        else:
            out[name] = value
    return out


def make_identity(job, kind, settings, inputs=None, lineage=True):
    """The identity document of job `job` of kind `kind` with `settings` (nested dicts are
    flattened) made from `inputs` ({name: identity document}). lineage=False keeps only the
    job's own settings in the lineage (a table of hundreds of runs need not repeat them all)."""
    settings = flat(json.loads(canonical(settings)))
    inputs = dict(inputs or {})
    hexes = {name: doc["hex"] for name, doc in inputs.items()}
    tree = {}
    if lineage:
        for doc in inputs.values():
            tree.update(doc.get("lineage") or {})
    tree[job] = settings
    digest = hashlib.sha1(canonical({"kind": kind, "settings": settings, "inputs": hexes}).encode()).hexdigest()
    return {"format": IDENTITY_FORMAT, "job": job, "kind": kind, "settings": settings,
            "inputs": hexes, "lineage": tree, "hex": digest}


def source_identity(name, settings):
    """The identity of a file no job makes (weights, lists): its content's description."""
    return make_identity(name, "source", settings)


@functools.lru_cache(maxsize=64)
def _sha1_cached(path, size, mtime_ns):
    return sha1_file(path)


def file_identity(name, path):
    """A source file identified by its sha1 (computed once per content and process)."""
    st = os.stat(path)
    return source_identity(name, {"sha1": _sha1_cached(os.path.realpath(path), st.st_size, st.st_mtime_ns)})


def images_identity(name, image_list, root):
    """An image list and the images it names: the entries (paths and labels), the dataset root,
    and the size and modification time of every image (one stat each). A list edited, another
    --root, or an image replaced gives another identity. UserError naming the list, line and
    path of an image that cannot be stat'ed (require the images first for the full report)."""
    entries = hashlib.sha1(format_list(image_list.paths, image_list.labels).encode()).hexdigest()
    stats = hashlib.sha1()
    for i, path in enumerate(image_list.paths):
        try:
            st = os.stat(os.path.join(root, path))
        except OSError as e:
            raise UserError(f"{image_list.where(i)}: image {os.path.join(root, path)}: "
                            f"{e.strerror}") from None
        stats.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return source_identity(name, {"entries": entries, "count": len(image_list),
                                  "root": os.path.abspath(root), "images": stats.hexdigest()})


# The archs of the versions before backbones became an option (issue 20): the Caffe convention at
# the authors' crop 227, the only one then. Their jobs' identities did not name the backbone (the
# weights' sha1 and the training's model.arch did), and keep not naming it, so that outputs made
# then stay valid; every other arch is named with its image convention (backbone_settings).
LEGACY_ARCHS = PAPER_ARCHS


def backbone_settings(arch, preprocessing):
    """The settings that name the backbone in the identity of a job that reads images or
    weights (caches, encodings, features): {"backbone.arch", "backbone.preprocessing"}, so that
    no output made for another backbone or image convention is taken as done; {} for
    LEGACY_ARCHS."""
    if arch in LEGACY_ARCHS:
        return {}
    return {"backbone.arch": arch, "backbone.preprocessing": preprocessing}


# ----------------------------------------------------------------------------- reading and comparing

def to_attr(doc):
    """An identity as an HDF5 attribute (JSON text)."""
    return canonical(doc)


def from_attr(value):
    """The identity document of an HDF5 attribute written by to_attr; None if absent or not one."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    try:
        return checked(json.loads(value))
    except (ValueError, RecursionError):
        return None


def checked(doc):
    """`doc` if it is an identity document of this format, else None."""
    if isinstance(doc, dict) and doc.get("format") == IDENTITY_FORMAT and isinstance(doc.get("hex"), str) \
            and isinstance(doc.get("lineage", {}), dict):
        return doc
    return None


def _show(value):
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:37] + "..." + text[-37:]


def differences(old, new, ignore=(), verb="made"):
    """One phrase saying how identity `old` (recorded in an output) differs from `new` (the job's
    now): the first setting that differs, upstream jobs and files first; None when the same.
    `ignore`: settings of the job itself left out of the comparison (compared by lineage then);
    `verb`: what the job did ("trained" with max_iter 2, now 25)."""
    if old is None:
        return "no record of its settings (made by an older version, or not by this package)"
    if old.get("hex") == new["hex"] and not ignore:
        return None
    old_tree, new_tree = dict(old.get("lineage") or {}), new.get("lineage") or {}
    if old.get("job") != new["job"] and old.get("job") in old_tree:   # the same job, renamed
        old_tree[new["job"]] = old_tree.pop(old["job"])
    for name in list(new_tree):                      # upstream first: the cause, not the symptom
        if name not in old_tree:
            continue
        before, now = old_tree[name] or {}, new_tree[name]
        for key in list(now) + [k for k in before if k not in now]:
            if name == new["job"] and key in ignore:
                continue
            if not _same(before.get(key), now.get(key)):
                what = verb if name == new["job"] else f"made from {name}"
                return f"{what} with {key} {_show(before.get(key))}, now {_show(now.get(key))}"
    added = [n for n in new_tree if n not in old_tree]
    if added:
        return f"made without {added[0]}, which it is made from now"
    gone = [n for n in old_tree if n not in new_tree]
    if gone:
        return f"made from {gone[0]}, which it is not made from now"
    if ignore:
        return None
    return f"made by another job (identity {old.get('hex', '?')[:12]}, now {new['hex'][:12]})"


def _same(a, b):
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return canonical(a) == canonical(b)
