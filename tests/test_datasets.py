"""The three datasets' lists: seeded sampling, the splits' protocols, importers, bad input, and
the committed data_lists/ files (checked where present)."""
import os
import pickle

import cv2
import numpy as np
import pytest

import fake_datasets
from reproduce.data.lists import ImageList, format_list, read_list
from reproduce.datasets import cifar10, common, flickr, nus_wide
from reproduce.errors import UserError
from reproduce.evaluation.protocols import PROTOCOLS

DATASETS = (cifar10, nus_wide, flickr)


def one_line(excinfo):
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


# ----------------------------------------------------------------------------------------------
# common: seeded sampling


def test_pcg64_raw_stream_is_the_fixed_algorithm():
    # The committed splits depend on these raw draws; they are fixed by PCG64 itself.
    raw = common.split_bit_generator(2016).random_raw(3)
    assert raw.tolist() == [17841485188637542861, 6265914034201637926, 4716197624921457001]


def test_rank_candidates_matches_plain_sort(rng):
    candidates = rng.choice(1000, 50, replace=False)
    keys = np.random.PCG64(7).random_raw(50).tolist()
    expected = [c for _, _, c in sorted(zip(keys, range(50), candidates.tolist()))]
    got = common.rank_candidates(common.split_bit_generator(7), candidates)
    assert got.tolist() == expected
    assert sorted(got.tolist()) == sorted(candidates.tolist())


def reference_sample_per_label(labels, sizes, seed, eligible=None):
    """Plain loops: label by label, the not-yet-taken images of the label ranked by raw draws."""
    bitgen = np.random.PCG64(seed)
    n, c = labels.shape
    taken = [False] * n if eligible is None else [not e for e in eligible]
    parts = [[] for _ in sizes]
    for label in range(c):
        cand = [i for i in range(n) if labels[i][label] and not taken[i]]
        keys = bitgen.random_raw(len(cand)).tolist()
        ranked = [i for _, _, i in sorted(zip(keys, range(len(cand)), cand))][:sum(sizes)]
        for i in ranked:
            taken[i] = True
        start = 0
        for part, size in zip(parts, sizes):
            part += ranked[start:start + size]
            start += size
    return [sorted(p) for p in parts]


def test_sample_per_label_matches_reference_on_multilabel_data(rng):
    labels = (rng.random((300, 6)) < 0.35).astype(np.uint8)
    labels[:20] = 0  # unlabeled rows are never drawn
    eligible = rng.random(300) < 0.9
    for elig in (None, eligible):
        got = common.sample_per_label(labels, (3, 7), seed=5, eligible=elig)
        ref = reference_sample_per_label(labels, (3, 7), 5,
                                         None if elig is None else elig.tolist())
        assert [g.tolist() for g in got] == ref
        query, train = got
        assert len(query) == 6 * 3 and len(train) == 6 * 7
        assert not set(query) & set(train)
        assert labels[np.concatenate(got)].any(axis=1).all()
        if elig is not None:
            assert elig[np.concatenate(got)].all()


def test_sample_per_label_single_label_is_stratified(rng):
    classes = rng.permutation(np.repeat(np.arange(4), 30))
    labels = np.eye(4, dtype=np.uint8)[classes]
    query, train = common.sample_per_label(labels, (2, 5), seed=1)
    assert np.bincount(classes[query], minlength=4).tolist() == [2] * 4
    assert np.bincount(classes[train], minlength=4).tolist() == [5] * 4


def test_sample_per_label_refuses_too_few_images():
    labels = np.array([[1, 0], [1, 0], [1, 1], [0, 1]], dtype=np.uint8)
    # Label "a" draws all of images 0, 1, 2, which leaves "b" only image 3.
    with pytest.raises(UserError) as e:
        common.sample_per_label(labels, (2, 1), seed=0, label_names=["a", "b"], source="x.txt")
    assert one_line(e) == "x.txt: label 'b' has 1 images left to sample, but 3 are needed (2 + 1)"
    with pytest.raises(UserError) as e:
        common.sample_per_label(labels, (3, 1), seed=0, label_names=["a", "b"], source="x.txt")
    assert one_line(e).startswith("x.txt: label 'a' has 3 images left")


# ----------------------------------------------------------------------------------------------
# common: report, writing


def small_lists():
    train = ImageList(["a.jpg", "b.jpg", "c.jpg"], np.array([[1, 0], [0, 0], [1, 1]], np.uint8))
    query = ImageList(["d.jpg", "a.jpg"], np.array([[0, 1], [1, 0]], np.uint8))
    database = ImageList(["e.jpg", "f.jpg", "f.jpg"], np.array([[0, 0], [0, 1], [0, 1]], np.uint8))
    return {"train": train, "query": query, "database": database}


def test_build_report_counts_missing_zero_rows_overlaps(tmp_path):
    for name in ("a.jpg", "c.jpg", "e.jpg"):
        (tmp_path / name).write_bytes(b"x")
    report = common.build_report(small_lists(), root=tmp_path)
    s = report["splits"]
    assert [s[k]["count"] for k in ("train", "query", "database")] == [3, 2, 3]
    assert s["train"]["per_label"] == [2, 1] and s["database"]["per_label"] == [0, 2]
    assert s["train"]["zero_label_rows"] == 1 and s["train"]["zero_label_first"] == ["b.jpg"]
    assert s["database"]["zero_label_rows"] == 1
    assert s["train"]["missing"] == 1 and s["train"]["missing_first"] == ["b.jpg"]
    assert s["database"]["missing"] == 2 and s["database"]["missing_first"] == ["f.jpg", "f.jpg"]
    assert report["overlaps"] == {"train&query": 1, "train&database": 0, "query&database": 0}
    assert report["duplicates"] == {"train": 0, "query": 0, "database": 1}
    text = common.format_report(report, label_names=["x", "y"])
    assert "train: 3 images, 2 labels" in text and "per label: x 2, y 1" in text
    assert "missing under" in text and "train&query 1" in text
    no_root = common.build_report(small_lists())
    assert no_root["splits"]["train"]["missing"] is None
    assert "not checked" in common.format_report(no_root)


def test_require_images_names_list_count_and_first(tmp_path):
    lists = small_lists()
    lists["train"].source = "train.txt"
    with pytest.raises(UserError) as e:
        common.require_images({"train": lists["train"]}, tmp_path)
    msg = one_line(e)
    assert msg.startswith("train.txt: 3 of the 3 images") and "a.jpg, b.jpg, c.jpg" in msg
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        (tmp_path / name).write_bytes(b"x")
    common.require_images({"train": lists["train"]}, tmp_path)


def test_write_split_refuses_existing_files_before_writing_any(tmp_path):
    (tmp_path / "query.txt").write_text("mine\n")
    with pytest.raises(UserError) as e:
        common.write_split(small_lists(), tmp_path)
    assert "query.txt" in one_line(e)
    assert sorted(os.listdir(tmp_path)) == ["query.txt"]
    assert (tmp_path / "query.txt").read_text() == "mine\n"
    common.write_split(small_lists(), tmp_path, overwrite=True)
    back = common.read_split(tmp_path, num_labels=2)
    assert back["database"].paths == ["e.jpg", "f.jpg", "f.jpg"]
    assert (back["train"].labels == small_lists()["train"].labels).all()


def test_write_split_refuses_paths_with_blanks(tmp_path):
    bad = {"train": ImageList(["a b.jpg"], np.ones((1, 2), np.uint8))}
    with pytest.raises(UserError) as e:
        common.write_split(bad, tmp_path)
    assert "whitespace" in one_line(e)
    assert not os.listdir(tmp_path)


# ----------------------------------------------------------------------------------------------
# Module constants


@pytest.mark.parametrize("ds", DATASETS, ids=lambda m: m.NAME)
def test_module_constants(ds):
    assert isinstance(ds.NAME, str) and ds.NUM_LABELS == len(ds.LABEL_NAMES)
    assert len(set(ds.LABEL_NAMES)) == ds.NUM_LABELS
    assert isinstance(ds.SPLIT_SEED, int) and callable(ds.build_lists)
    topk = PROTOCOLS[ds.NAME]["topk"]
    assert topk is None or topk > 0


def test_protocol_constants():
    assert (cifar10.NUM_LABELS, PROTOCOLS[cifar10.NAME]["topk"]) == (10, None)
    assert (nus_wide.NUM_LABELS, PROTOCOLS[nus_wide.NAME]["topk"]) == (21, 5000)
    assert flickr.NUM_LABELS == 38 and len(flickr.POTENTIAL_LABELS) == 24
    assert len(flickr.RELEVANT_LABELS) == 14 and isinstance(PROTOCOLS[flickr.NAME]["topk"], int)
    assert all(n[:-3] in flickr.POTENTIAL_LABELS for n in flickr.RELEVANT_LABELS)


# ----------------------------------------------------------------------------------------------
# CIFAR-10


@pytest.fixture(scope="module")
def cifar_labels():
    """Labels of the real shape: 50,000 + 10,000, 6,000 per class, in a random order."""
    rng = np.random.default_rng(3)
    train = rng.permutation(np.repeat(np.arange(10), 5000))
    test = rng.permutation(np.repeat(np.arange(10), 1000))
    return np.concatenate([train, test])


def synthetic_cifar_images(classes):
    paths = [cifar10.image_path("train", i) for i in range(50000)] + \
            [cifar10.image_path("test", i) for i in range(10000)]
    return ImageList(paths, np.eye(10, dtype=np.uint8)[classes])


def check_cifar_split(split, classes):
    q, t, db, ex = (split[k] for k in ("query", "train", "database", "database_excludes_train"))
    assert (len(q), len(t), len(db), len(ex)) == (1000, 5000, 59000, 54000)
    assert np.bincount(classes[q], minlength=10).tolist() == [100] * 10
    assert np.bincount(classes[t], minlength=10).tolist() == [500] * 10
    assert not np.intersect1d(q, t).size and not np.intersect1d(q, db).size
    assert np.isin(t, db).all() and not np.intersect1d(ex, t).size
    assert np.array_equal(np.union1d(q, db), np.arange(60000))
    for a in split.values():
        assert np.all(np.diff(a) > 0)


def test_cifar_make_split_protocol_and_determinism(cifar_labels):
    split = cifar10.make_split(cifar_labels)
    check_cifar_split(split, cifar_labels)
    again = cifar10.make_split(np.eye(10, dtype=np.uint8)[cifar_labels])  # one-hot input
    assert all(np.array_equal(split[k], again[k]) for k in split)
    other = cifar10.make_split(cifar_labels, seed=cifar10.SPLIT_SEED + 1)
    assert not np.array_equal(split["query"], other["query"])
    # Queries and training images are the first 100 / next 500 of each class's ranking.
    bitgen = common.split_bit_generator(cifar10.SPLIT_SEED)
    ranked = common.rank_candidates(bitgen, np.flatnonzero(cifar_labels == 0))
    assert np.array_equal(np.sort(ranked[:100]), split["query"][cifar_labels[split["query"]] == 0])
    assert np.array_equal(np.sort(ranked[100:600]), split["train"][cifar_labels[split["train"]] == 0])


def test_cifar_regenerated_byte_for_byte_from_query_and_database(cifar_labels, tmp_path):
    images = synthetic_cifar_images(cifar_labels)
    lists = cifar10.lists_from_split(images, cifar10.make_split(cifar_labels))
    common.write_split(lists, tmp_path)
    back = common.read_split(tmp_path, num_labels=10)
    recovered = cifar10.images_from_lists(back["query"], back["database"])
    assert recovered.paths == images.paths and np.array_equal(recovered.labels, images.labels)
    again = cifar10.lists_from_split(recovered, cifar10.make_split(recovered.labels))
    for name in common.SPLITS:
        assert format_list(again[name].paths, again[name].labels).encode() == \
            (tmp_path / f"{name}.txt").read_bytes()
    ex = cifar10.database_excludes_train(back["train"], back["database"])
    assert len(ex) == 54000 and not set(ex.paths) & set(back["train"].paths)


def test_cifar_images_from_lists_refuses_bad_paths():
    lab = np.eye(10, dtype=np.uint8)[:2]
    with pytest.raises(UserError) as e:
        cifar10.images_from_lists(ImageList(["images/train/00000.png", "x.png"], lab, "q.txt", [1, 2]))
    assert one_line(e).startswith("q.txt:2: 'x.png' is not a CIFAR-10 image path")
    with pytest.raises(UserError) as e:
        cifar10.images_from_lists(ImageList(["images/train/00000.png"] * 2, lab, "q.txt", [1, 2]))
    assert "named twice" in one_line(e)
    with pytest.raises(UserError) as e:
        cifar10.images_from_lists(ImageList(["images/train/00000.png", "images/train/00002.png"],
                                            lab, "q.txt", [1, 2]))
    assert "images/train/00001.png" in one_line(e)


def test_fake_cifar_batches_have_the_real_pickle_format(tmp_path):
    info = fake_datasets.make_fake_cifar10(tmp_path, per_class=3, test_per_class=1)
    with open(os.path.join(info["folder"], "data_batch_1"), "rb") as f:
        raw = pickle.load(f, encoding="bytes")
    assert set(raw) == {b"batch_label", b"labels", b"data", b"filenames"}
    assert raw[b"data"].dtype == np.uint8 and raw[b"data"].shape[1] == 3072
    with open(os.path.join(info["folder"], "batches.meta"), "rb") as f:
        meta = pickle.load(f, encoding="latin1")  # torchvision's way: Python 2 str -> str
    assert meta["label_names"] == fake_datasets.CIFAR_LABEL_NAMES


def test_cifar_prepare_images_writes_pngs_once_and_resumes(tmp_path):
    info = fake_datasets.make_fake_cifar10(tmp_path, per_class=3, test_per_class=1)
    images = cifar10.prepare_images(tmp_path, download=False, check_integrity=False)
    classes = info["train_labels"] + info["test_labels"]
    assert len(images) == 40 and images.labels.argmax(axis=1).tolist() == classes
    assert images.paths[0] == "images/train/00000.png" and images.paths[30] == "images/test/00000.png"
    with open(os.path.join(info["folder"], "test_batch"), "rb") as f:
        data = pickle.load(f, encoding="bytes")[b"data"]
    bgr = cv2.imread(str(tmp_path / "images/test/00009.png"), cv2.IMREAD_COLOR)
    assert np.array_equal(bgr[:, :, ::-1], data[9].reshape(3, 32, 32).transpose(1, 2, 0))
    first = tmp_path / images.paths[0]
    stamp = first.stat().st_mtime_ns
    os.remove(tmp_path / images.paths[5])
    cifar10.prepare_images(tmp_path, download=False, check_integrity=False)
    assert first.stat().st_mtime_ns == stamp and (tmp_path / images.paths[5]).is_file()
    assert not [n for n in os.listdir(tmp_path / "images/train") if n.startswith(".tmp")]


def test_cifar_build_lists_on_fake_data(tmp_path):
    fake_datasets.make_fake_cifar10(tmp_path / "root", per_class=4, test_per_class=2)
    lists = cifar10.build_lists(tmp_path / "root", tmp_path / "out", download=False,
                                check_integrity=False, query_per_class=1, train_per_class=2)
    assert [len(lists[k]) for k in common.SPLITS] == [20, 10, 50]
    common.require_images(lists, tmp_path / "root")
    back = common.read_split(tmp_path / "out", num_labels=10)
    assert back["database"].paths == lists["database"].paths
    with pytest.raises(UserError):
        cifar10.build_lists(tmp_path / "root", tmp_path / "out", download=False,
                            check_integrity=False, query_per_class=1, train_per_class=2)


def test_cifar_md5_check_refuses_the_fake_batches(tmp_path):
    fake_datasets.make_fake_cifar10(tmp_path, per_class=1, test_per_class=1)
    with pytest.raises(UserError) as e:
        cifar10.prepare_images(tmp_path, download=False)
    assert "cifar-10-batches-py" in one_line(e)


COMMITTED_CIFAR = common.DATA_LISTS / cifar10.NAME


@pytest.mark.skipif(not all((COMMITTED_CIFAR / f"{n}.txt").is_file() for n in common.SPLITS),
                    reason="data_lists/cifar10/{train,query,database}.txt not committed yet "
                           "(needs the 60,000 CIFAR-10 labels; see data_lists/README.md)")
def test_committed_cifar_lists_regenerate_byte_for_byte():
    lists = common.read_split(COMMITTED_CIFAR, num_labels=10)
    q, t, db = (lists[k] for k in ("query", "train", "database"))
    assert (len(q), len(t), len(db)) == (1000, 5000, 59000)
    assert not set(q.paths) & set(db.paths) and set(t.paths) <= set(db.paths)
    assert q.labels.sum(axis=0).tolist() == [100] * 10 and t.labels.sum(axis=0).tolist() == [500] * 10
    images = cifar10.images_from_lists(q, db)
    assert len(images) == 60000 and images.labels.sum(axis=0).tolist() == [6000] * 10
    assert images.paths[49999] == "images/train/49999.png" and images.paths[-1] == "images/test/09999.png"
    assert images.labels[:50000].sum(axis=0).tolist() == [5000] * 10
    again = cifar10.lists_from_split(images, cifar10.make_split(images.labels))
    for name in common.SPLITS:
        assert format_list(again[name].paths, again[name].labels).encode() == \
            (COMMITTED_CIFAR / f"{name}.txt").read_bytes()


# ----------------------------------------------------------------------------------------------
# NUS-WIDE


@pytest.fixture
def fake_nus(tmp_path):
    return fake_datasets.make_fake_nus_wide(tmp_path / "nus")


def test_nus_import_authors_lists_on_fake_copy(fake_nus, tmp_path):
    lists = nus_wide.import_authors_lists(fake_nus["authors_dir"], tmp_path / "out")
    assert {k: len(v) for k, v in lists.items()} == fake_nus["authors_counts"]
    common.require_images(lists, fake_nus["authors_images_root"])
    src = read_list(os.path.join(fake_nus["authors_dir"], "test.txt"))
    assert lists["query"].paths == [p[len(fake_datasets.AUTHORS_PREFIX):] for p in src.paths]
    assert np.array_equal(lists["query"].labels, src.labels)
    written = read_list(tmp_path / "out" / "query.txt", num_labels=21)
    assert written.paths == lists["query"].paths
    # An explicit prefix keeps the rest of the path.
    lists2 = nus_wide.import_authors_lists(fake_nus["authors_dir"], tmp_path / "out2",
                                           strip_prefix="/home/caffe/aaai-caffe/data/nus_wide")
    assert lists2["train"].paths[0] == "images/" + lists["train"].paths[0]


def test_nus_import_refuses_a_path_outside_the_prefix(fake_nus, tmp_path):
    with pytest.raises(UserError) as e:
        nus_wide.import_authors_lists(fake_nus["authors_dir"], tmp_path / "out",
                                      strip_prefix="/data/elsewhere/")
    assert one_line(e).startswith(os.path.join(fake_nus["authors_dir"], "train.txt") + ":1: ")
    assert not (tmp_path / "out").exists()
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in ("train.txt", "test.txt", "database.txt"):
        (bad / f).write_text("/a/x.jpg " + " ".join(["0"] * 20) + " 1\n")
    with open(bad / "database.txt", "a") as f:
        f.write("/a/y.jpg 1 0\n")
    with pytest.raises(UserError) as e:
        nus_wide.import_authors_lists(bad, tmp_path / "out")
    assert one_line(e).startswith(f"{bad / 'database.txt'}:2: ")


def test_nus_import_the_authors_published_lists(shared_reference, tmp_path):
    src = shared_reference / "nus_wide_authors_lists"
    if not (src / "database.txt").is_file():
        pytest.skip("the authors' NUS-WIDE lists are not in ../shared/reference")
    lists = nus_wide.build_lists(src, tmp_path)
    assert [len(lists[k]) for k in ("train", "query", "database")] == [10500, 2100, 149736]
    report = common.build_report(lists)
    assert set(report["overlaps"].values()) == {0} and set(report["duplicates"].values()) == {0}
    assert all(s["zero_label_rows"] == 0 for s in report["splits"].values())
    first = (src / "test.txt").read_text().split("\n", 1)[0]
    assert (tmp_path / "query.txt").read_text().split("\n", 1)[0] == \
        first.replace("/home/caffe/aaai-caffe/data/nus_wide/images/", "")
    assert not any(p.startswith("/") for p in lists["database"].paths)


def test_nus_windows_paths_become_relative():
    assert nus_wide.relative_image_path(r"C:\ImageData\Flickr\actor\0001_2124494179.jpg") == \
        "Flickr/actor/0001_2124494179.jpg"
    assert nus_wide.relative_image_path("Flickr/sky/2.jpg") == "Flickr/sky/2.jpg"


def test_nus_most_frequent_breaks_ties_by_file_order():
    labels = np.array([[1, 1, 1, 0], [0, 1, 1, 1], [0, 0, 0, 1]], np.uint8)  # counts 1 2 2 2
    assert nus_wide.most_frequent(["a", "b", "c", "d"], labels, 3).tolist() == [1, 2, 3]


def test_nus_build_from_metadata_on_fake(fake_nus, tmp_path):
    lists = nus_wide.build_from_metadata(fake_nus["meta_dir"], tmp_path / "out",
                                         query_per_label=1, train_per_label=2)
    top_names = [fake_nus["concepts"][c] for c in fake_nus["top"]]
    assert (tmp_path / "out" / "label_names.txt").read_text().split() == top_names
    q, t, db = lists["query"], lists["train"], lists["database"]
    assert (len(q), len(t)) == (21, 42) and len(q) + len(t) + len(db) == fake_nus["num_kept"]
    assert not (set(q.paths) & set(t.paths)) and not (set(db.paths) & (set(q.paths) | set(t.paths)))
    row = {p: i for i, p in enumerate(fake_nus["paths"])}
    for il in lists.values():
        expected = fake_nus["labels"][[row[p] for p in il.paths]][:, fake_nus["top"]]
        assert np.array_equal(il.labels, expected) and il.labels.any(axis=1).all()
    common.require_images(lists, fake_nus["images_root"])
    # Same as the plain reference sampler over the kept images, and deterministic.
    kept = fake_nus["labels"][:, fake_nus["top"]]
    kept_rows = np.flatnonzero(kept.any(axis=1))
    ref_q, ref_t = reference_sample_per_label(kept[kept_rows], (1, 2), nus_wide.SPLIT_SEED)
    assert q.paths == [fake_nus["paths"][kept_rows[i]] for i in ref_q]
    assert t.paths == [fake_nus["paths"][kept_rows[i]] for i in ref_t]
    other = nus_wide.build_from_metadata(fake_nus["meta_dir"], tmp_path / "other", seed=1,
                                         query_per_label=1, train_per_label=2)
    assert other["query"].paths != q.paths


def test_nus_metadata_bad_input(fake_nus, tmp_path):
    meta = fake_nus["meta_dir"]
    label_file = os.path.join(meta, "Groundtruth", "AllLabels", "Labels_c03.txt")
    lines = open(label_file).read().splitlines()
    with open(label_file, "w") as f:
        f.write("\n".join(lines[:-1]) + "\n")
    with pytest.raises(UserError) as e:
        nus_wide.build_from_metadata(meta, tmp_path / "out")
    assert one_line(e).startswith(f"{label_file}: {len(lines) - 1} lines, but ")
    lines[6] = "2"
    with open(label_file, "w") as f:
        f.write("\n".join(lines) + "\n")
    with pytest.raises(UserError) as e:
        nus_wide.build_from_metadata(meta, tmp_path / "out")
    assert one_line(e) == f"{label_file}:7: '2' is not 0 or 1"
    os.remove(label_file)
    with pytest.raises(UserError) as e:
        nus_wide.build_from_metadata(meta, tmp_path / "out")
    assert one_line(e).startswith(f"{label_file}: missing")
    with pytest.raises(UserError) as e:
        nus_wide.build_lists(tmp_path, tmp_path / "out")
    assert "neither" in one_line(e)
    assert not (tmp_path / "out").exists()


def test_nus_metadata_refuses_concepts_too_rare_to_sample(fake_nus, tmp_path):
    with pytest.raises(UserError) as e:
        nus_wide.build_from_metadata(fake_nus["meta_dir"], tmp_path / "out")
    assert "100 + 500" in one_line(e)
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------
# Flickr


@pytest.fixture
def fake_flickr(tmp_path):
    return fake_datasets.make_fake_flickr(tmp_path / "flickr", num_images=60, unlabeled=6)


def build_fake_flickr(fake, out, **kw):
    return flickr.build_lists(fake["annotation_dir"], out, num_images=60, query_size=10,
                              train_size=20, **kw)


def test_flickr_build_lists_on_fake(fake_flickr, tmp_path):
    lists = build_fake_flickr(fake_flickr, tmp_path / "out")
    q, t, db = lists["query"], lists["train"], lists["database"]
    assert (len(q), len(t), len(db)) == (10, 20, 50)
    number = {k: [int(p[len("mirflickr/im"):-4]) for p in il.paths]
              for k, il in (("q", q), ("t", t), ("db", db))}
    assert sorted(number["q"] + number["db"]) == list(range(1, 61))
    assert set(number["t"]) <= set(number["db"])
    for il, nums in ((q, number["q"]), (t, number["t"]), (db, number["db"])):
        assert np.array_equal(il.labels, fake_flickr["labels"][np.array(nums) - 1])
    assert q.labels.any(axis=1).all() and t.labels.any(axis=1).all()
    assert (db.labels.sum(axis=1) == 0).sum() == 6
    common.require_images(lists, fake_flickr["images_root"])
    # Reference: labeled images ranked by raw draws; first 10 queries, next 20 training.
    labeled = np.flatnonzero(fake_flickr["labels"].any(axis=1))
    keys = np.random.PCG64(flickr.SPLIT_SEED).random_raw(len(labeled)).tolist()
    ranked = [int(i) + 1 for _, _, i in sorted(zip(keys, range(len(labeled)), labeled))]
    assert number["q"] == sorted(ranked[:10]) and number["t"] == sorted(ranked[10:30])
    assert build_fake_flickr(fake_flickr, tmp_path / "again")["query"].paths == q.paths


@pytest.mark.parametrize("change, expected", [
    (lambda d: open(os.path.join(d, "extra.txt"), "w").close(), "extra.txt: unknown file"),
    (lambda d: os.remove(os.path.join(d, "sky.txt")), "sky.txt: missing concept file"),
    (lambda d: open(os.path.join(d, "dog_r1.txt"), "a").write("61\n"), "outside 1..60"),
    (lambda d: open(os.path.join(d, "tree.txt"), "a").write("0\n"), "outside 1..60"),
    (lambda d: open(os.path.join(d, "tree.txt"), "a").write("im3\n"), "'im3' is not an image number"),
])
def test_flickr_bad_annotation_folder(fake_flickr, tmp_path, change, expected):
    change(fake_flickr["annotation_dir"])
    with pytest.raises(UserError) as e:
        build_fake_flickr(fake_flickr, tmp_path / "out")
    msg = one_line(e)
    assert msg.startswith(fake_flickr["annotation_dir"]) and expected in msg
    if "outside" in expected or "not an image" in expected:
        name = msg.split(":")[0]
        lineno = int(msg.split(":")[1])
        assert open(name).read().splitlines()[lineno - 1].strip() in ("61", "0", "im3")
    assert not (tmp_path / "out").exists()


def test_flickr_ignores_dot_files_and_readme(fake_flickr, tmp_path):
    open(os.path.join(fake_flickr["annotation_dir"], ".DS_Store"), "w").close()
    assert len(build_fake_flickr(fake_flickr, tmp_path / "out")["query"]) == 10
