"""Small synthetic stand-ins for the three datasets, in each dataset's *official* folder layout.

For tests and `--smoke` runs (`import fake_datasets` from a test; tests/ is on sys.path): tiny
images, seeded, built in well under a second. Each `make_fake_*` returns a dict naming what it
made (folders, expected counts, the labels it drew), so a test can check a build against it.

- CIFAR-10: `cifar-10-batches-py/` with data_batch_1..5, test_batch, batches.meta pickled as the
  real (Python 2) files are: keys are Python 2 `str`, so `pickle.load(f, encoding="bytes")` gives
  b"data" (uint8 N x 3072, R then G then B planes) and b"labels", and torchvision's
  `encoding="latin1"` gives "data"/"labels". Their md5s are not the real ones: pass
  check_integrity=False to `reproduce.datasets.cifar10.prepare_images` / `build_lists`.
- NUS-WIDE: images `Flickr/<folder>/<NNNN_id>.jpg`, `ImageList/Imagelist.txt` (Windows paths
  `C:\\ImageData\\Flickr\\...`), `Groundtruth/AllLabels/Labels_<concept>.txt`, `Concepts81.txt`
  (fewer concepts than 81); and "authors' lists" `authors_lists/{train,test,database}.txt` with
  absolute paths `/home/caffe/aaai-caffe/data/nus_wide/images/<id>.jpg` + 21 labels, whose images
  are under `images/`.
- Flickr: images `mirflickr/im<N>.jpg`, annotation folder `mirflickr25k_annotations_v080/` with
  the 38 concept files and a README.txt.
"""
import os
import pickle
import struct

import numpy as np
from PIL import Image

from reproduce.datasets import flickr as flickr_ds

CIFAR_LABEL_NAMES = ["airplane", "automobile", "bird", "cat", "deer",
                     "dog", "frog", "horse", "ship", "truck"]
AUTHORS_PREFIX = "/home/caffe/aaai-caffe/data/nus_wide/images/"


# ----------------------------------------------------------------------------------------------
# Python 2 pickles, as the CIFAR-10 python batches are


class Py2Str(bytes):
    """Bytes that pickle as a Python 2 `str` (opcode BINSTRING), like the real batch files' keys."""


class _Py2Pickler(pickle._Pickler):
    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2str(self, obj):
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + bytes(obj))
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + bytes(obj))
        self.memoize(obj)

    dispatch[Py2Str] = save_py2str


def _dump_py2(obj, path):
    with open(path, "wb") as f:
        _Py2Pickler(f, protocol=2).dump(obj)


def _tiny_image(rng, size, label=None):
    """HxWx3 uint8: noise around a per-label colour, so labels are visible in the pixels."""
    base = rng.integers(0, 256, 3) if label is None else (np.array([37, 91, 173]) * (label + 1)) % 256
    noise = rng.integers(-30, 31, (size, size, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def make_fake_cifar10(root, per_class=5, test_per_class=2, seed=0):
    """Write `root/cifar-10-batches-py/` with per_class training images per class (spread over
    the 5 training batches in a shuffled order) and test_per_class test images per class.

    Returns {"folder", "train_labels" (list), "test_labels" (list), "num_train", "num_test"}.
    """
    rng = np.random.default_rng(seed)
    folder = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(folder, exist_ok=True)
    train_labels = rng.permutation(np.repeat(np.arange(10), per_class)).tolist()
    test_labels = rng.permutation(np.repeat(np.arange(10), test_per_class)).tolist()

    def batch(name, labels, offset):
        data = np.stack([_tiny_image(rng, 32, c).transpose(2, 0, 1).reshape(-1) for c in labels]) \
            if labels else np.zeros((0, 3072), np.uint8)
        filenames = [Py2Str(f"fake_{offset + i:05d}.png".encode()) for i in range(len(labels))]
        _dump_py2({Py2Str(b"batch_label"): Py2Str(name.encode()), Py2Str(b"labels"): list(labels),
                   Py2Str(b"data"): data, Py2Str(b"filenames"): filenames},
                  os.path.join(folder, name))

    bounds = np.linspace(0, len(train_labels), 6).astype(int)
    for b in range(5):
        batch(f"data_batch_{b + 1}", train_labels[bounds[b]:bounds[b + 1]], bounds[b])
    batch("test_batch", test_labels, 0)
    _dump_py2({Py2Str(b"label_names"): [Py2Str(n.encode()) for n in CIFAR_LABEL_NAMES],
               Py2Str(b"num_cases_per_batch"): 10000, Py2Str(b"num_vis"): 3072},
              os.path.join(folder, "batches.meta"))
    return {"folder": folder, "train_labels": train_labels, "test_labels": test_labels,
            "num_train": len(train_labels), "num_test": len(test_labels)}


# ----------------------------------------------------------------------------------------------
# NUS-WIDE


def make_fake_nus_wide(root, images_per_concept=10, num_labels=21, rare=2, query_per_label=1,
                       train_per_label=2, seed=0):
    """Official NUS-WIDE metadata + images: num_labels + rare + 1 concepts, (num_labels + rare + 1)
    x images_per_concept images.

    Image i has the primary concept i % (num_labels + rare + 1): the last concept is never used
    (its images carry no concept at all) and the `rare` ones before it carry only their primary,
    so those images have none of the top concepts. Top concept k (by rank) is also added to
    num_labels - k other labeled images, so the top concepts' counts are distinct and all above
    the rare ones'. Concept names (c00, c01, ... as in Concepts81.txt) are assigned to the ranks in
    a shuffled order, so frequency order differs from file order. Also writes "authors' lists"
    over the images that carry a top concept, drawn per label like the authors' (query_per_label
    / train_per_label per column, most frequent first), with absolute paths under AUTHORS_PREFIX
    and the images copied flat to `root/images/`.

    Returns {"meta_dir", "images_root" (holds Flickr/), "authors_dir", "authors_images_root",
    "paths", "labels" (images x concepts, file order), "concepts", "top" (file-order columns of
    the top concepts, most frequent first), "num_kept" (images with a top concept),
    "authors_counts" {train, query, database}}.
    """
    rng = np.random.default_rng(seed)
    num_concepts = num_labels + rare + 1
    num_images = num_concepts * images_per_concept
    concepts = [f"c{k:02d}" for k in range(num_concepts)]
    name_of_rank = rng.permutation(num_concepts)  # rank r -> file-order column
    by_rank = np.zeros((num_images, num_concepts), dtype=np.uint8)
    by_rank[np.arange(num_images), np.arange(num_images) % num_concepts] = 1
    labeled = np.flatnonzero(np.arange(num_images) % num_concepts < num_labels)
    for k in range(num_labels):
        others = labeled[by_rank[labeled, k] == 0]
        by_rank[rng.choice(others, num_labels - k, replace=False), k] = 1
    by_rank[:, num_concepts - 1] = 0
    labels = np.zeros_like(by_rank)
    labels[:, name_of_rank] = by_rank
    top = name_of_rank[:num_labels]
    folders = ["actor", "beach", "sky"]
    paths = [f"Flickr/{folders[i % 3]}/{i + 1:04d}_{1000000 + 7919 * i}.jpg"
             for i in range(num_images)]
    os.makedirs(os.path.join(root, "ImageList"), exist_ok=True)
    os.makedirs(os.path.join(root, "Groundtruth", "AllLabels"), exist_ok=True)
    for p in paths:
        full = os.path.join(root, p)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        Image.fromarray(_tiny_image(rng, 8)).save(full, format="JPEG")
    with open(os.path.join(root, "ImageList", "Imagelist.txt"), "w", newline="") as f:
        f.write("".join("C:\\ImageData\\" + p.replace("/", "\\") + "\r\n" for p in paths))
    with open(os.path.join(root, "Concepts81.txt"), "w") as f:
        f.write("".join(c + "\n" for c in concepts))
    for k, c in enumerate(concepts):
        with open(os.path.join(root, "Groundtruth", "AllLabels", f"Labels_{c}.txt"), "w") as f:
            f.write("".join(f"{v}\n" for v in labels[:, k]))

    # The authors' lists: flat Flickr-style names under their absolute folder.
    top_labels = labels[:, top]
    kept = np.flatnonzero(top_labels.any(axis=1))
    flat = [os.path.basename(paths[i]) for i in kept]
    images_dir = os.path.join(root, "images")
    os.makedirs(images_dir, exist_ok=True)
    for i, name in zip(kept, flat):
        with open(os.path.join(root, paths[i]), "rb") as src, \
                open(os.path.join(images_dir, name), "wb") as dst:
            dst.write(src.read())
    order = rng.permutation(len(kept))
    taken = np.zeros(len(kept), bool)
    parts = {"query": [], "train": []}
    for c in range(num_labels):
        cand = [j for j in order if top_labels[kept[j], c] and not taken[j]]
        for name, n in (("query", query_per_label), ("train", train_per_label)):
            pick, cand = cand[:n], cand[n:]
            taken[pick] = True
            parts[name] += pick
    parts["database"] = [j for j in order if not taken[j]]
    authors_dir = os.path.join(root, "authors_lists")
    os.makedirs(authors_dir, exist_ok=True)
    for name, fname in (("train", "train.txt"), ("query", "test.txt"), ("database", "database.txt")):
        with open(os.path.join(authors_dir, fname), "w") as f:
            for j in parts[name]:
                row = " ".join(str(v) for v in top_labels[kept[j]])
                f.write(f"{AUTHORS_PREFIX}{flat[j]} {row}\n")
    return {"meta_dir": str(root), "images_root": str(root), "authors_dir": authors_dir,
            "authors_images_root": images_dir, "paths": paths, "labels": labels,
            "concepts": concepts, "top": top.tolist(), "num_kept": int(len(kept)),
            "authors_counts": {k: len(v) for k, v in parts.items()}}


# ----------------------------------------------------------------------------------------------
# Flickr


def make_fake_flickr(root, num_images=60, unlabeled=6, seed=0):
    """`root/mirflickr/im1.jpg..im<num_images>.jpg` and `root/mirflickr25k_annotations_v080/`.

    Every concept file lists at least one image; the last `unlabeled` images carry no label.
    Returns {"annotation_dir", "images_root", "labels" (num_images x 38, row N-1 = image N)}.
    """
    rng = np.random.default_rng(seed)
    labels = (rng.random((num_images, flickr_ds.NUM_LABELS)) < 0.12).astype(np.uint8)
    labeled = num_images - unlabeled
    labels[labeled:] = 0
    for c in range(flickr_ds.NUM_LABELS):
        if not labels[:labeled, c].any():
            labels[rng.integers(labeled), c] = 1
    for i in range(labeled):
        if not labels[i].any():
            labels[i, rng.integers(flickr_ds.NUM_LABELS)] = 1
    image_dir = os.path.join(root, "mirflickr")
    os.makedirs(image_dir, exist_ok=True)
    for n in range(1, num_images + 1):
        Image.fromarray(_tiny_image(rng, 8)).save(os.path.join(image_dir, f"im{n}.jpg"), format="JPEG")
    ann = os.path.join(root, "mirflickr25k_annotations_v080")
    os.makedirs(ann, exist_ok=True)
    for c, name in enumerate(flickr_ds.LABEL_NAMES):
        with open(os.path.join(ann, f"{name}.txt"), "w", newline="") as f:
            f.write("".join(f"{n + 1}\r\n" for n in np.flatnonzero(labels[:, c])))
    with open(os.path.join(ann, "README.txt"), "w") as f:
        f.write("Synthetic stand-in for the MIRFlickr-25k annotations (tests only).\n")
    return {"annotation_dir": ann, "images_root": str(root), "labels": labels}


def make_fake_hashnet(root, dataset, counts=(("train.txt.gz", 32), ("test.txt.gz", 8), ("database.txt.gz", 40)),
                      seed=0):
    """The images the first entries of the committed HashNet lists (data_lists/<dataset>/) name,
    under `root` in the layout of the authors' `./data/<dataset>/` folder (imagenet100:
    image/, val_image/; coco: train2014/, val2014/): what a --smoke run reads. Returns the paths."""
    import gzip
    from reproduce.datasets.common import DATA_LISTS
    prefix = {"imagenet100": "./data/imagenet/", "coco": "./data/coco/"}[dataset]
    rng = np.random.default_rng(seed)
    made = []
    for name, n in counts:
        with gzip.open(DATA_LISTS / dataset / name, "rt") as f:
            for _, line in zip(range(n), f):
                rel = line.split(" ", 1)[0][len(prefix):]
                path = os.path.join(root, rel)
                if not os.path.exists(path):
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    Image.fromarray(_tiny_image(rng, 12)).save(path, format="JPEG")
                    made.append(rel)
    return made


def make_command_inputs(d, rng, n_images):
    """What the per-command tests start from, in folder d: n_images random 40x50 PNGs in imgs/,
    list.txt with two labels (alternating), dhn.pth (a random CaffeNet with an 8-bit hash layer)
    and base.pth (without one). Images are drawn from rng; the networks from torch seed 0."""
    import torch
    from reproduce.model.checkpoint import save_checkpoint
    from reproduce.model.nets import DHNNet
    (d / "imgs").mkdir()
    for i in range(n_images):
        Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(d / "imgs" / f"{i}.png")
    (d / "list.txt").write_text("".join(f"{i}.png {i % 2} {(i + 1) % 2}\n" for i in range(n_images)))
    torch.manual_seed(0)
    save_checkpoint(d / "dhn.pth", DHNNet("caffenet", bits=8).state_dict(), "caffenet", 8)
    save_checkpoint(d / "base.pth", DHNNet("caffenet", bits=0).state_dict(), "caffenet", 0)


def make_toy_list_dataset(folder, weights):
    """A 40-image stand-in dataset in list form under `folder` (fake Flickr images, 5 labels; 30
    training, 6 query, 34 database images) and the `reproduce.custom` arguments that name it
    (dataset `toy`, every image list, --topk all, `weights`), without --out/--work."""
    folder = str(folder)
    fake = make_fake_flickr(os.path.join(folder, "data"), num_images=40, unlabeled=0)
    rows = [f"mirflickr/im{n}.jpg " + " ".join(map(str, fake["labels"][n - 1, :5])) for n in range(1, 41)]
    for name, part in (("train", rows[:30]), ("query", rows[30:36]), ("database", rows[6:])):
        with open(os.path.join(folder, f"{name}.txt"), "w", encoding="utf-8") as f:
            f.write("\n".join(part) + "\n")
    return ["--name", "toy", "--root", os.path.join(folder, "data"),
            "--train-list", os.path.join(folder, "train.txt"), "--query-list", os.path.join(folder, "query.txt"),
            "--database-list", os.path.join(folder, "database.txt"), "--topk", "all", "--weights", weights]
