"""Training batches exactly as the authors' ImageData layer (shuffle: true) delivers them.

`BatchOrder`: which images, crop offsets and mirror flags make global batch t. It is a pure
function of (seed, t), so the batch sequence depends on neither the number of loader workers nor
the number of processes, and a resumed run sees the batches an uninterrupted one would. The order
follows image_data_layer.cpp: the list is shuffled at start and again at the end of every pass, and
a batch that reaches the end of a pass continues with the next shuffle. `TrainBatches` crops,
mirrors and subtracts the mean (reproduce.data.transforms) — or, for the torchvision backbones,
flips, crops and normalizes with torchvision's transforms (reproduce.data.torchvision_transforms) —
from the image cache (reproduce.data.cache) or the image files; `checked_batches` turns a loader's error messages and
held-back signals into the errors they are.
"""
import functools
import os

import h5py
import numpy as np
import torch

from ..errors import UserError
from ..utils.signals import check_signal, unblock_signals
from .preprocessing import CAFFE, TORCHVISION, Preprocessing
from .transforms import CROP_SIZE, NEW_SIZE, mean_array


class BatchOrder:
    """Global batch t -> (indices B, crop draws B x 2, mirror flags B), from the seed.

    Each pass over the list is a permutation drawn from (seed, pass); the crops and mirrors of
    batch t from (seed, t), one generator for both conventions (reproduce.data.preprocessing):
    caffe: data_transformer.cpp draws h_off, w_off uniformly in 0..256-crop_size (0..29 for the
    authors' 227) and mirror with probability 1/2 for every image; torchvision: the resized
    images differ in size, so the draws are fractions u in [0, 1) per axis, which
    reproduce.data.torchvision_transforms.crop_offsets turns into RandomCrop's uniform offsets of
    each image, and the mirror flags are RandomHorizontalFlip's (p = 1/2).
    """

    def __init__(self, num_images, batch_size, seed, crop=True, mirror=True, crop_size=CROP_SIZE,
                 preprocessing=CAFFE):
        self.n, self.batch_size, self.seed = num_images, batch_size, seed
        self.crop, self.mirror = crop, mirror
        self.crop_size, self.preprocessing = crop_size, preprocessing
        if preprocessing == TORCHVISION and not crop:
            raise ValueError("the torchvision convention crops at random when training (RandomCrop)")

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
        if self.preprocessing == TORCHVISION:
            offsets = rng.random(size=(self.batch_size, 2))
        else:
            offsets = rng.integers(0, NEW_SIZE - self.crop_size + 1, size=(self.batch_size, 2))
        mirror = rng.integers(0, 2, size=self.batch_size).astype(bool)
        if not self.crop:
            offsets[:] = (NEW_SIZE - self.crop_size) // 2
        if not self.mirror:
            mirror[:] = False
        return index, offsets, mirror


class TrainBatches(torch.utils.data.Dataset):
    """Item i = this process's share of global batch `start + i`, transformed as the backbone's
    TRAIN phase.

    `transform`: a reproduce.data.preprocessing.Preprocessing, or a mean (values or mean image)
    for the authors' Caffe transform at crop 227. Returns (float32 b x 3 x crop x crop — caffe:
    BGR minus mean, torchvision: normalized RGB —, uint8 labels b x C, error message or "") with
    b = B / world_size: process `rank` takes rows rank*b ... (rank+1)*b - 1 of every global
    batch. Images come from a cache (`cache_path`) or, without one, are decoded and resized from
    `root` on the fly.
    """

    def __init__(self, image_list, order, transform, start, stop, cache_path=None, root=None, rank=0, world_size=1,
                 targets=None):
        if order.batch_size % world_size:
            raise UserError(f"batch size {order.batch_size} is not divisible by {world_size} processes")
        if not isinstance(transform, Preprocessing):
            transform = Preprocessing(CAFFE, CROP_SIZE, mean_array(transform))
        if transform.name != order.preprocessing or transform.crop_size != order.crop_size:
            raise ValueError(f"batch order drawn for {order.preprocessing} crops of {order.crop_size}, "
                             f"transform {transform.name} of {transform.crop_size}")
        self.image_list, self.order, self.transform = image_list, order, transform
        self.start, self.stop, self.cache_path, self.root = start, stop, cache_path, root
        # rows yielded with each batch: the labels, or a method's targets (n x T, e.g. CNNH's codes)
        self.targets = image_list.labels if targets is None else targets
        b = order.batch_size // world_size
        self.share = slice(rank * b, (rank + 1) * b)
        self._file, self._pid = None, None

    def __len__(self):
        return max(0, self.stop - self.start)

    def _images(self, index):
        """The resized images of `index`: caffe an N x 256 x 256 x 3 array, torchvision a list."""
        if self.cache_path is None:
            resized = [self.transform.load_resized(self.image_list, self.root, int(i)) for i in index]
            return np.stack(resized) if self.transform.caffe else resized
        if self._pid != os.getpid():   # one HDF5 handle per loader process, opened after the fork
            self._file, self._pid = h5py.File(self.cache_path, "r"), os.getpid()
        images = self._file["images"]
        if not self.transform.caffe:   # variable sizes: flattened, shapes beside (data.cache)
            shapes = self._file["shapes"]
            return [images[int(i)].reshape(tuple(shapes[int(i)])) for i in index]
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
            x = self.transform.train_batch(self._images(index), offsets, mirror)
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
