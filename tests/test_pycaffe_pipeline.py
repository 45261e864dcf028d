"""reproduce.data.pycaffe_pipeline and `encode --pipeline pycaffe` against plain references.

Real pycaffe is the caffe tier's reference (tests/test_caffe_oracle.py); here the pieces are held
against independent implementations that need no Caffe: scipy.ndimage.zoom (what scikit-image's
resize calls) for the resize, float64 arithmetic written out for the decoding and preprocessing.
"""
import h5py
import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from reproduce.data.pycaffe_pipeline import (ILSVRC_2012_MEAN_BGR, load_image, predict_inputs, preprocess,
                                             resize_image)
from reproduce.encode import main
from reproduce.errors import UserError
from reproduce.model.checkpoint import save_checkpoint
from reproduce.model.nets import DHNNet


def skimage_2016_resize(im, dims):
    """scikit-image resize(order=1, mode='constant', cval=0), no anti-aliasing: ndimage.zoom in
    grid mode, grid-constant borders, float64 — on the image stretched to [0, 1], as pycaffe."""
    lo, hi = im.min(), im.max()
    std = (im - lo) / (hi - lo)
    zoom = (dims[0] / im.shape[0], dims[1] / im.shape[1], 1)
    out = ndimage.zoom(std.astype(np.float64), zoom, order=1, mode="grid-constant", cval=0.0,
                       grid_mode=True).astype(np.float32)
    return (out * (hi - lo) + lo).astype(np.float32)


@pytest.mark.parametrize("shape", [(28, 28), (3, 5), (375, 500), (256, 256), (1000, 300), (512, 512)])
def test_resize_equals_ndimage_zoom_grid_constant(rng, shape):
    im = rng.random(shape + (3,), dtype=np.float32)
    ours = resize_image(im)
    ref = skimage_2016_resize(im, (256, 256))
    assert ours.dtype == np.float32 and ours.shape == (256, 256, 3)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=2e-7)
    # borders blend with the zeros outside the image when enlarging (mode='constant')
    if shape[0] < 256:
        assert ours[0].mean() < im[0].mean()


def test_resize_of_a_constant_image_is_the_constant():
    im = np.full((40, 30, 3), 0.25, np.float32)
    out = resize_image(im)
    assert out.shape == (256, 256, 3) and (out == np.float32(0.25)).all()


def test_load_image_kinds(tmp_path, rng):
    """uint8 -> x / 255, uint16 -> x / 65535 (float64, then float32), grey tiled, alpha dropped,
    palette applied; RGB order."""
    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(np.dstack([rgb, rng.integers(0, 256, (20, 30), dtype=np.uint8)])).save(tmp_path / "rgba.png")
    Image.fromarray(rgb[..., 0]).save(tmp_path / "grey.png")
    deep = rng.integers(0, 65536, (20, 30), dtype=np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE).save(tmp_path / "palette.png")
    expect = (rgb.astype(np.float64) * (1 / 255)).astype(np.float32)
    np.testing.assert_array_equal(load_image(tmp_path / "rgb.png"), expect)
    np.testing.assert_array_equal(load_image(tmp_path / "rgba.png"), expect)
    np.testing.assert_array_equal(load_image(tmp_path / "grey.png"), np.repeat(expect[..., :1], 3, axis=2))
    np.testing.assert_array_equal(load_image(tmp_path / "deep.png")[..., 1],
                                  (deep.astype(np.float64) * (1 / 65535)).astype(np.float32))
    palette = Image.open(tmp_path / "palette.png").convert("RGB")
    np.testing.assert_array_equal(load_image(tmp_path / "palette.png"),
                                  (np.asarray(palette) * (1 / 255)).astype(np.float32))
    with pytest.raises(UserError, match="no such image"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(UserError, match="cannot decode"):
        load_image(tmp_path / "bad.jpg")


def test_preprocess_and_crops(rng, tmp_path):
    crop = rng.random((227, 227, 3), dtype=np.float32)
    blob = preprocess(crop)
    mean = np.array(ILSVRC_2012_MEAN_BGR)
    for c in range(3):     # BGR = RGB[2 - c]; x 255 in float32; float64 mean, rounded to float32
        want = (np.float64(crop[:, :, 2 - c] * np.float32(255)) - mean[c]).astype(np.float32)
        np.testing.assert_array_equal(blob[c], want)
    img = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "x.png")
    resized = resize_image(load_image(tmp_path / "x.png"))
    centre = predict_inputs(tmp_path / "x.png")
    np.testing.assert_array_equal(centre[0], preprocess(resized[14:241, 14:241]))
    ten = predict_inputs(tmp_path / "x.png", oversample=True)
    assert ten.shape == (10, 3, 227, 227)
    np.testing.assert_array_equal(ten[1], preprocess(resized[0:227, 29:256]))
    np.testing.assert_array_equal(ten[4], centre[0])
    np.testing.assert_array_equal(ten[9], ten[4][:, :, ::-1])


def test_encode_pipeline_pycaffe(tmp_path, rng):
    torch.manual_seed(0)
    model = DHNNet("caffenet", bits=8).eval()
    save_checkpoint(tmp_path / "ckpt.pth", model.state_dict(), "caffenet", 8)
    (tmp_path / "imgs").mkdir()
    for name in ("a.png", "b.jpg"):
        Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(tmp_path / "imgs" / name)
    (tmp_path / "list.txt").write_text("a.png 1 0\nb.jpg 0 1\n")
    args = ["--checkpoint", str(tmp_path / "ckpt.pth"), "--list", str(tmp_path / "list.txt"),
            "--root", str(tmp_path / "imgs"), "--workers", "0", "--device", "cpu", "--pipeline", "pycaffe"]
    main(args + ["--out", str(tmp_path / "codes.h5")])
    inputs = np.concatenate([predict_inputs(tmp_path / "imgs" / n) for n in ("a.png", "b.jpg")])
    with torch.no_grad():
        want = model(torch.from_numpy(inputs)).numpy()
    with h5py.File(tmp_path / "codes.h5", "r") as f:
        np.testing.assert_allclose(f["codes"][:], want, rtol=1e-5, atol=1e-6)
        assert f.attrs["pipeline"] == "pycaffe" and "skimage" in f.attrs["resize"]
        np.testing.assert_array_equal(f.attrs["mean"], ILSVRC_2012_MEAN_BGR)
    main(args + ["--out", str(tmp_path / "ten.h5"), "--oversample", "--mean", "100,110,120"])
    inputs = np.stack([predict_inputs(tmp_path / "imgs" / n, (100, 110, 120), oversample=True)
                       for n in ("a.png", "b.jpg")])
    with torch.no_grad():
        want = model(torch.from_numpy(inputs.reshape(-1, 3, 227, 227))).view(2, 10, 8).mean(1).numpy()
    with h5py.File(tmp_path / "ten.h5", "r") as f:
        np.testing.assert_allclose(f["codes"][:], want, rtol=1e-5, atol=1e-6)
        assert f.attrs["transform"] == "oversample-10"
