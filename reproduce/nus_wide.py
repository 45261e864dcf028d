"""`python -m reproduce.nus_wide --root DIR (--authors-lists D | --metadata D)`: DHN on NUS-WIDE-21.

The images must be obtained by the user (NUS-WIDE is distributed by NUS as Flickr URLs and image
archives). Lists either from the authors' own files (train.txt 10,500 / test.txt 2,100 /
database.txt 149,736, absolute paths from their machine, rewritten to DIR) or built from the
official metadata with the paper's protocol (21 most frequent concepts, 100 per concept as
queries, 500 per concept for training). MAP@5000.
"""
from .datasets import nus_wide as ds
from .errors import UserError, run_cli
from .reproduction import Preset, main

SMOKE_PER_LABEL = dict(query_per_label=1, train_per_label=2)


def add_arguments(p):
    g = p.add_argument_group("NUS-WIDE (one of the two)")
    g.add_argument("--authors-lists", default=None, help="folder with the authors' train.txt, test.txt, database.txt")
    g.add_argument("--strip-prefix", default=None,
                   help="path prefix of the authors' lists to replace by --root (default: their common folder)")
    g.add_argument("--metadata", default=None,
                   help="official NUS-WIDE metadata folder (ImageList/, Groundtruth/AllLabels/, Concepts81.txt)")


def make_lists(args, lists_dir):
    if bool(args.authors_lists) == bool(args.metadata):
        raise UserError("NUS-WIDE: give exactly one of --authors-lists DIR and --metadata DIR")
    if args.authors_lists:
        return ds.import_authors_lists(args.authors_lists, lists_dir, strip_prefix=args.strip_prefix, overwrite=True)
    sizes = SMOKE_PER_LABEL if args.smoke else {}
    return ds.build_from_metadata(args.metadata, lists_dir, overwrite=True, **sizes)


PRESET = Preset(ds.NAME, "NUS-WIDE", ds.NUM_LABELS, make_lists, add_arguments)

if __name__ == "__main__":
    run_cli(lambda argv: main(PRESET, argv))
