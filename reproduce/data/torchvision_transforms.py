"""The torchvision image convention of the field's PyTorch hashing code, for the tv-* backbones.

swuxyj/DeepHash-pytorch (utils/tools.py: ImageList.__getitem__ and image_transform), like
thuml/HashNet's pytorch/ port, reads every image with PIL as RGB (`Image.open(path).convert('RGB')`)
and prepares it with torchvision's transforms:

    TRAIN  Resize(256), RandomHorizontalFlip(), RandomCrop(224), ToTensor(), Normalize(mean, std)
    TEST   Resize(256), CenterCrop(224),                         ToTensor(), Normalize(mean, std)

Resize(256) scales the *shorter* side to 256 and keeps the aspect ratio (PIL bilinear with
antialiasing), so the resized images have a variable width or height — never the square warp of
Caffe's ImageData layer (reproduce.data.transforms). Everything below calls torchvision's own
transforms (torchvision.transforms / .functional), not a re-implementation.

Randomness: as on the Caffe path, the caller draws it (reproduce.data.batches.BatchOrder, from its
seeded generator: one source for the batch order, the crops and the flips) and passes it in — per
image a flip flag and two fractions u in [0, 1) which place the crop at
(floor(u_h * (h - 224 + 1)), floor(u_w * (w - 224 + 1))) of the flipped image: the uniform
offsets RandomCrop draws (torch.randint(0, h - th + 1)), applied with F.hflip and F.crop in
RandomHorizontalFlip -> RandomCrop's order. A run thus sees the same crops and flips whatever
the loader workers, and a resumed run those of an uninterrupted one.
"""
import numpy as np
import torch
from PIL import Image
from torchvision import transforms
from torchvision.transforms import functional as F

from .transforms import decode_image

RESIZE_SIZE = 256                      # DeepHash-pytorch's config "resize_size": 256
CROP_SIZE = 224                        # DeepHash-pytorch's config "crop_size": 224
# torchvision's ImageNet statistics (RGB, 0-1), as DeepHash-pytorch's image_transform normalizes
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)

_RESIZE = transforms.Resize(RESIZE_SIZE)    # interpolation BILINEAR, antialias (PIL always is)
_TO_NETWORK = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean=MEAN, std=STD)])


def read_image_rgb(path):
    """The image at `path` as DeepHash-pytorch reads it: `Image.open(path).convert('RGB')` (a PIL
    RGB image; grayscale, palette and CMYK images converted by PIL, alpha dropped). A missing or
    undecodable file raises UserError naming the path."""
    return decode_image(path, lambda im: im.convert("RGB"))


def resize(img):
    """transforms.Resize(256) of a PIL image: shorter side 256, aspect ratio kept -> PIL RGB."""
    return _RESIZE(img)


def load_resized_rgb(path):
    """Decode and Resize(256): H x W x 3 uint8 RGB with min(H, W) = 256 (what the cache stores)."""
    return np.array(resize(read_image_rgb(path)), dtype=np.uint8)    # a writable copy


def _pil(img):
    """A cached H x W x 3 uint8 RGB array (numpy or torch) as the PIL image it was made from."""
    arr = img.numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
    return Image.fromarray(np.ascontiguousarray(arr, dtype=np.uint8), "RGB")


def crop_offsets(height, width, fractions, crop_size=CROP_SIZE):
    """RandomCrop's offsets (top, left) for an image of height x width from fractions (u_h, u_w)
    in [0, 1): floor(u * (size - crop + 1)), uniform over 0 ... size - crop as torch.randint draws."""
    u = np.asarray(fractions, dtype=np.float64)
    spans = np.array([height - crop_size + 1, width - crop_size + 1])
    if (spans < 1).any():
        raise ValueError(f"image of {height} x {width} is smaller than the {crop_size} crop")
    return tuple(int(v) for v in np.minimum(np.floor(u * spans), spans - 1))


def train_transform(img, fractions, mirror, crop_size=CROP_SIZE):
    """TRAIN transform of one resized image (H x W x 3 uint8 RGB, min(H, W) = 256):
    RandomHorizontalFlip (as `mirror` says), RandomCrop (at crop_offsets of `fractions`),
    ToTensor, Normalize -> float32 3 x 224 x 224."""
    im = _pil(img)
    if mirror:
        im = F.hflip(im)
    top, left = crop_offsets(im.height, im.width, fractions, crop_size)
    return _TO_NETWORK(F.crop(im, top, left, crop_size, crop_size))


def test_transform(img, crop_size=CROP_SIZE):
    """TEST transform of one resized image: CenterCrop(224), ToTensor, Normalize -> float32
    3 x 224 x 224."""
    return _TO_NETWORK(F.center_crop(_pil(img), [crop_size, crop_size]))


def train_transform_batch(images, fractions, mirror, crop_size=CROP_SIZE):
    """TRAIN transform of a batch: images a sequence of N resized H_i x W_i x 3 uint8 RGB arrays,
    fractions N x 2 in [0, 1), mirror N bools -> float32 torch N x 3 x 224 x 224."""
    if len(fractions) != len(images) or len(mirror) != len(images):
        raise ValueError(f"fractions {len(fractions)} / mirror {len(mirror)} do not match {len(images)} images")
    out = torch.empty((len(images), 3, crop_size, crop_size), dtype=torch.float32)
    for i, img in enumerate(images):
        out[i] = train_transform(img, fractions[i], bool(mirror[i]), crop_size)
    return out


def test_transform_batch(images, crop_size=CROP_SIZE):
    """TEST transform of a batch of resized images -> float32 torch N x 3 x 224 x 224."""
    out = torch.empty((len(images), 3, crop_size, crop_size), dtype=torch.float32)
    for i, img in enumerate(images):
        out[i] = test_transform(img, crop_size)
    return out
