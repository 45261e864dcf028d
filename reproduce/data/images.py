"""The images of a list on disk: checked to be there before any work, read and resized as Caffe's
ImageData layer reads them (ReadImageToCVMat: decoded as BGR, cv::resize to 256 x 256)."""
import os
import sys

from ..errors import UserError
from .transforms import NEW_SIZE, read_image_bgr, resize_linear

_WARNED = set()


def warn_outside_root(image_list, root):
    """Paths that are absolute or climb out of `root` with `..` are read as they are (they may be
    a list from another machine): one warning per list and root, with their count."""
    outside = image_list.outside_root
    if outside and (image_list.source, os.fspath(root)) not in _WARNED:
        _WARNED.add((image_list.source, os.fspath(root)))
        print(f"warning: {outside} of the {len(image_list)} paths of {image_list.source} are "
              f"absolute or leave the dataset root {root} with '..'; they are read as they are",
              file=sys.stderr)


def check_images_exist(image_list, root):
    """UserError naming the list file, line and path of the first missing image, and the count
    (after warn_outside_root)."""
    warn_outside_root(image_list, root)
    missing = [i for i, p in enumerate(image_list.paths) if not os.path.isfile(os.path.join(root, p))]
    if missing:
        first = ", ".join(os.path.join(root, image_list.paths[i]) for i in missing[:3])
        raise UserError(f"{image_list.where(missing[0])}: image {os.path.join(root, image_list.paths[missing[0]])} "
                        f"not found ({len(missing)} of {len(image_list)} images of the list are missing "
                        f"under {root}; first: {first})")


def load_resized(image_list, root, i, load=None):
    """Entry i of the list decoded as BGR uint8 and resized to 256 x 256 (Caffe's ReadImageToCVMat),
    or `load(path)` of it (another convention's decoding and resizing); an image that cannot be
    read is a UserError naming the list, the line and the path."""
    path = os.path.join(root, image_list.paths[i])
    try:
        return load(path) if load is not None else resize_linear(read_image_bgr(path), NEW_SIZE, NEW_SIZE)
    except UserError as e:
        raise UserError(f"{image_list.where(i)}: {e}") from None
