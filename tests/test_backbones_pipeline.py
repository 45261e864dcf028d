"""The backbones (issue 20) through the data side and the pipeline: caches bound to their image
convention, checkpoints bound to their arch and convention, Caffe-only options refused for the torchvision
backbones, and `reproduce.custom --smoke --arch tv-resnet50` end to end."""
import json
import os

import h5py
import numpy as np
import pytest
import torch
import torchvision

import fake_datasets
from reproduce.data import batches, cache as image_cache
from reproduce.data import torchvision_transforms as tv
from reproduce.data.lists import read_list
from reproduce.data.preprocessing import preprocessing_for
from reproduce.errors import UserError
from reproduce.model.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from reproduce.model.nets import DHNNet
from reproduce.model.pretrained import convert


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """The 40-image list dataset of fake_datasets (non-square JPEGs), its training list."""
    folder = tmp_path_factory.mktemp("toy")
    argv = fake_datasets.make_toy_list_dataset(folder, "unused.pth")
    root = argv[argv.index("--root") + 1]
    return folder, argv, root, read_list(argv[argv.index("--train-list") + 1])


@pytest.fixture(scope="module")
def random_resnet50(tmp_path_factory):
    """torchvision's resnet50(weights=None) state dict, converted by the package (convert_weights)."""
    folder = tmp_path_factory.mktemp("tv_weights")
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), folder / "resnet50.pth")
    convert(folder / "resnet50.pth", folder / "tv-resnet50.pth", arch="tv-resnet50", log=lambda *a: None)
    return str(folder / "tv-resnet50.pth")


def test_torchvision_cache_holds_resize256_outputs_and_is_read_by_no_other_convention(toy, tmp_path):
    _, _, root, image_list = toy
    image_list = image_list.subset(range(12))
    tv_cache = image_cache.build_cache(image_list, root, str(tmp_path / "tv.h5"), workers=0, progress=False,
                                       preprocessing="torchvision")
    caffe_cache = image_cache.build_cache(image_list, root, str(tmp_path / "caffe.h5"), workers=0, progress=False)
    with image_cache.open_cache(tv_cache, image_list, preprocessing="torchvision") as f:
        assert f.attrs["preprocessing"] == "torchvision"
        for i in (0, 5, 11):
            want = tv.load_resized_rgb(os.path.join(root, image_list.paths[i]))
            assert tuple(f["shapes"][i]) == want.shape and min(want.shape[:2]) == 256
            np.testing.assert_array_equal(f["images"][i].reshape(want.shape), want)
    with pytest.raises(UserError, match=r"tv\.h5: cache of images prepared for the torchvision convention, "
                                        "but this backbone needs the caffe one"):
        image_cache.open_cache(tv_cache, image_list)
    with pytest.raises(UserError, match=r"caffe\.h5: cache of images prepared for the caffe convention"):
        image_cache.open_cache(caffe_cache, image_list, preprocessing="torchvision")
    with pytest.raises(UserError, match="caffe convention"):      # build_cache reuses only its own
        image_cache.build_cache(image_list, root, caffe_cache, workers=0, progress=False, preprocessing="torchvision")
    # a cache of before the attribute is Caffe's
    with h5py.File(caffe_cache, "r+") as f:
        del f.attrs["preprocessing"]
    image_cache.open_cache(caffe_cache, image_list).close()
    with pytest.raises(UserError, match="caffe convention"):
        image_cache.open_cache(caffe_cache, image_list, preprocessing="torchvision")
    # training batches: from the cache exactly what decoding on the fly gives, seeded
    transform = preprocessing_for("tv-resnet50")
    order = batches.BatchOrder(len(image_list), 4, seed=2, crop_size=224, preprocessing="torchvision")
    cached = batches.TrainBatches(image_list, order, transform, 0, 3, cache_path=tv_cache)
    direct = batches.TrainBatches(image_list, order, transform, 0, 3, root=root)
    for t in range(3):
        x, _, err = cached[t]
        assert err == "" and x.shape == (4, 3, 224, 224)
        torch.testing.assert_close(x, direct[t][0], rtol=0, atol=0)
        torch.testing.assert_close(x, batches.TrainBatches(image_list, order, transform, 0, 3,
                                                           cache_path=tv_cache)[t][0], rtol=0, atol=0)


def test_checkpoint_of_one_arch_refused_with_another(tmp_path, random_resnet50):
    ckpt = load_checkpoint(random_resnet50)
    assert ckpt["arch"] == "tv-resnet50" and ckpt["preprocessing"] == "torchvision"
    model = model_from_checkpoint(ckpt, random_resnet50, bits=8)
    assert model.features(torch.zeros(2, 3, 224, 224)).shape == (2, 2048)
    with pytest.raises(UserError, match=f"^{random_resnet50}: checkpoint is arch 'tv-resnet50', but 'caffenet'"):
        model_from_checkpoint(ckpt, random_resnet50, arch="caffenet")
    # a checkpoint without an arch, and a plain state dict (torchvision's files), say what they are
    raw = torch.load(random_resnet50, weights_only=True)
    del raw["arch"]
    torch.save(raw, tmp_path / "noarch.pth")
    with pytest.raises(UserError, match="noarch.pth: the checkpoint names no arch .one of caffenet, .*damaged"):
        load_checkpoint(tmp_path / "noarch.pth")
    torch.save(DHNNet("tv-alexnet", bits=0).state_dict(), tmp_path / "alexnet-owt.pth")
    with pytest.raises(UserError, match="alexnet-owt.pth: not a reproduce checkpoint .*plain state dict: convert a "
                                        "torchvision one with `python -m reproduce.convert_weights FILE --arch tv-"):
        load_checkpoint(tmp_path / "alexnet-owt.pth")
    # an old checkpoint (no preprocessing entry) loads as Caffe's; a contradicting one is refused
    path = tmp_path / "old.pth"
    save_checkpoint(path, DHNNet("caffenet", bits=0).state_dict(), "caffenet", 0)
    raw = torch.load(path, weights_only=True)
    del raw["preprocessing"]
    torch.save(raw, path)
    assert load_checkpoint(path)["preprocessing"] == "caffe"
    raw["preprocessing"] = "torchvision"
    torch.save(raw, path)
    with pytest.raises(UserError, match="old.pth: the checkpoint says arch 'caffenet' with the 'torchvision'"):
        load_checkpoint(path)


def test_encode_command_with_a_torchvision_backbone(toy, tmp_path, random_resnet50):
    from reproduce import encode
    folder, argv, root, _ = toy
    query = argv[argv.index("--query-list") + 1]
    base = ["--checkpoint", random_resnet50, "--list", query, "--root", root, "--workers", "0", "--device", "cpu"]
    for extra, option in ((["--mean", "1,2,3"], "--mean"), (["--oversample"], "--oversample"),
                          (["--pipeline", "pycaffe"], "--pipeline pycaffe"),
                          (["--pipeline", "imagedata"], "--pipeline imagedata"),   # by name: refused too
                          (["--mean-file", str(tmp_path / "no.npy")], "--mean-file")):   # not "no such file"
        with pytest.raises(UserError, match=f"^{option}: an option of the Caffe image convention; --arch tv-resnet50"):
            encode.main(base + ["--out", str(tmp_path / "x.h5")] + extra)
    with pytest.raises(UserError, match="checkpoint is arch 'tv-resnet50', but 'vgg16' was asked for"):
        encode.main(base + ["--out", str(tmp_path / "x.h5"), "--arch", "vgg16"])
    encode.main(base + ["--out", str(tmp_path / "f.h5"), "--features", "--arch", "tv-resnet50"])
    from reproduce import train
    train_args = ["--train-list", query, "--root", root, "--weights", random_resnet50, "--out", str(tmp_path / "run")]
    for extra in (["--mean", "1,2,3"], ["--arch", "tv-resnet50", "--mean-file", "m.npy"]):
        with pytest.raises(UserError, match="^--mean(-file)?: an option of the Caffe image convention"):
            train.main(train_args + extra)
    with h5py.File(tmp_path / "f.h5", "r") as f:
        assert f["features"].shape == (6, 2048) and "codes" not in f
        assert f.attrs["preprocessing"] == "torchvision" and f.attrs["arch"] == "tv-resnet50"
        assert f.attrs["transform"] == "center-crop-224"


def test_custom_smoke_with_tv_resnet50(toy, tmp_path, random_resnet50, random_caffenet):
    """The whole chain on a torchvision backbone: training, codes, features (2048), baselines,
    tables and figures naming it, run.json recording it; then its outputs are not taken as
    those of another backbone."""
    from reproduce.datasets import custom
    _, argv, _, _ = toy
    argv = [a if a != "unused.pth" else random_resnet50 for a in argv]
    argv += ["--out", str(tmp_path / "res"), "--work", str(tmp_path / "work"), "--arch", "tv-resnet50",
             "--bits", "12", "--variants", "dhn", "--baselines", "lsh", "--methods", "--workers", "0",
             "--device", "cpu", "--smoke"]
    custom.main(argv)
    table = open(tmp_path / "res" / "table1.md").read()
    assert "Table 1" in table and "tv-resnet50 backbone" in table
    run = json.load(open(tmp_path / "res" / "run.json"))
    assert run["backbone"]["arch"] == "tv-resnet50" and run["backbone"]["preprocessing"] == "torchvision"
    assert run["backbone"]["feature_dim"] == 2048
    with h5py.File(tmp_path / "work" / "features" / "query.h5", "r") as f:
        assert f["features"].shape[1] == 2048
    with h5py.File(tmp_path / "work" / "cache" / "train.h5", "r") as f:
        assert f.attrs["preprocessing"] == "torchvision"
    config = json.load(open(tmp_path / "work" / "train" / "dhn_12bits_seed0" / "config.json"))
    assert config["model"]["arch"] == "tv-resnet50" and config["data"]["mean"] is None
    with pytest.raises(UserError, match="^--oversample: an option of the Caffe image convention"):
        custom.main(argv + ["--oversample"])
    # weights of another arch are refused before any job, naming the file
    with pytest.raises(UserError, match=f"^{random_resnet50}: checkpoint is arch 'tv-resnet50', but --arch vgg16"):
        custom.main(argv + ["--arch", "vgg16"])
    # the same folders with another backbone: nothing made for tv-resnet50 is reused
    other = [random_caffenet if a == random_resnet50 else a for a in argv] + ["--arch", "caffenet"]
    with pytest.raises(UserError, match=r"cache/train\.h5: built with preprocessing 'torchvision', now null"):
        custom.main(other)


class _Recorder(torch.nn.Module):
    """A stand-in network of arch `arch` that records what the training loop feeds it."""

    def __init__(self, arch, bits=8):
        super().__init__()
        self.arch, self.bits, self.seen = arch, bits, []
        self.hash_layer = torch.nn.Linear(3, bits)

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return torch.tanh(self.hash_layer(x.mean(dim=(2, 3))))


@pytest.mark.parametrize("arch", ["vgg16", "tv-alexnet"])
def test_training_batches_follow_the_arch(toy, tmp_path, arch):
    """`train --arch` feeds the engine the arch's convention: VGG-16 crops 224 minus the VGG mean,
    tv-* torchvision's normalized crops; the batches are those of BatchOrder's seeded draws, from
    the cache the run builds for that convention."""
    from reproduce import train
    from reproduce.training import engine
    _, argv, root, _ = toy
    train_list = argv[argv.index("--train-list") + 1]
    args = train.get_args_parser().parse_args(
        ["--train-list", train_list, "--root", root, "--weights", "unused.pth", "--arch", arch, "--out",
         str(tmp_path / "run"), "--bits", "8", "--batch-size", "4", "--max-iter", "2", "--workers", "0", "--quiet"])
    cfg = train.config_from_args(args, ckpt={"arch": arch})
    spec_mean = None if arch.startswith("tv-") else (103.939, 116.779, 123.68)
    assert cfg.data.mean == spec_mean
    net = _Recorder(arch)
    engine.train(cfg, model=net, progress=False)
    transform = preprocessing_for(arch)
    image_list = read_list(train_list)
    order = batches.BatchOrder(len(image_list), 4, cfg.seed, crop_size=224, preprocessing=transform.name)
    want = batches.TrainBatches(image_list, order, transform, 0, 2, root=root)
    assert len(net.seen) == 2
    for t, x in enumerate(net.seen):
        assert x.shape == (4, 3, 224, 224)
        torch.testing.assert_close(x, want[t][0], rtol=0, atol=0)
    with h5py.File(tmp_path / "run" / "train_cache.h5", "r") as f:
        assert f.attrs["preprocessing"] == transform.name
    assert load_checkpoint(tmp_path / "run" / "final.pth")["preprocessing"] == transform.name
