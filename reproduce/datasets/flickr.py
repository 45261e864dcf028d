"""Flickr (MIRFlickr-25k) lists from the official annotation folder.

The annotation folder `mirflickr25k_annotations_v080/` holds 38 concept files, each a list of
1-based image numbers, one per line: 24 "potential" labels (`animals.txt`, ...) and 14 "relevant"
ones (`baby_r1.txt`, ...), plus a README.txt. Image N is `mirflickr/imN.jpg` in the image archive,
so the dataset root is the folder that holds `mirflickr/`.

Protocol (paper: 1,000 queries, 4,000 training images, the rest as database; official_settings.md
"Data protocols"): C = 38 labels in `LABEL_NAMES` order; the queries and then the training images
are drawn uniformly from the images that carry at least one label (an image without any label is
never relevant to anything, so as a query it would be left out of MAP and as a training image it
is only ever a dissimilar pair); database = all 24,000 non-query images, including the training
images and the unlabeled ones, by analogy with the DNNH/DHN CIFAR-10 protocol the paper follows.

The command (`python -m reproduce.flickr`, see `main`): DHN on MIRFlickr-25k, from nothing to results/flickr/.
"""
import dataclasses
import os
from pathlib import Path

import numpy as np

from ..cli import POSITIVE
from ..data.lists import ImageList
from ..errors import UserError
from ..pipeline.reproduction import Preset, run_preset
from ..utils.fileio import refuse_special
from .common import rank_candidates, split_bit_generator, write_split

NAME = "flickr"
POTENTIAL_LABELS = ("animals", "baby", "bird", "car", "clouds", "dog", "female", "flower", "food",
                    "indoor", "lake", "male", "night", "people", "plant_life", "portrait",
                    "river", "sea", "sky", "structures", "sunset", "transport", "tree", "water")
RELEVANT_LABELS = ("baby_r1", "bird_r1", "car_r1", "clouds_r1", "dog_r1", "female_r1",
                   "flower_r1", "male_r1", "night_r1", "people_r1", "portrait_r1", "river_r1",
                   "sea_r1", "tree_r1")
# Column order (ours, the paper gives none): the 24 potential labels, then the 14 "_r1" ones,
# each group in the alphabetical order of its file names.
LABEL_NAMES = POTENTIAL_LABELS + RELEVANT_LABELS
NUM_LABELS = len(LABEL_NAMES)  # 38, as the paper says
SPLIT_SEED = 2016  # ours (the year of the paper): the authors did not publish their split or seed
NUM_IMAGES = 25000
QUERY_SIZE = 1000
TRAIN_SIZE = 4000
ALLOWED_EXTRA = ("README.txt",)  # shipped in the official annotation archive; not a concept


def image_path(number):
    """Relative path of 1-based image `number`: `mirflickr/im<N>.jpg`."""
    return f"mirflickr/im{number}.jpg"


def read_annotations(annotation_dir, num_images=NUM_IMAGES):
    """The annotation folder -> labels (num_images x 38 uint8), row N-1 = image N.

    Refused with a UserError naming the file (and line): a missing concept file, a file in the
    folder that is neither a concept file nor README.txt (dot-files excepted), a line that is not
    an image number, a number outside 1..num_images. A number listed twice counts once.
    """
    folder = Path(annotation_dir)
    if not folder.is_dir():
        raise UserError(f"{folder}: not a folder (expected the MIRFlickr-25k annotation folder "
                        "mirflickr25k_annotations_v080)")
    expected = {name + ".txt" for name in LABEL_NAMES}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue  # .DS_Store and the like, left by archive tools
        if entry.name not in expected and entry.name not in ALLOWED_EXTRA:
            raise UserError(f"{entry}: unknown file in the annotation folder (expected the "
                            f"{NUM_LABELS} concept files and README.txt)")
    labels = np.zeros((num_images, NUM_LABELS), dtype=np.uint8)
    for c, name in enumerate(LABEL_NAMES):
        path = folder / f"{name}.txt"
        refuse_special(path, "concept file")
        try:
            lines = path.read_text(encoding="ascii").split("\n")   # not splitlines: \v, \f are no line ends
        except FileNotFoundError:
            raise UserError(f"{path}: missing concept file") from None
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"{path}: cannot read as a list of image numbers ({e})") from None
        for lineno, line in enumerate(lines, 1):
            text = line.strip()
            if not text:
                continue
            if not text.isdigit() or len(text) > 9:
                raise UserError(f"{path}:{lineno}: {text[:40]!r} is not an image number")
            number = int(text)
            if not 1 <= number <= num_images:
                raise UserError(f"{path}:{lineno}: image number {number} is outside 1..{num_images}")
            labels[number - 1, c] = 1
    return labels


def make_split(labels, seed=SPLIT_SEED, query_size=QUERY_SIZE, train_size=TRAIN_SIZE):
    """Sorted int64 row indices {"query", "train", "database"} (see the module docstring).

    The labeled images (at least one label), in increasing order, are ranked by one raw PCG64
    draw each (`common.rank_candidates`): the first query_size are queries, the next train_size
    training images. Database = every non-query image.
    """
    labels = np.asarray(labels)
    labeled = np.flatnonzero(labels.any(axis=1))
    if len(labeled) < query_size + train_size:
        raise UserError(f"Flickr annotations: {len(labeled)} labeled images, fewer than the "
                        f"{query_size} + {train_size} needed")
    ranked = rank_candidates(split_bit_generator(seed), labeled)
    query = np.sort(ranked[:query_size])
    train = np.sort(ranked[query_size:query_size + train_size])
    return {"query": query, "train": train,
            "database": np.setdiff1d(np.arange(len(labels)), query)}


def build_lists(annotation_dir, out_dir, seed=SPLIT_SEED, overwrite=False,
                num_images=NUM_IMAGES, query_size=QUERY_SIZE, train_size=TRAIN_SIZE):
    """Write train.txt (4,000), query.txt (1,000), database.txt (24,000) into out_dir.

    Paths `mirflickr/im<N>.jpg` are relative to the folder holding `mirflickr/`.
    Returns {"train", "query", "database": ImageList}.
    """
    labels = read_annotations(annotation_dir, num_images)
    images = ImageList([image_path(n) for n in range(1, num_images + 1)], labels,
                       str(annotation_dir))
    split = make_split(labels, seed, query_size, train_size)
    lists = {name: images.subset(split[name]) for name in ("train", "query", "database")}
    write_split(lists, out_dir, overwrite=overwrite)
    return lists


# -------------------------------------------------------------------------------- the command
SMOKE_SIZES = dict(query_size=10, train_size=32)


def add_arguments(p):
    g = p.add_argument_group("MIRFlickr-25k")
    g.add_argument("--annotations", default=None,
                   help="annotation folder (default DIR/mirflickr25k_annotations_v080)")
    g.add_argument("--num-images", type=POSITIVE, default=NUM_IMAGES, help="images in the collection (25,000)")


@dataclasses.dataclass(frozen=True)
class Options:
    """The options of add_arguments."""
    annotations: str | None = None
    num_images: int = NUM_IMAGES


def make_lists(config, lists_dir):
    o = config.options
    annotations = o.annotations or os.path.join(config.root, "mirflickr25k_annotations_v080")
    sizes = SMOKE_SIZES if config.smoke else {}
    return build_lists(annotations, lists_dir, overwrite=True, num_images=o.num_images, **sizes)


PRESET = Preset(NAME, "Flickr", NUM_LABELS, make_lists, add_arguments, options=Options)


def main(argv=None):
    """`python -m reproduce.flickr`: the whole reproduction on this dataset."""
    run_preset(PRESET, argv)
