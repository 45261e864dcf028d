"""`python -m reproduce.cifar10 --root DIR`: DHN on CIFAR-10, from nothing to results/cifar10/.

Protocol (DNNH, followed by DHN): 100 images per class as queries (1,000), 500 per class for
training (5,000), database = the other 59,000 (it contains the training images; 54,000 without
them with --database-excludes-train); MAP over the whole database. The images are downloaded by
torchvision (md5-checked) into DIR and written once as PNG files; the split is the committed
data_lists/cifar10/ (checked against the downloaded labels), or made from them with the same seed.
"""
import numpy as np

from .datasets import cifar10 as ds
from .datasets.common import DATA_LISTS, read_split, write_split
from .errors import UserError, run_cli
from .reproduction import Preset, main

SMOKE_PER_CLASS = dict(query_per_class=1, train_per_class=3)   # --smoke: a few dozen images


def add_arguments(p):
    g = p.add_argument_group("CIFAR-10")
    g.add_argument("--no-download", dest="download", action="store_false",
                   help="do not download: the python batches must already be in DIR/cifar-10-batches-py")
    g.add_argument("--database-excludes-train", action="store_true",
                   help="database = the 54,000 non-query, non-training images (common alternative)")


def make_lists(args, lists_dir):
    images = ds.prepare_images(args.root, download=args.download, progress=True)
    committed = DATA_LISTS / ds.NAME
    if not args.smoke and (committed / "train.txt").exists():
        lists = read_split(committed, ds.NUM_LABELS)
        truth = dict(zip(images.paths, map(bytes, images.labels)))
        for name, il in lists.items():
            for i, (path, row) in enumerate(zip(il.paths, il.labels)):
                if truth.get(path) != bytes(row):
                    raise UserError(f"{il.where(i)}: {path} is labelled {np.flatnonzero(row).tolist()} here but "
                                    f"not in the downloaded data; regenerate the split with "
                                    f"reproduce.datasets.cifar10.build_lists")
    else:
        sizes = SMOKE_PER_CLASS if args.smoke else {}
        lists = ds.lists_from_split(images, ds.make_split(images.labels, ds.SPLIT_SEED, **sizes))
    if args.database_excludes_train:
        lists["database"] = ds.database_excludes_train(lists["train"], lists["database"])
    write_split(lists, lists_dir, overwrite=True)
    return lists


PRESET = Preset(ds.NAME, "CIFAR-10", ds.NUM_LABELS, make_lists, add_arguments)

if __name__ == "__main__":
    run_cli(lambda argv: main(PRESET, argv))
