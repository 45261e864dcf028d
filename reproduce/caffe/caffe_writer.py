"""Writing Caffe's model files: .caffemodel (V1 or V2, packed or unpacked), .caffemodel.h5, mean files.

The inverse of reproduce.caffe.caffe_format's readers, with the same caffe.proto field numbers. Used to
export a network to Caffe (reproduce.caffe.caffe_net.caffe_layers), and by the tests and benchmarks to
write files in the zoo's exact formats (the 2014 zoo files are V1 with legacy dims and packed
floats) without Caffe. Every file is written under a temporary name and renamed (fileio).
"""
import h5py
import numpy as np

from ..model.nets import HASH_LAYER
from ..utils.fileio import atomic_output
from .caffe_format import (BLOB_DATA, BLOB_LEGACY_DIMS, BLOB_SHAPE, FIXED32, LEN, NET_LAYER, NET_LAYERS_V1,
                           V1, V1_TYPE_IDS, V2, VARINT)


def _varint_bytes(n):
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _len_field(field, pieces):
    """A length-delimited field around `pieces` (bytes or contiguous arrays): returns pieces."""
    size = sum(p.nbytes if isinstance(p, np.ndarray) else len(p) for p in pieces)
    return [_varint_bytes(field << 3 | LEN) + _varint_bytes(size)] + pieces


def _write_pieces(f, pieces):
    for piece in pieces:   # arrays are written from their memory, without a bytes copy
        f.write(piece.view(np.uint8) if isinstance(piece, np.ndarray) else piece)


def _blob_pieces(array, legacy, packed):
    data = np.ascontiguousarray(array, dtype="<f4").reshape(-1)
    if legacy:
        if array.ndim > 4:
            raise ValueError(f"legacy dims hold at most 4 axes, got shape {array.shape}")
        dims = (1,) * (4 - array.ndim) + tuple(array.shape)
        pieces = [b"".join(_varint_bytes(f << 3 | VARINT) + _varint_bytes(d)
                           for f, d in zip(BLOB_LEGACY_DIMS, dims))]
    else:
        pieces = _len_field(BLOB_SHAPE, _len_field(1, [b"".join(_varint_bytes(d) for d in array.shape)]))
    if packed:
        return pieces + _len_field(BLOB_DATA, [data])
    records = np.empty(data.size, np.dtype([("key", "u1"), ("value", "<f4")]))   # 5 bytes each
    records["key"], records["value"] = BLOB_DATA << 3 | FIXED32, data
    return pieces + [records]


def guess_layer_type(name, blobs):
    """Caffe type string from the zoo's layer names (conv*, fc*, relu*, ...), else the blob rank."""
    for prefix, type_ in (("conv", "Convolution"), ("fc", "InnerProduct"), (HASH_LAYER, "InnerProduct"),
                          ("relu", "ReLU"), ("pool", "Pooling"), ("norm", "LRN"), ("drop", "Dropout"),
                          ("prob", "Softmax"), ("tanh", "TanH"), ("data", "Data")):
        if name.startswith(prefix):
            return type_
    return {4: "Convolution", 2: "InnerProduct"}.get(np.ndim(blobs[0]) if blobs else 0, "Split")


def write_caffemodel(path, layers, fmt="v1", packed=True, types=None, overwrite=False):
    """Write {layer name: [arrays]} as a .caffemodel NetParameter.

    fmt: "v1" = field 2 `layers`, enum types, legacy num/channels/height/width dims (the 2014 zoo
    files); "v2" = field 100 `layer`, string types, BlobShape; "v2-legacy-dims" = V2 layers with
    legacy dims. packed=False writes every float as its own field. types: {name: Caffe type
    string}, default guess_layer_type.
    """
    if fmt not in ("v1", "v2", "v2-legacy-dims"):
        raise ValueError(f"fmt must be v1, v2 or v2-legacy-dims, got {fmt!r}")
    types = dict(types or {})
    with atomic_output(path, overwrite=overwrite) as tmp, open(tmp, "wb") as f:
        for name, blobs in layers.items():
            type_ = types.get(name) or guess_layer_type(name, blobs)
            ids = V1 if fmt == "v1" else V2
            name_b = name.encode()
            body = [_varint_bytes(ids["name"] << 3 | LEN) + _varint_bytes(len(name_b)) + name_b]
            if fmt == "v1":
                if type_ not in V1_TYPE_IDS:
                    raise ValueError(f"layer type {type_!r} has no V1 enum value")
                body.append(_varint_bytes(V1["type"] << 3 | VARINT) + _varint_bytes(V1_TYPE_IDS[type_]))
            else:
                body.append(_varint_bytes(V2["type"] << 3 | LEN) + _varint_bytes(len(type_)) + type_.encode())
            for blob in blobs:
                body += _len_field(ids["blobs"], _blob_pieces(np.asarray(blob), fmt != "v2", packed))
            _write_pieces(f, _len_field(NET_LAYERS_V1 if fmt == "v1" else NET_LAYER, body))


def write_caffemodel_h5(path, layers, overwrite=False):
    """Write {layer name: [arrays]} as Caffe's HDF5 snapshot: data/<layer>/<blob index> (net.cpp)."""
    with atomic_output(path, overwrite=overwrite) as tmp, h5py.File(tmp, "w") as f:
        data = f.create_group("data")
        for name, blobs in layers.items():
            group = data.create_group(name)
            for i, blob in enumerate(blobs):
                group.create_dataset(str(i), data=np.asarray(blob, dtype=np.float32))


def write_binaryproto(path, array, overwrite=False):
    """Write a mean image as a BlobProto with legacy dims 1xCxHxW, as Caffe's compute_image_mean."""
    array = np.asarray(array, dtype=np.float32)
    with atomic_output(path, overwrite=overwrite) as tmp, open(tmp, "wb") as f:
        _write_pieces(f, _blob_pieces(array.reshape((1,) * (4 - array.ndim) + array.shape), True, True))
