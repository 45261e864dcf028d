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

FAST = ["--bits", "12", "--variants", "dhn", "dhn-b", "--baselines", "lsh", "itq", "--workers", "0",
        "--device", "cpu", "--smoke"]


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
        "DHN-B_12bits_seed0", "DHN_12bits_seed0", "ITQ_12bits_seed0", "LSH_12bits_seed0"]
    run = json.load(open(tmp_path / "res" / "run.json"))
    assert run["identity"]["smoke"] and run["finished"] and run["versions"]["torch"]
    assert run["lists"]["query"]["images"] == 8 and run["lists"]["database"]["images"] == 40
    table = open(tmp_path / "res" / "table1.md").read()
    assert "DHN" in table and "0.555" in table          # the paper's CIFAR-10 12-bit number beside ours
    # A re-run skips what is finished: the trained model is not touched.
    final = tmp_path / "work" / "train" / "dhn_12bits_seed0" / "final.pth"
    stamp = os.stat(final).st_mtime_ns
    cifar10.main(argv)
    assert os.stat(final).st_mtime_ns == stamp
    # Another configuration into the same results folder is refused before anything runs.
    with pytest.raises(UserError, match="written with another configuration .*base_lr"):
        cifar10.main(argv + ["--base-lr", "0.1"])


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
    sweep = json.load(open(tmp_path / "res" / "sweep.json"))
    assert [(r["base_lr"], r["quant_weight"]) for r in sweep["rows"]] == [(1e-3, 0.1), (1e-3, 10.0)]
    cfg = json.load(open(tmp_path / "work" / "train" / "dhn_12bits_seed0" / "config.json"))
    assert (cfg["solver"]["base_lr"], cfg["loss"]["quant_weight"]) == (sweep["best"]["base_lr"],
                                                                      sweep["best"]["quant_weight"])
    # the validation split is carved out of the training list: no query image is in it
    query = set(open(tmp_path / "work" / "lists_smoke" / "query.txt").read().split("\n"))
    held_out = open(tmp_path / "work" / "sweep" / "lists" / "query.txt").read().split("\n")
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
