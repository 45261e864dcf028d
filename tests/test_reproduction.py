"""The per-dataset commands end to end (--smoke) on synthetic stand-ins of each dataset's layout."""
import functools
import json
import os
import subprocess
import sys

import pytest

import fake_datasets
from reproduce.datasets import cifar10, flickr, nus_wide
from reproduce.errors import UserError
from reproduce.evaluation.protocols import PROTOCOLS

FAST = ["--bits", "12", "--variants", "dhn", "dhn-b", "--baselines", "lsh", "itq", "--workers", "0",
        "--device", "cpu", "--smoke", "--methods", "dnnh"]   # every method: test_smoke_table1_...


def outputs(out):
    return sorted(os.listdir(out))


def test_cifar10_smoke_and_rerun(tmp_path, random_caffenet, monkeypatch):
    fake_datasets.make_fake_cifar10(str(tmp_path / "data"), per_class=5, test_per_class=2)
    # The fake batches' md5s are not the real ones.
    monkeypatch.setattr(cifar10, "prepare_images",
                        functools.partial(cifar10.prepare_images, check_integrity=False))
    argv = ["--root", str(tmp_path / "data"), "--no-download", "--weights", random_caffenet, "--out", str(tmp_path / "res"),
            "--work", str(tmp_path / "work")] + FAST
    cifar10.main(argv)
    out = outputs(tmp_path / "res")
    for name in ("table1.md", "table1.csv", "table1.tex", "table2.md", "fig_a_precision_radius2.png",
                 "fig_b_pr_curve_12bits.pdf", "fig_c_precision_at_n_12bits.png", "run.json", "codes", "metrics"):
        assert name in out, name
    assert sorted(os.listdir(tmp_path / "res" / "metrics")) == [
        "DHN-B_12bits_seed0", "DHN_12bits_seed0", "DNNH_12bits_seed0", "ITQ_12bits_seed0", "LSH_12bits_seed0"]
    run = json.load(open(tmp_path / "res" / "run.json"))
    assert run["config"]["smoke"] and run["finished"] and run["versions"]["torch"] and run["identity"]["hex"]
    assert run["lists"]["query"]["images"] == 8 and run["lists"]["database"]["images"] == 40
    table = open(tmp_path / "res" / "table1.md").read()
    assert "DHN" in table and "0.555" in table          # the paper's CIFAR-10 12-bit number beside ours
    # A re-run skips what is finished: the trained model is not touched.
    final = tmp_path / "work" / "train" / "dhn_12bits_seed0" / "final.pth"
    stamp = os.stat(final).st_mtime_ns
    cifar10.main(argv)
    assert os.stat(final).st_mtime_ns == stamp
    # Another configuration into the same folders is refused before anything runs, naming the
    # first output and what changed.
    with pytest.raises(UserError, match=r"work/train/dhn_12bits_seed0: trained with solver.base_lr 2e-05, now 0.1 "
                                        r"\(\d+ more stale"):
        cifar10.main(argv + ["--base-lr", "0.1"])
    assert os.stat(final).st_mtime_ns == stamp


def test_nus_wide_smoke_from_authors_lists(tmp_path, random_caffenet):
    fake = fake_datasets.make_fake_nus_wide(str(tmp_path / "data"))
    nus_wide.main(["--root", fake["authors_images_root"], "--authors-lists", fake["authors_dir"],
                                    "--weights", random_caffenet, "--out", str(tmp_path / "res"),
                                    "--work", str(tmp_path / "work")] + FAST)
    doc = json.load(open(tmp_path / "res" / "metrics" / "DHN_12bits_seed0" / "metrics.json"))
    assert doc["conventions"]["topk"] == 5000 and doc["dataset"] == "nus_wide"


def test_flickr_smoke_with_sweep(tmp_path, random_caffenet):
    fake = fake_datasets.make_fake_flickr(str(tmp_path / "data"))
    flickr.main(["--root", fake["images_root"], "--annotations", fake["annotation_dir"],
                                "--num-images", "60", "--weights", random_caffenet, "--out", str(tmp_path / "res"),
                                "--work", str(tmp_path / "work"), "--sweep", "--sweep-bits", "12",
                                "--sweep-lrs", "1e-3", "--sweep-quant-weights", "0.1", "10"] + FAST)
    sweep = json.load(open(tmp_path / "res" / "sweep" / "dhn.json"))
    grid = [(r["base_lr"], r["quant_weight"]) for r in sweep["rows"] if not r["extended"]]
    assert grid == [(1e-3, 0.1), (1e-3, 10.0)]
    for r in sweep["rows"]:               # a best at an edge of λ extends λ alone (one lr: no edge)
        assert not r["extended"] or (r["base_lr"] == 1e-3 and r["quant_weight"] in (0.01, 100.0, 1000.0, 1e4))
    cfg = json.load(open(tmp_path / "work" / "train" / "dhn_12bits_seed0" / "config.json"))
    assert (cfg["solver"]["base_lr"], cfg["loss"]["quant_weight"]) == (sweep["best"]["base_lr"],
                                                                      sweep["best"]["quant_weight"])
    # the validation split is carved out of the training list: no query image is in it
    query = set(open(tmp_path / "work" / "lists_smoke" / "query.txt").read().split("\n"))
    held_out = open(tmp_path / "work" / "sweep" / "lists" / "query.txt").read().split("\n")
    assert "added: the best was at an edge" in open(tmp_path / "res" / "sweep.md").read()
    assert not query & set(filter(None, held_out))


def test_missing_images_and_wrong_labels_stop_before_training(tmp_path, random_caffenet):
    fake = fake_datasets.make_fake_nus_wide(str(tmp_path / "data"))
    victim = sorted(os.listdir(fake["authors_images_root"]))[0]
    os.remove(os.path.join(fake["authors_images_root"], victim))
    res = subprocess.run([sys.executable, "-m", "reproduce.nus_wide", "--root", fake["authors_images_root"],
                          "--authors-lists", fake["authors_dir"], "--weights", random_caffenet,
                          "--out", str(tmp_path / "res"), "--work", str(tmp_path / "work")] + FAST,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "missing" in res.stderr and victim in res.stderr
    assert not os.path.exists(tmp_path / "res") and not os.path.exists(tmp_path / "work" / "train")
    # A list of another label dimension than NUS-WIDE's 21.
    bad = tmp_path / "bad_lists"
    bad.mkdir()
    for name in ("train.txt", "test.txt", "database.txt"):
        rows = open(os.path.join(fake["authors_dir"], name)).read().splitlines()
        (bad / name).write_text("".join(r.rsplit(" ", 1)[0] + "\n" for r in rows))
    res = subprocess.run([sys.executable, "-m", "reproduce.nus_wide", "--root", fake["authors_images_root"],
                          "--authors-lists", str(bad), "--weights", random_caffenet, "--out", str(tmp_path / "res2"),
                          "--work", str(tmp_path / "work2")] + FAST, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "Traceback" not in res.stderr and "20 labels" in res.stderr, res.stderr


@pytest.mark.parametrize("dataset", ["imagenet100", "coco"])
def test_hashnet_benchmarks_smoke(tmp_path, random_caffenet, dataset):
    """The HashNet presets on stand-ins of their folder layouts: the committed lists with the
    authors' prefix rewritten to --root, 16 to 64 bits, MAP@1000 / MAP@5000 with HashNet's
    zero-hit convention."""
    from reproduce.datasets import coco, imagenet100
    module = {"imagenet100": imagenet100, "coco": coco}[dataset]
    fake_datasets.make_fake_hashnet(str(tmp_path / "data"), dataset)
    module.main(["--root", str(tmp_path / "data"), "--weights", random_caffenet, "--out", str(tmp_path / "res"),
                 "--work", str(tmp_path / "work"), "--bits", "16", "64", "--variants", "dhn",
                 "--baselines", "lsh", "--methods", {"imagenet100": "cnnh", "coco": "cnnh*"}[dataset],
                 "--workers", "0", "--device", "cpu", "--smoke"])
    doc = json.load(open(tmp_path / "res" / "metrics" / "DHN_64bits_seed0" / "metrics.json"))
    assert doc["dataset"] == dataset and doc["conventions"]["topk"] == PROTOCOLS[module.NAME]["topk"]
    assert doc["conventions"]["zero_hit"] == "zero"
    assert {"fig_a_precision_radius2.png", "fig_b_pr_curve_64bits.png", "table1.md"} <= set(outputs(tmp_path / "res"))
    first = open(tmp_path / "work" / "lists_smoke" / "train.txt").readline()
    assert not first.startswith("./data") and os.path.exists(tmp_path / "data" / first.split()[0])


def test_hashnet_missing_image_is_reported_before_training(tmp_path, random_caffenet):
    from reproduce.datasets import coco
    made = fake_datasets.make_fake_hashnet(str(tmp_path / "data"), "coco")
    os.remove(tmp_path / "data" / made[3])
    with pytest.raises(UserError, match=f"missing under .*{os.path.basename(made[3])}"):
        coco.main(["--root", str(tmp_path / "data"), "--weights", random_caffenet, "--out", str(tmp_path / "res"),
                   "--work", str(tmp_path / "work")] + FAST)
    assert not os.path.exists(tmp_path / "work" / "train")


def test_custom_dataset_smoke_with_its_own_numbers(tmp_path, random_caffenet):
    """reproduce.custom on lists that are none of the paper's datasets: its name in every title and
    file, its published numbers beside ours, none of CIFAR-10's."""
    from reproduce.datasets import custom
    fake = fake_datasets.make_fake_flickr(str(tmp_path / "data"), num_images=40, unlabeled=0)
    rows = [f"mirflickr/im{n}.jpg " + " ".join(map(str, fake["labels"][n - 1, :5])) for n in range(1, 41)]
    for name, part in (("train", rows[:24]), ("query", rows[24:30]), ("database", rows[6:])):
        (tmp_path / f"{name}.txt").write_text("\n".join(part) + "\n")
    (tmp_path / "mine.csv").write_text("table,method,dataset,bits,map\n1,DHN,shapes,12,0.812\n"
                                       "1,MyHash,shapes,12,0.9\n2,DHN,shapes,12,0.811\n")
    argv = ["--name", "shapes", "--root", str(tmp_path / "data"), "--train-list", str(tmp_path / "train.txt"),
            "--query-list", str(tmp_path / "query.txt"), "--database-list", str(tmp_path / "database.txt"),
            "--topk", "20", "--paper-numbers", str(tmp_path / "mine.csv"), "--weights", random_caffenet,
            "--out", str(tmp_path / "res"), "--work", str(tmp_path / "work")] + FAST
    custom.main(argv)
    table = open(tmp_path / "res" / "table1.md").read()
    assert "shapes" in table and "0.812" in table and "MyHash" in table
    assert "CIFAR" not in table and "0.555" not in table
    doc = json.load(open(tmp_path / "res" / "metrics" / "DHN_12bits_seed0" / "metrics.json"))
    assert doc["dataset"] == "shapes" and doc["conventions"]["topk"] == 20
    run = json.load(open(tmp_path / "res" / "run.json"))
    assert run["config"]["name"] == "shapes" and run["config"]["topk"] == 20
    # another evaluation protocol into the same folder is refused before anything runs
    with pytest.raises(UserError, match="metrics/DHN_12bits_seed0: evaluated with protocol.topk 20, now 30"):
        custom.main([a if a != "20" else "30" for a in argv])
    with pytest.raises(UserError, match="--name 'a b'"):
        custom.main(["--name" if a == "--name" else ("a b" if a == "shapes" else a) for a in argv])


def test_smoke_table1_has_a_computed_number_in_every_row(tmp_path, random_caffenet):
    """A --smoke run with the defaults computes every method of the paper's Table 1: DHN, the
    three deep baselines trained by the same engine, the seven shallow ones on fc7."""
    from reproduce.reporting.paper import TABLE1_METHODS
    fake = fake_datasets.make_fake_nus_wide(str(tmp_path / "data"))
    nus_wide.main(["--root", fake["authors_images_root"], "--authors-lists", fake["authors_dir"],
                   "--weights", random_caffenet, "--out", str(tmp_path / "res"), "--work", str(tmp_path / "work"),
                   "--bits", "12", "--variants", "dhn", "--workers", "0", "--device", "cpu", "--smoke"])
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip()
            for line in open(tmp_path / "res" / "table1.md") if line.startswith("| ") and "Method" not in line}
    for method in TABLE1_METHODS:
        assert method in rows and rows[method] not in ("", "\u2014"), (method, rows.get(method))
    for name in ("cnnh", "cnnh-star", "dnnh"):           # trained by the engine, resumable
        assert os.path.exists(tmp_path / "work" / "train" / f"{name}_12bits_seed0" / "final.pth")
