"""The prepared image cache, the counterpart of Caffe's convert_imageset LMDB: every image of a list
decoded and resized once in an HDF5 file, so that the loader only crops, mirrors and normalizes and
never starves the GPU. The build is resumable (it fills `<cache>.partial` and renames it when
complete) and bound to its list by a digest.

What is stored depends on the image convention (reproduce.data.preprocessing), recorded in the
attribute `preprocessing` and checked on every open, so that a cache of one convention is never
read by the other:
  caffe        `images` uint8 N x 256 x 256 x 3, BGR (HWC, as a cv::Mat after cv::resize);
               caches written before the attribute existed are of this convention.
  torchvision  `images` variable-length uint8 N (each the flattened H x W x 3 RGB output of
               transforms.Resize(256): shorter side 256, aspect ratio kept) and `shapes` int32
               N x 3 — the exact pixels the PIL transforms continue from, never a square warp.
"""
import contextlib
import hashlib
import os
import sys

import h5py
import numpy as np
import torch
from tqdm import tqdm

from ..errors import UserError
from ..utils.fileio import make_folder, require_free_space
from ..utils.signals import check_signal, deferred_signals, unblock_signals
from .images import check_images_exist
from .lists import format_list
from .preprocessing import CAFFE, Preprocessing
from .transforms import NEW_SIZE

CACHE_FORMAT = "reproduce-image-cache/1"


def list_digest(image_list):
    """sha1 of the list's canonical text (paths and labels): what a cache is bound to."""
    return hashlib.sha1(format_list(image_list.paths, image_list.labels).encode()).hexdigest()


class _ResizedImages(torch.utils.data.Dataset):
    """Item j = (index[j], resized H x W x 3 uint8) — decoding in loader workers while the cache fills."""

    def __init__(self, image_list, root, index, preprocessing=CAFFE):
        self.image_list, self.root, self.index = image_list, root, index
        self.convention = Preprocessing(preprocessing)

    def __len__(self):
        return len(self.index)

    def __getitem__(self, j):
        i = int(self.index[j])
        return i, self.convention.load_resized(self.image_list, self.root, i)


def build_cache(image_list, root, cache_path, workers=2, progress=True, images=None, attrs=None,
                preprocessing=CAFFE):
    """Decode and resize every image of `image_list` once into `cache_path` (HDF5), as the image
    convention `preprocessing` ("caffe" or "torchvision", see the module docstring) resizes.

    Datasets: `images` (caffe: uint8 N x 256 x 256 x 3 BGR; torchvision: vlen uint8 N with
    `shapes` N x 3), `labels` uint8 N x C, `done` bool N.
    images: the identity hex of the list's images (reproduce.pipeline.identity.images_identity: root,
    sizes, mtimes), recorded as the attribute `images` and checked by open_cache; attrs: further
    attributes (the plan's job identity). An existing complete cache is checked against the list
    (and images) and reused; an interrupted build (`<cache_path>.partial`) of the same list and
    images resumes where it stopped, and one left unreadable (a kill -9 while HDF5 wrote its
    header) is started again.
    """
    if os.path.exists(cache_path):
        open_cache(cache_path, image_list, images, preprocessing).close()
        return cache_path
    partial = cache_path + ".partial"
    todo = _prepare_partial(image_list, root, partial, dict(attrs or {}, images=images), preprocessing)
    check_images_exist(image_list.subset(todo), root)
    # The workers fork before the partial file is opened for writing: a forked worker would hold
    # its descriptor, and with it HDF5's file lock, for as long as it lives.
    with _decoding_workers(_ResizedImages(image_list, root, todo, preprocessing), workers) as decoded, \
            h5py.File(partial, "r+") as f:
        images, done, shapes = f["images"], f["done"], f.get("shapes")
        n = len(image_list)
        for k, (i, img) in enumerate(tqdm(decoded, total=len(todo), desc=f"caching {os.path.basename(cache_path)}",
                                          unit="img", disable=not progress, initial=n - len(todo))):
            check_signal()          # a signal that arrived while the loader waited (deferred there)
            img = img.numpy()
            if shapes is None:
                images[i] = img
            else:                   # variable size: flattened, with its shape beside
                images[i] = img.reshape(-1)
                shapes[i] = img.shape
            done[i] = True
            if k % 1000 == 999:
                f.flush()
    os.replace(partial, cache_path)
    return cache_path


def _prepare_partial(image_list, root, partial, attrs, preprocessing=CAFFE):
    """The indices still to decode into `partial`, which is created (or, when unreadable,
    created again) if needed and closed again. attrs: recorded in a new one (None values left
    out); its `images` must be those of an existing one, and its convention `preprocessing`."""
    digest = list_digest(image_list)
    if os.path.exists(partial):
        try:
            with h5py.File(partial, "r") as f:
                if f.attrs.get("list_sha1") != digest or (
                        attrs.get("images") is not None and f.attrs.get("images") != attrs["images"]):
                    raise UserError(f"{partial}: partial cache of another list or other images; remove it "
                                    "to start again")
                if cache_preprocessing(f) != preprocessing:
                    raise UserError(f"{partial}: partial cache of images prepared for the "
                                    f"{cache_preprocessing(f)} convention, not {preprocessing}; remove it "
                                    "to start again")
                return np.flatnonzero(~f["done"][:])
        except BlockingIOError:       # HDF5's file lock: another process is writing it now
            raise UserError(f"{partial}: is being written by another process (a run still "
                            "going?); wait for it, or stop it") from None
        except (OSError, KeyError):
            # Our own temporary file, left unreadable by a process killed mid-write: start again.
            print(f"note: {partial}: unreadable partial cache of an interrupted build; building "
                  "it again from scratch", file=sys.stderr)
            os.remove(partial)
    n = len(image_list)
    make_folder(os.path.dirname(os.path.abspath(partial)), partial)
    # torchvision: a Resize(256) output is 256 x (256 x aspect); 4:3 photographs give 1.33 x the
    # Caffe square, which the estimate allows for (a guard, not a bound)
    per_image = NEW_SIZE * NEW_SIZE * 3 * (1.02 if preprocessing == CAFFE else 1.4)
    require_free_space(partial, int(n * per_image) + (1 << 20))
    with h5py.File(partial, "w") as f:
        f.attrs.update(format=CACHE_FORMAT, list_sha1=digest, list_source=image_list.source,
                       root=os.path.abspath(root), size=NEW_SIZE, preprocessing=preprocessing)
        f.attrs.update({k: v for k, v in attrs.items() if v is not None})
        if preprocessing == CAFFE:
            f.create_dataset("images", (n, NEW_SIZE, NEW_SIZE, 3), dtype=np.uint8,
                             chunks=(1, NEW_SIZE, NEW_SIZE, 3))
        else:
            f.create_dataset("images", (n,), dtype=h5py.vlen_dtype(np.uint8))
            f.create_dataset("shapes", (n, 3), dtype=np.int32)
        f.create_dataset("labels", data=image_list.labels)
        f.create_dataset("done", (n,), dtype=bool)
    return np.arange(n)


@contextlib.contextmanager
def _decoding_workers(dataset, workers):
    """An iterator over `dataset` decoded by `workers` loader processes, which are gone when the
    block ends, also on an error or a signal (a worker left behind after the command exits
    holds the files it inherited). They start with Ctrl-C and SIGTERM held back and unblock them
    in their init, as the training loader's (reproduce.data.batches.make_loader)."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers,
                                         generator=torch.Generator(), worker_init_fn=unblock_signals)
    batches = None
    try:
        with deferred_signals():       # a signal held back here is raised as the block ends,
            batches = iter(loader)     # with the workers started: inside the try
        yield batches
    finally:
        # what the iterator's destructor does, now rather than whenever the traceback that
        # references it is freed (never, when a signal ends the command with os._exit)
        shutdown = getattr(batches, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()


def cache_preprocessing(f):
    """The image convention an open cache (or partial cache) was built for; "caffe" for caches
    of versions before the attribute, which had only that convention."""
    value = f.attrs.get("preprocessing", CAFFE)
    return value.decode() if isinstance(value, bytes) else str(value)


def open_cache(cache_path, image_list, images=None, preprocessing=CAFFE):
    """Open a complete cache read-only, checking that it was built from `image_list` (and, given
    their identity hex `images`, from these images: the same root, sizes and mtimes) for the
    image convention `preprocessing`."""
    try:
        f = h5py.File(cache_path, "r")
    except OSError:
        raise UserError(f"{cache_path}: not a readable HDF5 image cache (truncated?)") from None
    if f.attrs.get("format") != CACHE_FORMAT or "images" not in f:
        f.close()
        raise UserError(f"{cache_path}: not an image cache written by reproduce")
    if f.attrs.get("list_sha1") != list_digest(image_list) or len(f["images"]) != len(image_list):
        f.close()
        raise UserError(f"{cache_path}: cache was built from another list than {image_list.source} "
                        "(remove it to rebuild)")
    if cache_preprocessing(f) != preprocessing:
        have = cache_preprocessing(f)
        f.close()
        raise UserError(f"{cache_path}: cache of images prepared for the {have} convention, but this "
                        f"backbone needs the {preprocessing} one (remove it, or give another --cache)")
    if not f["done"][:].all():
        f.close()
        raise UserError(f"{cache_path}: cache is incomplete; rebuild it")
    if images is not None and f.attrs.get("images") != images:
        built = f.attrs.get("root")
        f.close()
        raise UserError(f"{cache_path}: cache was built from other images (under {built}, or before "
                        "they changed) than the list's now; remove it to rebuild")
    return f
