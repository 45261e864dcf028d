"""Caffe's model files without Caffe or a compiled caffe.proto: .caffemodel, .caffemodel.h5, mean files.

(The network's side of Caffe, deploy prototxts and the layer <-> parameter mapping, is
reproduce.caffe.caffe_net.)

A .caffemodel is one protobuf `NetParameter`. We walk its *wire format* by hand (varint keys,
length-delimited fields) over an `mmap` of the file instead of using a protobuf runtime, because
  1. the 233 MiB zoo files exceed the 64 MiB message limit of some protobuf runtimes;
  2. the packed float `data` fields can then be viewed with `np.frombuffer` without copying, which
     keeps conversion <= 10 s and peak extra memory <= 2x the file (benchmarks/bench_convert.py;
     a field that is not 4-byte aligned in the file is copied once and its pages released);
  3. V1 (`layers`, field 2, enum types, legacy dims), V2 (`layer`, field 100, string types,
     BlobShape) and mixed files are all just field numbers.
Every length is checked against the enclosing message, so a truncated file, or bytes that are not
a NetParameter, is a one-line UserError naming the file. Field numbers are caffe.proto's.
Blob shapes are checked as Caffe's Blob::Reshape does (at most 32 axes, every dim and the count
<= INT_MAX) and against the values actually present before any array is shaped; weights and means
holding NaN or infinity are refused with the layer and blob named (`allow_nonfinite=True` reads them
as they are). HDF5 snapshots and .npy means are size-checked against the bytes the file holds before
they are read (reproduce.evaluation.codes.read_h5_dataset / load_npy).
The mmap is copy-on-write (ACCESS_COPY): arrays are writable views and the file is never changed.
"""
import math
import mmap
import os

import h5py
import numpy as np

from ..errors import UserError
from ..utils.arrayfiles import H5_ERRORS, load_npy, read_h5_dataset
from ..utils.fileio import require_file
from ..utils.limits import FLOAT32_MAX
from ..utils.messages import one_line

VARINT, FIXED64, LEN, FIXED32 = 0, 1, 2, 5            # protobuf wire types
# caffe.proto: NetParameter, V1LayerParameter (+ nested V0LayerParameter), LayerParameter, BlobProto
NET_LAYERS_V1, NET_LAYER = 2, 100
V1 = dict(name=4, type=5, blobs=6, v0=1)
V0 = dict(name=1, type=2, blobs=50)
V2 = dict(name=1, type=2, blobs=7)
BLOB_LEGACY_DIMS = (1, 2, 3, 4)                      # num, channels, height, width
BLOB_DATA, BLOB_SHAPE, BLOB_DOUBLE_DATA = 5, 7, 8
# V1LayerParameter.LayerType enum -> V2 type string (upgrade_proto.cpp, UpgradeV1LayerType)
V1_LAYER_TYPES = {
    0: "", 1: "Accuracy", 2: "BNLL", 3: "Concat", 4: "Convolution", 5: "Data", 6: "Dropout",
    7: "EuclideanLoss", 8: "Flatten", 9: "HDF5Data", 10: "HDF5Output", 11: "Im2col",
    12: "ImageData", 13: "InfogainLoss", 14: "InnerProduct", 15: "LRN",
    16: "MultinomialLogisticLoss", 17: "Pooling", 18: "ReLU", 19: "Sigmoid", 20: "Softmax",
    21: "SoftmaxWithLoss", 22: "Split", 23: "TanH", 24: "WindowData", 25: "Eltwise", 26: "Power",
    27: "SigmoidCrossEntropyLoss", 28: "HingeLoss", 29: "MemoryData", 30: "ArgMax",
    31: "Threshold", 32: "DummyData", 33: "Slice", 34: "MVN", 35: "AbsVal", 36: "Silence",
    37: "ContrastiveLoss", 38: "Exp", 39: "Deconvolution"}
V1_TYPE_IDS = {v: k for k, v in V1_LAYER_TYPES.items()}
V0_TYPES = {"conv": "Convolution", "innerproduct": "InnerProduct"}   # upgrade_proto.cpp, V0 names
# Layers whose blobs are (weight, bias) with a 1-D bias; legacy 4-D dims are re-read in this shape.
WEIGHT_NDIM = {"Convolution": 4, "Deconvolution": 4, "InnerProduct": 2}
MAX_BLOB_AXES, INT_MAX = 32, 2**31 - 1               # blob.hpp kMaxBlobAxes; Blob::Reshape's limits
# The range of a mean of pixels: Caffe's ImageData decodes 8-bit images (0..255) and pycaffe's
# Classifier scales its [0, 1] images by raw_scale 255 before subtracting the mean.
PIXEL_RANGE = (0, 255)


# ----------------------------------------------------------------------------- wire format reading
def _varint(buf, pos, end, source):
    result = shift = 0
    while True:
        if pos >= end:
            raise UserError(f"{source}: truncated or not a Caffe file (a varint runs past byte {end})")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise UserError(f"{source}: not a Caffe file (malformed varint before byte {pos})")


def _next_field(buf, pos, end, source):
    """One field at `pos`: (field number, wire type, value, next pos); value is the integer of a
    varint, else the byte offset of the payload; LEN payloads run from value to next pos."""
    key, pos = _varint(buf, pos, end, source)
    field, wire = key >> 3, key & 7
    if field == 0 or wire not in (VARINT, FIXED64, LEN, FIXED32):
        raise UserError(f"{source}: not a Caffe file (invalid protobuf key {key} before byte {pos})")
    if wire == VARINT:
        value, pos = _varint(buf, pos, end, source)
        return field, wire, value, pos
    if wire == LEN:
        size, pos = _varint(buf, pos, end, source)
    else:
        size = 4 if wire == FIXED32 else 8
    if pos + size > end:
        raise UserError(f"{source}: truncated or not a Caffe file (a field of {size} bytes at byte "
                        f"{pos} runs past byte {end})")
    return field, wire, pos, pos + size


def _fields(buf, pos, end, source):
    while pos < end:
        field, wire, value, pos = _next_field(buf, pos, end, source)
        yield field, wire, value, pos


def _expect(wire, want, field, what, source):
    if wire != want:
        raise UserError(f"{source}: not a Caffe file (field {field} of a {what} has wire type {wire}, "
                        f"caffe.proto says {want})")


def _string(buf, start, stop, source):
    try:
        return bytes(buf[start:stop]).decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{source}: not a Caffe file (a layer name or type at byte {start} is not "
                        "UTF-8)") from None


def _run_length(buf, start, end, tag, width):
    """Number of consecutive `tag`-byte + value records of `width` bytes from `start` (unpacked
    repeated floats/doubles: one key byte before every value), found with numpy, not a loop."""
    n, chunk = 0, 1 << 12
    while True:
        k = min(chunk, (end - start) // width - n)
        if k <= 0:
            return n
        tags = np.ndarray((k,), np.uint8, buffer=buf, offset=start + n * width, strides=(width,))
        bad = np.flatnonzero(tags != tag)
        if bad.size:
            return n + int(bad[0])
        n, chunk = n + k, chunk * 2


def _release(buf, start, stop):
    """Drop the mmap's pages wholly inside [start, stop) from this process once their values were
    copied (madvise MADV_DONTNEED; the private mapping re-reads the file if touched again), so a
    copied blob does not count twice in memory."""
    page = mmap.PAGESIZE
    first, last = -(-start // page) * page, stop // page * page
    if isinstance(buf, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED") and last > first:
        buf.madvise(mmap.MADV_DONTNEED, first, last - first)


def _parse_blob(buf, pos, end, source, where):
    """BlobProto -> (float32 array, legacy): legacy dims num/channels/height/width give a 4-D shape,
    else BlobShape; double_data wins over data when present (blob.cpp, Blob::FromProto)."""
    legacy, shape, floats, doubles = {}, None, [], []
    while pos < end:
        field, wire, value, nxt = _next_field(buf, pos, end, source)
        if field in BLOB_LEGACY_DIMS:
            _expect(wire, VARINT, field, "BlobProto", source)
            legacy[field] = _dim(value, source, where)
        elif field == BLOB_SHAPE:
            _expect(wire, LEN, field, "BlobProto", source)
            shape = []
            for f, w, v, p in _fields(buf, value, nxt, source):
                if f == 1 and w == LEN:          # dim: repeated int64, packed
                    q = v
                    while q < p:
                        d, q = _varint(buf, q, p, source)
                        shape.append(_dim(d, source, where))
                        _axes(shape, source, where)
                elif f == 1 and w == VARINT:
                    shape.append(_dim(v, source, where))
                    _axes(shape, source, where)
        elif field in (BLOB_DATA, BLOB_DOUBLE_DATA):
            dtype, width, wire_unpacked = ("<f4", 4, FIXED32) if field == BLOB_DATA else ("<f8", 8, FIXED64)
            out = floats if field == BLOB_DATA else doubles
            if wire == LEN:                      # packed: one run of raw little-endian values
                if (nxt - value) % width:
                    raise UserError(f"{source}: not a Caffe file ({where}: packed data of "
                                    f"{nxt - value} bytes is not a whole number of values)")
                values = np.frombuffer(buf, dtype, (nxt - value) // width, value)
                if field == BLOB_DOUBLE_DATA or not values.flags.aligned:
                    values = to_float32(values, source, where)   # an aligned float32 copy ...
                    _release(buf, value, nxt)            # ... so the file's pages can go
                out.append(values)
            elif value - pos != 1:               # unpacked, a key of several bytes: one value
                _expect(wire, wire_unpacked, field, "BlobProto", source)
                out.append(to_float32(np.frombuffer(buf, dtype, 1, value), source, where))
            else:                                # unpacked: key byte + value, repeated
                _expect(wire, wire_unpacked, field, "BlobProto", source)
                n = _run_length(buf, pos, end, buf[pos], width + 1)
                out.append(to_float32(np.ndarray((n,), dtype, buffer=buf, offset=pos + 1,
                                                 strides=(width + 1,)), source, where))
                nxt = pos + n * (width + 1)
                _release(buf, pos, nxt)
        pos = nxt
    parts = doubles or floats
    data = parts[0] if len(parts) == 1 else np.concatenate(parts) if parts else np.zeros(0, "<f4")
    data = data.astype(np.float32, copy=False)   # native float32; a view of aligned '<f4' data
    if legacy:
        shape = tuple(legacy.get(f, 0) for f in BLOB_LEGACY_DIMS)
    shape = tuple(shape or ())
    if math.prod(d for d in shape if d) > INT_MAX:
        raise UserError(f"{source}: {where} has shape {shape}, more than INT_MAX values")
    if math.prod(shape) != data.size:
        raise UserError(f"{source}: {where} has shape {shape} but {data.size} values")
    return data.reshape(shape), bool(legacy)


def _dim(d, source, where):
    if d > INT_MAX:      # also a negative int64 dim, which the varint holds as d >= 2**63
        raise UserError(f"{source}: {where} has a dimension of {d if d < 2**63 else d - 2**64}, "
                        f"outside 0..{INT_MAX}")
    return d


def _axes(shape, source, where):
    if len(shape) > MAX_BLOB_AXES:
        raise UserError(f"{source}: {where} has more than {MAX_BLOB_AXES} axes")


def to_float32(array, source, where):
    """`array` as float32; a finite value beyond float32's range (a double_data blob or a float64
    HDF5 dataset; Caffe's blobs are float32) is a UserError instead of a silent infinity."""
    if array.dtype.kind == "f" and array.dtype.itemsize > 4 and array.size:
        big = np.isfinite(array) & (np.abs(array) > FLOAT32_MAX)
        if big.any():
            i = int(np.flatnonzero(big.reshape(-1))[0])
            raise UserError(f"{source}: {where} holds {array.reshape(-1)[i]} at flat index {i}, beyond "
                            "float32's range (Caffe's blobs are float32)")
    return array.astype(np.float32, copy=False)


def check_finite(array, source, where):
    """UserError naming `where` if `array` holds NaN or infinity (checked in chunks: no big
    temporary); the package never converts or trains from such weights silently."""
    flat = array.reshape(-1)
    step = 1 << 20
    for start in range(0, flat.size, step):
        ok = np.isfinite(flat[start:start + step])
        if not ok.all():
            i = start + int(np.flatnonzero(~ok)[0])
            raise UserError(f"{source}: {where} holds a non-finite value ({flat[i]} at flat index {i} "
                            f"of shape {tuple(array.shape)}); NaN and infinity are refused")
    return array


def _logical_shape(blob, legacy, layer_type, index):
    """Legacy 4-D dims count from the end (an fc weight is (1, 1, out, in), a bias (1, 1, 1, out)):
    give weight/bias of conv and fc layers the shape Caffe's layer itself has."""
    ndim = WEIGHT_NDIM.get(layer_type) if index == 0 else 1 if layer_type in WEIGHT_NDIM else None
    if legacy and ndim and ndim < 4 and not any(d != 1 for d in blob.shape[:4 - ndim]):
        return blob.reshape(blob.shape[4 - ndim:])
    return blob


def _parse_layer(buf, pos, end, source, ids, layers):
    """V1LayerParameter (ids = V1) or LayerParameter (ids = V2) -> (name, type, [(blob, legacy)])."""
    name, type_, blobs = "", "", []
    for field, wire, value, nxt in _fields(buf, pos, end, source):
        if field == ids["name"]:
            _expect(wire, LEN, field, "layer", source)
            name = _string(buf, value, nxt, source)
        elif field == ids["type"]:
            if ids is V1:
                _expect(wire, VARINT, field, "V1 layer", source)
                type_ = V1_LAYER_TYPES.get(value, f"V1 type {value}")
            else:
                _expect(wire, LEN, field, "layer", source)
                type_ = _string(buf, value, nxt, source)
        elif field == ids["blobs"]:
            _expect(wire, LEN, field, "layer", source)
            where = f"layer {len(layers) + 1} ({name or '?'}) blob {len(blobs)}"
            blobs.append(_parse_blob(buf, value, nxt, source, where))
        elif ids is V1 and field == V1["v0"]:    # a V0 layer nested in a V1 one (oldest files)
            _expect(wire, LEN, field, "V1 layer", source)
            n0, t0, b0 = _parse_layer(buf, value, nxt, source, V0, layers)
            name, type_, blobs = name or n0, type_ or V0_TYPES.get(t0, t0), blobs + b0
    return name, type_, blobs


def read_caffe_layers(path, allow_nonfinite=False):
    """[(layer name, type string, [float32 array in Caffe's logical shape])] of a .caffemodel, in
    file order, layers without blobs (relu, pool, norm) included. Arrays are views of the file.
    A blob with NaN or infinity is a UserError naming the layer, unless allow_nonfinite."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                raise UserError(f"{path}: empty file, not a caffemodel")
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror})") from None
    layers, base = [], np.frombuffer(buf, np.uint8).ctypes.data
    for field, wire, value, nxt in _fields(buf, 0, len(buf), path):
        if field in (NET_LAYERS_V1, NET_LAYER):
            _expect(wire, LEN, field, "NetParameter", path)
            ids = V1 if field == NET_LAYERS_V1 else V2
            name, type_, blobs = _parse_layer(buf, value, nxt, path, ids, layers)
            arrays = [_logical_shape(b, legacy, type_, i) for i, (b, legacy) in enumerate(blobs)]
            if not allow_nonfinite:
                for i, array in enumerate(arrays):
                    check_finite(array, path, f"layer {len(layers) + 1} ({name!r}) blob {i}")
                    offset = array.ctypes.data - base
                    if 0 <= offset < len(buf):       # a view of the file: the pages the check
                        _release(buf, offset, offset + array.nbytes)   # read need not stay
            layers.append((name, type_, arrays))
    if not layers:
        raise UserError(f"{path}: not a caffemodel (no layers in it)")
    return layers


def read_caffemodel(path, allow_nonfinite=False):
    """{layer name: [float32 ndarray, ...]} of a .caffemodel (V1, V2, mixed) or .caffemodel.h5.

    Binary files keep the file's layer order and list blob-less layers with []; HDF5 snapshots
    record no order (h5py lists groups by name) and only layers with blobs are returned.
    Shapes: conv weight (out, in/group, kh, kw), fc weight (out, in), biases (out,).
    Weights with NaN or infinity are a UserError naming the layer and blob, unless allow_nonfinite.
    """
    path = os.fspath(path)
    require_file(path, "caffemodel")
    if h5py.is_hdf5(path):
        return _read_caffemodel_h5(path, allow_nonfinite)
    blobs = {}
    for name, _, arrays in read_caffe_layers(path, allow_nonfinite):
        if name in blobs and (arrays or blobs[name]):
            raise UserError(f"{path}: layer name '{name}' appears twice")
        blobs[name] = arrays
    return blobs


def _read_caffemodel_h5(path, allow_nonfinite=False):
    # Caffe's Net::ToHDF5 (net.cpp): group data/<layer name>/<blob index> of N-D datasets.
    try:
        with h5py.File(path, "r") as f:
            if not isinstance(f.get("data"), h5py.Group):
                raise UserError(f"{path}: HDF5 file without a 'data' group, not a Caffe HDF5 snapshot")
            blobs = {}
            for name, group in f["data"].items():
                if not isinstance(group, h5py.Group) or not all(k.isdigit() for k in group):
                    raise UserError(f"{path}: data/{name} is not a group of numbered blobs")
                arrays = []
                for i in range(len(group)):
                    dset = group[str(i)]
                    if not isinstance(dset, h5py.Dataset) or dset.dtype.kind not in "biuf":
                        raise UserError(f"{path}: data/{name}/{i} is not a numeric dataset")
                    array = to_float32(read_h5_dataset(dset, path, f"data/{name}/{i}"), path,
                                       f"data/{name}/{i}")
                    if not allow_nonfinite:
                        check_finite(array, path, f"data/{name}/{i}")
                    arrays.append(array)
                if arrays:
                    blobs[name] = arrays
    except H5_ERRORS as e:
        raise UserError(f"{path}: unreadable Caffe HDF5 snapshot ({one_line(e)})") from None
    if not blobs:
        raise UserError(f"{path}: no layers with blobs under data/")
    return blobs


def read_mean(path):
    """The mean image, float32 (3, 256, 256) BGR: Caffe's imagenet_mean.binaryproto (a BlobProto
    1x3x256x256) or pycaffe's ilsvrc_2012_mean.npy (float64 3x256x256)."""
    path = os.fspath(path)
    require_file(path, "mean file")
    with open(path, "rb") as f:
        is_npy = f.read(6) == b"\x93NUMPY"
    if is_npy:
        mean = load_npy(path, "mean file")
        if mean.dtype.kind not in "iuf":
            raise UserError(f"{path}: the .npy mean holds {mean.dtype}, not numbers")
    else:
        with open(path, "rb") as f:
            data = f.read()
        if not data:
            raise UserError(f"{path}: empty mean file")
        mean, _ = _parse_blob(data, 0, len(data), path, "the mean blob")
    if mean.ndim == 4 and mean.shape[0] == 1:
        mean = mean[0]
    if mean.shape != (3, 256, 256):
        raise UserError(f"{path}: mean has shape {mean.shape}, expected (3, 256, 256) (or 1x3x256x256)")
    check_finite(mean, path, "the mean image")
    low, high = PIXEL_RANGE
    outside = (mean < low) | (mean > high)   # checked before the float32 cast (no overflow to inf)
    if outside.any():
        i = int(np.flatnonzero(outside.reshape(-1))[0])
        raise UserError(f"{path}: the mean image holds {mean.reshape(-1)[i]} at flat index {i}, outside "
                        f"the pixel range {low}..{high}")
    return np.array(mean, dtype=np.float32, order="C")
