"""CIFAR-10 as DNNH and DHN used it: images written once as PNG files, and the DNNH/DHN split.

Images: `torchvision.datasets.CIFAR10` downloads `cifar-10-python.tar.gz` into the root and checks
the md5 of the archive and of every batch file; `prepare_images` then writes each 32x32 image once
as `images/train/00000.png` ... `images/train/49999.png` and `images/test/00000.png` ...
`images/test/09999.png` (index = torchvision's order: data_batch_1..5, then test_batch), so the
same ImageData-style path (read with OpenCV, resize to 256x256) serves CIFAR-10 like every other
dataset.

Split (DNNH, Lai et al. 2015, followed by DHN; official_settings.md "Data protocols"), over all
60,000 images: per class 100 queries (1,000) and 500 training images drawn from the non-query
images (5,000); database = the 59,000 non-query images, which contains the training set. The
common alternative database without the training images (54,000) is `database_excludes_train`.
MAP is taken over the whole database (reproduce.evaluation.protocols.PROTOCOLS).

The command (`python -m reproduce.cifar10`, see `main`): DHN on CIFAR-10, from nothing to results/cifar10/.
"""
import dataclasses
import os
import re

import numpy as np

from ..data.lists import ImageList
from ..errors import UserError
from ..pipeline.reproduction import Preset, run_preset
from ..utils.fileio import atomic_output
from .common import DATA_LISTS, exclude, read_split, sample_per_label, write_split

NAME = "cifar10"
NUM_LABELS = 10
# torchvision's CIFAR10.classes (batches.meta "label_names"), in label-index order.
LABEL_NAMES = ("airplane", "automobile", "bird", "cat", "deer",
               "dog", "frog", "horse", "ship", "truck")
SPLIT_SEED = 2016  # ours (the year of the paper): the authors did not publish their split or seed
QUERY_PER_CLASS = 100  # DNNH/DHN protocol: 1,000 queries
TRAIN_PER_CLASS = 500  # DNNH/DHN protocol: 5,000 training images, drawn from the non-query images

IMAGE_DIR = "images"
BATCH_FOLDER = "cifar-10-batches-py"  # what torchvision extracts the archive to
_PATH_RE = re.compile(r"^images/(train|test)/(\d{5})\.png$")


def image_path(subset, index):
    """Relative path of image `index` of torchvision's `subset` ("train" or "test")."""
    return f"{IMAGE_DIR}/{subset}/{index:05d}.png"


def _load_torchvision(root, train, download, check_integrity):
    """torchvision's CIFAR10 (data N x 32 x 32 x 3 uint8 RGB, targets N ints)."""
    from torchvision.datasets import CIFAR10

    cls = CIFAR10
    if not check_integrity:
        # Only for the synthetic stand-in in the tests (tests/fake_datasets.py), whose batch files
        # cannot have the real md5s: torchvision's `check_integrity(path, md5=None)` only checks
        # that the file exists, so the same reader runs with every md5 set to None.
        class UncheckedCIFAR10(CIFAR10):
            train_list = [[name, None] for name, _ in CIFAR10.train_list]
            test_list = [[name, None] for name, _ in CIFAR10.test_list]
            meta = dict(CIFAR10.meta, md5=None)
        cls = UncheckedCIFAR10
    try:
        return cls(os.fspath(root), train=train, download=download)
    except RuntimeError:
        # torchvision says "... You can use download=True to download it", an option of its own
        # API that no command of this package takes: say what to do here instead.
        what = ("is missing or corrupted (md5 mismatch)" if not download else
                "is corrupted after the download (md5 mismatch)")
        hint = ("run without --no-download to fetch it" if not download else
                f"remove {os.path.join(root, 'cifar-10-python.tar.gz')} and run again")
        raise UserError(f"{os.path.join(root, BATCH_FOLDER)}: the CIFAR-10 python batches "
                        f"{what}; {hint}") from None
    except OSError as e:  # no network, a truncated download (URLError is an OSError)
        raise UserError(f"{root}: cannot download CIFAR-10 ({e})") from None


def prepare_images(root, download=True, check_integrity=True, progress=False):
    """Download (torchvision, md5-checked) and write every image once as a PNG under `root`.

    Resumable: an image file that already exists is skipped; each new one is written under a
    temporary name and renamed (`atomic_output`), so an interrupted run leaves no partial PNG.
    check_integrity=False skips torchvision's md5 checks; it exists only for the tests'
    synthetic batches and must not be used on real data.
    Returns the ImageList of all images in canonical order (train 0..49999, then test 0..9999;
    paths relative to root, labels N x 10 one-hot).
    """
    from PIL import Image
    from tqdm import tqdm

    paths, classes = [], []
    for subset in ("train", "test"):
        ds = _load_torchvision(root, subset == "train", download, check_integrity)
        folder = os.path.join(root, IMAGE_DIR, subset)
        os.makedirs(folder, exist_ok=True)
        names = [image_path(subset, i) for i in range(len(ds.data))]
        todo = [i for i, p in enumerate(names) if not os.path.isfile(os.path.join(root, p))]
        for i in tqdm(todo, desc=f"CIFAR-10 {subset} PNGs", disable=not progress):
            with atomic_output(os.path.join(root, names[i]), overwrite=False) as tmp:
                Image.fromarray(ds.data[i]).save(tmp, format="PNG")
        paths += names
        classes += list(ds.targets)
    return ImageList(paths, _one_hot(classes), os.path.join(os.fspath(root), BATCH_FOLDER))


def _one_hot(classes):
    classes = np.asarray(classes, dtype=np.int64)
    labels = np.zeros((len(classes), NUM_LABELS), dtype=np.uint8)
    labels[np.arange(len(classes)), classes] = 1
    return labels


def make_split(labels, seed=SPLIT_SEED, query_per_class=QUERY_PER_CLASS,
               train_per_class=TRAIN_PER_CLASS):
    """The DNNH/DHN split of the images in canonical order, as sorted int64 index arrays.

    labels: N class indices, or N x 10 one-hot (N = 60,000 for the real data).
    Per class 0..9 in turn, the class's images are ranked by one raw PCG64 draw each
    (`common.rank_candidates`); the first `query_per_class` are queries, the next
    `train_per_class` are training images. Returns {"query": 1,000, "train": 5,000,
    "database": the 59,000 non-query images, "database_excludes_train": 54,000}.
    """
    labels = np.asarray(labels)
    if labels.ndim == 1:
        labels = _one_hot(labels)
    if labels.ndim != 2 or labels.shape[1] != NUM_LABELS or (labels.sum(axis=1) != 1).any():
        raise UserError(f"CIFAR-10 labels: expected N class indices or N x {NUM_LABELS} one-hot "
                        f"rows, got shape {labels.shape}")
    query, train = sample_per_label(labels, (query_per_class, train_per_class), seed,
                                    LABEL_NAMES, source="CIFAR-10 labels")
    not_query = np.setdiff1d(np.arange(len(labels)), query)
    return {"query": query, "train": train, "database": not_query,
            "database_excludes_train": np.setdiff1d(not_query, train)}


def lists_from_split(images, split, names=("train", "query", "database")):
    """{name: ImageList} of the split's index arrays over `images` (canonical order)."""
    return {name: images.subset(split[name]) for name in names}


def database_excludes_train(train, database):
    """The 54,000-image database variant: `database` without the `train` images (ImageLists)."""
    return exclude(database, train)


def build_lists(root, out_dir, seed=SPLIT_SEED, download=True, overwrite=False,
                check_integrity=True, query_per_class=QUERY_PER_CLASS,
                train_per_class=TRAIN_PER_CLASS):
    """Prepare the images under `root` and write train.txt, query.txt, database.txt to out_dir.

    The committed `data_lists/cifar10/` files are this function's output for the real data and
    SPLIT_SEED. Returns {"train", "query", "database": ImageList}, paths relative to root.
    """
    images = prepare_images(root, download=download, check_integrity=check_integrity)
    split = make_split(images.labels, seed, query_per_class, train_per_class)
    lists = lists_from_split(images, split)
    write_split(lists, out_dir, overwrite=overwrite)
    return lists


def images_from_lists(*lists):
    """The canonical-order ImageList recovered from lists that together name every image once.

    Used to regenerate a committed split from query.txt + database.txt: paths must be
    `images/{train,test}/NNNNN.png`, each named once, and both subsets numbered 0..n-1 without a
    gap. Returns the ImageList of train 0..n_train-1 then test 0..n_test-1.
    """
    keyed = {}
    for il in lists:
        for i, p in enumerate(il.paths):
            m = _PATH_RE.match(p)
            if not m:
                raise UserError(f"{il.where(i)}: {p!r} is not a CIFAR-10 image path "
                                f"({IMAGE_DIR}/train|test/NNNNN.png)")
            key = (0 if m.group(1) == "train" else 1, int(m.group(2)))
            if key in keyed:
                raise UserError(f"{il.where(i)}: {p!r} is named twice")
            keyed[key] = il.labels[i]
    order = sorted(keyed)
    for subset in (0, 1):
        idx = [k[1] for k in order if k[0] == subset]
        if idx != list(range(len(idx))):
            gap = next(j for j, v in enumerate(idx) if v != j)
            raise UserError(f"{lists[0].source}: the lists do not name "
                            f"{image_path(('train', 'test')[subset], gap)}")
    paths = [image_path(("train", "test")[s], i) for s, i in order]
    labels = np.stack([keyed[k] for k in order]).astype(np.uint8)
    return ImageList(paths, labels, lists[0].source)


# -------------------------------------------------------------------------------- the command
SMOKE_PER_CLASS = dict(query_per_class=1, train_per_class=3)   # --smoke: a few dozen images


def add_arguments(p):
    g = p.add_argument_group("CIFAR-10")
    g.add_argument("--no-download", dest="download", action="store_false",
                   help="do not download: the python batches must already be in DIR/cifar-10-batches-py")
    g.add_argument("--database-excludes-train", action="store_true",
                   help="database = the 54,000 non-query, non-training images (common alternative)")


@dataclasses.dataclass(frozen=True)
class Options:
    """The options of add_arguments."""
    download: bool = True
    database_excludes_train: bool = False


def make_lists(config, lists_dir):
    images = prepare_images(config.root, download=config.options.download, progress=True)
    committed = DATA_LISTS / NAME
    if not config.smoke and (committed / "train.txt").exists():
        lists = read_split(committed, NUM_LABELS)
        truth = dict(zip(images.paths, map(bytes, images.labels)))
        for name, il in lists.items():
            for i, (path, row) in enumerate(zip(il.paths, il.labels)):
                if truth.get(path) != bytes(row):
                    raise UserError(f"{il.where(i)}: {path} is labelled {np.flatnonzero(row).tolist()} here but "
                                    f"not in the downloaded data; regenerate the split with "
                                    f"reproduce.datasets.cifar10.build_lists")
    else:
        sizes = SMOKE_PER_CLASS if config.smoke else {}
        lists = lists_from_split(images, make_split(images.labels, SPLIT_SEED, **sizes))
    if config.options.database_excludes_train:
        lists["database"] = database_excludes_train(lists["train"], lists["database"])
    write_split(lists, lists_dir, overwrite=True)
    return lists


PRESET = Preset(NAME, "CIFAR-10", NUM_LABELS, make_lists, add_arguments, options=Options)


def main(argv=None):
    """`python -m reproduce.cifar10`: the whole reproduction on this dataset."""
    run_preset(PRESET, argv)
