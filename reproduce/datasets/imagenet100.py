"""ImageNet-100 as the HashNet benchmark (Cao, Long, Wang, Yu, ICCV 2017) defines it, where DHN is
a standard baseline row.

Lists: the HashNet authors' own (thuml/HashNet, commit 85387b81, caffe/data/imagenet/), committed
as data_lists/imagenet100/{train,test,database}.txt.gz (data_lists/README.md): 100 ImageNet
classes, one label per image; 13,000 training images and a 128,503-image database from the ILSVRC
2012 training set (`image/<wnid>_<n>.JPEG`; the training images are in the database), and the
5,000 ILSVRC 2012 validation images of those classes as queries (`val_image/ILSVRC2012_val_*.JPEG`).
Their `./data/imagenet/` prefix is rewritten to --root, which must hold `image/` and `val_image/`.

Protocol (HashNet's caffe/models/predict/imagenet/predict_parallel.py): MAP@1000 over sign codes
of the centre crop; a query with relevant images in the database but none in the top 1,000 counts
as AP 0 (zero_hit "zero", reproduce.evaluation.protocols.PROTOCOLS; their code leaves out only queries with nothing relevant in the whole
database, which on these lists is none). Bit lengths 16, 32, 48, 64.

The command (`python -m reproduce.imagenet100`, see `main`): DHN on ImageNet-100, from nothing to
results/imagenet100/.
"""
from ..pipeline.reproduction import Preset, run_preset
from .common import DATA_LISTS, published_split

NAME = "imagenet100"
NUM_LABELS = 100
BITS = (16, 32, 48, 64)            # HashNet's table
PUBLISHED_PREFIX = "./data/imagenet/"


def make_lists(config, lists_dir):
    return published_split(DATA_LISTS / NAME, PUBLISHED_PREFIX, NUM_LABELS, lists_dir)


PRESET = Preset(NAME, "ImageNet-100", NUM_LABELS, make_lists, bits=BITS)


def main(argv=None):
    """`python -m reproduce.imagenet100`: the whole reproduction on this dataset."""
    run_preset(PRESET, argv)
