"""The two Caffe ImageNet networks with DHN's hash layer, in PyTorch, one module per Caffe layer.

`caffenet` is bvlc_reference_caffenet (pool *before* LRN), the network the authors fine-tuned (their
train_val.prototxt); `alexnet` is bvlc_alexnet (LRN *before* pool), what the paper's text names.
Parameter names are Caffe's layer names (conv1 ... fc7, hash_layer for the authors' fch), so blob 0
/ blob 1 of every Caffe layer map one to one onto `<name>.weight` / `<name>.bias`; the blob layouts
(conv: out x in/group x kh x kw, InnerProduct: out x in) are PyTorch's.
"""
import torch
from torch import nn
import torch.nn.functional as F

from ..errors import UserError
from .archs import ARCHS  # noqa: F401  (re-exported: the registry of every --arch)

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
HASH_LAYER = "hash_layer"                                  # the authors' fch
INPUT_SIZE = 227                                           # crop_size in the authors' train_val
HASH_FILLER_STD = 0.01                                     # authors' fch: gaussian std 0.01, bias 0
MAX_BITS = 4096                                            # a hash layer wider than fc7 is refused


def expected_shapes(bits=None):
    """{parameter name: shape} of the network; the hash layer only when `bits` is given."""
    shapes = {}
    for name, c in CONV_LAYERS.items():
        k = c["kernel_size"]
        shapes[f"{name}.weight"] = (c["out_channels"], c["in_channels"] // c.get("groups", 1), k, k)
        shapes[f"{name}.bias"] = (c["out_channels"],)
    for name, (fin, fout) in FC_LAYERS.items():
        shapes[f"{name}.weight"] = (fout, fin)
        shapes[f"{name}.bias"] = (fout,)
    if bits:
        shapes[f"{HASH_LAYER}.weight"] = (bits, 4096)
        shapes[f"{HASH_LAYER}.bias"] = (bits,)
    return shapes


class SharedDropout(nn.Dropout):
    """Caffe's Dropout layer (inverted: scales by 1/(1-p) at train time, as nn.Dropout) whose
    masks can come from one stream shared by every process of a multi-process run.

    With `share(stream, rank, world_size)`, each call draws the mask of the *global* batch
    (world_size x the local rows) from `stream`, a CPU torch.Generator that every process
    advances identically, and keeps its own rows rank*b ... (rank+1)*b - 1: the masks of a
    run then do not depend on how the batch is split over processes. One process draws exactly
    what nn.Dropout draws from a generator in the same state (ATen's CPU dropout:
    empty_like(x).bernoulli_(1 - p), divided by 1 - p, times x). Without a stream it is nn.Dropout.
    """

    def __init__(self, p=0.5):
        super().__init__(p)
        self.stream, self.rank, self.world_size = None, 0, 1

    def share(self, stream, rank=0, world_size=1):
        self.stream, self.rank, self.world_size = stream, rank, world_size

    def forward(self, x):
        if self.stream is None:
            return super().forward(x)
        if not self.training or self.p == 0 or x.numel() == 0:   # ATen draws nothing then either
            return x
        b = x.shape[0]
        noise = torch.empty((b * self.world_size,) + x.shape[1:], dtype=x.dtype)
        noise.bernoulli_(1 - self.p, generator=self.stream)
        noise = noise[self.rank * b:(self.rank + 1) * b].div_(1 - self.p)
        return x * noise.to(x.device)


def share_dropout_stream(model, seed, rank=0, world_size=1):
    """Give every SharedDropout of `model` one mask stream seeded with `seed` (see SharedDropout);
    returns the stream (a CPU torch.Generator), whose state a snapshot saves."""
    stream = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, SharedDropout):
            module.share(stream, rank, world_size)
    return stream


class DHNNet(nn.Module):
    """CaffeNet/AlexNet up to fc7, then the hash layer fch (K outputs) and TanH.

    Input: N x 3 x 227 x 227 float, BGR, 0-255 minus the mean (Caffe's data layer output).
    `forward` returns the tanh codes z (N x K); `features` the fc7 blob as Caffe has it after the
    in-place relu7/drop7 (N x 4096), which the shallow baselines use.
    """

    def __init__(self, arch="caffenet", bits=48, dropout=0.5, method=None, generator=None):
        super().__init__()
        if arch not in ALEXNET_ARCHS:
            raise ValueError(f"arch must be one of {ALEXNET_ARCHS}, got {arch!r}")
        self.arch, self.bits, self.method = arch, bits, method
        for name, c in CONV_LAYERS.items():
            setattr(self, name, nn.Conv2d(**c))
        for name, (fin, fout) in FC_LAYERS.items():
            setattr(self, name, nn.Linear(fin, fout))
        # Caffe's Dropout layer is inverted dropout (scales by 1/(1-p) at train time), as nn.Dropout;
        # the engine gives both one mask stream for the global batch (share_dropout_stream).
        self.drop6 = SharedDropout(dropout)
        self.drop7 = SharedDropout(dropout)
        # LRN ACROSS_CHANNELS local_size 5, alpha 1e-4, beta 0.75, k 1: Caffe divides alpha by the
        # size exactly as torch's LocalResponseNorm does (lrn_layer.cpp, scale = k + alpha/n * sum).
        self.norm = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)
        # A deep baseline of Table 1 (reproduce.methods) replaces the hash layer and tanh by its
        # own head on fc7, mounted as `head` (parameters head.<Caffe layer>.weight / .bias).
        self.hash_layer = nn.Linear(4096, bits) if bits and method is None else None
        self.head = method.make_head(bits, generator=generator) if method is not None else None
        self.reset_hash_layer(generator)

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
        """N x 3 x 227 x 227 -> fc7 blob (after relu7 and drop7), N x 4096."""
        x = self._pool_norm(F.relu(self.conv1(x)))
        x = self._pool_norm(F.relu(self.conv2(x)))
        x = F.relu(self.conv3(x))
        x = F.relu(self.conv4(x))
        x = self._pool(F.relu(self.conv5(x)))
        x = torch.flatten(x, 1)   # Caffe's InnerProduct flattens C, H, W in this order
        x = self.drop6(F.relu(self.fc6(x)))
        return self.drop7(F.relu(self.fc7(x)))

    def hash(self, fc7):
        """fc7 (N x 4096) -> real codes, N x K, whose sign is the binary code: DHN's z =
        tanh(fch(fc7)) in (-1, 1), or a method's codes of its head outputs."""
        if self.head is not None:
            return self.method.codes(self.head(fc7))
        return torch.tanh(self.hash_layer(fc7))

    def forward(self, x):
        """N x 3 x 227 x 227 -> what the loss sees: DHN's tanh codes z (N x K), or the outputs
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
