"""reproduce.caffe.caffe_format: the hand-written protobuf reader against a plain, field-by-field encoder,
the writers' round trips in every format, bad files, mean files, deploy prototxts and the mapping
of Caffe layers onto DHNNet parameters."""
import re
import struct

import cv2
import h5py
import numpy as np
import pytest
import torch

from reproduce.caffe import caffe_format as cf, caffe_net, caffe_writer as cw
from reproduce.errors import UserError
from reproduce.model.nets import FEATURE_LAYERS, expected_shapes


# ---------------------------------------------------------------- plain protobuf encoder (reference)
def varint(n):
    out = b""
    while True:
        byte, n = n & 0x7F, n >> 7
        out += bytes([byte | (0x80 if n else 0)])
        if not n:
            return out


def key(field, wire):
    return varint(field << 3 | wire)


def ld(field, payload):          # length-delimited field
    return key(field, 2) + varint(len(payload)) + payload


def vi(field, n):                # varint field
    return key(field, 0) + varint(n)


def floats_packed(field, values):
    return ld(field, b"".join(struct.pack("<f", v) for v in values))


def floats_unpacked(field, values):
    return b"".join(key(field, 5) + struct.pack("<f", v) for v in values)


def doubles_unpacked(field, values):
    return b"".join(key(field, 1) + struct.pack("<d", v) for v in values)


def legacy_dims(*dims):
    return b"".join(vi(f, d) for f, d in zip((1, 2, 3, 4), dims))


def blob_shape(*dims, packed=True):
    body = ld(1, b"".join(varint(d) for d in dims)) if packed else b"".join(vi(1, d) for d in dims)
    return ld(7, body)


def test_reads_hand_encoded_v1_v0_v2_mixed_file(tmp_path):
    w_conv = np.arange(6, dtype=np.float32) - 2.5          # (2, 3, 1, 1)
    w_fc = np.array([1, -1, 0, 0, 2.5, -0.0], np.float32)  # (2, 3), ties and a negative zero
    conv1 = (ld(2, b"data") + ld(3, b"conv1") + ld(4, b"conv1") + vi(5, 4)
             + ld(6, legacy_dims(2, 3, 1, 1) + floats_packed(5, w_conv))
             + ld(6, legacy_dims(1, 1, 1, 2) + floats_unpacked(5, [0.5, -0.5]))
             + floats_unpacked(7, [1.0, 2.0])               # blobs_lr: unknown here, skipped
             + ld(10, vi(1, 2) + vi(4, 1)))                 # convolution_param: skipped
    relu1 = ld(4, b"relu1") + vi(5, 18)
    fc6 = (ld(4, b"fc6") + vi(5, 14)
           + ld(6, legacy_dims(1, 1, 2, 3) + floats_unpacked(5, w_fc))
           + ld(6, legacy_dims(1, 1, 1, 2) + doubles_unpacked(8, [1e-3, 7.0])))
    v0 = ld(1, ld(1, b"old") + ld(2, b"innerproduct") + ld(50, legacy_dims(1, 1, 1, 2) + floats_packed(5, [3, 4])))
    fc7 = (ld(1, b"fc7") + ld(2, b"InnerProduct") + ld(3, b"fc6") + ld(4, b"fc7")
           + ld(7, blob_shape(2, 2, packed=False) + floats_packed(5, [1, 2, 3, 4]))
           + ld(7, blob_shape(2) + ld(8, b"".join(struct.pack("<d", v) for v in (5, 6)))))
    fc8 = ld(1, b"fc8") + ld(2, b"InnerProduct") + ld(7, legacy_dims(1, 1, 2, 2) + floats_packed(5, [9, 9, 9, 9]))
    net = ld(1, b"CaffeNet") + ld(3, b"data") + vi(4, 10) + ld(2, conv1) + ld(2, relu1) + ld(2, fc6) + ld(2, v0) \
        + ld(100, fc7) + ld(100, fc8)
    path = tmp_path / "hand.caffemodel"
    path.write_bytes(net)
    blobs = cf.read_caffemodel(path)
    assert list(blobs) == ["conv1", "relu1", "fc6", "old", "fc7", "fc8"]
    assert blobs["relu1"] == []
    np.testing.assert_array_equal(blobs["conv1"][0], w_conv.reshape(2, 3, 1, 1))
    np.testing.assert_array_equal(blobs["conv1"][1], [0.5, -0.5])          # legacy (1,1,1,2) -> (2,)
    np.testing.assert_array_equal(blobs["fc6"][0], w_fc.reshape(2, 3))     # legacy (1,1,2,3) -> (2,3)
    assert np.signbit(blobs["fc6"][0][1, 2])
    np.testing.assert_array_equal(blobs["fc6"][1], np.float32([1e-3, 7.0]))
    np.testing.assert_array_equal(blobs["old"][0], [[3, 4]])                # V0 fc weight (1, 1, 1, 2)
    np.testing.assert_array_equal(blobs["fc7"][0], [[1, 2], [3, 4]])
    np.testing.assert_array_equal(blobs["fc7"][1], [5, 6])
    assert blobs["fc8"][0].shape == (2, 2)                                   # V2 layer, legacy dims
    assert all(b.dtype == np.float32 for v in blobs.values() for b in v)


def random_layers(rng):
    special = np.float32([0, -0.0, np.inf, -np.inf, np.nan, 1e-45, 3.4e38, -1])
    layers = {
        "conv1": [rng.standard_normal((4, 3, 5, 5)).astype(np.float32), np.repeat(special[:4], 1)],
        "relu1": [],
        "pool1": [],
        "fc6": [np.resize(special, (3, 7)), rng.integers(-2, 3, 3).astype(np.float32)],     # ties
        "big": [rng.standard_normal((3, 4500)).astype(np.float32)],    # > one _run_length chunk
        "conv2": [rng.standard_normal((1, 2, 3, 3)).astype(np.float32), np.zeros(1, np.float32)],
    }
    return layers


def assert_same_layers(read, written):
    assert list(read) == list(written)
    for name, blobs in written.items():
        assert len(read[name]) == len(blobs)
        for a, b in zip(read[name], blobs):
            assert a.shape == b.shape and a.dtype == np.float32
            np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))   # bit for bit


@pytest.mark.parametrize("fmt", ["v1", "v2", "v2-legacy-dims"])
@pytest.mark.parametrize("packed", [True, False])
def test_round_trip_every_format(tmp_path, rng, fmt, packed):
    layers = random_layers(rng)
    path = tmp_path / "m.caffemodel"
    cw.write_caffemodel(path, layers, fmt=fmt, packed=packed)
    # the layers hold inf and NaN on purpose: read as stored with allow_nonfinite (by default
    # non-finite weights are refused: tests/test_fuzz_parsers.py, tests/test_bad_inputs.py)
    assert_same_layers(cf.read_caffemodel(path, allow_nonfinite=True), layers)
    with pytest.raises(UserError, match="already exists"):
        cw.write_caffemodel(path, layers, fmt=fmt, packed=packed)


def test_round_trip_h5(tmp_path, rng):
    layers = random_layers(rng)
    path = tmp_path / "m.caffemodel.h5"
    cw.write_caffemodel_h5(path, layers)
    with h5py.File(path) as f:
        assert f["data/conv1/0"].shape == (4, 3, 5, 5)
    read = cf.read_caffemodel(path, allow_nonfinite=True)
    with_blobs = {k: v for k, v in layers.items() if v}
    assert_same_layers({k: read[k] for k in with_blobs}, with_blobs)
    assert set(read) == set(with_blobs)


def test_truncated_file_at_every_length(tmp_path, rng):
    layers = {"conv1": [rng.standard_normal((2, 3, 2, 2)).astype(np.float32), np.ones(2, np.float32)],
              "relu1": [], "fc6": [np.ones((2, 3), np.float32), np.ones(2, np.float32)]}
    full = tmp_path / "full.caffemodel"
    cw.write_caffemodel(full, layers, fmt="v1", packed=False)
    data = full.read_bytes()
    cut = tmp_path / "cut.caffemodel"
    errors = 0
    for n in range(len(data)):
        cut.write_bytes(data[:n])
        try:
            read = cf.read_caffemodel(cut)
        except UserError as e:
            assert str(cut) in str(e) and "\n" not in str(e)
            errors += 1
            continue
        # only a cut exactly between two layers parses, and then gives the first layers unchanged
        assert list(read) == list(layers)[:len(read)]
        assert_same_layers(read, {k: layers[k] for k in read})
    assert errors >= len(data) - 3


@pytest.mark.parametrize("seed", range(30))
def test_random_bytes_are_refused(tmp_path, seed):
    path = tmp_path / "random.caffemodel"
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, 2000, dtype=np.uint8).tobytes())
    with pytest.raises(UserError, match="random.caffemodel"):
        cf.read_caffemodel(path)


@pytest.mark.parametrize("content", ["jpeg", "prototxt", "empty", "binaryproto"])
def test_other_files_are_refused(tmp_path, rng, content):
    path = tmp_path / "x.caffemodel"
    if content == "jpeg":
        path.write_bytes(cv2.imencode(".jpg", rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))[1].tobytes())
    elif content == "prototxt":
        path.write_text(caffe_net.deploy_prototxt("caffenet"))
    elif content == "binaryproto":
        cw.write_binaryproto(path, np.zeros((3, 4, 4)), overwrite=True)
    else:
        path.write_bytes(b"")
    with pytest.raises(UserError, match="x.caffemodel: "):
        cf.read_caffemodel(path)


def test_missing_file_and_bad_h5(tmp_path):
    with pytest.raises(UserError, match="no such caffemodel"):
        cf.read_caffemodel(tmp_path / "nope.caffemodel")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(UserError, match="other.h5: .*'data' group"):
        cf.read_caffemodel(tmp_path / "other.h5")
    with h5py.File(tmp_path / "gaps.h5", "w") as f:
        f["data/conv1/0"] = np.zeros(3)
        f["data/conv1/2"] = np.zeros(3)                  # blob 1 missing
    with pytest.raises(UserError, match="gaps.h5: unreadable Caffe HDF5 snapshot"):
        cf.read_caffemodel(tmp_path / "gaps.h5")


def test_read_mean_binaryproto_and_npy(tmp_path, rng):
    mean = rng.uniform(0, 255, (3, 256, 256)).astype(np.float32)
    cw.write_binaryproto(tmp_path / "mean.binaryproto", mean)
    np.testing.assert_array_equal(cf.read_mean(tmp_path / "mean.binaryproto"), mean)
    hand = legacy_dims(1, 3, 256, 256) + floats_packed(5, mean.ravel().tolist())   # the reference encoder
    (tmp_path / "hand.binaryproto").write_bytes(hand)
    np.testing.assert_array_equal(cf.read_mean(tmp_path / "hand.binaryproto"), mean)
    np.save(tmp_path / "mean.npy", mean.astype(np.float64))
    got = cf.read_mean(tmp_path / "mean.npy")
    assert got.dtype == np.float32 and got.shape == (3, 256, 256)
    np.testing.assert_array_equal(got, mean)
    np.save(tmp_path / "bad.npy", np.zeros((256, 256, 3)))
    with pytest.raises(UserError, match=r"bad.npy: mean has shape \(256, 256, 3\)"):
        cf.read_mean(tmp_path / "bad.npy")
    (tmp_path / "cut.binaryproto").write_bytes(hand[:1000])
    with pytest.raises(UserError, match="cut.binaryproto: truncated"):
        cf.read_mean(tmp_path / "cut.binaryproto")


@pytest.mark.parametrize("arch", ["caffenet", "alexnet"])
@pytest.mark.parametrize("bits", [None, 48])
def test_deploy_prototxt_parses_in_opencv(tmp_path, arch, bits):
    text = caffe_net.deploy_prototxt(arch, bits)
    path = tmp_path / "deploy.prototxt"
    path.write_text(text)
    names = list(cv2.dnn.readNetFromCaffe(str(path)).getLayerNames())
    for i in "12":      # CaffeNet pools before LRN, AlexNet after
        assert (names.index(f"pool{i}") < names.index(f"norm{i}")) == (arch == "caffenet")
    assert text.count("group: 2") == 3
    if bits:
        assert names[-2:] == ["hash_layer", "tanh"] and f"num_output: {bits}\n" in text and "fc8" not in text
    else:
        assert names[-2:] == ["fc8", "prob"]
    # same length as BVLC/caffe master's models/bvlc_*/deploy.prototxt (Input-layer version)
    if bits is None:
        assert len(text) == {"caffenet": 2878, "alexnet": 3629}[arch]


def full_size(bits=0, legacy=False):
    """{layer: [weight, bias]} of the real shapes, zeros (cheap: calloc'ed pages are not touched)."""
    layers = {}
    for k, shape in expected_shapes(bits).items():
        layer, part = k.split(".")
        if legacy:
            shape = (1,) * (4 - len(shape)) + shape
        layers.setdefault(layer, []).append(np.zeros(shape, np.float32))
    return layers


def test_caffe_to_state_dict_maps_drops_and_imports(rng):
    layers = full_size(legacy=True)                  # fc weights as legacy (1, 1, out, in)
    layers["conv3"][1][:] = rng.standard_normal(384)
    layers["fc8"] = [np.zeros((1000, 4096), np.float32), np.zeros(1000, np.float32)]
    layers["relu1"] = []
    layers["fch"] = [rng.standard_normal((16, 4096)).astype(np.float32), np.zeros(16, np.float32)]
    sd, notes = caffe_net.caffe_to_state_dict(layers, "caffenet", "m.caffemodel")
    assert set(sd) == set(expected_shapes(16))
    assert all(tuple(v.shape) == expected_shapes(16)[k] and v.dtype == torch.float32 for k, v in sd.items())
    np.testing.assert_array_equal(sd["conv3.bias"].numpy(), layers["conv3"][1].ravel())
    np.testing.assert_array_equal(sd["hash_layer.weight"].numpy(), layers["fch"][0])
    assert any("fc8" in n and "dropped" in n for n in notes) and any("fch" in n and "16 bits" in n for n in notes)
    back = caffe_net.state_dict_to_caffe(sd)
    assert list(back) == list(FEATURE_LAYERS) + ["hash_layer"]
    np.testing.assert_array_equal(back["hash_layer"][0], layers["fch"][0])


@pytest.mark.parametrize("problem, message", [
    ("missing", r"m.caffemodel: no layer 'conv3' with weights"),
    ("no_group", r"m.caffemodel: layer 'conv2' weight has shape \(256, 96, 5, 5\), caffenet expects \(256, 48, 5, 5\)"),
    ("three_blobs", r"m.caffemodel: layer 'fc7' has 3 blobs"),
    ("two_hash", r"m.caffemodel: both 'hash_layer' and 'fch'"),
    ("hash_width", r"m.caffemodel: layer 'hash_layer' weight has shape \(8, 4000\)"),
])
def test_caffe_to_state_dict_refuses(problem, message):
    layers = full_size()
    if problem == "missing":
        del layers["conv3"]
    elif problem == "no_group":
        layers["conv2"][0] = np.zeros((256, 96, 5, 5), np.float32)
    elif problem == "three_blobs":
        layers["fc7"].append(np.zeros(1, np.float32))
    elif problem == "two_hash":
        layers["hash_layer"] = layers["fch"] = [np.zeros((8, 4096), np.float32), np.zeros(8, np.float32)]
    else:
        layers["hash_layer"] = [np.zeros((8, 4000), np.float32), np.zeros(8, np.float32)]
    with pytest.raises(UserError, match=message):
        caffe_net.caffe_to_state_dict(layers, "caffenet", "m.caffemodel")


def test_detect_arch():
    assert caffe_net.detect_arch({"conv1": [], "pool1": [], "norm1": []}) == "caffenet"
    assert caffe_net.detect_arch({"conv1": [], "norm1": [], "pool1": []}) == "alexnet"
    assert caffe_net.detect_arch({"conv1": [np.zeros(1)]}) is None


def test_doubles_beyond_float32_are_refused(tmp_path):
    """double_data (field 8) is read into float32 blobs as Caffe does; a finite double beyond
    float32's range would become an infinity, so the file is refused, naming the blob."""
    blob = legacy_dims(1, 1, 1, 2) + doubles_unpacked(8, [1.0, 1e300])
    layer = ld(1, b"conv1") + ld(2, b"Convolution") + ld(7, blob)
    (tmp_path / "d.caffemodel").write_bytes(ld(100, layer))
    with pytest.raises(UserError, match=r"d.caffemodel: layer 1 \(conv1\) blob 0 holds 1e\+300 at flat index 1, beyond float32"):
        cf.read_caffemodel(tmp_path / "d.caffemodel")
    fine = legacy_dims(1, 1, 1, 2) + doubles_unpacked(8, [1.0, 1e30])
    (tmp_path / "f.caffemodel").write_bytes(ld(100, ld(1, b"conv1") + ld(2, b"Convolution") + ld(7, fine)))
    np.testing.assert_array_equal(cf.read_caffemodel(tmp_path / "f.caffemodel")["conv1"][0].ravel(),
                                  np.float32([1.0, 1e30]))


def test_mean_outside_the_pixel_range_is_refused(tmp_path):
    for value in (-1.0, 255.5, 1e300):
        np.save(tmp_path / "m.npy", np.full((3, 256, 256), 100.0))
        m = np.load(tmp_path / "m.npy")
        m[2, 7, 9] = value
        np.save(tmp_path / "m.npy", m)
        with pytest.raises(UserError, match=re.escape(f"m.npy: the mean image holds {value} at flat index "
                                                      f"{2 * 65536 + 7 * 256 + 9}, outside the pixel range 0..255")):
            cf.read_mean(tmp_path / "m.npy")
