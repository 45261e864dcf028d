"""The network's side of Caffe: deploy prototxts of the Caffe-family archs (caffenet, alexnet, vgg16),
and Caffe layers <-> DHNNet parameters.

Blob 0 / blob 1 of Caffe layer `<name>` are `<name>.weight` / `<name>.bias` of reproduce.model.nets.DHNNet
(the layouts agree: conv out x in/group x kh x kw, InnerProduct out x in); the authors' hash layer
`fch` is our `hash_layer`. File formats are reproduce.caffe.caffe_format.
"""
import numpy as np
import torch

from ..errors import UserError
from ..model.checkpoint import check_state_dict
from ..model.archs import ARCH_SPECS, CAFFE_ARCHS
from ..model.nets import (CAFFE_LAYERS, CONV_LAYERS, FC_LAYERS, HASH_LAYER, MAX_BITS, VGG16_BLOCKS,
                          expected_shapes, feature_layers)
from ..utils.messages import printable

HASH_LAYER_NAMES = (HASH_LAYER, "fch")               # ours, and the authors' name in dhn-caffe
CLASSIFIER_LAYERS = ("fc8", "prob")                  # ImageNet classifier of the zoo models


def detect_arch(blobs):
    """'vgg16' if the file has VGG's conv1_1; 'caffenet' if pool1 comes before norm1 in the file's
    layer order, 'alexnet' if after; None when the file tells neither (HDF5 snapshots of
    CaffeNet/AlexNet keep no layer order)."""
    order = list(blobs)
    if "conv1_1" in order:
        return "vgg16"
    if "pool1" in order and "norm1" in order:
        return "caffenet" if order.index("pool1") < order.index("norm1") else "alexnet"
    return None


# ------------------------------------------------------------------------------- deploy prototxt
def _layer_text(name, type_, bottom, top, param=None, lr_mults=None):
    lines = ["layer {", f'  name: "{name}"', f'  type: "{type_}"', f'  bottom: "{bottom}"', f'  top: "{top}"']
    for lr, decay in lr_mults or ():
        lines += ["  param {", f"    lr_mult: {lr}", f"    decay_mult: {decay}", "  }"]
    if param:
        kind, values = param
        lines.append(f"  {kind} {{")
        lines += [f"    {k}: {v}" for k, v in values]
        lines.append("  }")
    return "\n".join(lines + ["}"]) + "\n"


def _input_layer(name, shape):
    dims = " ".join(f"dim: {d}" for d in shape)
    return (f'layer {{\n  name: "{name}"\n  type: "Input"\n  top: "{name}"\n'
            f"  input_param {{ shape: {{ {dims} }} }}\n}}\n")


def _fc_layers(fc_layers, bottom, mults, dropout):
    """fc6, relu6, drop6, fc7, relu7, drop7 (in place, as both zoo prototxts) after `bottom`."""
    text = ""
    for name, (_, n_out) in fc_layers.items():
        i = name[-1]
        text += _layer_text(name, "InnerProduct", bottom, name,
                            ("inner_product_param", [("num_output", n_out)]), mults)
        text += _layer_text(f"relu{i}", "ReLU", name, name)
        text += _layer_text(f"drop{i}", "Dropout", name, name,
                            ("dropout_param", [("dropout_ratio", dropout)]))
        bottom = name
    return text


def _vgg16_layers(mults, dropout=0.5):
    """conv1_1 ... drop7 of VGG_ILSVRC_16_layers_deploy.prototxt (bottom "data", top "fc7"):
    conv<b>_<i> 3x3 pad 1 + relu<b>_<i> in place, pool<b> MAX 2/2 after each block."""
    pool = ("pooling_param", (("pool", "MAX"), ("kernel_size", 2), ("stride", 2)))
    conv_layers, fc_layers = CAFFE_LAYERS["vgg16"]
    text, bottom = "", "data"
    for name, c in conv_layers.items():
        conv = [("num_output", c["out_channels"]), ("pad", c["padding"]), ("kernel_size", c["kernel_size"])]
        text += _layer_text(name, "Convolution", bottom, name, ("convolution_param", conv), mults)
        text += _layer_text(name.replace("conv", "relu"), "ReLU", name, name)
        bottom = name
        block, i = name[len("conv"):].split("_")
        if int(i) == VGG16_BLOCKS[int(block) - 1][1]:
            text += _layer_text(f"pool{block}", "Pooling", name, f"pool{block}", pool)
            bottom = f"pool{block}"
    return text + _fc_layers(fc_layers, bottom, mults, dropout)


def _feature_layers(arch, mults, dropout=0.5):
    """conv1 ... drop7 of `arch` as prototxt text (bottom "data", top "fc7"), `mults` = the
    (lr_mult, decay_mult) param blocks of weight and bias, or None for none."""
    if arch == "vgg16":
        return _vgg16_layers(mults, dropout)
    pool = ("pooling_param", (("pool", "MAX"), ("kernel_size", 3), ("stride", 2)))
    lrn = ("lrn_param", (("local_size", 5), ("alpha", 0.0001), ("beta", 0.75)))
    text, bottom = "", "data"
    for name, c in CONV_LAYERS.items():
        conv = [("num_output", c["out_channels"])] + ([("pad", c["padding"])] if "padding" in c else [])
        conv += [("kernel_size", c["kernel_size"])] + ([("stride", c["stride"])] if "stride" in c else [])
        conv += [("group", c["groups"])] if "groups" in c else []
        text += _layer_text(name, "Convolution", bottom, name, ("convolution_param", conv), mults)
        i = name[-1]
        text += _layer_text(f"relu{i}", "ReLU", name, name)
        bottom = name
        if i in "12":    # caffenet: pool -> norm; alexnet: norm -> pool
            steps = [("pool", "Pooling", pool), ("norm", "LRN", lrn)]
            for kind, type_, param in steps if arch == "caffenet" else steps[::-1]:
                text += _layer_text(f"{kind}{i}", type_, bottom, f"{kind}{i}", param)
                bottom = f"{kind}{i}"
        elif i == "5":
            text += _layer_text("pool5", "Pooling", "conv5", "pool5", pool)
            bottom = "pool5"
    return text + _fc_layers(FC_LAYERS, bottom, mults, dropout)


# The authors' train_val.prototxt param blocks: conv/fc weight lr_mult 1 decay_mult 1, bias 2/0;
# hash_layer (fch) weight 10/1, bias 20/0 (official_settings.md, Per-parameter multipliers).
FEATURE_MULTS = ((1, 1), (2, 0))
HASH_MULTS = ((10, 1), (20, 0))


NET_NAMES = {"caffenet": "CaffeNet", "alexnet": "AlexNet", "vgg16": "VGG_ILSVRC_16_layers"}


def _check_arch(arch):
    if arch not in CAFFE_ARCHS:
        raise ValueError(f"arch must be one of {CAFFE_ARCHS} (a Caffe network), got {arch!r}")
    return ARCH_SPECS[arch].crop_size


def deploy_prototxt(arch, bits=None, batch=10):
    """deploy.prototxt of bvlc_reference_caffenet ('caffenet'), bvlc_alexnet ('alexnet') as
    BVLC/caffe master has them (Input layer, batch 10; only bvlc_alexnet lists param blocks), or
    of VGG_ILSVRC_16_layers ('vgg16': the VGG authors' deploy file, its V1 `input_dim` header
    written as an Input layer, input 224, no param blocks); with `bits`, fc8 + prob are replaced by
    the DHN hash layer (InnerProduct, K outputs; lr_mult 10/20 as the authors' where param blocks
    are listed) and a TanH layer with top "tanh"."""
    size = _check_arch(arch)
    mults = FEATURE_MULTS if arch == "alexnet" else None
    text = (f'name: "{NET_NAMES[arch]}"\n'
            + _input_layer("data", (batch, 3, size, size)) + _feature_layers(arch, mults))
    if bits:
        text += _layer_text(HASH_LAYER, "InnerProduct", "fc7", HASH_LAYER,
                            ("inner_product_param", [("num_output", bits)]), mults and HASH_MULTS)
        return text + _layer_text("tanh", "TanH", HASH_LAYER, "tanh")
    text += _layer_text("fc8", "InnerProduct", "fc7", "fc8",
                        ("inner_product_param", [("num_output", 1000)]), mults)
    return text + _layer_text("prob", "Softmax", "fc8", "prob")


def train_val_prototxt(arch="caffenet", bits=48, batch_size=64, label_dim=21, dropout=0.5,
                       quant_weight=0.3, threshold=15.0):
    """The authors' training net (dhn-caffe models/nus_wide/train_val.prototxt) for real Caffe,
    with its ImageData layer replaced by Input layers "data" (batch x 3 x crop x crop: 227, or 224
    for vgg16, whose conv1_1 ... fc7 replace CaffeNet's) and "label" (batch x label_dim), so that
    a test feeds both blobs itself.

    As the authors' file: every conv/fc layer with param blocks lr_mult/decay_mult 1/1 (weight)
    and 2/0 (bias), drop6/drop7 dropout_ratio `dropout` (0.5; 0 gives no random masks),
    `hash_layer` InnerProduct with 10/1 and 20/0, TanH "tanh8" in place, and the PairwiseLoss layer
    (top "pairwise_loss") with l_threshold = q_threshold = `threshold`, l_lambda 1, q_gamma =
    `quant_weight`. PairwiseLoss exists only in the authors' Caffe (tests/caffe/ builds it).
    """
    size = _check_arch(arch)
    text = ('name: "DHN"\n' + _input_layer("data", (batch_size, 3, size, size))
            + _input_layer("label", (batch_size, label_dim))
            + _feature_layers(arch, FEATURE_MULTS, dropout)
            + _layer_text(HASH_LAYER, "InnerProduct", "fc7", HASH_LAYER,
                          ("inner_product_param", [("num_output", bits)]), HASH_MULTS)
            + _layer_text("tanh8", "TanH", HASH_LAYER, HASH_LAYER))
    loss = _layer_text("pairwise_loss", "PairwiseLoss", HASH_LAYER, "pairwise_loss",
                       ("pairwise_param", [("l_threshold", threshold), ("q_threshold", threshold),
                                           ("l_lambda", 1), ("q_gamma", quant_weight)]))
    return text + loss.replace(f'  bottom: "{HASH_LAYER}"\n', f'  bottom: "{HASH_LAYER}"\n  bottom: "label"\n')


# ----------------------------------------------------------------- Caffe layers <-> state dict
def _fit(blob, want):
    """Caffe's legacy shape rule (Blob::ShapeEquals): extra leading axes of size 1 are ignored."""
    extra = blob.ndim - len(want)
    if extra > 0 and blob.shape[extra:] == tuple(want) and not any(d != 1 for d in blob.shape[:extra]):
        return blob.reshape(want)
    return blob


def _tensor(blob):
    # Aligned views of the file's mmap become tensors without a copy (the reader already copied
    # unaligned fields); anything else (unaligned, read-only, strided) is copied first, since torch
    # kernels may assume aligned, writable memory.
    blob = np.asarray(blob, dtype=np.float32)
    if not (blob.flags.aligned and blob.flags.writeable and blob.flags.c_contiguous):
        blob = np.array(blob, order="C")
    return torch.from_numpy(blob)


def caffe_to_state_dict(blobs, arch, source):
    """{Caffe layer: [weight, bias]} -> ({`<layer>.weight`/`.bias`: tensor}, notes).

    conv1..fc7 (conv1_1 ... fc7 for vgg16) must all be there with the arch's shapes; a hash layer (`hash_layer`, or the
    authors' `fch`) is imported; every other layer with blobs (fc8: ImageNet classifier) is dropped
    with a note. UserError naming `source` on any missing layer or wrong shape. Tensors share
    memory with the given arrays where they can (no copy of a 233 MiB model).
    """
    if arch not in CAFFE_ARCHS:
        raise UserError(f"{source}: arch {arch!r} is not a Caffe network (one of {', '.join(CAFFE_ARCHS)})")
    dim = ARCH_SPECS[arch].feature_dim
    layers = feature_layers(arch)
    with_blobs = [name for name, b in blobs.items() if len(b)]
    hash_names = [n for n in HASH_LAYER_NAMES if n in with_blobs]
    if len(hash_names) > 1:
        raise UserError(f"{source}: both '{hash_names[0]}' and '{hash_names[1]}' hold a hash layer")
    want = dict(expected_shapes(arch=arch))
    if hash_names:
        w = np.asarray(blobs[hash_names[0]][0])
        if w.ndim < 2 or not 1 <= w.shape[-2] <= MAX_BITS:
            raise UserError(f"{source}: layer '{hash_names[0]}' weight has shape {tuple(w.shape)}, "
                            f"expected (bits, {dim}) with bits in 1..{MAX_BITS}")
        want.update(expected_shapes(int(w.shape[-2]), arch))
    state_dict, notes = {}, []
    for layer in layers + tuple(hash_names):
        key = HASH_LAYER if layer in HASH_LAYER_NAMES else layer
        if layer not in with_blobs:
            raise UserError(f"{source}: no layer '{layer}' with weights (layers with weights: "
                            f"{', '.join(with_blobs) or 'none'})")
        if len(blobs[layer]) != 2:
            raise UserError(f"{source}: layer '{layer}' has {len(blobs[layer])} blobs, "
                            "expected 2 (weight, bias)")
        for blob, part in zip(blobs[layer], ("weight", "bias")):
            shape = want.get(f"{key}.{part}")
            blob = _fit(np.asarray(blob), shape)
            if blob.shape != shape:
                raise UserError(f"{source}: layer '{layer}' {part} has shape {tuple(blob.shape)}, "
                                f"{arch} expects {shape}")
            state_dict[f"{key}.{part}"] = _tensor(blob)
    bits = int(state_dict[f"{HASH_LAYER}.weight"].shape[0]) if hash_names else 0
    if hash_names:
        notes.append(f"imported hash layer '{hash_names[0]}' ({bits} bits) as '{HASH_LAYER}'")
    for name in with_blobs:
        if name not in layers and name not in hash_names:
            what = "ImageNet classifier" if name in CLASSIFIER_LAYERS else "not part of the network"
            shapes = ", ".join("x".join(map(str, b.shape)) for b in blobs[name])
            notes.append(f"dropped layer '{printable(name)}' ({shapes}): {what}")   # names from the file
    check_state_dict(state_dict, bits, source, arch=arch)
    return state_dict, notes


def state_dict_to_caffe(state_dict, arch="caffenet"):
    """{`<layer>.weight`/`.bias`: tensor} -> {Caffe layer: [weight, bias] float32 arrays}, in the
    network's order, ready for caffe_writer.write_caffemodel / write_caffemodel_h5 (export to Caffe)."""
    _check_arch(arch)
    order = feature_layers(arch) + (HASH_LAYER,)
    unknown = sorted(k for k in state_dict if k.rsplit(".", 1)[0] not in order)
    if unknown:
        raise ValueError(f"not parameters of the network: {', '.join(unknown)}")
    layers = {}
    for layer in order:
        if f"{layer}.weight" in state_dict:
            layers[layer] = [torch.as_tensor(state_dict[f"{layer}.{part}"]).detach().cpu().numpy()
                             .astype(np.float32) for part in ("weight", "bias")]
    return layers
