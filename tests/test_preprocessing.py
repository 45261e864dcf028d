"""The backbones' image conventions (reproduce.data.preprocessing): torchvision's against its
transforms applied by hand, Caffe's at VGG-16's crop and mean against a float64 reference, the
authors' numbers unchanged, and the seeded crop/flip draws."""
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from reproduce.data import torchvision_transforms as tv
from reproduce.data.batches import BatchOrder
from reproduce.data.lists import ImageList
from reproduce.data.preprocessing import Preprocessing, check_caffe_only, preprocessing_for
from reproduce.data.transforms import CROP_SIZE, MEAN_VALUE, center_crop, resize_linear
from reproduce.errors import UserError

NORMALIZE = transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
# DeepHash-pytorch utils/tools.py image_transform(256, 224, ...), written out here by hand
TEST = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(), NORMALIZE])
TRAIN = transforms.Compose([transforms.Resize(256), transforms.RandomHorizontalFlip(), transforms.RandomCrop(224),
                            transforms.ToTensor(), NORMALIZE])

# (height, width, PIL mode, format): square, landscape, portrait, tall and thin, smaller than the
# crop, already 256 on the short side, grayscale, palette, RGBA, CMYK JPEG
IMAGES = [(300, 300, "RGB", "PNG"), (375, 500, "RGB", "JPEG"), (500, 375, "RGB", "PNG"), (900, 257, "RGB", "PNG"),
          (100, 180, "RGB", "PNG"), (256, 341, "RGB", "PNG"), (240, 320, "L", "PNG"), (260, 310, "P", "PNG"),
          (280, 300, "RGBA", "PNG"), (320, 240, "CMYK", "JPEG")]


def write_image(folder, k, h, w, mode, fmt, seed=0):
    rng = np.random.default_rng([seed, k])
    bands = {"L": 1, "P": 1, "RGB": 3, "RGBA": 4, "CMYK": 4}[mode]
    base = np.cumsum(rng.integers(-6, 7, (h, w, bands)), axis=1) + rng.integers(0, 256, (1, 1, bands))
    arr = np.clip(base, 0, 255).astype(np.uint8)
    im = Image.fromarray(arr[..., 0] if bands == 1 else arr, "L" if bands == 1 else ("RGBA" if bands == 4 else "RGB"))
    if mode == "P":
        im = im.convert("P")
    elif mode == "CMYK":
        im = Image.frombytes("CMYK", (w, h), arr.tobytes())
    path = folder / f"im{k}.{fmt.lower().replace('jpeg', 'jpg')}"
    im.save(path, fmt)
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tv_images")
    paths = [write_image(folder, k, *spec) for k, spec in enumerate(IMAGES)]
    return folder, ImageList([p.name for p in paths], np.eye(len(paths), 2, dtype=np.uint8), "list.txt", None)


def by_hand(path):
    """DeepHash-pytorch's ImageList.__getitem__: Image.open(path).convert('RGB')."""
    return Image.open(path).convert("RGB")


def test_torchvision_test_transform_equals_torchvisions_by_hand(images):
    folder, image_list = images
    convention = preprocessing_for("tv-resnet50")
    for i, name in enumerate(image_list.paths):
        resized = convention.load_resized(image_list, folder, i)
        assert resized.dtype == np.uint8 and resized.ndim == 3 and min(resized.shape[:2]) == 256
        want = TEST(by_hand(folder / name))
        got = torch.from_numpy(convention.test_blob(resized))
        assert got.shape == (3, 224, 224) and got.dtype == torch.float32
        assert torch.equal(got, want), name
    batch = convention.test_batch([convention.load_resized(image_list, folder, i) for i in range(2)])
    assert torch.equal(batch[1], TEST(by_hand(folder / image_list.paths[1])))


def test_torchvision_train_transform_equals_torchvisions_random_transforms(images):
    """With the draws RandomHorizontalFlip and RandomCrop make from torch's generator turned into
    our flags and fractions, the train transform gives what the Compose gives."""
    folder, image_list = images
    for i, name in enumerate(image_list.paths):
        for seed in range(3):
            torch.manual_seed(seed)
            want = TRAIN(by_hand(folder / name))
            resized = tv.load_resized_rgb(folder / name)
            h, w = resized.shape[:2]
            torch.manual_seed(seed)         # the same draws, in Compose's order
            flip = bool(torch.rand(1) < 0.5)
            top = int(torch.randint(0, h - 224 + 1, size=(1,)))
            left = int(torch.randint(0, w - 224 + 1, size=(1,)))
            fractions = ((top + 0.5) / (h - 223), (left + 0.5) / (w - 223))
            assert tv.crop_offsets(h, w, fractions) == (top, left)
            got = tv.train_transform_batch([resized], [fractions], [flip])[0]
            assert torch.equal(got, want), (name, seed)


def test_crop_offsets_cover_the_range_uniformly():
    assert tv.crop_offsets(256, 300, (0.0, 0.0)) == (0, 0)
    assert tv.crop_offsets(256, 300, (np.nextafter(1, 0), np.nextafter(1, 0))) == (32, 76)
    u = np.random.default_rng(0).random(20000)
    counts = np.bincount([tv.crop_offsets(256, 260, (0.0, v))[1] for v in u], minlength=37)
    assert counts.size == 37 and counts.min() > 0.8 * 20000 / 37
    with pytest.raises(ValueError, match="smaller than"):
        tv.crop_offsets(200, 300, (0.5, 0.5))


def test_caffe_convention_at_vgg16_crop_and_mean_equals_float64_reference():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    vgg = preprocessing_for("vgg16")
    assert vgg.name == "caffe" and vgg.crop_size == 224
    mean = np.array([103.939, 116.779, 123.68], dtype=np.float64).reshape(3, 1, 1)
    want = img[16:240, 16:240].transpose(2, 0, 1).astype(np.float64) - mean
    got = vgg.test_blob(img)
    assert got.shape == (3, 224, 224) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
    offsets, mirror = np.array([[0, 32], [32, 0], [5, 17]]), np.array([False, True, True])
    batch = vgg.train_batch(np.stack([img] * 3), offsets, mirror).numpy()
    for k, ((h, w), m) in enumerate(zip(offsets, mirror)):
        ref = img[h:h + 224, w:w + 224].transpose(2, 0, 1).astype(np.float64) - mean
        np.testing.assert_allclose(batch[k], ref[:, :, ::-1] if m else ref, rtol=0, atol=1e-4)


def test_caffenet_numbers_unchanged():
    """caffenet / alexnet: crop 227 at offset 14, mean 104, 117, 123 — as before backbones."""
    img = np.random.default_rng(2).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    for arch in ("caffenet", "alexnet"):
        convention = preprocessing_for(arch)
        assert (convention.name, convention.crop_size) == ("caffe", CROP_SIZE) == ("caffe", 227)
        assert np.array_equal(convention.test_blob(img), center_crop(img, MEAN_VALUE))
    order = BatchOrder(10, 4, seed=3)
    index, offsets, mirror = order.batch(2)
    rng = np.random.default_rng([3, 1, 2])
    assert np.array_equal(offsets, rng.integers(0, 30, size=(4, 2)))
    assert np.array_equal(mirror, rng.integers(0, 2, size=4).astype(bool))


def test_batch_order_draws_per_convention_are_seeded():
    vgg = BatchOrder(50, 16, seed=5, crop_size=224)
    offsets = np.concatenate([vgg.batch(t)[1] for t in range(20)])
    assert offsets.min() == 0 and offsets.max() == 32
    tvo = BatchOrder(50, 16, seed=5, crop_size=224, preprocessing="torchvision")
    a, b = tvo.batch(7), BatchOrder(50, 16, seed=5, crop_size=224, preprocessing="torchvision").batch(7)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert a[1].dtype == np.float64 and ((a[1] >= 0) & (a[1] < 1)).all()
    assert np.array_equal(a[0], vgg.batch(7)[0])       # the same images in the same order
    with pytest.raises(ValueError):
        BatchOrder(50, 16, seed=5, crop=False, preprocessing="torchvision")


def test_caffe_only_options_refused_with_a_torchvision_arch():
    check_caffe_only("vgg16", **{"--mean": "1,2,3"})
    check_caffe_only("tv-alexnet", **{"--mean": None, "--oversample": False})
    with pytest.raises(UserError, match="^--mean-file: an option of the Caffe image convention; --arch tv-vgg16"):
        check_caffe_only("tv-vgg16", **{"--mean": None, "--mean-file": "m.npy"})
    with pytest.raises(UserError, match="torchvision backbones normalize"):
        Preprocessing("torchvision", 224, mean=(1, 2, 3))
    with pytest.raises(UserError, match="unknown arch"):
        preprocessing_for("resnet18")


def test_caffe_resize_path_kept_for_caffe_archs(images):
    folder, image_list = images
    from reproduce.data.transforms import read_image_bgr
    got = preprocessing_for("vgg16").load_resized(image_list, folder, 1)
    assert np.array_equal(got, resize_linear(read_image_bgr(folder / image_list.paths[1])))


def test_dataset_commands_refuse_a_caffe_pipeline_named_with_a_torchvision_arch():
    """--pipeline imagedata is the Caffe archs' default, not something a tv arch does: given by
    name with one it is refused, as pycaffe is; left out, the config says imagedata (its identity
    unchanged)."""
    from reproduce.datasets import cifar10
    from reproduce.pipeline.reproduction import config_from_args, get_args_parser
    parser = get_args_parser(cifar10.PRESET)
    for pipeline in ("imagedata", "pycaffe"):
        args = parser.parse_args(["--root", "r", "--arch", "tv-resnet50", "--pipeline", pipeline])
        with pytest.raises(UserError, match=f"^--pipeline {pipeline}: an option of the Caffe image convention"):
            config_from_args(cifar10.PRESET, args)
    assert config_from_args(cifar10.PRESET, parser.parse_args(["--root", "r", "--arch", "tv-resnet50"])).pipeline \
        == "imagedata"
    assert config_from_args(cifar10.PRESET, parser.parse_args(["--root", "r"])).pipeline == "imagedata"
