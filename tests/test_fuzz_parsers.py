"""Property-based fuzzing of every parser of user files (issue "Nothing silent, nothing half-written").

Each parser gets generated inputs (from a grammar of its format, with huge, negative, non-finite and
non-ASCII values) and mutated valid files (bytes flipped, set, inserted, deleted, spliced,
truncated), and arbitrary bytes. The contract checked on every input, by `check`:

  * the call returns, or raises `UserError` whose message is one line naming the file;
    any other exception fails the test;
  * it allocates at most PEAK_BYTES (tracemalloc sees numpy's and Python's allocations), so no
    size read from the input is allocated before it is checked;
  * it returns within TIME_LIMIT_S (SIGALRM), so nothing hangs.

Deterministic (derandomize=True, no example database) and sized to run in about a minute on two
cores; set FUZZ_COUNTS=<file> to write the number of inputs run per parser there as JSON.
"""
import contextlib
import io
import json
import math
import os
import signal
import struct
import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reproduce.caffe import caffe_format as cf, caffe_writer as cw
from reproduce.caffe.solver_prototxt import read_solver_prototxt
from reproduce.data.lists import MAX_CLASSES, read_list
from reproduce.errors import UserError
from reproduce.evaluation.codes import read_codes, read_external_labels
from reproduce.evaluation.records import read_record

PEAK_BYTES = 96 << 20        # the largest input here is ~1.6 MiB; a parse may use a few times that
TIME_LIMIT_S = 20
COUNTS = {}


def fuzz(max_examples):
    return settings(max_examples=max_examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck), print_blob=False)


@pytest.fixture(scope="module", autouse=True)
def report_counts():
    yield
    if os.environ.get("FUZZ_COUNTS"):
        with open(os.environ["FUZZ_COUNTS"], "w") as f:
            total = sum(v for k, v in COUNTS.items() if not k.endswith(" accepted"))
            json.dump(dict(sorted(COUNTS.items()), total=total), f, indent=1)


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang(f"no answer within {TIME_LIMIT_S} s")


@contextlib.contextmanager
def _bounded():
    """Time and memory limits around one parse."""
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, TIME_LIMIT_S)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        peak = tracemalloc.get_traced_memory()[1]
        if not tracing:
            tracemalloc.stop()
    assert peak <= PEAK_BYTES, f"peak allocation {peak} bytes"


def check(parser, path, call):
    """Run call(): a result, or a one-line UserError naming `path`. Returns the result or None."""
    COUNTS[parser] = COUNTS.get(parser, 0) + 1
    with _bounded():
        try:
            result = call()
            COUNTS[parser + " accepted"] = COUNTS.get(parser + " accepted", 0) + 1
            return result
        except UserError as e:
            msg = str(e)
            assert "\n" not in msg and "\r" not in msg, msg
            assert str(path) in msg, msg
            return None


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


class Seeds(dict):
    """Valid files by name, with a short repr (hypothesis prints fixtures of failing examples)."""

    def __repr__(self):
        return f"<seed files {', '.join(map(str, self))}>"


def put(path, data):
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


# ------------------------------------------------------------------------------------ mutations
BYTE = st.sampled_from((0, 1, 0x7F, 0x80, 0xFF, 0x0A, 0x20)) | st.integers(0, 255)
MUTATION = st.tuples(st.sampled_from(("flip", "set", "insert", "delete", "truncate", "splice")),
                     st.integers(0, 1 << 24), BYTE, st.integers(1, 64))
MUTATIONS = st.lists(MUTATION, min_size=1, max_size=6)


def mutate(data, ops, focus=None):
    """Apply ops to data; `focus` (bytes) concentrates positions in the first `focus` bytes half
    the time (headers: where most structure is)."""
    b = bytearray(data)
    for kind, pos, byte, n in ops:
        span = len(b) + 1
        if focus and pos % 2:
            span = min(span, focus)
        i = (pos >> 1) % span
        if kind == "flip" and b:
            b[min(i, len(b) - 1)] ^= 1 << (byte % 8)
        elif kind == "set" and b:
            b[min(i, len(b) - 1)] = byte
        elif kind == "insert":
            b[i:i] = bytes([byte]) * n
        elif kind == "delete":
            del b[i:i + n]
        elif kind == "truncate":
            del b[i:]
        elif kind == "splice" and b:
            j = byte * len(b) // 256
            b[i:i + n] = b[j:j + n]
    return bytes(b)


# ======================================================================================= lists
TOKENS = ["0", "1", "-1", "+1", "2", "--1", "-", "+", "²", "٣", "1_0", "0x1", "1.0", "1e3",
          "99999", "100000", "99999999999", "99999999999999999999", "0" * 30 + "1", "9" * 5000,
          "nan", "inf", "", "\x00", "é", "a b", "\t", "..", "/abs/x.jpg", "../up.jpg"]
LABEL = st.sampled_from(TOKENS) | st.integers(-5, 10**25).map(str) | st.text(max_size=4)
LIST_LINE = st.tuples(st.sampled_from(["img/a.jpg", "/abs/b.jpg", "../c.jpg", "a/../../d.jpg",
                                       "x", "é.jpg"]) | st.text(max_size=6),
                      st.lists(LABEL, max_size=6))
SEP = st.sampled_from(["\n", "\r\n", "\r", "\n\n", "\x0b", "\x85", "\u2028"])


@st.composite
def list_texts(draw):
    """Mostly well-formed lists (0/1 rows of one width, or class indices) with a few odd tokens,
    lines and separators; or anything."""
    mode = draw(st.sampled_from(["binary", "class", "chaos"]))
    width = draw(st.integers(1, 5))
    odd = LABEL if draw(st.booleans()) else st.nothing()
    if mode == "binary":
        line = st.tuples(LIST_LINE.map(lambda t: t[0]),
                         st.lists(st.sampled_from(["0", "1"]) | odd, min_size=width, max_size=width))
    elif mode == "class":
        line = st.tuples(LIST_LINE.map(lambda t: t[0]),
                         st.lists(st.integers(-2, 2 * MAX_CLASSES).map(str)
                                  | st.sampled_from(["0", "3"]) | odd, min_size=1, max_size=1))
    else:
        line = LIST_LINE
    lines = draw(st.lists(line | (LIST_LINE if draw(st.booleans()) else st.nothing()), max_size=8))
    seps = draw(st.lists(SEP if mode == "chaos" else st.just("\n") | SEP, min_size=len(lines),
                         max_size=len(lines)))
    return "".join(" ".join([p] + labels) + s for (p, labels), s in zip(lines, seps))


VALID_LISTS = ["img/a.jpg 0 1 0\nimg/b.jpg 1 1 0\n/abs/c.jpg 0 0 1\n",
               "a.jpg 3\nb.jpg 0\n../c.jpg 7\n"]


def _read_list_all_ways(path):
    for num_labels in (None, 1, 3, 21):
        check("read_list", path, lambda n=num_labels: read_list(path, num_labels=n))


@fuzz(500)
@given(text=list_texts())
def test_fuzz_read_list_generated(work, text):
    path = put(work / "gen.txt", text.encode("utf-8", "surrogatepass"))
    _read_list_all_ways(path)


@fuzz(300)
@given(seed=st.sampled_from(VALID_LISTS), ops=MUTATIONS, raw=st.binary(max_size=200),
       use_raw=st.booleans())
def test_fuzz_read_list_mutated_and_bytes(work, seed, ops, raw, use_raw):
    path = put(work / "mut.txt", raw if use_raw else mutate(seed.encode(), ops))
    _read_list_all_ways(path)


def test_read_list_known_failures(work):
    for text, message in [("a ²\n", "label '²' is not an integer"),
                          ("a --1\n", "label '--1' is not an integer"),
                          ("a 1_0\n", "label '1_0' is not an integer"),
                          ("a 0\nb 99999999999\n", ":2: class 99999999999 is outside 0..99999"),
                          ("a 0 99999999999999999999\n", "is out of range"),
                          ("a " + "9" * 5000 + "\n", "is out of range")]:
        path = put(work / "known.txt", text.encode())
        with pytest.raises(UserError, match=message):
            read_list(path)
    path = put(work / "known.txt", f"a {MAX_CLASSES - 1}\nb 0\n".encode())
    assert read_list(path).labels.shape == (2, MAX_CLASSES)


def test_read_list_counts_paths_outside_the_root(work):
    path = put(work / "roots.txt", b"img/a.jpg 0\n/abs/b.jpg 1\n../c.jpg 0\na/../b.jpg 1\n"
                                   b"a/../../d.jpg 0\n./e.jpg 1\n")
    images = read_list(path)
    assert images.outside_root == 3
    assert images.subset([0, 1]).outside_root == 1


# ================================================================================ caffe models
def vi(field, n):
    return varint(field << 3) + varint(n)


# the plain protobuf encoder of tests/test_caffe_format.py (varint, length-delimited field)
from test_caffe_format import ld, varint  # noqa: E402


FLOAT32 = st.floats(width=32, allow_nan=True, allow_infinity=True) | \
    st.sampled_from([0.0, -0.0, 1.0, float("nan"), float("inf"), -float("inf")])
DIM = st.integers(0, 4) | st.sampled_from([2**31 - 1, 2**31, 2**32, 2**62, 2**63, 2**64 - 1])


@st.composite
def blob_protos(draw):
    """A BlobProto: legacy dims or BlobShape (packed or not) of any size, float or double data
    (packed or not), often consistent, often not."""
    values = draw(st.lists(FLOAT32, max_size=12))
    if draw(st.booleans()):
        dims = [len(values)]
    else:
        dims = draw(st.lists(DIM, max_size=5))
    body = b""
    if draw(st.booleans()):
        legacy = [1] * (4 - len(dims[-4:])) + dims[-4:]
        body += b"".join(vi(f, d % 2**64) for f, d in zip((1, 2, 3, 4), legacy))
    elif draw(st.booleans()):
        body += ld(7, ld(1, b"".join(varint(d % 2**64) for d in dims)))
    else:
        body += ld(7, b"".join(vi(1, d % 2**64) for d in dims))
    kind = draw(st.sampled_from(["f_packed", "f_unpacked", "d_packed", "d_unpacked"]))
    fmt, field, wire = ("<f", 5, 5) if kind[0] == "f" else ("<d", 8, 1)
    raw = [struct.pack(fmt, v) for v in values]
    if kind.endswith("_packed"):
        body += ld(field, b"".join(raw))
    else:
        body += b"".join(varint(field << 3 | wire) + r for r in raw)
    return body


@st.composite
def caffemodels(draw):
    layers = b""
    for i in range(draw(st.integers(1, 3))):
        blobs = draw(st.lists(blob_protos(), max_size=2))
        if draw(st.booleans()):      # V1 layer
            body = ld(4, f"l{i}".encode()) + vi(5, draw(st.sampled_from([4, 14, 18, 99])))
            layers += ld(2, body + b"".join(ld(6, b) for b in blobs))
        else:
            body = ld(1, f"l{i}".encode()) + ld(2, draw(st.sampled_from([b"InnerProduct", b"ReLU"])))
            layers += ld(100, body + b"".join(ld(7, b) for b in blobs))
    return layers


@pytest.fixture(scope="module")
def model_seeds(work):
    rng = np.random.default_rng(0)
    layers = {"conv1": [rng.standard_normal((2, 3, 3, 3)).astype(np.float32), np.ones(2, np.float32)],
              "relu1": [],
              "fc6": [rng.standard_normal((4, 6)).astype(np.float32), np.zeros(4, np.float32)]}
    seeds = []
    for fmt in ("v1", "v2", "v2-legacy-dims"):
        for packed in (True, False):
            path = work / f"seed-{fmt}-{packed}.caffemodel"
            cw.write_caffemodel(path, layers, fmt=fmt, packed=packed, overwrite=True)
            seeds.append(path.read_bytes())
    cw.write_caffemodel_h5(work / "seed.caffemodel.h5", layers, overwrite=True)
    return Seeds(enumerate(seeds), h5=(work / "seed.caffemodel.h5").read_bytes())


def _read_model(path):
    check("read_caffemodel", path, lambda: cf.read_caffemodel(path))


@fuzz(500)
@given(data=caffemodels())
def test_fuzz_caffemodel_generated(work, data):
    path = put(work / "gen.caffemodel", data)
    _read_model(path)
    check("read_caffe_layers", path, lambda: cf.read_caffe_layers(path))


@fuzz(700)
@given(i=st.integers(0, 5), ops=MUTATIONS)
def test_fuzz_caffemodel_mutated(work, model_seeds, i, ops):
    _read_model(put(work / "mut.caffemodel", mutate(model_seeds[i], ops)))


@fuzz(150)
@given(data=st.binary(min_size=1, max_size=400))
def test_fuzz_caffemodel_bytes(work, data):
    _read_model(put(work / "bytes.caffemodel", data))


@fuzz(250)
@given(ops=MUTATIONS)
def test_fuzz_caffemodel_h5_mutated(work, model_seeds, ops):
    _read_model(put(work / "mut.caffemodel.h5", mutate(model_seeds["h5"], ops, focus=4096)))


@fuzz(60)
@given(values=st.lists(FLOAT32, min_size=1, max_size=6), fmt=st.sampled_from(["v1", "v2", "h5"]),
       packed=st.booleans())
def test_nonfinite_weights_are_refused_naming_the_layer(work, values, fmt, packed):
    weight = np.array(values, np.float32).reshape(1, -1)
    path = work / f"nf.caffemodel{'.h5' if fmt == 'h5' else ''}"
    layers = {"fc6": [weight, np.zeros(1, np.float32)]}
    if fmt == "h5":
        cw.write_caffemodel_h5(path, layers, overwrite=True)
    else:
        cw.write_caffemodel(path, layers, fmt=fmt, packed=packed, overwrite=True)
    got = check("read_caffemodel", path, lambda: cf.read_caffemodel(path))
    assert (got is None) == (not np.isfinite(weight).all())
    if got is None:
        with pytest.raises(UserError, match="fc6.*non-finite"):
            cf.read_caffemodel(path)
        assert np.array_equal(cf.read_caffemodel(path, allow_nonfinite=True)["fc6"][0], weight,
                              equal_nan=True)


def test_blob_shape_overflow_is_refused_before_allocating(work):
    for dims in ([0, 2**62], [0, 2**31 - 1, 2**31 - 1], [2**63, 2], [2**64 - 1], [1] * 33):
        blob = ld(7, ld(1, b"".join(varint(d) for d in dims)))
        path = put(work / "shape.caffemodel", ld(100, ld(1, b"fc6") + ld(7, blob)))
        assert check("read_caffemodel", path, lambda p=path: cf.read_caffemodel(p)) is None
        with pytest.raises(UserError, match="shape.caffemodel: layer 1"):
            cf.read_caffemodel(path)


# ======================================================================================= means
@pytest.fixture(scope="module")
def mean_seeds(work):
    mean = np.random.default_rng(1).uniform(0, 255, (3, 256, 256)).astype(np.float32)
    cw.write_binaryproto(work / "seed.binaryproto", mean, overwrite=True)
    buf = io.BytesIO()
    np.save(buf, mean)
    small = io.BytesIO()
    np.save(small, np.zeros((2, 3), np.float64))
    return Seeds(enumerate([(work / "seed.binaryproto").read_bytes(), buf.getvalue(), small.getvalue()]))


def _read_mean(path):
    check("read_mean", path, lambda: cf.read_mean(path))


@fuzz(200)
@given(i=st.integers(0, 2), ops=MUTATIONS)
def test_fuzz_read_mean_mutated(work, mean_seeds, i, ops):
    _read_mean(put(work / ("mut.binaryproto", "mut.npy", "small.npy")[i],
                   mutate(mean_seeds[i], ops, focus=256)))


@fuzz(200)
@given(blob=blob_protos(), raw=st.binary(min_size=1, max_size=300), which=st.integers(0, 2))
def test_fuzz_read_mean_generated_and_bytes(work, blob, raw, which):
    data = blob if which == 0 else raw if which == 1 else b"\x93NUMPY" + raw
    if data:
        _read_mean(put(work / "gen.binaryproto", data))


@fuzz(40)
@given(value=FLOAT32, index=st.integers(0, 3 * 256 * 256 - 1), npy=st.booleans())
def test_nonfinite_or_out_of_range_mean_is_refused(work, mean_seeds, value, index, npy):
    mean = np.frombuffer(mean_seeds[1], np.float32, offset=len(mean_seeds[1]) - 4 * 3 * 256 * 256)
    mean = mean.copy().reshape(3, 256, 256)
    mean.reshape(-1)[index] = value
    path = work / ("nf.npy" if npy else "nf.binaryproto")
    if npy:
        np.save(path, mean)
    else:
        cw.write_binaryproto(path, mean, overwrite=True)
    got = check("read_mean", path, lambda: cf.read_mean(path))
    assert (got is None) == (not (math.isfinite(value) and 0 <= value <= 255))   # a mean of pixels


def test_npy_mean_with_a_huge_header_shape_is_refused(work):
    header = np.lib.format.header_data_from_array_1_0(np.zeros(1, "<f8"))
    header["shape"] = (3, 256, 2**40)
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    path = put(work / "huge.npy", buf.getvalue() + bytes(64))
    with pytest.raises(UserError, match="huge.npy: .*declares shape"):
        check("read_mean", path, lambda: cf.read_mean(path)) or cf.read_mean(path)


# ====================================================================================== solver
from test_solver import AUTHORS_SOLVER as SOLVER  # noqa: E402  (the authors' solver.prototxt)
MULTISTEP = ("base_lr: 1e-3 lr_policy: 'multistep'  gamma: 0.1\nstepvalue: 100\nstepvalue: 200\n"
             "max_iter: 300\n")
KEYS = ["base_lr", "lr_policy", "gamma", "stepsize", "max_iter", "momentum", "weight_decay",
        "snapshot", "display", "power", "stepvalue", "type", "iter_size", "clip_gradients",
        "regularization_type", "net", "random_seed", "unknown_key", "lr_policy"]
VALUES = ["0.1", "1e-3", "5", "-1", "0", "1e999", "nan", "inf", "-inf", "0.5f", ".5", "5.",
          "1_0", "٣", "0x10", "\"step\"", "'fixed'", "\"poly\"", "\"multistep\"", "\"sigmoid\"",
          "\"exp\"", "\"inv\"", "\"bogus\"", "99999999999999999999", "9" * 5000, "\"\"", "''",
          "SGD", "\"Adam\"", "{", "}", "1e308", "2.5e-400"]


PLAUSIBLE = {   # values of the right kind for a key (in range or not)
    **{k: st.floats(-1, 2, allow_nan=False).map(repr) for k in ("base_lr", "gamma", "power", "momentum",
                                                                 "weight_decay")},
    **{k: st.integers(-3, 10**6).map(str) for k in ("stepsize", "max_iter", "snapshot", "display",
                                                    "stepvalue")},
    "lr_policy": st.sampled_from(["fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid"])
    .map(lambda p: f'"{p}"')}


@st.composite
def solver_texts(draw):
    """The authors' file with 0-4 keys set to other values (replaced or appended), or lines of
    random `key: value` fields."""
    if draw(st.booleans()):
        lines = SOLVER.splitlines()
        for key in draw(st.lists(st.sampled_from(KEYS), max_size=4)):
            value = draw(st.sampled_from(VALUES) | PLAUSIBLE.get(key, st.nothing()))
            i = next((i for i, ln in enumerate(lines) if ln.startswith(key + ":")), None)
            if i is None or draw(st.booleans()):
                lines.insert(draw(st.integers(0, len(lines))), f"{key}: {value}")
            else:
                lines[i] = f"{key}: {value}"
        return "\n".join(lines)
    lines = []
    for _ in range(draw(st.integers(0, 10))):
        fields = draw(st.lists(st.tuples(st.sampled_from(KEYS) | st.text(max_size=4),
                                         st.sampled_from(VALUES) | st.text(max_size=5)),
                               max_size=3))
        sep = draw(st.sampled_from([": ", ":", " : ", " ", ":: "]))
        tail = draw(st.sampled_from(["", " # c", ";", ",", " {", "\t"]))
        lines.append(" ".join(k + sep + v for k, v in fields) + tail)
    return "\n".join(lines)


def _read_solver(path):
    check("read_solver_prototxt", path, lambda: read_solver_prototxt(path))


@fuzz(500)
@given(text=solver_texts())
def test_fuzz_solver_generated(work, text):
    _read_solver(put(work / "gen.prototxt", text.encode("utf-8", "surrogatepass")))


@fuzz(350)
@given(seed=st.sampled_from([SOLVER, MULTISTEP]), ops=MUTATIONS, raw=st.binary(max_size=200),
       use_raw=st.integers(0, 3))
def test_fuzz_solver_mutated_and_bytes(work, seed, ops, raw, use_raw):
    _read_solver(put(work / "mut.prototxt", raw if use_raw == 0 else mutate(seed.encode(), ops)))


@fuzz(200)
@given(key=st.sampled_from(KEYS), value=st.sampled_from(VALUES))
def test_solver_rejections_name_file_and_line(work, key, value):
    """A bad value on line 3 of an otherwise valid file is refused naming `file:3:`."""
    lines = SOLVER.splitlines()
    body = [ln for ln in lines if not ln.startswith(key + ":")]
    text = "\n".join(body[:2] + [f"{key}: {value}"] + body[2:]) + "\n"
    path = put(work / "line.prototxt", text.encode())
    try:
        with _bounded():
            read_solver_prototxt(path)
    except UserError as e:
        msg = str(e)
        assert "\n" not in msg and msg.startswith(f"{path}:"), msg
        if "missing required" not in msg:
            assert msg.startswith(f"{path}:3:") or key == "lr_policy", msg
    COUNTS["read_solver_prototxt"] = COUNTS.get("read_solver_prototxt", 0) + 1


# ======================================================================================= codes
NUMBER = st.floats(allow_nan=True, allow_infinity=True) | \
    st.sampled_from([0.0, 1.0, -1.0, 1e11, 2.0**63, 1e300, -0.5, 255.0, 3.0])
DTYPES = ["float32", "float64", "int8", "uint8", "int64", "uint64", "bool"]


@st.composite
def arrays(draw, max_side=6):
    shape = tuple(draw(st.lists(st.integers(0, max_side), min_size=0, max_size=3)))
    dtype = draw(st.sampled_from(DTYPES))
    n = math.prod(shape)
    if draw(st.booleans()):
        values = draw(st.lists(st.sampled_from([0.0, 1.0, -1.0]), min_size=n, max_size=n))
    else:
        values = draw(st.lists(NUMBER, min_size=n, max_size=n))
    with np.errstate(all="ignore"):
        a = np.array(values, np.float64)
        if dtype == "bool":
            return (a > 0).reshape(shape)
        if dtype[0] in "iu":
            info = np.iinfo(dtype)
            a = np.clip(np.nan_to_num(a), info.min, info.max)
        return a.astype(dtype).reshape(shape)


def write_code_file(path, fmt, variables):
    path = str(path) + {"h5": ".h5", "mat5": ".mat", "mat73": ".mat", "npz": ".npz",
                        "npzc": ".npz", "npy": ".npy"}[fmt]
    if os.path.exists(path):
        os.remove(path)
    if fmt == "h5" or fmt == "mat73":
        with h5py.File(path, "w") as f:
            for k, v in variables.items():
                f[k] = v
            if fmt == "h5":
                f.attrs["format"] = "reproduce-dhn-codes/1"
    elif fmt == "mat5":
        scipy.io.savemat(path, {k: (v if v.dtype != np.float16 else v.astype(np.float32))
                                for k, v in variables.items()}, do_compression=len(variables) % 2 == 0)
    elif fmt in ("npz", "npzc"):
        (np.savez if fmt == "npz" else np.savez_compressed)(path, **variables)
    else:
        np.save(path, variables.get("codes", next(iter(variables.values()))))
    return path


def _read_codes_and_labels(path, **kwargs):
    def run():
        f = read_codes(path, **kwargs)
        if f.labels is not None:
            f.label_matrix()
        f.binary_codes(sign=True)
        return f
    return check("read_codes", path, run)


CODE_NAMES = st.sampled_from(["codes", "B", "H", "labels", "L", "y", "class", "paths", "other"])


@st.composite
def code_variables(draw):
    """Variables of a code file: often codes (N x K or K x N) and labels (N x C, C x N or N) of one
    N, in any dtype, with 0/1, ±1, packed or arbitrary (NaN, huge) values; or anything."""
    if draw(st.booleans()):
        return draw(st.dictionaries(CODE_NAMES, arrays(), min_size=1, max_size=3))
    n, k, c = draw(st.integers(1, 6)), draw(st.integers(1, 6)), draw(st.integers(1, 4))
    kind = draw(st.sampled_from(["pm1", "01", "real", "packed", "odd"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    codes = {"pm1": lambda: rng.choice([-1.0, 1.0], (n, k)), "01": lambda: rng.integers(0, 2, (n, k)),
             "real": lambda: rng.standard_normal((n, k)).astype(np.float32),
             "packed": lambda: rng.integers(0, 256, (n, k), dtype=np.uint8),
             "odd": lambda: np.full((n, k), draw(NUMBER))}[kind]()
    if draw(st.booleans()):
        codes = codes.T
    variables = {draw(st.sampled_from(["codes", "B", "H"])): codes}
    labels = draw(st.sampled_from(["multi", "class", "huge", "none"]))
    if labels != "none":
        value = {"multi": lambda: rng.integers(0, 2, (n, c)), "class": lambda: rng.integers(0, 5, n),
                 "huge": lambda: np.array([draw(NUMBER)] * n)}[labels]()
        variables[draw(st.sampled_from(["labels", "L", "y"]))] = value.T if draw(st.booleans()) else value
    return variables


@fuzz(450)
@given(variables=code_variables(),
       fmt=st.sampled_from(["h5", "mat5", "mat73", "npz", "npzc", "npy"]),
       bits=st.none() | st.integers(1, 20))
def test_fuzz_read_codes_generated(work, variables, fmt, bits):
    if fmt == "mat5":     # savemat writes 0-d/1-d arrays as 2-D: any shape still goes in
        variables = {k: v for k, v in variables.items() if v.dtype != np.uint64 or v.size}
    path = write_code_file(work / "gen", fmt, variables)
    _read_codes_and_labels(path, bits=bits)


@pytest.fixture(scope="module")
def code_seeds(work):
    rng = np.random.default_rng(2)
    codes = np.tanh(rng.standard_normal((12, 8))).astype(np.float32)
    labels = (rng.random((12, 4)) < 0.4).astype(np.uint8)
    classes = rng.integers(0, 5, 12)
    seeds = Seeds()
    path = work / "seed-enc.h5"
    with h5py.File(path, "w") as f:
        f["codes"], f["labels"] = codes, labels
        f.create_dataset("paths", data=[f"{i}.jpg" for i in range(12)], dtype=h5py.string_dtype())
        f.attrs.update(format="reproduce-dhn-codes/1", method="DHN", seed=0, mean=np.zeros(3))
    seeds["h5"] = path.read_bytes()
    for name, fmt, variables in [
            ("mat5", "mat5", {"B": (codes > 0).T, "L": classes[None, :].astype(float)}),   # plain
            ("mat5c", "mat5", {"B": (codes > 0), "L": labels, "x": codes}),               # compressed
            ("mat73", "mat73", {"B": np.packbits(codes > 0, axis=1), "y": classes}),
            ("npy", "npy", {"codes": np.sign(codes)}),
            ("npz", "npz", {"codes": codes, "labels": labels}),
            ("npzc", "npzc", {"B": codes > 0, "y": classes})]:
        seeds[name] = Path(write_code_file(work / f"seed-{name}", fmt, variables)).read_bytes()
    labels_npy = io.BytesIO()
    np.save(labels_npy, classes)
    seeds["labels.npy"] = labels_npy.getvalue()
    return seeds


CODE_EXT = {"h5": ".h5", "mat5": ".mat", "mat5c": ".mat", "mat73": ".mat", "npy": ".npy",
            "npz": ".npz", "npzc": ".npz"}


@fuzz(900)
@given(kind=st.sampled_from(sorted(CODE_EXT)), ops=MUTATIONS)
def test_fuzz_read_codes_mutated(work, code_seeds, kind, ops):
    path = put(work / f"mut{CODE_EXT[kind]}", mutate(code_seeds[kind], ops, focus=2048))
    _read_codes_and_labels(path)


@fuzz(200)
@given(ext=st.sampled_from([".h5", ".mat", ".npy", ".npz", ".hdf5"]),
       prefix=st.sampled_from([b"", b"\x93NUMPY\x01\x00", b"PK\x03\x04", b"\x89HDF\r\n\x1a\n",
                               b"MATLAB 5.0 MAT-file" + b" " * 97 + b"\x00\x01IM"]),
       raw=st.binary(max_size=300))
def test_fuzz_read_codes_bytes(work, ext, prefix, raw):
    _read_codes_and_labels(put(work / f"bytes{ext}", prefix + raw))


@fuzz(250)
@given(labels=arrays(max_side=5), ops=MUTATIONS, mutated=st.booleans(), as_list=st.booleans(),
       text=list_texts())
def test_fuzz_read_external_labels(work, code_seeds, labels, ops, mutated, as_list, text):
    if as_list:
        path = put(work / "ext.txt", text.encode("utf-8", "surrogatepass"))
    elif mutated:
        path = put(work / "ext.npy", mutate(code_seeds["labels.npy"], ops, focus=128))
    else:
        path = str(work / "ext.npy")
        np.save(path, labels)
    got = check("read_external_labels", path, lambda: read_external_labels(path))
    if got is not None:      # then as the evaluate command uses them, with a code file
        codes = np.ones((len(got), 4), np.float32) if got.ndim and len(got) else np.ones((1, 4))
        cpath = str(work / "ext-codes.npy")
        np.save(cpath, codes)
        check("read_codes", cpath, lambda: read_codes(cpath, labels=got).label_matrix())


def test_absurd_class_labels_are_refused_before_one_hot(work):
    for labels in (np.array([0, 1e11]), np.array([3, 2**63], np.uint64), np.array([0.0, np.inf])):
        path = str(work / "absurd.npz")
        np.savez(path, codes=np.ones((2, 4), np.float32), labels=labels)
        assert check("read_codes", path, lambda p=path: read_codes(p).label_matrix()) is None
        with pytest.raises(UserError, match="absurd.npz: class label"):
            read_codes(path).label_matrix()


def test_hdf5_dataset_declaring_more_than_it_stores_is_refused(work):
    path = str(work / "sparse.h5")
    with h5py.File(path, "w") as f:
        f.create_dataset("codes", shape=(2**20, 2**20), dtype="f4", chunks=(64, 64))
    with pytest.raises(UserError, match="sparse.h5: dataset 'codes' declares shape"):
        check("read_codes", path, lambda: read_codes(path)) or read_codes(path)


@pytest.mark.parametrize("size", [0, 2**64 - 8])
def test_a_global_heap_object_that_would_loop_hdf5_forever_is_refused(work, size):
    """A string attribute whose global heap's free-space object declares 0 bytes (or an object a
    size that wraps around) made HDF5 loop forever (a fuzzed code file hung CI): refused first.
    The read runs in a subprocess with a timeout, so a regression fails instead of hanging."""
    import subprocess
    import sys
    path = str(work / "heap.h5")
    with h5py.File(path, "w") as f:
        f.attrs["format"] = "reproduce-dhn-codes/1"
        f["codes"] = np.ones((3, 4), np.float32)
        f["paths"] = np.array(["a.jpg", "b.jpg", "c.jpg"], dtype=h5py.string_dtype())
    data = bytearray(open(path, "rb").read())
    heap = data.find(b"GCOL")
    pos = heap + 16
    while struct.unpack_from("<H", data, pos)[0] != 0 if size == 0 else pos != heap + 16:
        pos += 16 + (struct.unpack_from("<Q", data, pos + 8)[0] + 7) // 8 * 8
    struct.pack_into("<Q", data, pos + 8, size)
    open(path, "wb").write(bytes(data))
    code = ("from reproduce.evaluation.codes import read_codes\nfrom reproduce.cli import run_cli\n"
            f"run_cli(lambda argv: read_codes({path!r}), [])")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "heap.h5: global heap object" in res.stderr, res.stderr


# ===================================================================================== records
def valid_record():
    return {"method": "DHN", "dataset": "cifar10", "bits": 48, "seed": 0,
            "conventions": {"topk": None, "ties": "index", "radius": 2},
            "metrics": {"map": 0.61, "precision_within_radius": 0.5}, "version": "0.1.0"}


JSON_SCALARS = st.none() | st.booleans() | st.integers(-10**20, 10**20) | NUMBER | st.text(max_size=5)
JSON_KEYS = st.sampled_from(["map", "method", "bits", "x"]) | st.text(max_size=3)
JSON = st.recursive(JSON_SCALARS, lambda c: st.lists(c, max_size=3)
                    | st.dictionaries(JSON_KEYS, c, max_size=3), max_leaves=8)


@st.composite
def record_docs(draw):
    doc = valid_record()
    for key in draw(st.lists(st.sampled_from(["method", "bits", "seed", "metrics", "conventions",
                                              "dataset", "map"]), max_size=3)):
        action = draw(st.sampled_from(["drop", "replace"]))
        target = doc.get("metrics") if key == "map" else doc
        if not isinstance(target, dict):
            continue
        if action == "drop":
            target.pop(key, None)
        else:
            target[key] = draw(JSON)
    if draw(st.integers(0, 9)) == 0:
        doc = draw(JSON)
    return json.dumps(doc, allow_nan=True).encode("utf-8", "surrogatepass")


def _read_record(path):
    check("read_record", path, lambda: read_record(path))


@fuzz(500)
@given(data=record_docs())
def test_fuzz_read_record_generated(work, data):
    _read_record(put(work / "metrics.json", data))


@fuzz(300)
@given(ops=MUTATIONS, raw=st.binary(max_size=200), use_raw=st.integers(0, 3))
def test_fuzz_read_record_mutated_and_bytes(work, ops, raw, use_raw):
    seed = json.dumps(valid_record(), indent=1).encode()
    _read_record(put(work / "mut-metrics.json", raw if use_raw == 0 else mutate(seed, ops)))


# Documents that once escaped reproduce.evaluation.records.read_record as ValueError / RecursionError.
@pytest.mark.parametrize("text", ['{"method": "DHN", "bits": ' + "1" * 5000 + ', "metrics": {"map": 0.5}}',
                                  "[" * 100000 + "]" * 100000],
                         ids=["int-over-4300-digits", "nested-100000-deep"])
def test_read_record_known_bugs(work, text):
    path = put(work / "bug-metrics.json", text.encode())
    with pytest.raises(UserError) as e:
        read_record(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)
