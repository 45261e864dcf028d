"""Arrays from user files without trusting their headers: .npy / .npz, HDF5 datasets and MATLAB
.mat files are read only after the sizes they declare were checked against the bytes they hold
(compressed data may expand at most MAX_EXPANSION times), so a damaged or hostile file is a
one-line UserError naming it, never a huge allocation or a crash inside scipy (reproduce.evaluation.codes,
reproduce.caffe.caffe_format)."""
import math
import mmap
import os
import struct
import tokenize
import zipfile
import zlib

import h5py
import numpy as np
import scipy.io

from ..errors import UserError
from .messages import one_line

# What numpy, zipfile, scipy.io and h5py raise on damaged files (UnicodeDecodeError is a ValueError;
# numpy parses a .npy header with tokenize, which raises TokenError).
READ_ERRORS = (OSError, ValueError, TypeError, EOFError, KeyError, IndexError, OverflowError,
               RuntimeError, NotImplementedError, AttributeError, struct.error, zlib.error,
               tokenize.TokenError, zipfile.BadZipFile, scipy.io.matlab.MatReadError)
H5_ERRORS = (OSError, ValueError, TypeError, KeyError, IndexError, OverflowError, RuntimeError)
MAX_EXPANSION = 1100      # deflate expands at most ~1032x: a bigger declared size is a lie
H5_SLACK = 1 << 20        # an HDF5 dataset may declare this much more than it stores (fill values)
MAT_NUMERIC = {"double", "single", "logical", "int8", "uint8", "int16", "uint16", "int32", "uint32",
               "int64", "uint64"}
MAT_ITEMSIZE = {"double": 8, "int64": 8, "uint64": 8, "single": 4, "int32": 4, "uint32": 4,
                "int16": 2, "uint16": 2}


def _check_declared(path, what, shape, itemsize, available, expansion=1, slack=0):
    """UserError unless `shape` x `itemsize` bytes fit in `available` bytes x expansion + slack."""
    nbytes = math.prod(shape) * itemsize
    if nbytes > available * expansion + slack:
        raise UserError(f"{path}: {what} declares shape {tuple(shape)} ({nbytes} bytes), but the "
                        f"file holds {available} bytes of it (truncated or corrupt)")


def _npy_header(f, path, what):
    """(shape, dtype) of the .npy stream `f` (positioned at its start)."""
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise UserError(f"{path}: {what} is a .npy file of format version {version}, not 1.0 or 2.0")
    if dtype.hasobject:
        raise UserError(f"{path}: {what} holds Python objects ({dtype}), not numbers")
    return shape, dtype


def load_npy(path, what="array"):
    """np.load of a .npy file whose header is checked first: its shape must fit the bytes present
    (numpy would allocate the declared size before reading). Any problem is a UserError."""
    try:
        with open(path, "rb") as f:
            shape, dtype = _npy_header(f, path, what)
            _check_declared(path, what, shape, dtype.itemsize, os.fstat(f.fileno()).st_size - f.tell())
        return np.load(path, allow_pickle=False)
    except READ_ERRORS as e:
        raise UserError(f"{path}: cannot read the .npy {what} (truncated or not this format): "
                        f"{one_line(e)}") from None


def load_npz(path):
    """{name: array} of a .npz, every member's header checked against its (declared) size first."""
    with np.load(path, allow_pickle=False) as z:
        members = set(z.zip.namelist())
        arrays = {}
        for k in z.files:
            member = k + ".npy" if k + ".npy" in members else k
            info = z.zip.getinfo(member)
            expansion = 1 if info.compress_type == zipfile.ZIP_STORED else MAX_EXPANSION
            _check_declared(path, f"member {member}", (info.file_size,), 1, info.compress_size,
                            expansion, slack=4096)
            with z.zip.open(member) as m:
                shape, dtype = _npy_header(m, path, f"member {member}")
                _check_declared(path, f"member {member}", shape, dtype.itemsize,
                                info.file_size - m.tell())
            arrays[k] = z[k]
    return arrays


def read_h5_dataset(dset, path, name):
    """dset[()] as an ndarray, once its declared size is known to be stored in the file (an HDF5
    header can declare terabytes that are not there: a fill value, an external or virtual file)."""
    if dset.shape is None:
        raise UserError(f"{path}: {name} has an empty (null) dataspace, no values")
    stored = min(dset.id.get_storage_size(), os.path.getsize(path))
    filtered = dset.id.get_create_plist().get_nfilters() > 0
    if h5py.check_vlen_dtype(dset.dtype) is not None:
        check_h5_global_heaps(path)
    _check_declared(path, name, dset.shape, dset.dtype.itemsize, stored,
                    MAX_EXPANSION if filtered else 1, slack=H5_SLACK)
    return np.asarray(dset[()])


MAX_H5_ATTRIBUTE = 1 << 20   # bytes: our attributes are short texts and numbers


H5_GLOBAL_HEAP = b"GCOL"
H5_GLOBAL_HEAP_MIN = 4096      # H5HG_MINSIZE: a smaller "collection" is not one
_checked_heaps = {}            # (path, size, mtime) of files whose heaps were walked


def check_h5_global_heaps(path):
    """Refuse an HDF5 file whose global heap (where variable-length strings live) holds an object
    whose declared size does not fit its collection: HDF5's reader (H5HG__cache_heap_deserialize)
    advances by that size, so a free-space object of size 0, or a size that wraps around, loops
    forever (found by the fuzz tests: reading a string attribute of a mutated code file never
    returned, in HDF5 1.14 as h5py 3.16 ships it).
    Collections are found by their signature, GCOL version 1 (HDF5 file format, III.E); a chance
    match elsewhere in the data is one only if its declared size fits the file."""
    stat = os.stat(path)
    key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
    if key in _checked_heaps or stat.st_size < H5_GLOBAL_HEAP_MIN:
        return
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        at = buf.find(H5_GLOBAL_HEAP)
        while at >= 0:
            if at + 16 <= len(buf) and buf[at + 4] == 1:
                size = struct.unpack_from("<Q", buf, at + 8)[0]
                if H5_GLOBAL_HEAP_MIN <= size <= len(buf) - at:
                    _check_heap_objects(buf, at, at + size, path)
            at = buf.find(H5_GLOBAL_HEAP, at + 4)
    _checked_heaps[key] = True


def _check_heap_objects(buf, start, end, path):
    """Each object of the collection at buf[start:end] within it; the free-space object (index 0,
    its size counting its own 16-byte header) at least a header: HDF5 advances by that size, so 0
    is a loop that never ends."""
    pos = start + 16
    while pos + 16 <= end:
        index, _, _, size = struct.unpack_from("<HHIQ", buf, pos)
        room = end - pos
        if (size < 16 or size > room) if index == 0 else size > room - 16:
            raise UserError(f"{path}: global heap object {index} at byte {pos} declares {size} bytes "
                            f"where its collection has {room}; the file is corrupt")
        if index == 0:                  # the free space: the rest of the collection
            return
        pos += 16 + (size + 7) // 8 * 8


def read_h5_attrs(obj, path):
    """{name: value} of an HDF5 object's attributes, bytes decoded and numpy scalars as Python ones,
    once each attribute's declared size is known to be small: a corrupt header can declare an
    attribute of terabytes, which h5py would allocate or walk for hours (found by the fuzz tests)."""
    check_h5_global_heaps(path)
    values = {}
    for name in obj.attrs:
        aid = h5py.h5a.open(obj.id, name.encode("utf-8"))
        shape = aid.shape or ()
        size = math.prod(int(n) for n in shape) * max(aid.dtype.itemsize, 1)
        if size > MAX_H5_ATTRIBUTE or size > os.path.getsize(path) + H5_SLACK:
            raise UserError(f"{path}: attribute {name!r} declares {size} bytes; the file is corrupt")
        value = obj.attrs[name]
        value = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        values[name] = value.item() if isinstance(value, np.generic) else value
    return values


MAT4_ITEMSIZE = {0: 8, 1: 4, 2: 4, 3: 2, 4: 2, 5: 1}     # mio4: double, single, int32, int16, ...
MI_MATRIX, MI_COMPRESSED = 14, 15
MI_DATA = {1, 2, 3, 4, 5, 6, 7, 9, 12, 13, 16, 17, 18}  # miINT8 .. miUTF32 (8, 10, 11 do not exist)


def _check_mat_file(path):
    """Walk a MATLAB v4 or v5/v7 file's data elements and refuse any whose declared byte count runs
    past its enclosing element or the file (scipy.io allocates a declared count before reading it),
    whose type code is not one of MATLAB's (scipy.io indexes a table with it: a segmentation fault)
    or whose compressed data would expand more than MAX_EXPANSION times."""
    size = os.path.getsize(path)
    if size < 20:
        return                                   # scipy refuses it as truncated
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        if 0 in buf[:4]:                         # v4: a zero in the first mopt (scipy's test)
            _walk_mat4(buf, size, path)
        elif size >= 128:                        # v5/v7: 128-byte header, then data elements
            _walk_mat5(buf, 128, size, "<" if buf[126:128] == b"IM" else ">", path, 0)


def _walk_mat4(buf, size, path):
    first = struct.unpack_from("<i", buf, 0)[0]
    order = "<" if 0 <= first <= 5000 else ">"
    pos = 0
    while size - pos >= 20:
        mopt, rows, cols, imagf, namlen = struct.unpack_from(order + "5i", buf, pos)
        if not 0 <= mopt <= 5000 or min(rows, cols, namlen) < 0:
            raise UserError(f"{path}: not a MATLAB v4 file (variable header at byte {pos} is corrupt)")
        itemsize = MAT4_ITEMSIZE.get(mopt % 100 // 10, 8)
        nbytes = 20 + namlen + rows * cols * itemsize * (2 if imagf == 1 else 1)
        if nbytes > size - pos:
            raise UserError(f"{path}: MATLAB v4 variable at byte {pos} declares {nbytes} bytes, but "
                            f"only {size - pos} follow (truncated or corrupt)")
        pos += nbytes


def _walk_mat5(buf, pos, end, order, path, depth):
    """Data elements in buf[pos:end]; depth 0 is the file's top level (no padding between
    variables, compressed ones allowed), deeper levels the contents of a miMATRIX."""
    if depth > 64:
        raise UserError(f"{path}: MATLAB data nested more than 64 levels deep")
    while end - pos >= 8:
        mdtype, count = struct.unpack_from(order + "II", buf, pos)
        small = mdtype >> 16                     # small data element: tag and data in 8 bytes
        kind = mdtype & 0xFFFF if small else mdtype
        allowed = (MI_MATRIX, MI_COMPRESSED) if depth == 0 else \
            (MI_MATRIX,) if depth == 1 and pos == 0 else MI_DATA | {MI_MATRIX}
        if kind not in allowed or (small and (small > 4 or kind == MI_MATRIX)):
            raise UserError(f"{path}: not a MATLAB file (data element of type {kind} at byte {pos})")
        if small:
            pos += 8
            continue
        if count > end - pos - 8:
            raise UserError(f"{path}: MATLAB data element at byte {pos} declares {count} bytes, but "
                            f"only {end - pos - 8} follow (truncated or corrupt)")
        if mdtype == MI_MATRIX:
            _walk_mat5(buf, pos + 8, pos + 8 + count, order, path, depth + 1)
        elif mdtype == MI_COMPRESSED and depth == 0:
            inflate = zlib.decompressobj()
            data = inflate.decompress(buf[pos + 8:pos + 8 + count], count * MAX_EXPANSION + 4096)
            if inflate.unconsumed_tail:
                raise UserError(f"{path}: compressed MATLAB variable at byte {pos} expands more than "
                                f"{MAX_EXPANSION} times (corrupt)")
            _walk_mat5(data, 0, len(data), order, path, 1)
        pos += 8 + count + (-count % 8 if depth else 0)


def _load_mat(path, name, classes):
    """One variable of a MATLAB v4-v7.2 file; only numeric and logical matrices are loaded (a cell
    or struct header could make scipy allocate its declared size before reading)."""
    kind = classes[name]
    if kind not in MAT_NUMERIC:
        raise UserError(f"{path}: variable {name!r} is a MATLAB {kind}, not a numeric matrix")
    return scipy.io.loadmat(path, variable_names=[name])[name]


def mat_variables(path):
    """({name: shape}, load(name) -> ndarray) of a MATLAB v4-v7.2 file, after _check_mat_file and
    a check of every numeric variable's declared size against the file (compressed v7 variables
    may expand at most MAX_EXPANSION times)."""
    _check_mat_file(path)
    info = scipy.io.whosmat(path)
    shapes, classes = {}, {}
    for name, shape, kind in info:     # loadmat reads the first of a repeated name
        shapes.setdefault(name, shape)
        classes.setdefault(name, kind)
    size = os.path.getsize(path)
    for name, shape, kind in info:
        if kind in MAT_NUMERIC:
            _check_declared(path, f"variable {name!r}", shape, MAT_ITEMSIZE.get(kind, 1), size,
                            MAX_EXPANSION)
    return shapes, lambda name: _load_mat(path, name, classes)
