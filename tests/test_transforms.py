"""Caffe's image pipeline against OpenCV (cv2.imread / cv2.resize) and plain references."""
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from reproduce.errors import UserError
from reproduce.data.transforms import (CROP_SIZE, MEAN_VALUE, center_crop, crop_and_subtract, load_test_image,
                                  mean_array, oversample, read_image_bgr, resize_linear,
                                  train_transform_batch)
from reproduce.data.transforms import test_transform_batch as center_crop_batch   # not a pytest test

cv2 = pytest.importorskip("cv2")
IMREAD = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION   # Caffe's OpenCV 2.4 did not rotate


def image(rng, h, w, kind, cn=3):
    """Test content: random, constant 0 or 255, 0/255 edges, smooth gradients."""
    shape = (h, w, cn)
    if kind == "random":
        return rng.integers(0, 256, shape, dtype=np.uint8)
    if kind == "zeros":
        return np.zeros(shape, np.uint8)
    if kind == "full":
        return np.full(shape, 255, np.uint8)
    if kind == "edges":
        return (rng.integers(0, 2, shape) * 255).astype(np.uint8)
    steps = np.cumsum(rng.integers(-4, 5, shape), axis=1) + np.cumsum(rng.integers(-4, 5, shape), axis=0)
    return np.clip(steps + 128, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------- resize

SIZES = [(32, 32), (375, 500), (500, 375), (480, 640), (257, 255), (512, 512), (200, 300),
         (256, 256), (128, 128), (1, 1), (3, 700), (1024, 1024)]


@pytest.mark.parametrize("h,w", SIZES)
def test_resize_to_256_is_bit_exact_with_opencv(rng, h, w):
    for kind in ("random", "zeros", "full", "edges", "smooth"):
        img = image(rng, h, w, kind)
        want = cv2.resize(img, (256, 256), interpolation=cv2.INTER_LINEAR)
        np.testing.assert_array_equal(resize_linear(img), want, err_msg=f"{h}x{w} {kind}")


@pytest.mark.parametrize("dh,dw", [(227, 227), (100, 37), (5, 1), (1, 9), (300, 200)])
def test_resize_other_sizes_and_channels_are_bit_exact(rng, dh, dw):
    # Rows whose length is not a multiple of the SIMD width: OpenCV 4 uses one formula throughout.
    for h, w in [(375, 500), (32, 32), (257, 255), (2, 3)]:
        for cn in (3, 1, 4):
            img = image(rng, h, w, "random", cn)
            want = cv2.resize(img, (dw, dh), interpolation=cv2.INTER_LINEAR).reshape(dh, dw, cn)
            np.testing.assert_array_equal(resize_linear(img, dh, dw), want, err_msg=f"{h}x{w}x{cn}")
    gray = image(rng, 40, 50, "random", 1)[:, :, 0]
    np.testing.assert_array_equal(resize_linear(gray, dh, dw), cv2.resize(gray, (dw, dh)))


def test_resize_same_size_is_a_copy_and_2x_down_is_area_average(rng):
    img = image(rng, 256, 256, "random")
    out = resize_linear(img)
    assert out is not img and np.array_equal(out, img)
    # Exact 2x downscale: OpenCV routes INTER_LINEAR to INTER_AREA's fast path.
    big = image(rng, 512, 512, "random").astype(np.int64)
    want = np.empty((256, 256, 3), np.int64)
    for y in range(256):
        for x in range(256):
            want[y, x] = (big[2 * y, 2 * x] + big[2 * y, 2 * x + 1] + big[2 * y + 1, 2 * x]
                          + big[2 * y + 1, 2 * x + 1] + 2) >> 2
    np.testing.assert_array_equal(resize_linear(big.astype(np.uint8)), want)


def reference_resize(img, dh, dw):
    """resize.cpp's INTER_LINEAR for uint8, written out pixel by pixel (plain Python)."""
    h, w, cn = img.shape

    def taps(src, dst):
        scale = 1.0 / (dst / src)
        out = []
        for d in range(dst):
            f = np.float32((d + 0.5) * scale - 0.5)
            s = int(np.floor(f))
            f = np.float32(f - np.float32(s))
            out.append((s, f))
        return out

    def q(v):   # saturate_cast<short>(v * 2048), round half to even
        return int(np.rint(np.float32(v) * np.float32(2048)))

    xs = []
    for s, f in taps(w, dw):
        if s < 0 or s >= w - 1:             # edge columns take one pixel with weight 1
            s, f = min(max(s, 0), w - 1), np.float32(0)
        xs.append((s, min(s + 1, w - 1), q(np.float32(1) - f), q(f)))
    out = np.zeros((dh, dw, cn), np.uint8)
    for dy, (sy, fy) in enumerate(taps(h, dh)):
        b0, b1 = q(np.float32(1) - fy), q(fy)
        r0, r1 = min(max(sy, 0), h - 1), min(max(sy + 1, 0), h - 1)
        for dx, (x0, x1, a0, a1) in enumerate(xs):
            for c in range(cn):
                s0 = int(img[r0, x0, c]) * a0 + int(img[r0, x1, c]) * a1
                s1 = int(img[r1, x0, c]) * a0 + int(img[r1, x1, c]) * a1
                v = (((s0 >> 4) * b0) >> 16) + (((s1 >> 4) * b1) >> 16)
                out[dy, dx, c] = min(255, max(0, (v + 2) >> 2))
    return out


@pytest.mark.parametrize("h,w,dh,dw", [(7, 9, 5, 13), (13, 6, 20, 4), (3, 3, 11, 11), (10, 31, 9, 10)])
def test_resize_equals_plain_fixed_point_reference(rng, h, w, dh, dw):
    img = image(rng, h, w, "random")
    want = reference_resize(img, dh, dw)
    np.testing.assert_array_equal(want, cv2.resize(img, (dw, dh)))   # the reference is OpenCV's
    np.testing.assert_array_equal(resize_linear(img, dh, dw), want)


# ---------------------------------------------------------------------------------- decoding

def write_images(folder, rng):
    """PNG and JPEG files of many kinds and sizes (256 x 256 and not)."""
    smooth = image(rng, 375, 500, "smooth")
    files = {}

    def save(name, im, **kw):
        files[name] = folder / name
        im.save(files[name], **kw)

    save("rgb.png", Image.fromarray(image(rng, 37, 53, "random")))
    save("gray.png", Image.fromarray(image(rng, 256, 256, "random", 1)[:, :, 0]))
    save("rgba.png", Image.fromarray(image(rng, 40, 30, "random", 4), "RGBA"))
    save("gray_alpha.png", Image.fromarray(image(rng, 40, 30, "random", 2), "LA"))
    save("palette.png", Image.fromarray(image(rng, 64, 48, "smooth")).quantize(40), transparency=3)
    save("bilevel.png", Image.fromarray(image(rng, 33, 65, "edges", 1)[:, :, 0] > 0))
    save("gray16.png", Image.fromarray(rng.integers(0, 65536, (30, 20)).astype(np.uint16)))
    save("big.jpg", Image.fromarray(smooth), quality=90)
    save("cifar.png", Image.fromarray(image(rng, 32, 32, "random")))
    save("444.jpg", Image.fromarray(smooth[:256, :256]), quality=75, subsampling=0)
    save("progressive.jpg", Image.fromarray(smooth[:200, :300]), quality=95, progressive=True)
    save("gray.jpg", Image.fromarray(smooth[:, :, 0]), quality=85)
    save("cmyk.jpg", Image.fromarray(smooth[:100, :120]).convert("CMYK"), quality=90)
    return files


def test_decode_and_resize_equal_opencv(tmp_path, rng):
    # Measured here: PIL and OpenCV decode every one of these files identically (both link
    # libjpeg-turbo), so the bound asserted is 0 for JPEG as well as PNG.
    for name, path in write_images(tmp_path, rng).items():
        want = cv2.imread(str(path), IMREAD)
        got = read_image_bgr(path)
        assert got.dtype == np.uint8 and got.shape == want.shape, name
        np.testing.assert_array_equal(got, want, err_msg=name)
        np.testing.assert_array_equal(resize_linear(got), cv2.resize(want, (256, 256)), err_msg=name)


def test_exif_orientation_is_ignored(tmp_path, rng):
    exif = Image.Exif()
    exif[0x0112] = 6   # "rotate 90 CW to display"
    path = tmp_path / "rotated.jpg"
    Image.fromarray(image(rng, 40, 60, "smooth")).save(path, exif=exif, quality=90)
    got = read_image_bgr(path)
    assert got.shape == (40, 60, 3)
    np.testing.assert_array_equal(got, cv2.imread(str(path), IMREAD))
    assert cv2.imread(str(path), cv2.IMREAD_COLOR).shape == (60, 40, 3)   # what OpenCV >= 3.1 does


def test_unreadable_images_raise_user_error_naming_the_path(tmp_path, rng):
    Image.fromarray(image(rng, 64, 64, "smooth")).save(tmp_path / "ok.jpg", quality=90)
    Image.fromarray(image(rng, 64, 64, "random")).save(tmp_path / "ok.png")
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[:40])        # cut inside its header
    (tmp_path / "truncated.png").write_bytes((tmp_path / "ok.png").read_bytes()[:3000])
    (tmp_path / "text.jpg").write_text("not an image\n")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "folder.png").mkdir()
    for name in ("missing.jpg", "truncated.jpg", "truncated.png", "text.jpg", "empty.png", "folder.png"):
        with pytest.raises(UserError) as e:
            read_image_bgr(tmp_path / name)
        msg = str(e.value)
        assert msg.startswith(str(tmp_path / name)) and "\n" not in msg, msg
        if name != "folder.png":
            assert cv2.imread(str(tmp_path / name), IMREAD) is None, name     # OpenCV refuses them too


def jpeg_bytes(rng, kind):
    """A 120 x 160 JPEG of smooth content: baseline, progressive, greyscale progressive, 4:4:4."""
    import io
    smooth = image(rng, 120, 160, "smooth")
    im = Image.fromarray(smooth[:, :, 0]) if kind == "gray_progressive" else Image.fromarray(smooth)
    options = {"baseline": dict(quality=90), "progressive": dict(quality=90, progressive=True),
               "gray_progressive": dict(quality=70, progressive=True),
               "444": dict(quality=80, subsampling=0)}[kind]
    buf = io.BytesIO()
    im.save(buf, "JPEG", **options)
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["baseline", "progressive", "gray_progressive", "444"])
def test_truncated_jpegs_decode_as_opencv(tmp_path, rng, kind):
    """A JPEG cut short decodes as cv2.imread decodes it (libjpeg's "Premature end of JPEG file":
    the missing part filled), pixel for pixel, at cut points all over the file; where OpenCV
    returns no image (a cut inside a header or marker segment) it is a UserError."""
    data = jpeg_bytes(rng, kind)
    path = tmp_path / "cut.jpg"
    decoded = refused = 0
    for cut in list(range(2, len(data), max(1, len(data) // 97))) + [len(data) - 2, len(data) - 1]:
        path.write_bytes(data[:cut])
        want = cv2.imread(str(path), IMREAD)
        if want is None:
            with pytest.raises(UserError, match="cut.jpg: cannot decode image"):
                read_image_bgr(path)
            refused += 1
        else:
            np.testing.assert_array_equal(read_image_bgr(path), want, err_msg=f"cut at {cut} of {len(data)}")
            decoded += 1
    assert decoded > 50 and refused > 0


def test_only_the_formats_opencv_reads_are_decoded(tmp_path, rng):
    """ICO, TGA, PCX, SGI, QOI, XBM, DDS, MSP and ICNS files, which PIL reads, are refused as
    OpenCV's imread refuses them; BMP, GIF (a transparent colour shows GIF's background colour,
    as in OpenCV's decoder), JPEG 2000, WebP, AVIF, TIFF, PBM/PGM/PPM, Sun raster and animated PNG
    decode as cv2.imread decodes them."""
    smooth = Image.fromarray(image(rng, 60, 80, "smooth"))
    refused = {"x.ico": smooth, "x.tga": smooth, "x.pcx": smooth, "x.sgi": smooth, "x.qoi": smooth,
               "x.xbm": smooth.convert("1"), "x.dds": smooth, "x.msp": smooth.convert("1"),
               "x.icns": smooth.resize((16, 16))}
    for name, im in refused.items():
        im.save(tmp_path / name)
        assert cv2.imread(str(tmp_path / name), IMREAD) is None, name
        with pytest.raises(UserError, match=rf"{name}: cannot decode image \(ValueError: \w+ is a format that "
                                            "OpenCV's imread"):
            read_image_bgr(tmp_path / name)
    palette = smooth.quantize(64)
    read = {"x.bmp": (smooth, {}), "plain.gif": (palette, {}), "t.gif": (palette, dict(transparency=3)),
            "t_bg.gif": (palette, dict(transparency=3, background=5)),
            "t_interlaced.gif": (palette, dict(transparency=7, interlace=True)),
            "x.jp2": (smooth, {}), "x.webp": (smooth, dict(quality=80)), "ll.webp": (smooth, dict(lossless=True)),
            "x.avif": (smooth, {}), "x.tif": (smooth, dict(compression="tiff_lzw")), "x.ppm": (smooth, {}),
            "x.pgm": (smooth.convert("L"), {}), "x.pbm": (smooth.convert("1"), {}),
            "x.png": (smooth, dict(save_all=True, append_images=[smooth.transpose(0)]))}
    for name, (im, options) in read.items():
        im.save(tmp_path / name, **options)
    cv2.imwrite(str(tmp_path / "x.ras"), image(rng, 20, 30, "random"))           # PIL cannot write Sun rasters
    for name in list(read) + ["x.ras"]:
        want = cv2.imread(str(tmp_path / name), IMREAD)
        assert want is not None, name
        np.testing.assert_array_equal(read_image_bgr(tmp_path / name), want, err_msg=name)


# ------------------------------------------------------------------------ crop, mirror, mean

def caffe_transform_reference(img, h_off, w_off, crop, mirror, mean):
    """data_transformer.cpp's Transform(cv::Mat) loop, in float64."""
    height, width = img.shape[:2]
    out = np.zeros((3, crop, crop))
    for h in range(crop):
        for w in range(crop):
            for c in range(3):
                top_w = crop - 1 - w if mirror else w
                pixel = float(img[h_off + h, w_off + w, c])
                if mean.ndim == 3:
                    m = float(mean.reshape(-1)[(c * height + h_off + h) * width + w_off + w])
                else:
                    m = float(mean[c])
                out[c, h, top_w] = pixel - m
    return out.astype(np.float32)   # float64 result of uint8 - float32 rounds as float32 would


def test_crop_mirror_mean_match_caffe_loop(rng):
    img = image(rng, 40, 40, "random")
    mean_file = (rng.random((3, 40, 40)) * 255).astype(np.float32)
    for mean in (np.asarray(MEAN_VALUE, np.float32), mean_file):
        for h_off, w_off, mirror in [(0, 0, False), (9, 9, True), (3, 7, True), (5, 0, False)]:
            want = caffe_transform_reference(img, h_off, w_off, 31, mirror, mean)
            got = crop_and_subtract(img, h_off, w_off, mean, crop_size=31, mirror=mirror)
            np.testing.assert_array_equal(got, want)
            batch = train_transform_batch(img[None], [[h_off, w_off]], [mirror], mean, crop_size=31)
            np.testing.assert_array_equal(batch[0].numpy(), want)


def test_center_crop_is_offset_14(rng):
    img = image(rng, 256, 256, "random")
    got = center_crop(img)
    assert got.shape == (3, 227, 227) and got.dtype == np.float32
    want = img[14:241, 14:241].transpose(2, 0, 1).astype(np.float64) - np.reshape(MEAN_VALUE, (3, 1, 1))
    np.testing.assert_array_equal(got, want.astype(np.float32))
    mean_file = (rng.random((3, 256, 256)) * 255).astype(np.float32)
    want = img[14:241, 14:241].transpose(2, 0, 1) - mean_file[:, 14:241, 14:241]
    np.testing.assert_array_equal(center_crop(img, mean_file), want)


def caffe_io_oversample(images, crop_dims):
    """pycaffe's caffe.io.oversample, as published (python/caffe/io.py)."""
    im_shape = np.array(images[0].shape)
    crop_dims = np.array(crop_dims)
    im_center = im_shape[:2] / 2.0
    h_indices = (0, im_shape[0] - crop_dims[0])
    w_indices = (0, im_shape[1] - crop_dims[1])
    crops_ix = np.empty((5, 4), dtype=int)
    curr = 0
    for i in h_indices:
        for j in w_indices:
            crops_ix[curr] = (i, j, i + crop_dims[0], j + crop_dims[1])
            curr += 1
    crops_ix[4] = np.tile(im_center, (1, 2)) + np.concatenate([-crop_dims / 2.0, crop_dims / 2.0])
    crops_ix = np.tile(crops_ix, (2, 1))
    crops = np.empty((10 * len(images), crop_dims[0], crop_dims[1], im_shape[-1]), dtype=np.float32)
    ix = 0
    for im in images:
        for crop in crops_ix:
            crops[ix] = im[crop[0]:crop[2], crop[1]:crop[3], :]
            ix += 1
        crops[ix - 5:ix] = crops[ix - 5:ix, :, ::-1, :]
    return crops


def test_oversample_matches_pycaffe_order(rng):
    img = image(rng, 256, 256, "random")
    want = caffe_io_oversample([img.astype(np.float32)], (227, 227)) - np.float32(MEAN_VALUE)
    got = oversample(img)
    assert got.shape == (10, 3, 227, 227)
    np.testing.assert_array_equal(got, want.transpose(0, 3, 1, 2))
    # A mean image is taken at each crop's position (and mirrored with it).
    mean_file = (rng.random((3, 256, 256)) * 255).astype(np.float32)
    want = caffe_io_oversample([img - mean_file.transpose(1, 2, 0)], (227, 227))
    np.testing.assert_array_equal(oversample(img, mean_file), want.transpose(0, 3, 1, 2))


def test_train_transform_batch_matches_numpy_reference(rng):
    n = 8
    images = np.stack([image(rng, 256, 256, "random") for _ in range(n)])
    offsets = np.concatenate([[[0, 0], [29, 29], [0, 29], [29, 0]], rng.integers(0, 30, (n - 4, 2))])
    mirror = np.array([False, True, True, False, True, False, True, False])
    mean_file = (rng.random((3, 256, 256)) * 255).astype(np.float32)
    for mean in (MEAN_VALUE, mean_file):
        got = train_transform_batch(torch.from_numpy(images), torch.from_numpy(offsets),
                                    torch.from_numpy(mirror), mean)
        assert isinstance(got, torch.Tensor) and got.dtype == torch.float32
        assert got.shape == (n, 3, 227, 227) and got.is_contiguous()
        m = mean_array(mean)
        for i, ((h, w), flip) in enumerate(zip(offsets, mirror)):
            crop = images[i, h:h + 227, w:w + 227].transpose(2, 0, 1)
            mi = m[:, h:h + 227, w:w + 227] if m.shape[1] > 1 else m
            want = np.subtract(crop, mi, dtype=np.float32)
            np.testing.assert_array_equal(got[i].numpy(), want[:, :, ::-1] if flip else want)
    np.testing.assert_array_equal(center_crop_batch(images, mean_file).numpy(),
                                  np.stack([center_crop(im, mean_file) for im in images]))
    with pytest.raises(ValueError):
        train_transform_batch(images[:1], [[30, 0]], [False], MEAN_VALUE)


def test_mean_array_shapes():
    assert mean_array([104, 117, 123]).shape == (3, 1, 1)
    assert mean_array(torch.zeros(3, 256, 256)).shape == (3, 256, 256)
    for bad in ([1, 2], np.zeros((3, 255, 255)), np.zeros((1, 256, 256))):
        with pytest.raises(UserError):
            mean_array(bad)


def test_load_test_image_equals_opencv_pipeline(tmp_path, rng):
    path = tmp_path / "x.jpg"
    Image.fromarray(image(rng, 375, 500, "smooth")).save(path, quality=90)
    resized = cv2.resize(cv2.imread(str(path), IMREAD), (256, 256), interpolation=cv2.INTER_LINEAR)
    blob = resized[14:241, 14:241].transpose(2, 0, 1) - np.reshape(np.float32(MEAN_VALUE), (3, 1, 1))
    np.testing.assert_array_equal(load_test_image(path, MEAN_VALUE), blob)
    ten = load_test_image(path, MEAN_VALUE, oversample=True)
    assert ten.shape == (10, 3, CROP_SIZE, CROP_SIZE)
    np.testing.assert_array_equal(ten[4], blob)                  # the centre crop
    np.testing.assert_array_equal(ten[9], blob[:, :, ::-1])      # and its mirror


def test_decoding_prints_no_warnings(tmp_path, monkeypatch):
    """PIL's warnings (a large image, a corrupt EXIF block) would be lines beside the command's
    one line: decoding is silent, and the image decodes as before."""
    from reproduce.data.transforms import decode_image
    path = tmp_path / "big.png"
    Image.fromarray(np.full((40, 50, 3), 7, np.uint8)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)     # 2,000 pixels: PIL warns
    with warnings.catch_warnings():
        warnings.simplefilter("error")                          # a warning would fail here
        got = decode_image(path, np.asarray)
    assert got.shape == (40, 50, 3) and (got == 7).all()
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 999)      # over twice the bound: refused
    with pytest.raises(UserError, match="big.png: cannot decode image"):
        decode_image(path, np.asarray)
