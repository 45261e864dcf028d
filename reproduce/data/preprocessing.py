"""Which image convention a backbone gets, as data: the arch's ArchSpec (reproduce.model.archs)
names it, and this module turns it into the functions the cache, the training batches and the
encoder call.

  caffe        Caffe's ImageData layer (reproduce.data.transforms): OpenCV-exact decoding as BGR,
               cv::resize to 256 x 256, crop `crop_size` (TRAIN: random offset and mirror; TEST:
               centre), minus the mean values (B, G, R), 0-255. caffenet/alexnet: crop 227, mean
               104, 117, 123 (the authors' train_val.prototxt); vgg16: crop 224, mean 103.939,
               116.779, 123.68 (the VGG authors').
  torchvision  DeepHash-pytorch's transforms (reproduce.data.torchvision_transforms): PIL RGB,
               Resize(256) of the shorter side, RandomHorizontalFlip + RandomCrop(224) / CenterCrop
               (224), ToTensor, Normalize with ImageNet's mean and std.

What a cache of resized images holds differs (256 x 256 BGR; shorter side 256, RGB), so a cache
records its convention and is read by no other (reproduce.data.cache).
"""
import dataclasses

from ..errors import UserError
from ..model.archs import arch_spec
from . import torchvision_transforms as tv
from .images import load_resized
from .transforms import CROP_SIZE, mean_array
from .transforms import center_crop as caffe_center_crop
from .transforms import oversample as caffe_oversample
from .transforms import test_transform_batch as caffe_test_batch
from .transforms import train_transform_batch as caffe_train_batch

CAFFE, TORCHVISION = "caffe", "torchvision"
PREPROCESSINGS = (CAFFE, TORCHVISION)


@dataclasses.dataclass(frozen=True, eq=False)
class Preprocessing:
    """One backbone's image convention. name: "caffe" or "torchvision"; crop_size: the network's
    input side; mean: caffe only, a mean_array ((3, 1, 1) values or a (3, 256, 256) mean image,
    B, G, R), None for torchvision (its normalization is fixed)."""
    name: str = CAFFE
    crop_size: int = CROP_SIZE       # the authors' crop_size 227 (transform_param)
    mean: object = None

    def __post_init__(self):
        if self.name not in PREPROCESSINGS:
            raise ValueError(f"preprocessing must be one of {', '.join(PREPROCESSINGS)}, got {self.name!r}")
        if self.name == TORCHVISION and self.mean is not None:
            raise UserError("a mean (--mean, --mean-file) is a setting of the Caffe convention; the "
                            "torchvision backbones normalize with ImageNet's mean and std")

    @property
    def caffe(self):
        return self.name == CAFFE

    # -------------------------------------------------------------------- resized images
    def load_resized(self, image_list, root, i):
        """Entry i of the list decoded and resized as this convention caches it: caffe 256 x 256
        x 3 uint8 BGR (ReadImageToCVMat), torchvision H x W x 3 uint8 RGB with min(H, W) = 256."""
        return load_resized(image_list, root, i, None if self.caffe else tv.load_resized_rgb)

    # -------------------------------------------------------------------- network inputs
    def train_batch(self, images, draws, mirror):
        """TRAIN transform of resized images (caffe: N x 256 x 256 x 3 array; torchvision: a
        list of H_i x W_i x 3) with BatchOrder's draws (caffe: N x 2 crop offsets; torchvision:
        N x 2 fractions) and mirror flags -> float32 torch N x 3 x crop x crop."""
        if self.caffe:
            return caffe_train_batch(images, draws, mirror, self.mean, self.crop_size)
        return tv.train_transform_batch(images, draws, mirror, self.crop_size)

    def test_batch(self, images):
        """TEST transform (centre crop, no mirror) of resized images -> N x 3 x crop x crop."""
        if self.caffe:
            return caffe_test_batch(images, self.mean, self.crop_size)
        return tv.test_transform_batch(images, self.crop_size)

    def test_blob(self, img, ten_crops=False):
        """TEST transform of one resized image -> float32 numpy 3 x crop x crop (caffe with
        ten_crops: pycaffe's 10 crops, 10 x 3 x crop x crop)."""
        if self.caffe:
            return (caffe_oversample if ten_crops else caffe_center_crop)(img, self.mean, self.crop_size)
        if ten_crops:
            raise UserError("pycaffe's 10-crop oversampling belongs to the Caffe convention")
        return tv.test_transform(img, self.crop_size).numpy()


def preprocessing_for(arch, mean=None):
    """The Preprocessing of `--arch arch`: its convention and crop size (ArchSpec), and for the
    Caffe convention `mean` (values or a mean image; None: the arch's mean_value) as a mean_array."""
    spec = arch_spec(arch)
    if spec.preprocessing != CAFFE:
        return Preprocessing(spec.preprocessing, spec.crop_size, None if mean is None else mean)
    return Preprocessing(CAFFE, spec.crop_size, mean_array(spec.mean_value if mean is None else mean))


def check_caffe_only(arch, **options):
    """UserError (one line) when an option that only the Caffe convention has is given with a
    torchvision arch: options {"--mean": value, ...}, None / False meaning not given."""
    spec = arch_spec(arch)
    given = [name for name, value in options.items() if value is not None and value is not False]
    if spec.preprocessing != CAFFE and given:
        raise UserError(f"{given[0]}: an option of the Caffe image convention; --arch {arch} uses "
                        "torchvision's (PIL RGB, Resize 256, crop 224, ImageNet mean and std)")

