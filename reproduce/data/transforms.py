"""Caffe's image pipeline: decode as OpenCV does, cv::resize INTER_LINEAR bit for bit, crop/mirror/mean.

The authors' ImageData layers (train_val.prototxt) read every image with ReadImageToCVMat
(io.cpp: cv::imread(path, CV_LOAD_IMAGE_COLOR), then cv::resize to new_height x new_width = 256 x
256, aspect ratio not kept), and data_transformer.cpp crops 227 x 227 (TRAIN: random offset and
mirror; TEST: centre), subtracts the mean and emits float CHW BGR with pixel values 0-255.

Everything here is a pure function: randomness (crop offsets, mirror flags) is drawn by the
caller (reproduce.data.batches.BatchOrder, from its own seeded generator) and passed in. The package does not import
OpenCV; the tests compare against it (cv2.imread + cv2.resize of OpenCV 4.x).
"""
import functools
import io
import os
import warnings

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..caffe.caffe_format import read_mean
from ..errors import UserError

NEW_SIZE = 256                    # new_height / new_width of the authors' ImageData layers
CROP_SIZE = 227                   # crop_size of the authors' transform_param
MEAN_VALUE = (104.0, 117.0, 123.0)  # authors' transform_param mean_value, in B, G, R order

# imgproc/src/resize.cpp: interpolation weights are 11-bit fixed point for 8-bit images.
INTER_RESIZE_COEF_BITS = 11
INTER_RESIZE_COEF_SCALE = 1 << INTER_RESIZE_COEF_BITS


# ------------------------------------------------------------------------------------- decoding

def read_image_bgr(path):
    """Decode an image file as cv::imread(path, IMREAD_COLOR) does: H x W x 3 uint8, BGR.

    Grayscale, palette, 1-bit and alpha images become 3-channel BGR (alpha is dropped, not
    composited, as libpng's strip-alpha in OpenCV); 16-bit images keep their high byte; CMYK JPEGs
    use OpenCV's icvCvt_CMYK2BGR_8u_C4C3R formula. EXIF orientation is *ignored*: Caffe was built
    with OpenCV 2.4, whose imread did not rotate (OpenCV >= 3.1 does unless
    IMREAD_IGNORE_ORIENTATION). Only the formats imread reads are accepted (OPENCV_FORMATS), and a
    truncated JPEG decodes as libjpeg completes it for OpenCV (_open_as_opencv). Decoded with
    PIL; the tests check equality with cv2.imread.
    A missing or undecodable file raises UserError naming the path.
    """
    return decode_image(path, _pil_to_bgr, open_image=_open_as_opencv)


# The formats cv::imread reads (its documented list, OpenCV 4.x: Windows bitmaps, GIF, JPEG,
# JPEG 2000, PNG, WebP, AVIF, PBM/PGM/PPM/PNM/PFM, Sun rasters, TIFF, OpenEXR, Radiance HDR),
# as PIL names those it can open (MPO: a JPEG with a second picture, which OpenCV reads as JPEG).
# OpenCV picks its decoder by the file's signature (findDecoder), as PIL does. Everything else PIL
# opens (ICO, TGA, PCX, PSD, SGI, QOI, headerless DIB ...) imread refuses; OpenEXR, Radiance HDR
# and PAM files PIL cannot read, so they stay refused here.
OPENCV_FORMATS = frozenset({"BMP", "GIF", "JPEG", "MPO", "JPEG2000", "PNG", "WEBP", "AVIF", "PPM",
                            "SUN", "TIFF"})
JPEG_SIGNATURE = b"\xff\xd8\xff"     # OpenCV's JpegDecoder signature (grfmt_jpeg.cpp), PIL's too
# libjpeg's file source (jdatasrc.c fill_input_buffer), through which OpenCV reads a JPEG: at a
# premature end of the file it warns ("Premature end of JPEG file") and inserts a fake EOI marker,
# again at every further read; the decoder then fills what is missing (baseline: the last DC
# values, progressive: the scans so far). Appended to the file's bytes, as many fake EOIs as a
# marker segment can be long (65,535 bytes) let PIL's libjpeg do exactly that: equal to cv2.imread
# at every cut point of the tests, including the cuts OpenCV refuses (inside a progressive JPEG's
# marker segment between scans). PIL's LOAD_TRUNCATED_IMAGES instead stops at the end of the data
# and returns such images too. A complete JPEG ends in its own EOI: what follows is never read.
FAKE_EOI = b"\xff\xd9" * 32769


def _open_as_opencv(path):
    """Image.open of `path` as cv::imread sees the file: a JPEG followed by libjpeg's fake EOI
    markers (FAKE_EOI); ValueError for a format imread does not read (OPENCV_FORMATS)."""
    with open(path, "rb") as f:
        head = f.read(len(JPEG_SIGNATURE))
        source = io.BytesIO(head + f.read() + FAKE_EOI) if head == JPEG_SIGNATURE else None
    try:
        im = Image.open(path if source is None else source)
    except UnidentifiedImageError:    # PIL's message would name the in-memory copy, not the file
        raise UnidentifiedImageError(f"cannot identify image file {os.fspath(path)!r}") from None
    if im.format not in OPENCV_FORMATS:
        im.close()
        raise ValueError(f"{im.format} is a format that OpenCV's imread (Caffe's ImageData layer) "
                         "does not read")
    return im


def decode_image(path, convert, open_image=Image.open):
    """convert(PIL image) of the file at `path` opened with `open_image`, with every decoding
    failure as one UserError naming the path (both pipelines: this module's and
    reproduce.data.pycaffe_pipeline's, whose scikit-image decoder reads what PIL reads)."""
    try:
        # PIL warns (stderr) on images of 89-179 megapixels and on corrupt EXIF blocks; such files
        # decode as OpenCV decodes them, so the warnings are not the user's business. Larger
        # images stay refused (DecompressionBombError below): their decoding could exhaust memory.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with open_image(path) as im:
                im.load()
                return convert(im)
    except FileNotFoundError:
        raise UserError(f"{path}: no such image file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, not an image") from None
    except Exception as e:  # decoders raise many types (OSError, SyntaxError, struct.error, ...)
        raise UserError(f"{path}: cannot decode image ({type(e).__name__}: "
                        f"{' '.join(str(e).split())})") from None


def _pil_to_bgr(im):
    mode = im.mode
    if mode == "F" or (mode == "I" and 32 in (getattr(im, "tag_v2", None) or {}).get(258, ())):
        # 32-bit integer or floating-point samples (TIFF): OpenCV's imread, which Caffe's ImageData
        # layer calls, returns no image for them ("can not handle images with 32-bit samples")
        raise ValueError("32-bit integer or floating-point pixels, which OpenCV's imread (Caffe's "
                         "ImageData layer) cannot read")
    if im.format == "GIF" and mode in ("P", "L") and isinstance(im.info.get("transparency"), int):
        return _gif_to_bgr(im)
    if mode == "CMYK":
        # PIL stores Adobe-inverted CMYK (rawmode "CMYK;I"); OpenCV gets libjpeg's raw values,
        # i.e. 255 - PIL's, and converts with v' = k - ((255 - v) * k >> 8) (grfmt utils.cpp).
        raw = 255 - np.asarray(im, dtype=np.int32)
        k = raw[..., 3:4]
        rgb = k - (((255 - raw[..., :3]) * k) >> 8)
        return np.ascontiguousarray(rgb[..., ::-1], dtype=np.uint8)
    if mode.startswith("I"):
        # 16-bit grayscale: OpenCV's 8-bit imread keeps the high byte (png_set_strip_16).
        gray = (np.clip(np.asarray(im, dtype=np.int64), 0, 65535) >> 8).astype(np.uint8)
    elif mode == "L":
        gray = np.asarray(im)
    else:
        if mode != "RGB":
            im = im.convert("RGB")   # P, PA, LA, RGBA, 1, YCbCr ...: palette applied, alpha dropped
        return np.ascontiguousarray(np.asarray(im)[:, :, ::-1])
    return np.repeat(gray[:, :, None], 3, axis=2)


def _gif_to_bgr(im):
    """A GIF's first frame with a transparent colour as OpenCV's GifDecoder gives it
    (grfmt_gif.cpp readData, code2pixel): drawn on a canvas of the background colour (the global
    colour table's entry `background`; black without a global table), transparent pixels skipped,
    so they show that colour (PIL's convert gives them their own palette entry's)."""
    rgb = np.array(im.convert("RGB"))
    table = getattr(im, "global_palette", None)
    colours = np.zeros((0, 3), np.uint8) if table is None else \
        np.frombuffer(bytes(table.palette), np.uint8)[:len(table.palette) // 3 * 3].reshape(-1, 3)
    background = im.info.get("background", 0)
    rgb[np.asarray(im) == im.info["transparency"]] = colours[background] if background < len(colours) else 0
    return np.ascontiguousarray(rgb[:, :, ::-1])


# --------------------------------------------------------------------------- cv::resize, linear

@functools.lru_cache(maxsize=64)
def _axis_table(src_size, dst_size):
    """Source index and fixed-point weights along one axis, as resize.cpp's hal::resize builds them.

    Returns (s: int, c0, c1: int32) of length dst_size: output i = c0*src[s] + c1*src[s+1] (before
    clamping). The arithmetic follows OpenCV: scale = 1 / (dst/src) in double; f = (float)((i +
    0.5) * scale - 0.5); s = floor(f); f -= s (float32); weights saturate_cast<short>((1 - f) *
    2048) and (f * 2048), cvRound = round half to even.
    """
    scale = 1.0 / (dst_size / src_size)
    f = ((np.arange(dst_size, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    s = np.floor(f)
    f = f - s
    c0 = np.rint((np.float32(1.0) - f) * np.float32(INTER_RESIZE_COEF_SCALE)).astype(np.int32)
    c1 = np.rint(f * np.float32(INTER_RESIZE_COEF_SCALE)).astype(np.int32)
    return s.astype(np.intp), c0, c1


@functools.lru_cache(maxsize=64)
def _resize_plan(h, w, cn, height, width):
    """Index and weight tables of one (source size -> destination size) resize, cached."""
    sx, a0, a1 = _axis_table(w, width)
    # Columns left of 0 or at/after the last source column take that edge pixel with weight 1
    # (resize.cpp: "fx = 0, sx = 0" and "fx = 0, sx = ssize.width-1"; beyond xmax, S[sx]*ONE).
    edge = (sx < 0) | (sx >= w - 1)
    sx = np.clip(sx, 0, w - 1)
    a0 = np.where(edge, INTER_RESIZE_COEF_SCALE, a0).astype(np.int32)
    a1 = np.where(edge, 0, a1).astype(np.int32)
    sx1 = np.minimum(sx + 1, w - 1)
    ch = np.arange(cn)
    cols0 = (sx[:, None] * cn + ch).ravel()          # over the row viewed as w*cn values
    cols1 = (sx1[:, None] * cn + ch).ravel()
    # Rows: no edge fix-up of the weights, only clip(sy, 0, h - 1) of the row index
    # (resizeGeneric_Invoker).
    sy, b0, b1 = _axis_table(h, height)
    r0, r1 = np.clip(sy, 0, h - 1), np.clip(sy + 1, 0, h - 1)
    needed = np.zeros(h, dtype=bool)
    needed[r0] = needed[r1] = True
    rows = np.flatnonzero(needed)
    position = np.cumsum(needed) - 1                  # source row -> row of the horizontal buffer
    return (None if rows.size == h else rows, cols0, cols1, np.repeat(a0, cn), np.repeat(a1, cn),
            position[r0], position[r1], b0[:, None], b1[:, None])


def resize_linear(img, height=NEW_SIZE, width=NEW_SIZE):
    """cv2.resize(img, (width, height), interpolation=cv2.INTER_LINEAR), bit for bit, for uint8.

    img: H x W x C (or H x W) uint8 -> height x width x C uint8; defaults 256 x 256 = the authors'
    new_height/new_width. Reproduces OpenCV 4.x's fixed-point path (imgproc/src/resize.cpp):
    - same size: a copy (cv::resize returns early);
    - exactly 2x smaller in both axes: routed to INTER_AREA's fast path, (a+b+c+d+2) >> 2 (the
      linear formula gives the same values there, weights 1024/1024; this path is only faster);
    - otherwise a horizontal pass into int buffers, S = c0*src[x0] + c1*src[x1] (weights in 1/2048),
      and the vertical pass of VResizeLinearVec_32s8u:
      out = sat_u8((((S0 >> 4) * b0 >> 16) + ((S1 >> 4) * b1 >> 16) + 2) >> 2).
      OpenCV 4.x uses this formula for every output value. OpenCV 2.4 (Caffe's) computed it with
      SSE2 in blocks of 16 (then 4) values and gave the few values left at the end of a row the
      scalar rounding (S0*b0 + S1*b1 + 2^21) >> 22; a 256-wide 3-channel row (768 = 48 * 16
      values) has no such tail, so for Caffe's 256 x 256 resize both versions agree.
    """
    if img.dtype != np.uint8 or img.ndim not in (2, 3):
        raise ValueError(f"resize_linear expects an H x W (x C) uint8 array, got {img.dtype} {img.shape}")
    h, w = img.shape[:2]
    cn = img.shape[2] if img.ndim == 3 else 1
    if (h, w) == (height, width):
        return img.copy()
    if 1.0 / (width / w) == 2.0 and 1.0 / (height / h) == 2.0:
        # resize.cpp: "in case of scale_x && scale_y is equal to 2, INTER_AREA (fast) also is equal
        # to INTER_LINEAR" -> resizeAreaFast_ with ResizeAreaFastVec, rounding (sum + 2) >> 2.
        pairs = img[0::2].astype(np.uint16)
        pairs += img[1::2]
        out = pairs[:, 0::2] + pairs[:, 1::2]
        out += 2
        out >>= 2
        return out.astype(np.uint8)
    rows, cols0, cols1, a0, a1, i0, i1, b0, b1 = _resize_plan(h, w, cn, height, width)
    src = img.reshape(h, w * cn)
    if rows is not None:
        src = np.take(src, rows, axis=0)      # only the source rows the output needs
    # Horizontal pass (HResizeLinear, exact in int32): at most 255 * 2048 per value.
    hz = np.take(src, cols0, axis=1).astype(np.int32)
    hz *= a0
    tmp = np.take(src, cols1, axis=1).astype(np.int32)
    tmp *= a1
    hz += tmp
    # Vertical pass (VResizeLinearVec_32s8u): v_shr<4>, v_pack to int16 (values <= 32640 fit),
    # v_mul_hi = (a * b) >> 16, add, v_rshr_pack_u<2> = (x + 2) >> 2 saturated to uint8.
    hz >>= 4
    out = np.take(hz, i0, axis=0)
    out *= b0
    out >>= 16
    tmp = np.take(hz, i1, axis=0)
    tmp *= b1
    tmp >>= 16
    out += tmp
    out += 2
    out >>= 2
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8).reshape((height, width) + img.shape[2:])


# ------------------------------------------------------------------------- crop, mirror, mean

def mean_array(mean, size=NEW_SIZE):
    """The mean as float32 (3, 1, 1) (per-channel mean_value, B, G, R) or (3, size, size) (mean file).

    Accepts a sequence of 3 numbers, a (3,), (3, 1, 1) or (3, size, size) array or tensor.
    """
    with np.errstate(over="ignore"):           # beyond float32 -> inf, refused just below
        m = np.asarray(mean.cpu() if isinstance(mean, torch.Tensor) else mean, dtype=np.float32)
    if not np.isfinite(m).all():
        raise UserError("the mean holds NaN or infinite values (or values beyond float32)")
    if m.shape in ((3,), (3, 1, 1)):
        return m.reshape(3, 1, 1)
    if m.shape == (3, size, size):
        return m
    raise UserError(f"mean of shape {m.shape} does not fit: expected 3 channel values (B, G, R) "
                    f"or a (3, {size}, {size}) mean image")


def crop_and_subtract(img, h_off, w_off, mean, crop_size=CROP_SIZE, mirror=False):
    """One image through data_transformer.cpp: crop, subtract the mean, optionally mirror.

    img: H x W x 3 uint8 BGR -> float32 3 x crop x crop (CHW, BGR, 0-255 minus mean). A mean
    image is read at the crop's source position (mean_index = (c*H + h_off + h)*W + w_off + w),
    so a mirrored crop gets the mirrored mean with it, as in Caffe. float32 arithmetic, as Caffe's
    Dtype: (pixel - mean) * scale with scale 1.
    """
    m = mean_array(mean, img.shape[0])
    crop = img[h_off:h_off + crop_size, w_off:w_off + crop_size].transpose(2, 0, 1)
    if m.shape[1] > 1:
        m = m[:, h_off:h_off + crop_size, w_off:w_off + crop_size]
    if mirror:
        crop = crop[:, :, ::-1]
        m = m[:, :, ::-1]
    return np.subtract(crop, m, dtype=np.float32)


def load_mean_file(path):
    """A mean file (imagenet_mean.binaryproto or ilsvrc_2012_mean.npy) as a checked float32
    (3, 256, 256) array; UserError naming the file once."""
    mean = read_mean(path)                   # its errors name the file already
    try:
        return mean_array(mean)
    except UserError as e:
        raise UserError(f"{path}: {e}") from None


def center_offset(size, crop_size=CROP_SIZE):
    """Caffe's TEST-phase crop offset (data_transformer.cpp): (size - crop) / 2 = 14 for 256/227."""
    return (size - crop_size) // 2


def center_crop(img, mean=MEAN_VALUE, crop_size=CROP_SIZE):
    """TEST transform of one resized image: centre crop, no mirror -> float32 3 x 227 x 227."""
    return crop_and_subtract(img, center_offset(img.shape[0], crop_size),
                             center_offset(img.shape[1], crop_size), mean, crop_size)


def oversample_offsets(height, width, crop_size=CROP_SIZE):
    """The 5 crop origins (h_off, w_off) of pycaffe's caffe.io.oversample, in its order.

    Corners in the order of its loops (for i in (0, H-c): for j in (0, W-c)), then the centre,
    whose float origin im_center - crop/2 = 14.5 is truncated to 14 by the int crops_ix array.
    """
    corners = [(i, j) for i in (0, height - crop_size) for j in (0, width - crop_size)]
    return corners + [(int(height / 2.0 - crop_size / 2.0), int(width / 2.0 - crop_size / 2.0))]


def oversample(img, mean=MEAN_VALUE, crop_size=CROP_SIZE):
    """pycaffe's 10 crops: 4 corners + centre, then the same 5 mirrored -> float32 10 x 3 x c x c.

    The order is caffe.io.oversample's. pycaffe's Classifier resized with skimage
    (caffe.io.resize_image) before oversampling; here the input is the Caffe-resized image
    (resize_linear), the same pixels the ImageData layer sees. A mean image is taken at each crop's
    position (data_transformer.cpp's rule; pycaffe only supported per-channel means here).
    """
    offsets = oversample_offsets(img.shape[0], img.shape[1], crop_size)
    return np.stack([crop_and_subtract(img, h, w, mean, crop_size, mirror)
                     for mirror in (False, True) for h, w in offsets])


_ten_crops = oversample   # load_test_image's flag of the same name shadows the function


def load_test_image(path, mean=MEAN_VALUE, oversample=False, size=NEW_SIZE, crop_size=CROP_SIZE):
    """Decode, resize to 256 x 256, then the TEST transform: 3 x 227 x 227 (10 x 3 x 227 x 227
    with oversample), float32 BGR minus mean."""
    img = resize_linear(read_image_bgr(path), size, size)
    return _ten_crops(img, mean, crop_size) if oversample else center_crop(img, mean, crop_size)


# ----------------------------------------------------------------------- batches of cached images

def train_transform_batch(images, offsets, mirror, mean, crop_size=CROP_SIZE):
    """TRAIN transform of a batch of cached images -> float32 torch N x 3 x 227 x 227.

    images: N x 256 x 256 x 3 uint8 HWC BGR (numpy or torch, as the cache stores them);
    offsets: N x 2 ints (h_off, w_off) in 0..29; mirror: N bools (flip the width axis). Each
    image is cropped at its offset, mirrored if asked, and the mean is subtracted at the crop's
    source position (data_transformer.cpp). One fused numpy subtract (uint8 view - mean ->
    float32) per image into a preallocated output, single-threaded as loader workers want it:
    measured 2-5x faster here than torch's mixed uint8/float32 kernels or advanced indexing.
    """
    images = images.numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    offsets = np.asarray(offsets.cpu() if isinstance(offsets, torch.Tensor) else offsets, dtype=np.int64)
    mirror = np.asarray(mirror.cpu() if isinstance(mirror, torch.Tensor) else mirror, dtype=bool)
    n, height, width = images.shape[:3]
    if offsets.shape != (n, 2) or mirror.shape != (n,):
        raise ValueError(f"offsets {offsets.shape} / mirror {mirror.shape} do not match {n} images")
    if n and (offsets.min() < 0 or offsets[:, 0].max() > height - crop_size
              or offsets[:, 1].max() > width - crop_size):
        raise ValueError(f"crop offsets outside 0..{height - crop_size} x 0..{width - crop_size}")
    m = mean_array(mean, height)
    out = np.empty((n, 3, crop_size, crop_size), dtype=np.float32)
    for i in range(n):
        h, w = offsets[i]
        crop = images[i, h:h + crop_size, w:w + crop_size].transpose(2, 0, 1)
        mi = m[:, h:h + crop_size, w:w + crop_size] if m.shape[1] > 1 else m
        if mirror[i]:
            crop, mi = crop[:, :, ::-1], mi[:, :, ::-1]
        np.subtract(crop, mi, out=out[i])
    return torch.from_numpy(out)


def test_transform_batch(images, mean, crop_size=CROP_SIZE):
    """TEST transform of a batch of cached 256 x 256 images: centre crop, no mirror.

    images: N x 256 x 256 x 3 uint8 -> float32 torch N x 3 x 227 x 227.
    """
    n, height, width = np.shape(images)[:3]
    offsets = np.tile([center_offset(height, crop_size), center_offset(width, crop_size)], (n, 1))
    return train_transform_batch(images, offsets, np.zeros(n, dtype=bool), mean, crop_size)
