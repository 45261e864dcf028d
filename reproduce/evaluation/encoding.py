"""Codes and penultimate features of an image list: `encode_list`, the library side of
`python -m reproduce.encode` (see that module for the command and the HDF5 file it writes).

The backbone's image convention (its ArchSpec's preprocessing, reproduce.data.preprocessing)
decides the TEST transform. For the Caffe convention, two image pipelines, both checked against
real Caffe: "imagedata" (Caffe's ImageData layer in the TEST phase, reproduce.data.transforms) and
"pycaffe" (the authors' predict scripts' caffe.Classifier, reproduce.data.pycaffe_pipeline);
--oversample encodes pycaffe's 10 crops and averages the outputs. The torchvision backbones have
one: DeepHash-pytorch's TEST transform (reproduce.data.torchvision_transforms).
"""
import dataclasses
import os

import h5py
import numpy as np
import torch
from tqdm import tqdm

from ..data.batches import checked_batches
from ..data.images import check_images_exist
from ..data.preprocessing import CAFFE, Preprocessing, check_caffe_only, preprocessing_for
from ..data.pycaffe_pipeline import ILSVRC_2012_MEAN_BGR, predict_inputs
from ..data import torchvision_transforms as tv
from ..errors import UserError
from ..model.archs import arch_spec
from ..model.nets import pick_device
from ..utils.fileio import atomic_output, require_free_space
from ..utils.signals import deferred_signals, unblock_signals

CODES_FORMAT = "reproduce-dhn-codes/1"
TEN_CROPS = 10              # caffe.io.oversample: 4 corners + centre, and their mirrors
ROWS_PER_CHUNK = 1024       # HDF5 chunk height of codes/labels (features: 64 rows = 1 MiB)
PIPELINES = ("imagedata", "pycaffe")
# What each pipeline records in the output's attributes.
PIPELINE_RESIZE = {"imagedata": "cv::resize INTER_LINEAR 256x256",
                   "pycaffe": "skimage resize order 1 mode constant 256x256, no anti-aliasing"}
# ... and what the torchvision convention records (its only pipeline is named "torchvision")
TORCHVISION_RESIZE = f"PIL RGB, torchvision Resize({tv.RESIZE_SIZE}) of the shorter side"


@dataclasses.dataclass(frozen=True, eq=False)
class EncodeSettings:
    """How a list is encoded (reproduce.encode's options; the per-dataset jobs' encode settings).

    pipeline: "imagedata" (Caffe's ImageData layer, reproduce.data.transforms) or "pycaffe" (the
    authors' predict scripts, reproduce.data.pycaffe_pipeline); oversample: pycaffe's 10 crops,
    averaged; batch_size: network inputs per forward pass (with oversample, batch_size // 10
    images of 10 crops each); mean: (B, G, R) values or, with imagedata, a (3, 256, 256) mean
    image; None: the pipeline's (imagedata: transform_param mean_value 104,117,123; pycaffe:
    ilsvrc_2012_mean.npy averaged per channel); features: the penultimate features too (or only,
    for a model without hash layer; N x the arch's feature_dim); workers: decoding processes;
    device: None = cuda if available. A torchvision backbone takes the defaults of pipeline,
    oversample and mean only (its convention has none of them)."""
    pipeline: str = "imagedata"
    oversample: bool = False
    batch_size: int = 50
    mean: object = None
    features: bool = False
    workers: int = 2
    device: object = None


class _TestImages(torch.utils.data.Dataset):
    """Item i = (i, float32 3 x crop x crop or 10 x 3 x crop x crop blob, error message or "").

    transform: the backbone's reproduce.data.preprocessing.Preprocessing (its mean: the pycaffe
    pipeline's float64 (3, 1, 1) values with that pipeline). A decode error travels back as a
    message (naming list file, line and path) instead of an exception, so that it reaches the
    user as one line rather than a worker traceback.
    """

    def __init__(self, image_list, root, transform, ten_crops, pipeline="imagedata"):
        self.image_list, self.root, self.transform, self.ten_crops = image_list, root, transform, ten_crops
        self.pipeline = pipeline

    def __len__(self):
        return len(self.image_list)

    def __getitem__(self, i):
        try:
            blob = self._blob(i)
        except UserError as e:
            crop = self.transform.crop_size
            shape = (TEN_CROPS, 3, crop, crop) if self.ten_crops else (3, crop, crop)
            return i, torch.zeros(shape), str(e)
        return i, torch.from_numpy(blob), ""

    def _blob(self, i):
        if self.pipeline == "pycaffe":
            path = os.path.join(self.root, self.image_list.paths[i])
            try:
                blob = predict_inputs(path, self.transform.mean.ravel(), oversample=self.ten_crops,
                                      crop_size=self.transform.crop_size)
            except UserError as e:
                raise UserError(f"{self.image_list.where(i)}: {e}") from None
            return blob if self.ten_crops else blob[0]
        return self.transform.test_blob(self.transform.load_resized(self.image_list, self.root, i), self.ten_crops)


def encode_list(model, image_list, root, out_path, settings=EncodeSettings(), *, attrs=None, overwrite=False,
                progress=True):
    """Encode every image of `image_list` (paths relative to `root`) into the HDF5 file `out_path`
    as `settings` (EncodeSettings) say.

    model: a DHNNet, moved to the settings' device and run in eval mode (its train/eval mode is
    restored after); its `arch` decides the image convention. Codes are written when it has a
    hash layer, the penultimate features (model.features) when settings.features (at least one
    of the two is required). attrs: further HDF5 attributes
    (checkpoint path and sha1, dataset, split ...); None values are skipped. Checks that every
    image exists before anything is written. Returns out_path.
    """
    s = settings
    has_hash = getattr(model, "has_codes", getattr(model, "hash_layer", None) is not None)
    if not has_hash and not s.features:
        raise UserError(f"{attrs.get('checkpoint', 'model') if attrs else 'model'}: no hash layer "
                        "(an ImageNet model?); only its features can be encoded: add --features")
    if len(image_list) == 0:
        raise UserError(f"{image_list.source}: the list is empty")
    if s.batch_size < 1:
        raise UserError(f"batch size must be at least 1, got {s.batch_size}")
    if s.pipeline not in PIPELINES:
        raise UserError(f"pipeline must be one of {', '.join(PIPELINES)}, got {s.pipeline!r}")
    spec = arch_spec(model.arch)
    if spec.preprocessing != CAFFE:
        check_caffe_only(model.arch, **{"--pipeline pycaffe": s.pipeline == "pycaffe", "--oversample": s.oversample,
                                        "--mean": s.mean})
        transform = preprocessing_for(model.arch)
    elif s.pipeline == "pycaffe":
        # Kept in float64: Transformer.preprocess subtracts the float64 mean from float32 pixels.
        mean = np.asarray(ILSVRC_2012_MEAN_BGR if s.mean is None else s.mean, dtype=np.float64)
        if mean.size != 3:
            raise UserError("the pycaffe pipeline subtracts a per-channel mean (as the authors' "
                            "Classifier did); average the mean image per channel first")
        transform = Preprocessing(CAFFE, spec.crop_size, mean.reshape(3, 1, 1))
    else:
        transform = preprocessing_for(model.arch, s.mean)
    check_images_exist(image_list, root)
    device = pick_device(s.device) if not isinstance(s.device, torch.device) else s.device
    was_training = model.training
    try:
        return _encode(model.to(device).eval(), image_list, root, out_path,
                       dataclasses.replace(s, mean=transform, device=device), attrs, overwrite, progress)
    finally:
        model.train(was_training)


@torch.no_grad()
def _encode(model, image_list, root, out_path, settings, attrs, overwrite, progress):
    """encode_list's work, its settings' mean resolved to the backbone's Preprocessing and device
    to a torch.device."""
    s, device, transform = settings, settings.device, settings.mean
    has_hash, features = model.has_codes, s.features
    feature_dim = arch_spec(model.arch).feature_dim
    images_per_batch = max(1, s.batch_size // TEN_CROPS) if s.oversample else s.batch_size
    loader = torch.utils.data.DataLoader(_TestImages(image_list, root, transform, s.oversample, s.pipeline),
                                         batch_size=images_per_batch, shuffle=False,
                                         num_workers=s.workers, pin_memory=device.type == "cuda",
                                         worker_init_fn=unblock_signals)
    n, bits = len(image_list), (model.bits if has_hash else 0)
    _check_free_space(out_path, image_list, bits, feature_dim if features else 0)
    with atomic_output(out_path, overwrite=overwrite) as tmp, h5py.File(tmp, "w") as f:
        f.attrs.update(_attributes(model, image_list, root, transform, s.oversample, has_hash, attrs, s.pipeline))
        rows = min(n, ROWS_PER_CHUNK)
        codes = f.create_dataset("codes", (n, bits), "float32", chunks=(rows, bits)) if has_hash else None
        feats = (f.create_dataset("features", (n, feature_dim), "float32", chunks=(min(n, 64), feature_dim))
                 if features else None)
        labels = image_list.labels.astype(np.uint8)
        f.create_dataset("labels", data=labels, chunks=(rows, labels.shape[1]))
        f.create_dataset("paths", data=list(image_list.paths), dtype=h5py.string_dtype("utf-8"))
        done = 0
        with tqdm(total=n, unit="img", desc="encode", disable=not progress) as bar:
            with deferred_signals():            # the workers start here (signals.deferred_signals)
                batches = checked_batches(iter(loader))
            for index, blob in batches:
                assert index[0] == done, "loader out of order"
                # the penultimate features (fc7 after relu7, or ResNet-50's pooled 2048)
                feat = model.features(blob.to(device).flatten(0, blob.dim() - 4))
                b = len(index)
                if features:
                    feats[done:done + b] = _finite(_crop_average(feat, b), image_list, done, "features")
                if has_hash:
                    codes[done:done + b] = _finite(_crop_average(model.hash(feat), b), image_list, done, "codes")
                done += b
                bar.update(b)
    return out_path


def _finite(values, image_list, first, what):
    """values (b x D) as numpy, after checking they are finite (UserError naming the image)."""
    values = values.cpu().numpy()
    bad = np.flatnonzero(~np.isfinite(values).all(axis=1))
    if bad.size:
        raise UserError(f"{image_list.where(first + int(bad[0]))}: the network gives non-finite "
                        f"{what} for this image ({bad.size} of the batch); nothing was written")
    return values


def _check_free_space(out_path, image_list, bits, feature_dim):
    """Refuse before any work when the output's disk cannot hold it (fileio.require_free_space);
    feature_dim: the width of the features written (0: none)."""
    n = len(image_list)
    need = n * (4 * bits + image_list.labels.shape[1] + 64 + 4 * feature_dim)
    require_free_space(out_path, int(need * 1.05) + (1 << 20))   # + chunk and metadata overhead


def _crop_average(x, n_images):
    """Average the rows of each image's crops (pycaffe Classifier.predict: mean over the 10)."""
    return x.view(n_images, -1, x.shape[-1]).mean(dim=1)


def _attributes(model, image_list, root, transform, ten_crops, has_hash, extra, pipeline):
    crop = transform.crop_size
    attrs = {"format": CODES_FORMAT, "arch": model.arch, "bits": int(model.bits if has_hash else 0),
             "preprocessing": transform.name,
             "transform": "oversample-10" if ten_crops else f"center-crop-{crop}", "pipeline": pipeline,
             "resize": PIPELINE_RESIZE[pipeline], "list": image_list.source,
             "root": os.fspath(root), "num_images": len(image_list)}
    if not transform.caffe:
        attrs.update(pipeline="torchvision", resize=TORCHVISION_RESIZE,
                     mean=np.asarray(tv.MEAN), std=np.asarray(tv.STD))   # RGB, 0-1: Normalize's
    elif transform.mean.shape[1] == 1:
        attrs["mean"] = transform.mean.ravel().astype(np.float64)
    else:
        attrs["mean"] = "mean image (3 x 256 x 256), see mean_file"
    attrs.update({k: v for k, v in (extra or {}).items() if v is not None})
    return attrs
