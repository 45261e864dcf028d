"""Training batches exactly as the authors' ImageData layer (shuffle: true) delivers them.

Two parts:
- A prepared cache, the counterpart of Caffe's convert_imageset LMDB: every image of a list decoded
  and resized once to 256 x 256 uint8 BGR (HWC, as a cv::Mat) in an HDF5 file, so that the loader
  only crops, mirrors and subtracts the mean and never starves the GPU. The build is resumable
  (it fills `<cache>.partial` and renames it when complete) and bound to its list by a digest.
- `BatchOrder`: which images, crop offsets and mirror flags make global batch t. It is a pure
  function of (seed, t), so the batch sequence depends on neither the number of loader workers
  nor the number of processes, and a resumed run sees the batches an uninterrupted one would.
  The order follows image_data_layer.cpp: the list is shuffled at start and again at the end of
  every pass, and a batch that reaches the end of a pass continues with the next shuffle.
"""
import contextlib
import functools
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
from .lists import format_list
from .transforms import CROP_SIZE, NEW_SIZE, read_image_bgr, resize_linear, train_transform_batch

CACHE_FORMAT = "reproduce-image-cache/1"


def list_digest(image_list):
    """sha1 of the list's canonical text (paths and labels): what a cache is bound to."""
    return hashlib.sha1(format_list(image_list.paths, image_list.labels).encode()).hexdigest()


_WARNED = set()


def warn_outside_root(image_list, root):
    """Paths that are absolute or climb out of `root` with `..` are read as they are (they may be
    a list from another machine): one warning per list and root, with their count."""
    outside = image_list.outside_root
    if outside and (image_list.source, os.fspath(root)) not in _WARNED:
        _WARNED.add((image_list.source, os.fspath(root)))
        print(f"warning: {outside} of the {len(image_list)} paths of {image_list.source} are "
              f"absolute or leave the dataset root {root} with '..'; they are read as they are",
              file=sys.stderr)


def check_images_exist(image_list, root):
    """UserError naming the list file, line and path of the first missing image, and the count
    (after warn_outside_root)."""
    warn_outside_root(image_list, root)
    missing = [i for i, p in enumerate(image_list.paths) if not os.path.isfile(os.path.join(root, p))]
    if missing:
        first = ", ".join(os.path.join(root, image_list.paths[i]) for i in missing[:3])
        raise UserError(f"{image_list.where(missing[0])}: image {os.path.join(root, image_list.paths[missing[0]])} "
                        f"not found ({len(missing)} of {len(image_list)} images of the list are missing "
                        f"under {root}; first: {first})")


def load_resized(image_list, root, i):
    """Entry i of the list decoded as BGR uint8 and resized to 256 x 256 (Caffe's ReadImageToCVMat)."""
    path = os.path.join(root, image_list.paths[i])
    try:
        return resize_linear(read_image_bgr(path), NEW_SIZE, NEW_SIZE)
    except UserError as e:
        raise UserError(f"{image_list.where(i)}: {e}") from None


class _ResizedImages(torch.utils.data.Dataset):
    """Item j = (index[j], 256 x 256 x 3 uint8) — decoding in loader workers while the cache fills."""

    def __init__(self, image_list, root, index):
        self.image_list, self.root, self.index = image_list, root, index

    def __len__(self):
        return len(self.index)

    def __getitem__(self, j):
        i = int(self.index[j])
        return i, load_resized(self.image_list, self.root, i)


def build_cache(image_list, root, cache_path, workers=2, progress=True, images=None, attrs=None):
    """Decode and resize every image of `image_list` once into `cache_path` (HDF5).

    Datasets: `images` uint8 N x 256 x 256 x 3 (BGR), `labels` uint8 N x C, `done` bool N.
    images: the identity hex of the list's images (reproduce.pipeline.identity.images_identity: root,
    sizes, mtimes), recorded as the attribute `images` and checked by open_cache; attrs: further
    attributes (the plan's job identity). An existing complete cache is checked against the list
    (and images) and reused; an interrupted build (`<cache_path>.partial`) of the same list and
    images resumes where it stopped, and one left unreadable (a kill -9 while HDF5 wrote its
    header) is started again.
    """
    if os.path.exists(cache_path):
        open_cache(cache_path, image_list, images).close()
        return cache_path
    partial = cache_path + ".partial"
    todo = _prepare_partial(image_list, root, partial, dict(attrs or {}, images=images))
    check_images_exist(image_list.subset(todo), root)
    # The workers fork before the partial file is opened for writing: a forked worker would hold
    # its descriptor, and with it HDF5's file lock, for as long as it lives.
    with _decoding_workers(_ResizedImages(image_list, root, todo), workers) as decoded, \
            h5py.File(partial, "r+") as f:
        images, done = f["images"], f["done"]
        n = len(image_list)
        for k, (i, img) in enumerate(tqdm(decoded, total=len(todo), desc=f"caching {os.path.basename(cache_path)}",
                                          unit="img", disable=not progress, initial=n - len(todo))):
            check_signal()          # a signal that arrived while the loader waited (deferred there)
            images[i] = img.numpy()
            done[i] = True
            if k % 1000 == 999:
                f.flush()
    os.replace(partial, cache_path)
    return cache_path


def _prepare_partial(image_list, root, partial, attrs):
    """The indices still to decode into `partial`, which is created (or, when unreadable,
    created again) if needed and closed again. attrs: recorded in a new one (None values left
    out); its `images` must be those of an existing one."""
    digest = list_digest(image_list)
    if os.path.exists(partial):
        try:
            with h5py.File(partial, "r") as f:
                if f.attrs.get("list_sha1") != digest or (
                        attrs.get("images") is not None and f.attrs.get("images") != attrs["images"]):
                    raise UserError(f"{partial}: partial cache of another list or other images; remove it "
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
    require_free_space(partial, int(n * NEW_SIZE * NEW_SIZE * 3 * 1.02) + (1 << 20))
    with h5py.File(partial, "w") as f:
        f.attrs.update(format=CACHE_FORMAT, list_sha1=digest, list_source=image_list.source,
                       root=os.path.abspath(root), size=NEW_SIZE)
        f.attrs.update({k: v for k, v in attrs.items() if v is not None})
        f.create_dataset("images", (n, NEW_SIZE, NEW_SIZE, 3), dtype=np.uint8,
                         chunks=(1, NEW_SIZE, NEW_SIZE, 3))
        f.create_dataset("labels", data=image_list.labels)
        f.create_dataset("done", (n,), dtype=bool)
    return np.arange(n)


@contextlib.contextmanager
def _decoding_workers(dataset, workers):
    """An iterator over `dataset` decoded by `workers` loader processes, which are gone when the
    block ends, also on an error or a signal (a worker left behind after the command exits
    holds the files it inherited). They start with Ctrl-C and SIGTERM held back and unblock them
    in their init, as the training loader's (make_loader, engine._train_loader)."""
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


def open_cache(cache_path, image_list, images=None):
    """Open a complete cache read-only, checking that it was built from `image_list` (and, given
    their identity hex `images`, from these images: the same root, sizes and mtimes)."""
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
    if not f["done"][:].all():
        f.close()
        raise UserError(f"{cache_path}: cache is incomplete; rebuild it")
    if images is not None and f.attrs.get("images") != images:
        built = f.attrs.get("root")
        f.close()
        raise UserError(f"{cache_path}: cache was built from other images (under {built}, or before "
                        "they changed) than the list's now; remove it to rebuild")
    return f


class BatchOrder:
    """Global batch t -> (indices B, crop offsets B x 2 (h_off, w_off), mirror flags B), from the seed.

    Each pass over the list is a permutation drawn from (seed, pass); the crops and mirrors of
    batch t from (seed, t): data_transformer.cpp draws h_off, w_off uniformly in
    0..256-227 and mirror with probability 1/2 for every image.
    """

    def __init__(self, num_images, batch_size, seed, crop=True, mirror=True):
        self.n, self.batch_size, self.seed = num_images, batch_size, seed
        self.crop, self.mirror = crop, mirror

    @functools.lru_cache(maxsize=4)
    def permutation(self, epoch):
        return np.random.default_rng([self.seed, 0, epoch]).permutation(self.n)

    def indices(self, t):
        """The list positions of global batch t: batch(t)[0], without drawing its crops and
        mirrors (a caller that needs only the images saves the generator of every batch)."""
        start = t * self.batch_size
        epoch, within = divmod(start, self.n)
        if within + self.batch_size <= self.n:     # inside one pass: a slice of its permutation
            return self.permutation(int(epoch))[within:within + self.batch_size].copy()
        pos = np.arange(start, start + self.batch_size)
        epochs, within = np.divmod(pos, self.n)
        index = np.empty(self.batch_size, dtype=np.int64)
        for e in np.unique(epochs):
            sel = epochs == e
            index[sel] = self.permutation(int(e))[within[sel]]
        return index

    def batch(self, t):
        index = self.indices(t)
        rng = np.random.default_rng([self.seed, 1, t])
        offsets = rng.integers(0, NEW_SIZE - CROP_SIZE + 1, size=(self.batch_size, 2))
        mirror = rng.integers(0, 2, size=self.batch_size).astype(bool)
        if not self.crop:
            offsets[:] = (NEW_SIZE - CROP_SIZE) // 2
        if not self.mirror:
            mirror[:] = False
        return index, offsets, mirror


class TrainBatches(torch.utils.data.Dataset):
    """Item i = this process's share of global batch `start + i`, transformed as Caffe's TRAIN phase.

    Returns (float32 b x 3 x 227 x 227 BGR minus mean, uint8 labels b x C, error message or "")
    with b = B / world_size:
    process `rank` takes rows rank*b ... (rank+1)*b - 1 of every global batch. Images come from a
    cache (`cache_path`) or, without one, are decoded and resized from `root` on the fly.
    """

    def __init__(self, image_list, order, mean, start, stop, cache_path=None, root=None, rank=0, world_size=1,
                 targets=None):
        if order.batch_size % world_size:
            raise UserError(f"batch size {order.batch_size} is not divisible by {world_size} processes")
        self.image_list, self.order, self.mean = image_list, order, mean
        self.start, self.stop, self.cache_path, self.root = start, stop, cache_path, root
        # rows yielded with each batch: the labels, or a method's targets (n x T, e.g. CNNH's codes)
        self.targets = image_list.labels if targets is None else targets
        b = order.batch_size // world_size
        self.share = slice(rank * b, (rank + 1) * b)
        self._file, self._pid = None, None

    def __len__(self):
        return max(0, self.stop - self.start)

    def _images(self, index):
        if self.cache_path is None:
            return np.stack([load_resized(self.image_list, self.root, int(i)) for i in index])
        if self._pid != os.getpid():   # one HDF5 handle per loader process, opened after the fork
            self._file, self._pid = h5py.File(self.cache_path, "r"), os.getpid()
        images = self._file["images"]
        out = np.empty((len(index),) + images.shape[1:], dtype=np.uint8)
        for j, i in enumerate(index):
            # One chunk read per image: h5py's fancy indexing (images[list]) is ~50x slower.
            images.read_direct(out, np.s_[int(i)], np.s_[j])
        return out

    def __getitem__(self, i):
        """(x, labels, error): an image that cannot be read comes back as its one-line message
        (naming list, line and path) instead of an exception, so that it reaches the user from a
        loader worker as the same line the main process would print (checked_batches raises it)."""
        index, offsets, mirror = self.order.batch(self.start + i)
        index, offsets, mirror = index[self.share], offsets[self.share], mirror[self.share]
        labels = torch.from_numpy(self.targets[index])
        try:
            x = train_transform_batch(self._images(index), offsets, mirror, self.mean)
        except UserError as e:
            return torch.zeros(0), labels, str(e)
        return x, labels, ""


def checked_batches(items):
    """The items of a loader whose last element is an error message ("" when none; a loader of
    batches of images gives one per image) without that element: the message of the first error
    is raised as the UserError it was in the worker, and a signal that arrived while the loader
    waited (deferred there) is raised before each batch (signals.check_signal). The training and
    encoding loops see plain batches: (images, labels), (indices, images)."""
    for *batch, error in items:
        check_signal()
        message = error if isinstance(error, str) else next((e for e in error if e), "")
        if message:
            raise UserError(message)
        yield tuple(batch)


def make_loader(dataset, workers=2, pin_memory=False):
    """Batches in order with `workers` processes prefetching ahead of the training loop."""
    kwargs = dict(prefetch_factor=4, persistent_workers=False) if workers > 0 else {}
    # An own generator: the loader's worker seeding must not draw from the global RNG, which
    # drives dropout and is restored exactly on --resume.
    return torch.utils.data.DataLoader(dataset, batch_size=None, shuffle=False, num_workers=workers,
                                       pin_memory=pin_memory, generator=torch.Generator(),
                                       worker_init_fn=unblock_signals, **kwargs)
