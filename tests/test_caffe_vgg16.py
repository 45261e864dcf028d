"""The `caffe` tier for VGG-16 (issue 20): real Caffe loads the package's V1 VGG_ILSVRC_16_layers
file and saves it (V2, Net.save); the package converts both to exactly the weights Caffe holds, and
its fc7 (after relu7/drop7, TEST phase) equals Caffe's on the same input blobs.

Kept small for CPU: 2 images of 224 x 224 (VGG-16 costs ~15 GFLOPs per image).
"""
import numpy as np
import pytest
import torch

from caffe_oracle import run
from reproduce.caffe.caffe_net import deploy_prototxt
from reproduce.caffe.caffe_writer import write_caffemodel
from reproduce.model.archs import arch_spec
from reproduce.model.checkpoint import load_checkpoint, model_from_checkpoint
from reproduce.model.pretrained import convert
from reference import random_net_layers

pytestmark = pytest.mark.caffe

BITS = 12
N = 2


def test_vgg16_files_and_forward_match_caffe(tmp_path):
    layers = random_net_layers(BITS, seed=1409, arch="vgg16")
    v1 = tmp_path / "vgg16_v1.caffemodel"
    write_caffemodel(v1, layers, fmt="v1")
    prototxt = tmp_path / "deploy.prototxt"
    prototxt.write_text(deploy_prototxt("vgg16", BITS, batch=N))
    saved = tmp_path / "vgg16_saved_v2.caffemodel"
    caffe = run("net_params", tmp_path, {"prototxt": str(prototxt), "weights": str(v1), "save": str(saved)})
    caffe_weights = {f"{layer}.{'weight' if i == '0' else 'bias'}": v
                     for key, v in caffe.items() for layer, i in [key[len("param/"):].split("/")]}
    assert saved.is_file()
    for source in (v1, saved):          # the package's V1 file and Caffe's own V2 file
        out = tmp_path / f"{source.name}.pth"
        convert(source, out, log=lambda *a: None)          # arch detected: conv1_1
        ckpt = load_checkpoint(out)
        assert ckpt["arch"] == "vgg16" and ckpt["bits"] == BITS
        assert set(ckpt["state_dict"]) == set(caffe_weights)
        for key, value in ckpt["state_dict"].items():
            np.testing.assert_array_equal(value.numpy(), caffe_weights[key].reshape(value.shape),
                                          err_msg=f"{source.name} {key}")
    v1.unlink()

    spec = arch_spec("vgg16")
    rng = np.random.default_rng(224)
    data = (rng.uniform(0, 255, (N, 3, spec.crop_size, spec.crop_size))
            - np.array(spec.mean_value)[None, :, None, None]).astype(np.float32)
    caffe = run("forward", tmp_path, {"prototxt": str(prototxt), "weights": str(saved),
                                      "blobs": ["fc7", "tanh"]}, data=data)
    model = model_from_checkpoint(ckpt, str(out)).eval()
    with torch.no_grad():
        fc7 = model.features(torch.from_numpy(data))
        codes = model.hash(fc7)
    fc7_caffe, codes_caffe = caffe["blob/fc7"], caffe["blob/tanh"]
    abs_err = float(np.abs(fc7.numpy().astype(np.float64) - fc7_caffe).max())
    rel_err = abs_err / float(np.abs(fc7_caffe).max())
    code_err = float(np.abs(codes.numpy().astype(np.float64) - codes_caffe).max())
    # Measured (2 images, random He-scaled weights): fc7 max abs 1.1e-05 on max |fc7| 8.2 (relative
    # 1.3e-06), codes 2.4e-06; float32 summation order differs between Caffe's im2col + BLAS and
    # PyTorch's convolutions.
    print(f"\nvgg16 forward: fc7 max |ours - caffe| {abs_err:.2e} (relative to max |fc7| "
          f"{float(np.abs(fc7_caffe).max()):.2f}: {rel_err:.1e}), codes {code_err:.1e}")
    assert (fc7_caffe > 0).mean() > 0.2 and 0.2 < np.abs(codes_caffe).mean() < 0.95
    assert rel_err <= 1e-4 and code_err <= 1e-4
