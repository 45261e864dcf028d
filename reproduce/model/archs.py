"""The backbones DHN can run on (`--arch`), one record each: where the pretrained weights come from,
which layer the hash layer reads, and how images are prepared for it.

  caffenet     bvlc_reference_caffenet, what the authors fine-tuned (their train_val.prototxt).
  alexnet      bvlc_alexnet, what the paper's text names.
  vgg16        the Caffe zoo's VGG_ILSVRC_16_layers (Simonyan & Zisserman, the VGG authors' deploy
               prototxt: conv1_1 ... conv5_3, fc6, fc7), the backbone later hashing papers use
               (issue 20).
  tv-alexnet, tv-vgg16, tv-resnet50
               torchvision's ImageNet models (torchvision.models.alexnet / vgg16 / resnet50,
               IMAGENET1K_V1 state dicts); the hash layer on their penultimate features: AlexNet
               and VGG-16 fc7 after its ReLU (classifier[:6]), ResNet-50 the pooled 2048.

In every case Caffe's solver, DHN's loss and the hash layer's multipliers (lr_mult 10/20) stay.
This module is data only: the networks are reproduce.model.nets, the published files
reproduce.model.pretrained.
"""
import dataclasses

from ..data.transforms import CROP_SIZE, MEAN_VALUE
from ..errors import UserError

# The VGG authors' mean pixel, B, G, R (VGG_ILSVRC_16_layers model page, gist
# ksimonyan/211839e770f7b538e2d8: "mean pixel [103.939, 116.779, 123.68]"), subtracted from 0-255
# BGR pixels as Caffe's transform_param mean_value does.
VGG_MEAN_VALUE = (103.939, 116.779, 123.68)
VGG_CROP_SIZE = 224               # the VGG deploy prototxt's input 224 x 224
TORCHVISION_CROP_SIZE = 224       # torchvision's IMAGENET1K_V1 transforms: resize 256, crop 224


@dataclasses.dataclass(frozen=True)
class ArchSpec:
    """What the rest of the package needs to know about one `--arch`."""
    name: str               # the --arch value
    family: str             # "caffe" (a .caffemodel, Caffe layer names) or "torchvision" (a state-dict .pth)
    feature_layer: str      # the layer whose output the hash layer reads ("fc7" or "avgpool")
    feature_dim: int        # 4096 or 2048
    preprocessing: str      # "caffe" (Caffe ImageData transform, BGR, mean values) or "torchvision"
    crop_size: int          # 227 (caffenet/alexnet) or 224
    mean_value: tuple | None  # caffe: (B, G, R) mean values; torchvision: None (ImageNet mean/std)


ARCH_SPECS = {
    # The authors' networks: crop 227 and mean_value 104, 117, 123 of their train_val.prototxt.
    "caffenet": ArchSpec("caffenet", "caffe", "fc7", 4096, "caffe", CROP_SIZE, MEAN_VALUE),
    "alexnet": ArchSpec("alexnet", "caffe", "fc7", 4096, "caffe", CROP_SIZE, MEAN_VALUE),
    "vgg16": ArchSpec("vgg16", "caffe", "fc7", 4096, "caffe", VGG_CROP_SIZE, VGG_MEAN_VALUE),
    # torchvision/models/alexnet.py, vgg.py: classifier = Dropout, Linear, ReLU, Dropout, Linear,
    # ReLU, Linear(4096, 1000); the hash layer reads the output of the second ReLU ("fc7").
    "tv-alexnet": ArchSpec("tv-alexnet", "torchvision", "fc7", 4096, "torchvision",
                           TORCHVISION_CROP_SIZE, None),
    "tv-vgg16": ArchSpec("tv-vgg16", "torchvision", "fc7", 4096, "torchvision",
                         TORCHVISION_CROP_SIZE, None),
    # torchvision/models/resnet.py: avgpool (AdaptiveAvgPool2d 1x1) -> flatten -> fc(2048, 1000).
    "tv-resnet50": ArchSpec("tv-resnet50", "torchvision", "avgpool", 2048, "torchvision",
                            TORCHVISION_CROP_SIZE, None),
}
ARCHS = tuple(ARCH_SPECS)
# The paper's networks (CaffeNet as the authors ran it, AlexNet as the paper names it): outputs made
# with them name no backbone (identities, metrics.json, titles), as before the other archs existed.
PAPER_ARCHS = ("caffenet", "alexnet")
CAFFE_ARCHS = tuple(n for n, s in ARCH_SPECS.items() if s.family == "caffe")
TORCHVISION_ARCHS = tuple(n for n, s in ARCH_SPECS.items() if s.family == "torchvision")


def named_backbone(arch):
    """The backbone an output names: None for PAPER_ARCHS (the paper's setting), else the arch."""
    return None if arch in PAPER_ARCHS else arch


def arch_spec(name):
    """The ArchSpec of `--arch name`; UserError naming it and the choices when unknown."""
    try:
        return ARCH_SPECS[name]
    except (KeyError, TypeError):
        raise UserError(f"unknown arch {name!r} (one of {', '.join(ARCHS)})") from None
