"""torchvision's ImageNet backbones as DHN trunks: tv-alexnet, tv-vgg16, tv-resnet50 (issue 20).

The trunks are torchvision's own modules (torchvision.models.alexnet / vgg16 / resnet50 with
weights=None), mounted on reproduce.model.nets.DHNNet under torchvision's attribute names, so the
parameter names are exactly the keys of the state dicts torchvision publishes (`features.0.weight`,
`classifier.1.weight`, `layer1.0.bn1.running_mean`, ...). Only the ImageNet classifier is left
out: AlexNet's / VGG-16's `classifier.6` (Linear 4096 -> 1000) and ResNet-50's `fc` (2048 -> 1000).

Features the hash layer reads (torchvision/models/alexnet.py, vgg.py, resnet.py, `forward`):
  AlexNet, VGG-16: features -> avgpool -> flatten -> classifier[0:6], N x 4096 ("fc7" after its
                   ReLU): AlexNet's classifier is Dropout, Linear (fc6), ReLU, Dropout, Linear
                   (fc7), ReLU (Dropout *before* each Linear); VGG-16's is Linear, ReLU, Dropout,
                   Linear, ReLU, Dropout (after each ReLU, as Caffe's drop6/drop7), so its fc7 Dropout
                   is kept too (identity at test time). Every Dropout is replaced by SharedDropout
                   of the same p (reproduce.model.dropout).
  ResNet-50:       conv1, bn1, relu, maxpool, layer1-4, avgpool, flatten: N x 2048 (ResNet._forward_impl).

BatchNorm (ResNet-50): frozen. Every BatchNorm2d stays in eval mode (`DHNNet.train()` puts them
back), so the running statistics of the ImageNet model are used and never updated, and its affine
weight/bias have requires_grad False (no solver group, no update). Why: Caffe fine-tuned ResNet-50
with `use_global_stats: true` (the statistics are not updated), torchvision's own fine-tuning of
ResNet backbones (detection models) uses FrozenBatchNorm2d, frozen affine included, and batch
statistics would make a run depend on how a batch of 64 is split over processes, which the
package's runs do not (SharedDropout). The state dict keeps nn.BatchNorm2d's keys
(num_batches_tracked included), so torchvision's files load as they are.
"""
import functools

import torch
import torchvision
from torch import nn

from .dropout import SharedDropout

# --arch -> torchvision.models builder (torchvision 0.13+ multi-weight API: weights=None).
BUILDERS = {"tv-alexnet": torchvision.models.alexnet, "tv-vgg16": torchvision.models.vgg16,
            "tv-resnet50": torchvision.models.resnet50}
# The published state dict's ImageNet classifier, dropped on conversion (key prefix).
CLASSIFIER_PREFIX = {"tv-alexnet": "classifier.6.", "tv-vgg16": "classifier.6.", "tv-resnet50": "fc."}
# ResNet._forward_impl up to the pooled features, in order (torchvision/models/resnet.py).
RESNET_TRUNK = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool")
CLASSIFIER_FC7 = 6               # classifier[:6]: fc7's ReLU (AlexNet) or its Dropout (VGG) last


def mount_trunk(net, arch, dropout=0.5):
    """Add `arch`'s torchvision modules (randomly initialised as torchvision does) to `net` under
    torchvision's names; the classifier's Dropouts become SharedDropout(dropout); BatchNorm frozen."""
    model = BUILDERS[arch](weights=None)
    if arch == "tv-resnet50":
        for name in RESNET_TRUNK:
            net.add_module(name, getattr(model, name))
        for module in net.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.requires_grad_(False)
                module.eval()
        return
    classifier = model.classifier[:CLASSIFIER_FC7]   # a Sequential keeping the keys "0" ... "5"
    dropouts = [i for i, m in enumerate(classifier) if isinstance(m, nn.Dropout)]
    assert len(dropouts) == 2, classifier          # fc6's and fc7's in both torchvision models
    for i in dropouts:
        classifier[i] = SharedDropout(dropout)
    # `features` is also DHNNet's method name, which nn.Module.add_module refuses to shadow: the
    # module is registered in _modules directly (what add_module does) and reached through it;
    # its parameters are then `features.<i>.weight` as in torchvision's files.
    net._modules["features"] = model.features
    net.add_module("avgpool", model.avgpool)
    net.add_module("classifier", classifier)


def trunk_features(net, arch, x):
    """N x 3 x H x W (ImageNet-normalised RGB) -> N x 4096 (fc7 after ReLU) or N x 2048 (ResNet)."""
    modules = net._modules
    if arch == "tv-resnet50":
        for name in RESNET_TRUNK:
            x = modules[name](x)
        return torch.flatten(x, 1)
    x = modules["avgpool"](modules["features"](x))
    return modules["classifier"](torch.flatten(x, 1))


def freeze_batchnorm(net):
    """Put every BatchNorm of `net` back in eval mode (called after nn.Module.train)."""
    for module in net.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


@functools.lru_cache(maxsize=None)
def trunk_shapes(arch):
    """{state-dict key: shape} of `arch`'s trunk (torchvision's keys, classifier left out), read
    from the model built on the meta device (no memory, no initialisation)."""
    with torch.device("meta"):
        model = BUILDERS[arch](weights=None)
    prefix = CLASSIFIER_PREFIX[arch]
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.startswith(prefix)}


def classifier_shapes(arch):
    """{state-dict key: shape} of the ImageNet classifier the published file carries (dropped)."""
    with torch.device("meta"):
        model = BUILDERS[arch](weights=None)
    prefix = CLASSIFIER_PREFIX[arch]
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if k.startswith(prefix)}
