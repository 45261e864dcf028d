"""The committed HashNet benchmark lists (data_lists/imagenet100/, data_lists/coco/).

They are the lists thuml/HashNet published (commit 85387b814fcf95daff887bd325cbaa0e8def7323,
caffe/data/<dataset>/): train.txt as published; test.txt and database.txt the concatenation, in
shard order 0..7, of test/test<i>.txt and test/database<i>.txt; gzip-compressed. These tests pin
the bytes, tie every part back to the upstream git blob it came from, and guard the facts the
package relies on (counts, label widths, 0/1 labels, how the three lists overlap). They read only
the committed files.
"""
import gzip
import hashlib
import pathlib
import re

import numpy as np
import pytest

from reproduce.data.lists import read_list

LISTS = pathlib.Path(__file__).resolve().parents[1] / "data_lists"
SPLITS = ("train", "test", "database")

DATASETS = {
    "imagenet100": dict(prefix="./data/imagenet/", labels=100,
                        counts={"train": 13000, "test": 5000, "database": 128503}),
    "coco": dict(prefix="./data/coco/", labels=80,
                 counts={"train": 10000, "test": 5000, "database": 112218}),
}

# sha256 of the committed .gz files (copied byte for byte) and of their decompressed text.
GZ_SHA256 = {
    ("imagenet100", "train"): "062d8baad0e59602b91b3b7a0eaf7c22a0359478f750b31805821636a29840ab",
    ("imagenet100", "test"): "629d442eb37162f1c60fd6888b8984fa19e25e6dcfd214f0380d7539dacfb8a3",
    ("imagenet100", "database"): "b898e0a5d55a7e06301ea0c6429d07575441309237a227395b8fb859fad799bb",
    ("coco", "train"): "1a6d530d3c51b94a502a1e6242890adac3c67f412df158b723c550b179ead371",
    ("coco", "test"): "74614a1799492fb1f60a9234726c1c86f55cdd0bb7c788bae7f99c1b6806a0c3",
    ("coco", "database"): "9fee201605e8fc42d2e2a6b902077860a59d5363df6211e926fb212063257539",
}
TEXT_SHA256 = {
    ("imagenet100", "train"): "d5dc07dcd2f69df60b6338d349c11c3b2cf6ab7ab982f015ea79b282383bb303",
    ("imagenet100", "test"): "41f8000eb213fa3c3cce139c39c6ec7498ca217ba34ffb58701e2b339076a565",
    ("imagenet100", "database"): "66c3f56839376cad709ffd2a37f7e4c302bd9f41488308a9c33375d1a8a39c8f",
    ("coco", "train"): "b7bc04035e2217e0bc8533f20a1007203b73ce283d9ef09669c5c6ea707efb3a",
    ("coco", "test"): "5c279aa3d7a51bac7168b04ac45097214a6bca0b8698f4f747fb3942060f7a25",
    ("coco", "database"): "59dab6cbae3dda3490f978f3feec890e681f8f5f9ff07e2f6ce1b45bc8fad4ea",
}

# Upstream git blobs (thuml/HashNet @ 85387b8, caffe/data/<dataset>/...): (lines, blob sha1) of
# train.txt, and of each shard test/test<i>.txt, test/database<i>.txt in order.
UPSTREAM = {
    ("imagenet100", "train"): [(13000, "b0450ecee61e4674fdea090fcc4d4f3f8dba8c8c")],
    ("imagenet100", "test"): [
        (625, "b8759c8a25b1cf589dce8be646a47a50c222abb8"), (625, "21e48e4aa3d3914e666c613ff45c18323a3e5aa5"),
        (625, "c4992399d1cb5ffeeec439d15aa871b35342d263"), (625, "978033ab767473c3b862e5b644170784cdfb9a4c"),
        (625, "ef4001c0c7f40bd01a81d2cb661f591dd3cf5a68"), (625, "824b256582d7fcf94199e4f7815e2dfb03763f2b"),
        (625, "465948fd3650c77ac4d152166136e05748ec55ee"), (625, "b4d9e9454d86523f133e25eb358b26bd4777b847")],
    ("imagenet100", "database"): [
        (16063, "14254ff07e4b38768bdf267b1023e4a204a3030d"), (16063, "8f594e2f3fd5cafb868f971cf585e09920692485"),
        (16063, "ba83139e881fbd17afda5ed5d0cf73c1a8c91ed9"), (16063, "a4fdf046d9cf034528a0aaffd9b4559965e42735"),
        (16063, "6d308bc92ffeca3c0edc72ce70d7bf1278f9bc00"), (16063, "934316cc4635abea96af3da11d66322566f7de27"),
        (16063, "cbc7fa3f912a416e94649e8a8924fba87cbaa08f"), (16062, "c465fb96b5be3a68c3944a78dc43209d9f494ca0")],
    ("coco", "train"): [(10000, "fbe8ba30e0bc4902fcd2252e40bf5ebe98e690c4")],
    ("coco", "test"): [
        (625, "c36aef601c03bd5aff931ddaa4d49ba479f8c655"), (625, "33341a9cbb332696629a91f942416e3a404fd683"),
        (625, "f1d06bb42e375f276eb61aa3f61093e2c1cf8101"), (625, "c712071cdbc77f6794d2284f6ffed1f6c1af1b3a"),
        (625, "304e7da783eb0039349ea60ba6fc2582dc5ec23a"), (625, "22ec9bd33b219576d8a79b71c17d094fa72404fd"),
        (625, "5c2c899a30cd544e44465e39250b36eb08e84974"), (625, "96002cae902757f9dd78df6bfe648e49d7edfee2")],
    ("coco", "database"): [
        (14028, "c6ebd718040d87494b6df29b0c066f19884681e9"), (14028, "31bef9c166e286cca508027a8d665ed42883f431"),
        (14028, "38e111f7adbd8ab24d7cd716209929667437c1d7"), (14028, "9a2bd02920c1a4109af5ac35b54cbb7e546b484e"),
        (14027, "a67eca1f2105eb5cc2adff646ee5f4821f3273ca"), (14025, "62cd97c4c87b0eb0c20b6b4a2349008ed0703ca7"),
        (14027, "1682ccf6c3ddf5b437ab5cccee2c7328bc472b92"), (14027, "f16d70d9abec48f2b269308f418c9aa1970c40ce")],
}

_raw_cache = {}
_parsed_cache = {}


def raw(dataset, split):
    """The decompressed bytes of a committed list."""
    key = (dataset, split)
    if key not in _raw_cache:
        _raw_cache[key] = gzip.decompress((LISTS / dataset / f"{split}.txt.gz").read_bytes())
    return _raw_cache[key]


def parsed(dataset, split):
    """(paths, N x C uint8 labels), parsed strictly: every line is `path` + C fields, each `0` or
    `1`, single-space separated, `\\n` terminated. Vectorised (the two databases have 240k lines)."""
    key = (dataset, split)
    if key not in _parsed_cache:
        C = DATASETS[dataset]["labels"]
        lines = raw(dataset, split).split(b"\n")
        assert lines[-1] == b"", "the file must end with a newline"
        lines = lines[:-1]
        heads, tails = zip(*(line.split(b" ", 1) for line in lines))
        assert all(len(t) == 2 * C - 1 for t in tails), f"a line without exactly {C} one-character labels"
        block = np.frombuffer(b" ".join(tails) + b" ", dtype=np.uint8).reshape(len(lines), 2 * C)[:, :-1]
        assert (block[:, 1::2] == ord(" ")).all(), "labels must be separated by single spaces"
        digits = block[:, 0::2]
        assert np.isin(digits, (ord("0"), ord("1"))).all(), "a label that is not 0 or 1"
        _parsed_cache[key] = ([h.decode("ascii") for h in heads], (digits - ord("0")).astype(np.uint8))
    return _parsed_cache[key]


def git_blob_sha1(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


ALL = [(d, s) for d in DATASETS for s in SPLITS]


@pytest.mark.parametrize("dataset,split", ALL)
def test_committed_bytes_are_pinned(dataset, split):
    gz = (LISTS / dataset / f"{split}.txt.gz").read_bytes()
    assert hashlib.sha256(gz).hexdigest() == GZ_SHA256[dataset, split]
    assert hashlib.sha256(raw(dataset, split)).hexdigest() == TEXT_SHA256[dataset, split]


@pytest.mark.parametrize("dataset,split", ALL)
def test_content_is_the_upstream_files_in_shard_order(dataset, split):
    lines = raw(dataset, split).splitlines(keepends=True)
    start = 0
    for count, blob in UPSTREAM[dataset, split]:
        assert git_blob_sha1(b"".join(lines[start:start + count])) == blob
        start += count
    assert start == len(lines)


@pytest.mark.parametrize("dataset,split", ALL)
def test_counts_labels_and_format(dataset, split):
    spec = DATASETS[dataset]
    paths, labels = parsed(dataset, split)
    assert len(paths) == spec["counts"][split]
    assert labels.shape == (spec["counts"][split], spec["labels"])
    assert len(set(paths)) == len(paths), "duplicate image within a list"
    assert labels.sum(1).min() >= 1, "an image with no label"
    assert labels.sum(0).min() >= 1, "a class with no image"
    assert all(p.startswith(spec["prefix"]) for p in paths)
    assert raw(dataset, split).isascii() and b"\r" not in raw(dataset, split)


@pytest.mark.parametrize("dataset", DATASETS)
def test_package_reader_reads_the_lists(dataset, tmp_path):
    """reproduce.data.lists.read_list (plain text only) agrees with the strict parse once decompressed."""
    C = DATASETS[dataset]["labels"]
    for split in SPLITS:
        path = tmp_path / f"{split}.txt"
        path.write_bytes(raw(dataset, split))
        got = read_list(str(path), num_labels=C)
        paths, labels = parsed(dataset, split)
        assert got.paths == paths
        np.testing.assert_array_equal(got.labels, labels)


def test_imagenet_split_relations_and_labels():
    (tr, ytr), (te, yte), (db, ydb) = (parsed("imagenet100", s) for s in SPLITS)
    tr_s, te_s, db_s = set(tr), set(te), set(db)
    assert te_s.isdisjoint(db_s), "queries must not be in the database"
    assert tr_s <= db_s, "the training images are part of the database"
    assert te_s.isdisjoint(tr_s)
    # single-label: every row is one-hot
    for y in (ytr, yte, ydb):
        assert (y.sum(1) == 1).all()
    # the training rows carry the same labels as in the database
    row = {p: i for i, p in enumerate(db)}
    np.testing.assert_array_equal(ydb[[row[p] for p in tr]], ytr)
    # class balance: 130 training and 50 query images per class
    assert (ytr.sum(0) == 130).all() and (yte.sum(0) == 50).all()
    assert ydb.sum(0).min() == 1029 and ydb.sum(0).max() == 1300


def test_imagenet_paths_are_ilsvrc2012_train_and_val():
    """train/database: ILSVRC 2012 training images `<wnid>_<n>.JPEG` under image/; the label column
    is the class's rank among the 100 synsets in sorted order. Queries: ILSVRC 2012 validation
    images under val_image/ (50 per class)."""
    wnid_of = {}
    for split in ("train", "database"):
        paths, labels = parsed("imagenet100", split)
        for p, c in zip(paths, labels.argmax(1).tolist()):
            m = re.fullmatch(r"\./data/imagenet/image/(n\d{8})_\d+\.JPEG", p)
            assert m, p
            assert wnid_of.setdefault(c, m.group(1)) == m.group(1), "a class with two synsets"
    assert len(wnid_of) == 100 and len(set(wnid_of.values())) == 100
    order = [wnid_of[c] for c in range(100)]
    assert order == sorted(order)
    assert order[0] == "n01514668" and order[-1] == "n13044778"
    paths, _ = parsed("imagenet100", "test")
    ids = []
    for p in paths:
        m = re.fullmatch(r"\./data/imagenet/val_image/ILSVRC2012_val_(\d{8})\.JPEG", p)
        assert m, p
        ids.append(int(m.group(1)))
    assert 1 <= min(ids) and max(ids) <= 50000


def test_coco_split_relations_and_labels():
    """As published, the coco database is every image but the 10,000 training ones, so it
    contains the 5,000 queries (each query can retrieve itself), and training and database are
    disjoint: the opposite of the imagenet layout."""
    (tr, ytr), (te, yte), (db, ydb) = (parsed("coco", s) for s in SPLITS)
    tr_s, te_s, db_s = set(tr), set(te), set(db)
    assert te_s <= db_s
    assert tr_s.isdisjoint(db_s)
    assert tr_s.isdisjoint(te_s)
    assert len(tr_s | db_s) == 122218
    row = {p: i for i, p in enumerate(db)}
    idx = [row[p] for p in te]
    np.testing.assert_array_equal(ydb[idx], yte)
    assert (np.diff(idx) > 0).all(), "queries appear in the database in the same order"
    # multi-label: 1 to 18 labels an image
    for y, most in ((ytr, 15), (yte, 14), (ydb, 18)):
        n = y.sum(1)
        assert n.min() == 1 and n.max() == most


def test_coco_paths_are_coco2014_train_and_val():
    shares = {"train": (6766, 3234), "test": (3393, 1607), "database": (75315, 36903)}
    for split, (n_train2014, n_val2014) in shares.items():
        paths, _ = parsed("coco", split)
        folders = []
        for p in paths:
            m = re.fullmatch(r"\./data/coco/(train2014|val2014)/COCO_(train2014|val2014)_\d{12}\.jpg", p)
            assert m and m.group(1) == m.group(2), p
            folders.append(m.group(1))
        assert folders.count("train2014") == n_train2014
        assert folders.count("val2014") == n_val2014
