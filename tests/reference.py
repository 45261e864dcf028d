"""Plain, obviously right float64 reference implementations shared by several test files."""
import numpy as np


def plain_map(qB, dB, qL, dL):
    """MAP over the whole ranking: stable argsort of Hamming distances (database order breaks
    ties), relevant = shares >= 1 label, queries without relevant items left out."""
    aps = []
    for i in range(len(qB)):
        ham = np.array([np.sum(qB[i] != b) for b in dB], dtype=np.float64)
        rel = (dL[np.argsort(ham, kind="stable")] @ qL[i] > 0).astype(np.float64)
        if rel.sum() == 0:
            continue
        precision = np.cumsum(rel) / np.arange(1, len(rel) + 1)
        aps.append(np.sum(precision * rel) / rel.sum())
    return float(np.mean(aps))


# Weight scales of a random CaffeNet that behaves like a trained one: He-like std sqrt(2 / fan_in)
# keeps activations O(1) layer to layer; conv1 keeps the pixels' scale (~70) so that LRN, where
# the two archs differ, really normalizes; conv2 brings the scale down to O(1); the hash layer's
# std keeps tanh out of saturation.
GAIN = {"conv1": 1.0, "conv2": 1 / 30, "fc6": 0.7, "fc7": 0.7, "hash_layer": 0.7}
# VGG-16 (no LRN): conv1_1 brings the pixels' scale down to O(1) at once.
VGG16_GAIN = {"conv1_1": 1 / 70, "fc6": 0.7, "fc7": 0.7, "hash_layer": 0.7}


def random_net_layers(bits, seed, arch="caffenet"):
    """{Caffe layer: [weight, bias]} float32 of conv1..fc7 (+ hash_layer with bits) of a Caffe-family
    `arch`, scaled by GAIN (VGG16_GAIN for vgg16)."""
    from reproduce.model.nets import expected_shapes
    rng = np.random.default_rng(seed)
    layers = {}
    gains = VGG16_GAIN if arch == "vgg16" else GAIN
    for key, shape in expected_shapes(bits, arch).items():
        layer, part = key.split(".")
        fan_in = int(np.prod(shape[1:])) if part == "weight" else 1
        std = np.sqrt(2.0 / fan_in) * gains.get(layer, 1.0) if part == "weight" else 0.1
        layers.setdefault(layer, []).append(rng.standard_normal(shape, dtype=np.float32) * np.float32(std))
    return layers
