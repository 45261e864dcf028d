"""The authors' evaluation pipeline: pycaffe's caffe.Classifier as their predict scripts called it.

The papers' numbers were computed from codes that pycaffe produced, not Caffe's ImageData layer:
thuml/hash-caffe `models/DHN/predict/predict_parallel.py` (and zhuhan1236/dhn-caffe
`models/predict/generate.py`) call

    net = caffe.Classifier(deploy, model, channel_swap=(2, 1, 0), image_dims=(256, 256),
                           mean=np.load("ilsvrc_2012_mean.npy").mean(1).mean(1), raw_scale=255)
    codes = net.predict([caffe.io.load_image(path) ...], oversample=False)   # generate.py: True

which (python/caffe/io.py, classifier.py of BVLC Caffe)
  1. decodes with scikit-image `imread` into float in [0, 1], RGB, grey tiled to 3 channels,
     alpha dropped (`caffe.io.load_image`);
  2. resizes to 256 x 256 with scikit-image `resize(order=1, mode='constant')` on the image
     stretched to [0, 1] (`caffe.io.resize_image`): bilinear, pixel centres aligned, samples
     outside the image read as 0, and — in the scikit-image of 2016 — no anti-aliasing;
  3. takes the centre crop [14:241] (or pycaffe's 10 crops, averaged after the network);
  4. transposes to C x H x W, swaps RGB -> BGR, multiplies by 255, subtracts the per-channel mean
     (`Transformer.preprocess`).
This module does the same with numpy (scikit-image is not a dependency of the package); the
`caffe` test tier holds it against real pycaffe. reproduce.data.transforms is the other pipeline, the
ImageData layer's (OpenCV decoding, cv::resize), used for training and by default for encoding.
"""
import numpy as np

from .transforms import CROP_SIZE, NEW_SIZE, center_offset, decode_image, oversample_offsets

# ilsvrc_2012_mean.npy (python/caffe/imagenet/ of BVLC Caffe) averaged per channel, B, G, R: the
# `mean=np.load(mean_file).mean(1).mean(1)` of the authors' predict scripts (official_settings.md).
ILSVRC_2012_MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)
RAW_SCALE = 255.0                     # raw_scale=255 in the authors' predict scripts
CHANNEL_SWAP = (2, 1, 0)              # channel_swap=(2, 1, 0): RGB -> BGR


# ------------------------------------------------------------------------------- caffe.io.load_image
def _pil_frame(im):
    """The array scikit-image's imread gives (its imageio/Pillow plugin, pil_get_frame): a palette
    image becomes grey (grey palette) or RGB(A); any mode with alpha, CMYK and 1-bit are converted
    by Pillow; 16-bit images stay 16-bit."""
    mode = im.mode
    if mode == "P":
        palette = np.asarray(im.getpalette()).reshape(-1, 3)
        lo, hi = im.getextrema()
        grey = np.allclose(np.diff(palette[lo:hi + 1]), 0)
        return np.asarray(im.convert("L" if grey else "RGB"))
    if mode.startswith("I;16") or (mode == "I" and im.format == "PNG"):
        raw = np.asarray(im) if mode == "I" else np.frombuffer(
            im.tobytes(), ">u2" if mode.endswith("B") else "<u2").reshape(im.size[::-1])
        if "S" in mode:
            raise ValueError(f"signed 16-bit images ({mode}) are not supported")
        return raw.astype(np.uint16)
    if "A" in mode or mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        return np.asarray(im.convert("RGB"))      # alpha dropped below anyway (load_image)
    if mode == "1":
        return np.asarray(im.convert("L"))
    if mode in ("L", "RGB"):
        return np.asarray(im)
    raise ValueError(f"image mode {mode} is not supported")


def load_image(path):
    """caffe.io.load_image(path): float32 H x W x 3, RGB, values in [0, 1].

    skimage.img_as_float scales unsigned integers by 1 / max of their type in float64 (uint8:
    x * (1/255), uint16: x * (1/65535)), then load_image casts to float32; grey is tiled to 3
    channels, alpha dropped. EXIF orientation is not applied (as the ImageData pipeline; today's
    imageio rotates JPEGs by it, the scikit-image PIL plugin of 2016 did not).
    A missing or undecodable file raises UserError naming the path.
    """
    raw = decode_image(path, _pil_frame)
    img = np.multiply(raw, 1.0 / np.iinfo(raw.dtype).max, dtype=np.float64).astype(np.float32)
    if img.ndim == 2:
        return np.repeat(img[:, :, None], 3, axis=2)
    return np.ascontiguousarray(img[:, :, :3])


# ------------------------------------------------------------------------------ caffe.io.resize_image
def _bilinear_matrix(src, dst):
    """dst x src weights of scikit-image's order-1 resize along one axis: output i samples the
    source at x = (i + 0.5) * src / dst - 0.5 (pixel centres aligned); neighbours floor(x) and
    floor(x) + 1 weigh 1 - frac and frac, and a neighbour outside 0..src-1 reads 0
    (mode='constant', cval=0; scipy.ndimage.zoom's 'grid-constant', grid_mode=True)."""
    x = (np.arange(dst, dtype=np.float64) + 0.5) * (src / dst) - 0.5
    lo = np.floor(x)
    frac = x - lo
    lo = lo.astype(np.int64)
    weights = np.zeros((dst, src), dtype=np.float64)
    rows = np.arange(dst)
    for index, w in ((lo, 1.0 - frac), (lo + 1, frac)):
        inside = (index >= 0) & (index < src)
        np.add.at(weights, (rows[inside], index[inside]), w[inside])
    return weights


def resize_image(im, new_dims=(NEW_SIZE, NEW_SIZE)):
    """caffe.io.resize_image(im, new_dims) with the scikit-image resize of 2016 (no anti-aliasing).

    im: float32 H x W x 3 -> float32 new_h x new_w x 3. The image is stretched to [0, 1] by its
    global min and max, resized (in float64, as scikit-image's warp), and stretched back; a
    constant image gives the constant.
    """
    im_min, im_max = im.min(), im.max()
    if not im_max > im_min:
        return np.full((new_dims[0], new_dims[1], im.shape[-1]), im_min, dtype=np.float32)
    im_std = (im - im_min) / (im_max - im_min)                 # float32, as pycaffe
    rows = _bilinear_matrix(im.shape[0], new_dims[0])
    cols = _bilinear_matrix(im.shape[1], new_dims[1])
    resized = np.einsum("ia,abc,jb->ijc", rows, im_std.astype(np.float64), cols, optimize=True)
    resized_std = resized.astype(np.float32)                   # scikit-image keeps float32 input
    return (resized_std * (im_max - im_min) + im_min).astype(np.float32)


# ----------------------------------------------------------------------- Classifier.predict inputs
def preprocess(crop, mean=ILSVRC_2012_MEAN_BGR):
    """Transformer.preprocess of one crop: H x W x 3 RGB float32 in [0, 1] -> 3 x H x W float32 BGR,
    x 255 (float32) minus the per-channel mean (float64 subtracted in place from float32: numpy
    computes in float64 and rounds to float32)."""
    blob = crop.astype(np.float32).transpose(2, 0, 1)[list(CHANNEL_SWAP)]
    blob = blob * np.float32(RAW_SCALE)
    mean = np.asarray(mean, dtype=np.float64).reshape(3, 1, 1)
    return (blob.astype(np.float64) - mean).astype(np.float32)


def predict_inputs(path, mean=ILSVRC_2012_MEAN_BGR, oversample=False, crop_size=CROP_SIZE):
    """The network inputs Classifier.predict makes of one image file: float32 1 x 3 x 227 x 227
    (centre crop at (256 - 227) / 2 truncated = 14) or 10 x 3 x 227 x 227 (caffe.io.oversample:
    4 corners + centre, then the same 5 mirrored)."""
    img = resize_image(load_image(path))
    if oversample:
        crops = [img[h:h + crop_size, w:w + crop_size]
                 for h, w in oversample_offsets(img.shape[0], img.shape[1], crop_size)]
        crops += [c[:, ::-1] for c in crops]
    else:
        h, w = center_offset(img.shape[0], crop_size), center_offset(img.shape[1], crop_size)
        crops = [img[h:h + crop_size, w:w + crop_size]]
    return np.stack([preprocess(c, mean) for c in crops])
