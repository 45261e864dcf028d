"""The backbones of issue 20 without Caffe: torchvision's AlexNet / VGG-16 / ResNet-50 converted from
their state dicts give torchvision's own features, ResNet-50's BatchNorm stays frozen through a
training step, every parameter gets Caffe's multipliers, VGG-16's V1 .caffemodel (the zoo's format)
converts bit for bit, and mismatched or damaged files are refused with one line naming the file.
"""
import hashlib
import os
import re

import numpy as np
import pytest
import torch
import torchvision

from reproduce import weights
from reproduce.caffe.caffe_writer import write_caffemodel
from reproduce.convert_weights import main as convert_main
from reproduce.errors import UserError
from reproduce.model import pretrained
from reproduce.model.archs import ARCH_SPECS, ARCHS, arch_spec
from reproduce.model.checkpoint import load_checkpoint, model_from_checkpoint
from reproduce.model.nets import DHNNet, expected_shapes
from reproduce.training.solver import SolverSettings, caffe_param_groups
from reference import random_net_layers

TV_ARCHS = ("tv-alexnet", "tv-vgg16", "tv-resnet50")
BUILDERS = {"tv-alexnet": torchvision.models.alexnet, "tv-vgg16": torchvision.models.vgg16,
            "tv-resnet50": torchvision.models.resnet50}
# Inputs as small as each net's adaptive pooling allows, to keep the tests fast on CPU.
INPUT_SIZE = {"tv-alexnet": 112, "tv-vgg16": 64, "tv-resnet50": 64}


def quiet(*args):
    pass


def torchvision_model(arch, seed=0):
    """torchvision's model with random weights (and, for ResNet-50, random BatchNorm statistics, so
    that eval mode matters)."""
    torch.manual_seed(seed)
    model = BUILDERS[arch](weights=None)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.1)
                module.num_batches_tracked.fill_(7)
    return model


@pytest.fixture(scope="module", params=TV_ARCHS)
def tv_file(request, tmp_path_factory):
    """(arch, torchvision model, path of its torch.save(state_dict()))."""
    arch = request.param
    model = torchvision_model(arch)
    path = tmp_path_factory.mktemp(arch) / f"{arch}-random.pth"
    torch.save(model.state_dict(), path)
    yield arch, model, path
    path.unlink()


def test_registry():
    assert ARCHS == ("caffenet", "alexnet", "vgg16", "tv-alexnet", "tv-vgg16", "tv-resnet50")
    assert arch_spec("vgg16").crop_size == 224 and arch_spec("vgg16").mean_value == (103.939, 116.779, 123.68)
    assert arch_spec("caffenet").crop_size == 227 and arch_spec("caffenet").mean_value == (104.0, 117.0, 123.0)
    assert arch_spec("tv-resnet50").feature_dim == 2048 and arch_spec("tv-resnet50").mean_value is None
    with pytest.raises(UserError, match="unknown arch 'vgg19' .*tv-resnet50"):
        arch_spec("vgg19")
    for arch in ARCHS:   # every key and shape of the built net is what expected_shapes says
        with torch.device("meta"):
            net = DHNNet(arch, bits=12)
        have = {k: tuple(v.shape) for k, v in net.state_dict().items()}
        assert have == expected_shapes(12, arch), arch
        assert expected_shapes(12, arch)["hash_layer.weight"] == (12, ARCH_SPECS[arch].feature_dim)


def test_torchvision_features_match_torchvision(tv_file, tmp_path, capsys):
    """Converted from torchvision's state dict, DHNNet.features is torchvision's forward with its
    ImageNet classifier replaced by Identity (eval mode): the same modules, so equal to the bit."""
    arch, model, src = tv_file
    out = tmp_path / "converted.pth"
    convert_main([str(src), "--out", str(out)])              # arch detected from the keys
    printed = capsys.readouterr().out
    assert arch in printed and "ImageNet classifier" in printed
    ckpt = load_checkpoint(out)
    assert ckpt["arch"] == arch and ckpt["bits"] == 0
    net = model_from_checkpoint(ckpt, str(out), bits=16).eval()
    if arch == "tv-resnet50":
        model.fc = torch.nn.Identity()
    else:
        model.classifier[6] = torch.nn.Identity()
    model.eval()
    size = INPUT_SIZE[arch]
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, have, codes = model(x), net.features(x), net(x)
    err = float((have - want).abs().max())
    rel = err / float(want.abs().max())
    print(f"\n{arch}: features {tuple(have.shape)}, max |ours - torchvision| {err:.1e} (relative {rel:.1e})")
    assert have.shape == (2, ARCH_SPECS[arch].feature_dim) and codes.shape == (2, 16)
    assert float(want.abs().max()) > 0
    assert rel <= 1e-6


def test_resnet_batchnorm_frozen_through_a_training_step():
    """model.train() keeps every BatchNorm in eval mode; a CaffeSGD step changes the convolutions
    and the hash layer but neither the running statistics nor the affine weight/bias."""
    net = DHNNet("tv-resnet50", bits=8)
    net.load_state_dict({**torchvision_model("tv-resnet50").state_dict(),
                         **{k: v for k, v in net.state_dict().items() if k.startswith("hash_layer.")}},
                        strict=False)
    bn_before = {k: v.clone() for k, v in net.state_dict().items() if ".bn" in k or k.startswith("bn1.")
                 or ".downsample.1." in k}
    conv_before = net.conv1.weight.detach().clone()
    net.train()
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert net.training and len(bns) == 53 and not any(m.training for m in bns)
    groups = caffe_param_groups(net)
    names = {g["name"] for g in groups}
    assert not any(n.startswith("bn1.") or ".bn" in n or ".downsample.1." in n for n in names)
    solver = SolverSettings(base_lr=0.01).make_optimizer(groups)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    net(x).pow(2).sum().backward()
    solver.step()
    after = net.state_dict()
    assert all(torch.equal(after[k], v) for k, v in bn_before.items())
    assert not torch.equal(net.conv1.weight, conv_before)


@pytest.mark.parametrize("arch, name, mults", [
    ("vgg16", "conv1_1.weight", (1.0, 1.0)), ("vgg16", "fc7.bias", (2.0, 0.0)),
    ("tv-alexnet", "features.0.weight", (1.0, 1.0)), ("tv-alexnet", "classifier.4.bias", (2.0, 0.0)),
    ("tv-vgg16", "classifier.3.weight", (1.0, 1.0)),
    ("tv-resnet50", "layer4.2.conv3.weight", (1.0, 1.0)), ("tv-resnet50", "hash_layer.weight", (10.0, 1.0)),
    ("tv-alexnet", "hash_layer.bias", (20.0, 0.0))])
def test_caffe_multipliers_for_every_arch(arch, name, mults):
    with torch.device("meta"):
        net = DHNNet(arch, bits=8)
    groups = {g["name"]: (g["lr_mult"], g["decay_mult"]) for g in caffe_param_groups(net)}
    assert groups[name] == mults


def test_torchvision_dropouts_are_shared():
    """torchvision's classifier Dropouts become SharedDropout (one mask stream, as drop6/drop7)."""
    from reproduce.model.nets import SharedDropout
    for arch in ("tv-alexnet", "tv-vgg16"):
        with torch.device("meta"):
            net = DHNNet(arch, bits=8, dropout=0.5)
        drops = [m for m in net.modules() if isinstance(m, torch.nn.Dropout)]
        assert len(drops) == 2 and all(type(m) is SharedDropout and m.p == 0.5 for m in drops)


def test_vgg16_v1_caffemodel_converts_bit_for_bit(tmp_path, capsys):
    """The zoo's VGG_ILSVRC_16_layers is V1 (`layers`, enum types, legacy dims): a full-size V1 file
    in the deploy's layer order converts to exactly its blobs, arch detected, fc8 dropped."""
    layers = random_net_layers(0, seed=16, arch="vgg16")
    order = []
    for name in layers:
        order.append(name)
        order.append(name.replace("conv", "relu") if name.startswith("conv") else f"relu{name[-1]}")
        if name in ("conv1_2", "conv2_2", "conv3_3", "conv4_3", "conv5_3"):
            order.append(f"pool{name[4]}")
        if name.startswith("fc"):
            order.append(f"drop{name[-1]}")
    fc8 = [np.zeros((1000, 4096), np.float32), np.zeros(1000, np.float32)]
    file_layers = {name: layers.get(name, []) for name in order}
    file_layers.update(fc8=fc8, prob=[])
    src = tmp_path / "VGG_ILSVRC_16_layers.caffemodel"
    write_caffemodel(src, file_layers, fmt="v1")
    out = tmp_path / "vgg16.pth"
    convert_main([str(src), "--out", str(out)])
    assert "vgg16" in capsys.readouterr().out
    ckpt = load_checkpoint(out)
    assert ckpt["arch"] == "vgg16" and set(ckpt["state_dict"]) == set(expected_shapes(0, "vgg16"))
    for key, value in ckpt["state_dict"].items():
        layer, part = key.split(".")
        assert torch.equal(value, torch.from_numpy(layers[layer][part == "bias"])), key
    assert any("fc8" in n for n in ckpt["meta"]["notes"])
    # the same file given as CaffeNet is refused, naming the file
    with pytest.raises(UserError, match=f"{src}: the file's layers are vgg16's, but --arch caffenet"):
        convert_main([str(src), "--out", str(tmp_path / "x.pth"), "--arch", "caffenet"])
    src.unlink()


# ------------------------------------------------------------------------------------ refusals
def test_state_dict_given_with_a_caffe_arch_and_back(tmp_path):
    sd = tmp_path / "alexnet-owt.pth"
    torch.save(torchvision_model("tv-alexnet").state_dict(), sd)
    with pytest.raises(UserError, match=f"{sd}: a PyTorch state dict, not a .caffemodel: use --arch tv-"):
        convert_main([str(sd), "--out", str(tmp_path / "o.pth"), "--arch", "vgg16"])
    caffemodel = tmp_path / "m.caffemodel"
    write_caffemodel(caffemodel, {"conv1": [np.zeros((96, 3, 11, 11)), np.zeros(96)]})
    with pytest.raises(UserError, match=f"{caffemodel}: not a PyTorch state dict .* --arch caffenet"):
        convert_main([str(caffemodel), "--out", str(tmp_path / "o.pth"), "--arch", "tv-alexnet"])
    with pytest.raises(UserError, match="keys and shapes are tv-alexnet's, but --arch tv-vgg16"):
        convert_main([str(sd), "--out", str(tmp_path / "o.pth"), "--arch", "tv-vgg16"])
    ours = tmp_path / "ours.pth"
    convert_main([str(sd), "--out", str(ours)])
    with pytest.raises(UserError, match="already a reproduce checkpoint"):
        convert_main([str(ours), "--out", str(tmp_path / "again.pth")])
    assert sorted(os.listdir(tmp_path)) == ["alexnet-owt.pth", "m.caffemodel", "ours.pth"]


@pytest.mark.parametrize("problem, expect", [
    ("missing", r"missing key\(s\) classifier.4.weight"),
    ("extra", r"unexpected key\(s\) for tv-alexnet: extra.weight .*only the ImageNet classifier classifier.6"),
    ("shape", r"classifier.1.weight has shape \(4096, 10\), tv-alexnet expects \(4096, 9216\)"),
    ("nan", "features.0.weight holds 1 NaN"),
    ("pickle", "holds Python objects beyond tensors"),
    ("truncated", "not a readable PyTorch state dict")])
def test_bad_state_dicts_are_refused(tmp_path, problem, expect):
    sd = torchvision_model("tv-alexnet").state_dict()
    src = tmp_path / "bad.pth"
    if problem == "missing":
        del sd["classifier.4.weight"]
    elif problem == "extra":
        sd["extra.weight"] = torch.zeros(3)
    elif problem == "shape":
        sd["classifier.1.weight"] = torch.zeros(4096, 10)
    elif problem == "nan":
        sd["features.0.weight"][0, 0, 0, 0] = float("nan")
    if problem == "pickle":
        torch.save({"model": torchvision.models.alexnet()}, src)
    else:
        torch.save(sd, src)
    if problem == "truncated":
        src.write_bytes(src.read_bytes()[:100000])
    with pytest.raises(UserError, match=f"{src}: .*{expect}") as e:
        convert_main([str(src), "--out", str(tmp_path / "o.pth"), "--arch", "tv-alexnet"])
    assert "\n" not in str(e.value)
    assert not (tmp_path / "o.pth").exists()


def test_missing_batchnorm_counters_are_filled(tmp_path, capsys):
    """State dicts saved before torch 0.4.1 have no num_batches_tracked: filled with 0, as
    BatchNorm's own loading does."""
    sd = {k: v for k, v in torchvision_model("tv-resnet50").state_dict().items()
          if not k.endswith("num_batches_tracked")}
    src = tmp_path / "old.pth"
    torch.save(sd, src)
    convert_main([str(src), "--out", str(tmp_path / "o.pth"), "--arch", "tv-resnet50"])
    assert "53 BatchNorm num_batches_tracked" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------- fetch
def test_published_files_come_from_torchvision():
    assert pretrained.PRETRAINED["tv-alexnet"].url == "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
    assert pretrained.PRETRAINED["tv-alexnet"].sha256_prefix == "7be5be79"
    assert pretrained.PRETRAINED["tv-vgg16"].filename == "vgg16-397923af.pth"
    assert pretrained.PRETRAINED["tv-resnet50"].sha256_prefix == "0676ba61"
    vgg = pretrained.PRETRAINED["vgg16"]
    assert vgg.url.endswith("/very_deep/caffe/VGG_ILSVRC_16_layers.caffemodel") and vgg.checksum is None


def test_fetch_torchvision_verifies_sha256_prefix_and_converts(tmp_path, monkeypatch, capsys):
    src = tmp_path / "alexnet-random.pth"
    torch.save(torchvision_model("tv-alexnet").state_dict(), src)
    prefix = hashlib.sha256(src.read_bytes()).hexdigest()[:8]
    wrong = "0" * 8 if prefix != "0" * 8 else "1" * 8
    folder = tmp_path / "weights"
    entry = pretrained.Pretrained("tv-alexnet", f"alexnet-x-{wrong}.pth", src.as_uri(), None, wrong)
    monkeypatch.setitem(pretrained.PRETRAINED, "tv-alexnet", entry)
    with pytest.raises(UserError, match=f"sha256 {prefix}.*expected sha256 {wrong}"):
        weights.main(["fetch", "tv-alexnet", "--dir", str(folder)])
    assert not folder.exists() or os.listdir(folder) == []
    entry = pretrained.Pretrained("tv-alexnet", f"alexnet-x-{prefix}.pth", src.as_uri(), None, prefix)
    monkeypatch.setitem(pretrained.PRETRAINED, "tv-alexnet", entry)
    weights.main(["fetch", "tv-alexnet", "--dir", str(folder)])
    ckpt = load_checkpoint(folder / "tv-alexnet.pth")
    assert ckpt["arch"] == "tv-alexnet"
    (folder / "tv-alexnet.pth").unlink()            # the verified download is used again
    monkeypatch.setattr(pretrained, "download", lambda *a, **k: pytest.fail("downloaded again"))
    weights.main(["fetch", "tv-alexnet", "--dir", str(folder)])
    assert "verified" in capsys.readouterr().out


def test_a_state_dict_of_another_arch_is_refused_in_one_short_line():
    """ResNet-50's 320 keys are not all named: the first few and how many."""
    from reproduce.model.checkpoint import check_state_dict
    with torch.device("meta"):
        alexnet = DHNNet("tv-alexnet", bits=0).state_dict()
    with pytest.raises(UserError) as e:
        check_state_dict(alexnet, 0, "w.pth", arch="tv-resnet50")
    n = len(expected_shapes(0, "tv-resnet50"))
    assert re.fullmatch(r"w.pth: missing parameter\(s\) (\S+, ){4}\S+ \.\.\. \(\d+ in all\) \(not a tv-resnet50 "
                        r"model of this package, or a damaged one\)", str(e.value)), str(e.value)
    assert len(str(e.value)) < 300 and n > 300
