"""DHN's network on every backbone of reproduce.model.archs: the trunk, the hash layer and TanH.

Caffe family, one module per Caffe layer: `caffenet` is bvlc_reference_caffenet (pool *before*
LRN), the network the authors fine-tuned (their train_val.prototxt); `alexnet` is bvlc_alexnet
(LRN *before* pool), what the paper's text names; `vgg16` is the zoo's VGG_ILSVRC_16_layers
(conv1_1 ... conv5_3, fc6, fc7 as in its deploy prototxt). Parameter names are Caffe's layer names
(hash_layer for the authors' fch), so blob 0 / blob 1 of every Caffe layer map one to one onto
`<name>.weight` / `<name>.bias`; the blob layouts (conv: out x in/group x kh x kw, InnerProduct:
out x in) are PyTorch's.

torchvision family (tv-alexnet, tv-vgg16, tv-resnet50): torchvision's own modules under its own
state-dict keys (reproduce.model.torchvision_nets).
"""

import torch
from torch import nn
import torch.nn.functional as F

from ..errors import UserError
from . import torchvision_nets
from .archs import ARCH_SPECS, ARCHS  # noqa: F401  (ARCHS re-exported: the registry of every --arch)
from .dropout import SharedDropout, share_dropout_stream  # noqa: F401  (re-exported)

ALEXNET_ARCHS = ("caffenet", "alexnet")   # the two 227-input nets below (same shapes, pool/LRN order)

# Caffe layer name -> (kind, PyTorch constructor kwargs); from deploy.prototxt of both zoo models.
CONV_LAYERS = {
    "conv1": dict(in_channels=3, out_channels=96, kernel_size=11, stride=4),
    "conv2": dict(in_channels=96, out_channels=256, kernel_size=5, padding=2, groups=2),
    "conv3": dict(in_channels=256, out_channels=384, kernel_size=3, padding=1),
    "conv4": dict(in_channels=384, out_channels=384, kernel_size=3, padding=1, groups=2),
    "conv5": dict(in_channels=384, out_channels=256, kernel_size=3, padding=1, groups=2),
}
FC_LAYERS = {"fc6": (256 * 6 * 6, 4096), "fc7": (4096, 4096)}
FEATURE_LAYERS = tuple(CONV_LAYERS) + tuple(FC_LAYERS)   # what a pretrained ImageNet model gives


def _vgg16_conv_layers():
    """VGG_ILSVRC_16_layers_deploy.prototxt: five blocks of conv<b>_<i> (3x3, pad 1, each followed
    by relu<b>_<i>), each block ending in pool<b> (MAX, kernel 2, stride 2)."""
    layers, channels = {}, 3
    for block, (width, count) in enumerate(VGG16_BLOCKS, 1):
        for i in range(1, count + 1):
            layers[f"conv{block}_{i}"] = dict(in_channels=channels, out_channels=width, kernel_size=3,
                                               padding=1)
            channels = width
    return layers


VGG16_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))   # (num_output, convs) per block
VGG16_CONV_LAYERS = _vgg16_conv_layers()
VGG16_FC_LAYERS = {"fc6": (512 * 7 * 7, 4096), "fc7": (4096, 4096)}  # pool5 of 224 input: 512 x 7 x 7
# Caffe family: --arch -> (conv layers, fc layers), in the deploy prototxt's order.
CAFFE_LAYERS = {"caffenet": (CONV_LAYERS, FC_LAYERS), "alexnet": (CONV_LAYERS, FC_LAYERS),
                "vgg16": (VGG16_CONV_LAYERS, VGG16_FC_LAYERS)}
HASH_LAYER = "hash_layer"                                  # the authors' fch
INPUT_SIZE = 227                                           # crop_size in the authors' train_val
HASH_FILLER_STD = 0.01                                     # authors' fch: gaussian std 0.01, bias 0
MAX_BITS = 4096                                            # a hash layer wider than fc7 is refused


def feature_layers(arch):
    """The Caffe layers with weights of a Caffe-family `arch`'s trunk, in order (conv1 ... fc7)."""
    conv, fc = CAFFE_LAYERS[arch]
    return tuple(conv) + tuple(fc)


def expected_shapes(bits=None, arch="caffenet"):
    """{state-dict key: shape} of the network of `arch` (every parameter, and for ResNet-50 the
    BatchNorm buffers); the hash layer (bits x feature_dim) only when `bits` is given."""
    if arch not in ARCH_SPECS:
        raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
    if arch in CAFFE_LAYERS:
        shapes = {}
        conv_layers, fc_layers = CAFFE_LAYERS[arch]
        for name, c in conv_layers.items():
            k = c["kernel_size"]
            shapes[f"{name}.weight"] = (c["out_channels"], c["in_channels"] // c.get("groups", 1), k, k)
            shapes[f"{name}.bias"] = (c["out_channels"],)
        for name, (fin, fout) in fc_layers.items():
            shapes[f"{name}.weight"] = (fout, fin)
            shapes[f"{name}.bias"] = (fout,)
    else:
        shapes = dict(torchvision_nets.trunk_shapes(arch))
    if bits:
        shapes[f"{HASH_LAYER}.weight"] = (bits, ARCH_SPECS[arch].feature_dim)
        shapes[f"{HASH_LAYER}.bias"] = (bits,)
    return shapes


class DHNNet(nn.Module):
    """A backbone of reproduce.model.archs up to its penultimate features, then the hash layer fch
    (K outputs) and TanH.

    Input: N x 3 x H x W float as the arch's preprocessing gives it: Caffe family BGR, 0-255 minus
    the mean (Caffe's data layer output; H = W = 227 for caffenet/alexnet, 224 for vgg16);
    torchvision family RGB normalised with ImageNet's mean/std (224). `forward` returns the tanh
    codes z (N x K); `features` the penultimate features (N x feature_dim: fc7 as Caffe has it
    after the in-place relu7/drop7, torchvision's fc7 after its ReLU, or ResNet-50's pooled 2048),
    which the shallow baselines use.
    """

    def __init__(self, arch="caffenet", bits=48, dropout=0.5, method=None, generator=None):
        super().__init__()
        if arch not in ARCH_SPECS:
            raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
        self.arch, self.bits, self.method = arch, bits, method
        self.feature_dim = ARCH_SPECS[arch].feature_dim
        if arch in CAFFE_LAYERS:
            conv_layers, fc_layers = CAFFE_LAYERS[arch]
            for name, c in conv_layers.items():
                setattr(self, name, nn.Conv2d(**c))
            for name, (fin, fout) in fc_layers.items():
                setattr(self, name, nn.Linear(fin, fout))
            # Caffe's Dropout layer is inverted dropout (scales by 1/(1-p) at train time), as
            # nn.Dropout; the engine gives both one mask stream for the global batch
            # (share_dropout_stream). Both zoo prototxts: drop6/drop7 after relu6/relu7.
            self.drop6 = SharedDropout(dropout)
            self.drop7 = SharedDropout(dropout)
        else:
            torchvision_nets.mount_trunk(self, arch, dropout)
        if arch in ALEXNET_ARCHS:
            # LRN ACROSS_CHANNELS local_size 5, alpha 1e-4, beta 0.75, k 1: Caffe divides alpha by
            # the size exactly as torch's LocalResponseNorm does (lrn_layer.cpp, k + alpha/n * sum).
            self.norm = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)
        # A deep baseline of Table 1 (reproduce.methods) replaces the hash layer and tanh by its
        # own head on the features, mounted as `head` (parameters head.<Caffe layer>.weight / .bias).
        self.hash_layer = nn.Linear(self.feature_dim, bits) if bits and method is None else None
        self.head = (method.make_head(bits, in_features=self.feature_dim, generator=generator)
                     if method is not None else None)
        self.reset_hash_layer(generator)

    def train(self, mode=True):
        """nn.Module.train, except that BatchNorm layers stay in eval mode (frozen statistics;
        see reproduce.model.torchvision_nets for why)."""
        super().train(mode)
        torchvision_nets.freeze_batchnorm(self)
        return self

    @property
    def has_codes(self):
        """True when the network ends in codes (a hash layer or a method head), not at fc7."""
        return self.hash_layer is not None or self.head is not None

    def reset_hash_layer(self, generator=None):
        """Authors' fch filler: weight gaussian std 0.01, bias constant 0."""
        if self.hash_layer is not None:
            with torch.no_grad():
                self.hash_layer.weight.normal_(0.0, HASH_FILLER_STD, generator=generator)
                self.hash_layer.bias.zero_()

    @staticmethod
    def _pool(x):
        # Caffe pooling: output size ceil((H - 3) / 2) + 1, i.e. ceil_mode (pooling_layer.cpp).
        return F.max_pool2d(x, kernel_size=3, stride=2, ceil_mode=True)

    def _pool_norm(self, x):
        # caffenet: pool -> norm; alexnet: norm -> pool (the two zoo prototxts differ only here).
        if self.arch == "caffenet":
            return self.norm(self._pool(x))
        return self._pool(self.norm(x))

    def features(self, x):
        """N x 3 x H x W -> the penultimate features, N x feature_dim (fc7 after relu7 and drop7
        for the Caffe family)."""
        if self.arch == "vgg16":
            return self._vgg16_features(x)
        if self.arch not in ALEXNET_ARCHS:
            return torchvision_nets.trunk_features(self, self.arch, x)
        x = self._pool_norm(F.relu(self.conv1(x)))
        x = self._pool_norm(F.relu(self.conv2(x)))
        x = F.relu(self.conv3(x))
        x = F.relu(self.conv4(x))
        x = self._pool(F.relu(self.conv5(x)))
        x = torch.flatten(x, 1)   # Caffe's InnerProduct flattens C, H, W in this order
        x = self.drop6(F.relu(self.fc6(x)))
        return self.drop7(F.relu(self.fc7(x)))

    def _vgg16_features(self, x):
        """N x 3 x 224 x 224 -> fc7 (after relu7 and drop7), N x 4096, as VGG_ILSVRC_16_layers."""
        for name in VGG16_CONV_LAYERS:
            x = F.relu(getattr(self, name)(x))
            block, i = name[len("conv"):].split("_")
            if int(i) == VGG16_BLOCKS[int(block) - 1][1]:
                # pool<b>: MAX kernel 2 stride 2; Caffe's ceil rounding (pooling_layer.cpp), which
                # for the even sizes of a 224 input is the floor too
                x = F.max_pool2d(x, kernel_size=2, stride=2, ceil_mode=True)
        x = torch.flatten(x, 1)   # Caffe's InnerProduct flattens C, H, W in this order
        x = self.drop6(F.relu(self.fc6(x)))
        return self.drop7(F.relu(self.fc7(x)))

    def hash(self, fc7):
        """features (N x feature_dim) -> real codes, N x K, whose sign is the binary code: DHN's z =
        tanh(fch(fc7)) in (-1, 1), or a method's codes of its head outputs."""
        if self.head is not None:
            return self.method.codes(self.head(fc7))
        return torch.tanh(self.hash_layer(fc7))

    def forward(self, x):
        """N x 3 x H x W -> what the loss sees: DHN's tanh codes z (N x K), or the outputs
        of a method's head."""
        fc7 = self.features(x)
        return self.head(fc7) if self.head is not None else self.hash(fc7)


def pick_device(name=None):
    """--device: None or "auto" = cuda if available, else cpu; "cpu", "cuda", "cuda:1" ..."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name}: not a torch device (cpu, cuda, cuda:1 ...)") from None
    if device.type not in ("cpu", "cuda"):       # meta, mps, xpu ...: not what the package runs on
        raise UserError(f"--device {name}: the package runs on cpu or cuda[:N] devices")
    return device
