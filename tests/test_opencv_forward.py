"""Forward equality with an independent Caffe implementation (the main proof of the conversion).

Full-size random weights are written as .caffemodel (V1 and V2) next to the deploy prototxt of
each arch; OpenCV 4's `cv2.dnn.readNetFromCaffe` (which implements Caffe's LRN, groups and ceil
pooling) runs them on a blob of mean-subtracted-pixel-like values, and DHNNet runs the converted
weights: fc7 and the tanh codes must agree to 1e-4, and the other arch must be clearly different.
"""
import cv2
import numpy as np
import pytest
import torch

from reproduce.caffe.caffe_format import read_caffemodel
from reproduce.caffe.caffe_net import caffe_to_state_dict, deploy_prototxt
from reproduce.caffe.caffe_writer import write_caffemodel
from reproduce.data.transforms import MEAN_VALUE
from reproduce.model.nets import DHNNet
from reference import random_net_layers

BITS = 32
TOL = 1e-4


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    layers = random_net_layers(BITS, 2016)
    rng = np.random.default_rng(2017)
    layers["fc8"] = [rng.standard_normal((1000, 4096), dtype=np.float32) * np.float32(0.01),
                     np.zeros(1000, np.float32)]
    folder = tmp_path_factory.mktemp("opencv_forward")
    paths = {}
    for fmt in ("v1", "v2"):
        paths[fmt] = folder / f"{fmt}.caffemodel"
        write_caffemodel(paths[fmt], layers, fmt=fmt)
    for arch in ("caffenet", "alexnet"):
        for bits in (BITS, None):
            paths[arch, bits] = folder / f"{arch}_{bits}.prototxt"
            paths[arch, bits].write_text(deploy_prototxt(arch, bits))
    yield paths
    for fmt in ("v1", "v2"):       # ~240 MiB each: do not leave them in pytest's kept tmp dirs
        paths[fmt].unlink()


@pytest.fixture(scope="module")
def blob():
    # batch 2, 3x227x227: 0-255 pixels minus the authors' BGR mean_value, as Caffe's data layer gives
    rng = np.random.default_rng(7)
    pixels = rng.uniform(0, 255, (2, 3, 227, 227))
    return (pixels - np.array(MEAN_VALUE)[None, :, None, None]).astype(np.float32)


def opencv_forward(prototxt, caffemodel, blob, outputs):
    net = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.enableFusion(False)     # layer outputs exactly as named (no relu fused into fc7)
    net.setInput(blob)
    return [np.array(o) for o in net.forward(outputs)]


_converted = {}


def dhn_forward(files, fmt, arch, blob):
    """DHNNet of `arch` with the weights converted from the `fmt` file: (fc7, codes)."""
    if (fmt, arch) not in _converted:
        state_dict, notes = caffe_to_state_dict(read_caffemodel(files[fmt]), arch, str(files[fmt]))
        assert any("fc8" in n for n in notes)
        model = DHNNet(arch, bits=BITS).eval()
        model.load_state_dict(state_dict)
        with torch.no_grad():
            fc7 = model.features(torch.from_numpy(blob))
            _converted[fmt, arch] = fc7.numpy(), model.hash(fc7).numpy()
    return _converted[fmt, arch]


@pytest.mark.parametrize("fmt", ["v1", "v2"])
@pytest.mark.parametrize("arch", ["caffenet", "alexnet"])
def test_forward_matches_opencv_caffe(files, blob, fmt, arch):
    other = "alexnet" if arch == "caffenet" else "caffenet"
    ref_fc7, ref_codes = opencv_forward(files[arch, BITS], files[fmt], blob, ["drop7", "tanh"])
    assert ref_fc7.shape == (2, 4096) and ref_codes.shape == (2, BITS)
    assert 0.3 < np.abs(ref_fc7).mean() < 3 and 0.2 < np.abs(ref_codes).mean() < 0.9   # O(1), not saturated
    fc7, codes = dhn_forward(files, fmt, arch, blob)
    assert np.abs(fc7 - ref_fc7).max() <= TOL
    assert np.abs(codes - ref_codes).max() <= TOL
    # the other arch (LRN and pooling swapped) on the same weights is clearly different
    wrong_fc7, wrong_codes = dhn_forward(files, fmt, other, blob)
    assert np.abs(wrong_fc7 - ref_fc7).max() > 100 * TOL
    assert np.abs(wrong_codes - ref_codes).max() > 100 * TOL


def test_zoo_deploy_without_hash_layer(files, blob):
    """The stock deploy.prototxt (fc8 + prob) runs on the same file; fc7 agrees as well."""
    ref_fc7, prob = opencv_forward(files["caffenet", None], files["v1"], blob, ["drop7", "prob"])
    assert prob.shape == (2, 1000) and np.allclose(prob.sum(1), 1, atol=1e-5)
    fc7, _ = dhn_forward(files, "v1", "caffenet", blob)
    assert np.abs(fc7 - ref_fc7).max() <= TOL
