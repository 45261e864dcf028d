"""`python -m reproduce.flickr --root DIR`: DHN on MIRFlickr-25k, from nothing to results/flickr/.

The user downloads mirflickr25k.zip and the annotation archive (mirflickr25k_annotations_v080)
from the MIRFLICKR site and unpacks both in DIR. 38 labels (24 potential + 14 `_r1`), 1,000
queries, 4,000 training images, database = the other 24,000 images. The paper does not give the
MAP cut-off for Flickr: we use MAP@5000 (reproduce.datasets.flickr.MAP_TOPK), recorded in every
metrics.json.
"""
import os

from .datasets import flickr as ds
from .reproduction import Preset, main
from .errors import run_cli

SMOKE_SIZES = dict(query_size=10, train_size=32)


def add_arguments(p):
    g = p.add_argument_group("MIRFlickr-25k")
    g.add_argument("--annotations", default=None,
                   help="annotation folder (default DIR/mirflickr25k_annotations_v080)")
    g.add_argument("--num-images", type=int, default=ds.NUM_IMAGES, help="images in the collection (25,000)")


def make_lists(args, lists_dir):
    annotations = args.annotations or os.path.join(args.root, "mirflickr25k_annotations_v080")
    sizes = SMOKE_SIZES if args.smoke else {}
    return ds.build_lists(annotations, lists_dir, overwrite=True, num_images=args.num_images, **sizes)


PRESET = Preset(ds.NAME, "Flickr", ds.NUM_LABELS, make_lists, add_arguments)

if __name__ == "__main__":
    run_cli(lambda argv: main(PRESET, argv))
