"""reproduce.convert_weights and reproduce.weights on full-size (~233 MiB) caffemodels: every format
converts bit for bit, bad input ends with one line and exit status 2 and leaves nothing behind,
and `weights fetch` verifies, caches and converts without any network (file:// and monkeypatching).
"""
import os
import subprocess
import sys
import urllib.error

import cv2
import numpy as np
import pytest
import torch

from reproduce import weights
from reproduce.caffe.caffe_writer import write_caffemodel, write_caffemodel_h5
from reproduce.convert_weights import main as convert_main
from reproduce.errors import UserError
from reproduce.model import pretrained
from reproduce.model.checkpoint import load_checkpoint, model_from_checkpoint
from reproduce.model.nets import expected_shapes
from reproduce.utils.fileio import sha1_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ORDER = {   # the layer order of the zoo files (Net::ToProto writes every layer, blobs or not)
    "caffenet": ["conv1", "relu1", "pool1", "norm1", "conv2", "relu2", "pool2", "norm2"],
    "alexnet": ["conv1", "relu1", "norm1", "pool1", "conv2", "relu2", "norm2", "pool2"],
}
REST = ["conv3", "relu3", "conv4", "relu4", "conv5", "relu5", "pool5", "fc6", "relu6", "drop6",
        "fc7", "relu7", "drop7", "fc8", "prob"]


def zoo_layers(arch, weights_by_layer):
    return {name: weights_by_layer.get(name, []) for name in ORDER[arch] + REST}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """Random full-size weights (fc8 included) and a V1 caffemodel of them in CaffeNet's order."""
    rng = np.random.default_rng(0)
    blobs = {}
    for k, shape in expected_shapes().items():
        blobs.setdefault(k.split(".")[0], []).append(rng.standard_normal(shape, dtype=np.float32))
    blobs["fc8"] = [rng.standard_normal((1000, 4096), dtype=np.float32), rng.standard_normal(1000, dtype=np.float32)]
    folder = tmp_path_factory.mktemp("convert")
    path = folder / "bvlc_reference_caffenet.caffemodel"
    write_caffemodel(path, zoo_layers("caffenet", blobs), fmt="v1")
    yield blobs, path
    path.unlink()


def assert_converted(out, blobs, arch, bits=0, src=None):
    ckpt = load_checkpoint(out)
    assert ckpt["arch"] == arch and ckpt["bits"] == bits
    for key, value in ckpt["state_dict"].items():
        layer, part = key.split(".")
        want = blobs["fch" if layer == "hash_layer" and "fch" in blobs else layer][part == "bias"]
        assert value.dtype == torch.float32 and torch.equal(value, torch.from_numpy(want)), key
    assert set(ckpt["state_dict"]) == set(expected_shapes(bits))
    if src is not None:
        assert ckpt["meta"]["source"] == os.path.basename(src) and ckpt["meta"]["source_sha1"] == sha1_file(src)
        assert any("fc8" in n and "dropped" in n for n in ckpt["meta"]["notes"])
    return ckpt


def test_cli_converts_zoo_v1_file(model, tmp_path, capsys):
    blobs, src = model
    out = tmp_path / "caffenet.pth"
    convert_main([str(src), "--out", str(out)])          # arch detected from the layer order
    printed = capsys.readouterr().out
    assert "caffenet" in printed and "layer order" in printed and "fc8" in printed
    ckpt = assert_converted(out, blobs, "caffenet", src=src)
    net = model_from_checkpoint(ckpt, str(out), bits=48)  # hash layer from the authors' filler
    assert net.hash_layer.weight.shape == (48, 4096)
    with pytest.raises(UserError, match="already exists"):
        convert_main([str(src), "--out", str(out)])
    convert_main([str(src), "--out", str(out), "--force", "--arch", "caffenet"])
    with pytest.raises(UserError, match="layer order is caffenet's .* --arch alexnet"):
        convert_main([str(src), "--out", str(tmp_path / "a.pth"), "--arch", "alexnet"])
    assert sorted(os.listdir(tmp_path)) == ["caffenet.pth"]


@pytest.mark.parametrize("fmt, packed", [("v2", True), ("v2-legacy-dims", False), ("h5", True)])
def test_other_formats_full_size(model, tmp_path, fmt, packed):
    blobs, _ = model
    src = tmp_path / ("m.caffemodel.h5" if fmt == "h5" else "m.caffemodel")
    if fmt == "h5":     # a model fine-tuned with the authors' code: its hash layer `fch` is imported
        blobs = dict(blobs, fch=[np.linspace(-1, 1, 16 * 4096, dtype=np.float32).reshape(16, 4096),
                                 np.arange(16, dtype=np.float32)])
        write_caffemodel_h5(src, blobs)
        arch, bits = "caffenet", 16     # HDF5 keeps no layer order: the default arch
    else:
        write_caffemodel(src, zoo_layers("alexnet", blobs), fmt=fmt, packed=packed)
        arch, bits = "alexnet", 0       # detected from the file's layer order
    out = tmp_path / "out.pth"
    convert_main([str(src), "--out", str(out)])
    assert_converted(out, blobs, arch, bits, src=src)


def run_module(*args):
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=120)


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and all(f in lines[0] for f in fragments), result.stderr


@pytest.mark.parametrize("problem", ["truncated", "jpeg", "missing_layer", "wrong_shape"])
def test_bad_input_exit_status_2(model, tmp_path, problem, rng):
    _, good = model
    src = tmp_path / "bad.caffemodel"
    if problem == "truncated":
        with open(good, "rb") as f:
            src.write_bytes(f.read(5 << 20))
        expect = "truncated"
    elif problem == "jpeg":
        src.write_bytes(cv2.imencode(".jpg", rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))[1].tobytes())
        expect = "not a Caffe file"
    elif problem == "missing_layer":
        write_caffemodel(src, {"conv1": [np.zeros((96, 3, 11, 11)), np.zeros(96)], "fc8": [np.zeros((10, 4))]})
        expect = "no layer 'conv2'"
    else:
        write_caffemodel(src, {"conv1": [np.zeros((96, 3, 7, 7)), np.zeros(96)]})
        expect = "conv1' weight has shape (96, 3, 7, 7)"
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    result = run_module("reproduce.convert_weights", str(src), "--arch", "caffenet", "--out", str(out_dir / "x.pth"))
    assert_one_line_error(result, str(src), expect)
    assert os.listdir(out_dir) == []


def test_fetch_sha1_mismatch_is_refused_and_leaves_nothing(tmp_path, rng):
    fake = tmp_path / "fake.caffemodel"
    fake.write_bytes(rng.integers(0, 256, 10000, dtype=np.uint8).tobytes())
    folder = tmp_path / "weights"
    result = run_module("reproduce.weights", "fetch", "caffenet", "--dir", str(folder), "--url", fake.as_uri())
    assert_one_line_error(result, fake.as_uri(), "sha1", pretrained.PRETRAINED["caffenet"].sha1)
    assert not folder.exists() or os.listdir(folder) == []


def test_fetch_downloads_verifies_converts_and_caches(model, tmp_path, monkeypatch, capsys):
    blobs, src = model
    entry = pretrained.Pretrained("caffenet", "bvlc_reference_caffenet.caffemodel", src.as_uri(), sha1_file(src))
    monkeypatch.setitem(pretrained.PRETRAINED, "caffenet", entry)
    folder = tmp_path / "weights"
    weights.main(["fetch", "caffenet", "--dir", str(folder)])
    out = folder / "caffenet.pth"
    assert_converted(out, blobs, "caffenet", src=folder / entry.filename)
    assert sha1_file(folder / entry.filename) == entry.sha1
    assert sorted(os.listdir(folder)) == ["bvlc_reference_caffenet.caffemodel", "caffenet.pth"]

    def no_download(*args, **kwargs):
        raise AssertionError("downloaded although the file was there")
    monkeypatch.setattr(pretrained, "download", no_download)
    assert pretrained.ensure_pretrained("caffenet", str(folder)) == str(out)
    capsys.readouterr()
    weights.main(["fetch", "caffenet", "--dir", str(folder)])
    assert "already exists" in capsys.readouterr().out
    out.unlink()        # the verified caffemodel is used again, not downloaded
    assert pretrained.ensure_pretrained("caffenet", str(folder)) == str(out)
    assert_converted(out, blobs, "caffenet")


def test_fetch_existing_file_with_wrong_sha1(model, tmp_path, capsys):
    blobs, src = model
    folder = tmp_path / "weights"
    folder.mkdir()
    os.link(src, folder / "bvlc_reference_caffenet.caffemodel")   # not the published bytes
    with pytest.raises(UserError, match="sha1 .* --no-verify"):
        pretrained.fetch("caffenet", str(folder))
    assert sorted(os.listdir(folder)) == ["bvlc_reference_caffenet.caffemodel"]
    weights.main(["fetch", "caffenet", "--dir", str(folder), "--no-verify"])
    assert "NOT the published one" in capsys.readouterr().out
    assert_converted(folder / "caffenet.pth", blobs, "caffenet")


def test_fetch_without_network_prints_manual_steps(tmp_path, monkeypatch):
    def unreachable(*args, **kwargs):
        raise urllib.error.URLError(OSError(101, "Network is unreachable"))
    monkeypatch.setattr(pretrained.urllib.request, "urlopen", unreachable)
    folder = tmp_path / "weights"
    with pytest.raises(UserError) as e:
        pretrained.fetch("alexnet", str(folder))
    message = str(e.value)
    assert "\n" not in message and "network unreachable" in message and pretrained.PRETRAINED["alexnet"].url in message
    assert str(folder / "bvlc_alexnet.caffemodel") in message and "reproduce.convert_weights" in message
    assert not folder.exists()          # nothing created, not even the folder
