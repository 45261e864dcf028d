"""MS-COCO as the HashNet benchmark (Cao, Long, Wang, Yu, ICCV 2017) defines it, where DHN is a
standard baseline row.

Lists: the HashNet authors' own (thuml/HashNet, commit 85387b81, caffe/data/coco/), committed as
data_lists/coco/{train,test,database}.txt.gz (data_lists/README.md): MS-COCO 2014 images
(`train2014/COCO_train2014_*.jpg`, `val2014/COCO_val2014_*.jpg`), 80 labels, multi-label; 10,000
training images, 5,000 queries and a 112,218-image database. As published, the database is every
image but the training set, so it contains the queries (and a query finds itself). Their
`./data/coco/` prefix is rewritten to --root, which must hold `train2014/` and `val2014/`.

Protocol (HashNet's caffe/models/predict/coco/predict_parallel.py): MAP@5000 over sign codes of
the centre crop; a query with relevant images in the database but none in the top 5,000 counts as
AP 0 (zero_hit "zero"; reproduce.evaluation.protocols.PROTOCOLS). Bit lengths 16, 32, 48, 64.

The command (`python -m reproduce.coco`, see `main`): DHN on MS-COCO, from nothing to
results/coco/.
"""
from ..pipeline.reproduction import Preset, run_preset
from .common import DATA_LISTS, published_split

NAME = "coco"
NUM_LABELS = 80
BITS = (16, 32, 48, 64)            # HashNet's table
PUBLISHED_PREFIX = "./data/coco/"


def make_lists(config, lists_dir):
    return published_split(DATA_LISTS / NAME, PUBLISHED_PREFIX, NUM_LABELS, lists_dir)


PRESET = Preset(NAME, "MS-COCO", NUM_LABELS, make_lists, bits=BITS)


def main(argv=None):
    """`python -m reproduce.coco`: the whole reproduction on this dataset."""
    run_preset(PRESET, argv)
