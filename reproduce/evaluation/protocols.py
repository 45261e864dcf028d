"""The evaluation protocol of each dataset with a preset, as one static table.

A protocol is reproduce.evaluation.records.protocol's dict: the MAP cut-off (`topk`, None: the whole
database), how a query without hits in the top R counts (`zero_hit`), ties, the Hamming radius and
the top-N grid. The paper's datasets and the HashNet benchmarks take their authors' conventions;
any other dataset (reproduce.custom, reproduce.compare --dataset NAME) gives its cut-off.
"""
import re

from ..errors import UserError
from .records import protocol

PROTOCOLS = {
    # DNNH/DHN: MAP over the whole database (official_settings.md "Data protocols").
    "cifar10": protocol(topk=None),
    # The authors' NUS-WIDE evaluation: MAP@5000 (official_settings.md).
    "nus_wide": protocol(topk=5000),
    # The paper does not say its Flickr cut-off (official_settings.md). Our choice: 5000, the
    # cut-off the same authors' code uses for the other multi-label dataset (NUS-WIDE); on a
    # 24,000-image database it covers about a fifth of the ranking. Recorded with every result.
    "flickr": protocol(topk=5000),
    # HashNet's caffe/models/predict/imagenet/predict_parallel.py: R = 1000, and a query with
    # relevant images in the database but none in the top R counts as AP 0.
    "imagenet100": protocol(topk=1000, zero_hit="zero"),
    # HashNet's caffe/models/predict/coco/predict_parallel.py: R = 5000, the same zero-hit rule.
    "coco": protocol(topk=5000, zero_hit="zero"),
}
FROM_PRESET = object()        # dataset_protocol's topk when the dataset's preset decides
DATASET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")   # a name that is also a folder name


def check_dataset_name(name, option):
    """UserError naming `option` unless `name` can title tables and name files and folders."""
    if not DATASET_NAME.fullmatch(name):
        raise UserError(f"{option} {name!r}: use letters, digits, '_', '.' and '-' (it names "
                        "files and folders), at most 64 characters")
    return name


def dataset_protocol(dataset, topk=FROM_PRESET):
    """The evaluation protocol of `dataset`: its preset's (PROTOCOLS), unless `topk` (an int, or
    None for the whole database) is given; a dataset without a preset needs `topk`."""
    preset = PROTOCOLS.get(dataset)
    if topk is FROM_PRESET:
        if preset is None:
            raise UserError(f"dataset {dataset!r} has no preset protocol: give its MAP cut-off "
                            "(--topk R, or --topk all)")
        return dict(preset)
    return dict(preset or protocol(), topk=topk)
