"""Bad input, command by command: one line, exit status 2, no traceback, nothing damaged.

Each case runs a command's `main` through `run_cli` in this process (fast: no interpreter start
per case) with one hostile input, and asserts: exit status 2, exactly one line on stderr, no
traceback (any exception other than the package's UserError propagates and fails the test), the
line names what is wrong, and a set of outputs that existed before is untouched byte for byte
with no temporary file left beside it. tests/test_signals_and_full_disk.py covers full disks and
SIGTERM; tests/test_fuzz_parsers.py fuzzes the file parsers.
"""
import json
import os
import re

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

import fake_datasets
from reproduce import compare, convert_weights, demo, encode, evaluate, train, weights
from reproduce.cli import run_cli
from reproduce.datasets import cifar10, coco, custom, flickr, imagenet100, nus_wide
from reproduce.model.checkpoint import save_checkpoint
from reproduce.model.nets import DHNNet

PROGRESS = re.compile(r"^\w+: +\d+%\|")       # a tqdm line: "encode:  50%|#####     | 1/2 ..."


class Call:
    """A pickled object whose loading would call a function: weights_only loading never does."""

    def __reduce__(self):
        return (print, ("a checkpoint's pickle ran code",))


COMMANDS = {"train": train.main, "encode": encode.main, "evaluate": evaluate.main,
            "compare": compare.main, "demo": demo.main, "convert_weights": convert_weights.main,
            "weights": weights.main, "cifar10": cifar10.main, "nus_wide": nus_wide.main,
            "flickr": flickr.main, "imagenet100": imagenet100.main, "coco": coco.main, "custom": custom.main}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Images, lists, checkpoints, code files, metrics and outputs that already exist."""
    d = tmp_path_factory.mktemp("bad_inputs")
    rng = np.random.default_rng(0)
    fake_datasets.make_command_inputs(d, rng, 4)
    nan = DHNNet("caffenet", bits=8).state_dict()
    nan["fc7.weight"][3, 5] = float("nan")
    save_checkpoint(d / "nan.pth", nan, "caffenet", 8)
    bad_bits = torch.load(d / "dhn.pth", weights_only=True)
    bad_bits["bits"] = "12"
    torch.save(bad_bits, d / "bad_bits.pth")
    np.save(d / "nan_mean.npy", np.full((3, 256, 256), np.nan))
    codes = np.where(rng.standard_normal((6, 8)) > 0, 1, -1)
    labels = np.eye(3, dtype=np.uint8)[np.arange(6) % 3]
    np.savez(d / "q.npz", codes=codes, labels=labels)
    np.savez(d / "nan_codes.npz", codes=np.full((6, 8), np.nan), labels=labels)
    np.savez(d / "huge_label.npz", codes=codes, labels=np.array([0, 1, 2, 1e11, 0, 1]))
    (d / "labels_sup.txt").write_text("a.png ²\nb.png 1\n")
    (d / "labels_dash.txt").write_text("a.png --1\nb.png 1\n")
    (d / "labels_class.txt").write_text("0.png 99999999999\n1.png 1\n")
    (d / "labels_big.txt").write_text("0.png 99999999999999999999 0\n1.png 1 0\n")
    (d / "garbage.caffemodel").write_bytes(b"\x08\x96\x01 not a net")
    (d / "afile").write_text("a file, not a folder\n")
    runs = d / "runs" / "dhn_8"
    runs.mkdir(parents=True)
    record = {"method": "DHN", "dataset": "cifar10", "bits": 8, "seed": 0, "conventions": {},
              "metrics": {"map": "high"}}
    (runs / "metrics.json").write_text(json.dumps(record))
    # a second attempt, new inputs of the same classes (issue 10's "Done when")
    pr = d / "runs_pr" / "dhn_8"
    pr.mkdir(parents=True)
    good = dict(record, metrics={"map": 0.5, "precision_within_radius": -3.0,
                                 "precision_at_n": {"n": [1], "precision": [0.5], "recall": [0.1]}})
    (pr / "metrics.json").write_text(json.dumps(good))
    nan_curve = d / "runs_nan" / "dhn_8"
    nan_curve.mkdir(parents=True)
    good["metrics"].update(precision_within_radius=0.5, precision_at_n={"n": [1], "precision": [float("nan")],
                                                                         "recall": [0.1]})
    (nan_curve / "metrics.json").write_text(json.dumps(good))
    np.save(d / "big_mean.npy", np.full((3, 256, 256), 1e300))
    np.save(d / "neg_mean.npy", np.full((3, 256, 256), -1e30))
    os.mkfifo(d / "fifo.h5")
    (d / "adir.npz").mkdir()
    with h5py.File(d / "fch0.caffemodel.h5", "w") as f:
        f["data/fch/0"], f["data/fch/1"] = np.zeros((0, 4096), np.float32), np.zeros(0, np.float32)
    with h5py.File(d / "double.caffemodel.h5", "w") as f:
        f["data/conv1/0"] = np.full((2, 2), 1e300)
    (d / "nul_list.txt").write_text("0.png 0 1\n1.png\x00 1 0\n")
    # a third attempt: resumes of tampered runs, baseline options, features, published numbers
    run_cli(train.main, ["--train-list", str(d / "list.txt"), "--root", str(d / "imgs"), "--weights",
                         str(d / "base.pth"), "--bits", "8", "--max-iter", "2", "--batch-size", "2",
                         "--snapshot", "2", "--workers", "0", "--quiet", "--out", str(d / "done_run")])
    for name in ("bad_log_run", "renamed_run", "nan_momentum_run"):
        (d / name).mkdir()
        for f in os.listdir(d / "done_run"):
            if f != "final.pth":                           # a run stopped after its snapshot
                os.link(d / "done_run" / f, d / name / f)
    (d / "bad_log_run" / "log.jsonl").unlink()
    (d / "bad_log_run" / "log.jsonl").write_text('{"iteration": 1}\n{not json\n')
    os.rename(d / "renamed_run" / "snapshot_iter_2.pth", d / "renamed_run" / "snapshot_iter_9.pth")
    snap = torch.load(d / "done_run" / "snapshot_iter_2.pth", weights_only=True)
    for state in snap["solver"]["state"].values():
        state["momentum_buffer"][0] = float("nan")
    (d / "nan_momentum_run" / "snapshot_iter_2.pth").unlink()
    torch.save(snap, d / "nan_momentum_run" / "snapshot_iter_2.pth")
    (d / "nested_run").mkdir()
    (d / "nested_run" / "config.json").write_text("[" * 100000 + "]" * 100000)
    (d / "nested_run" / "snapshot_iter_2.pth").write_bytes(b"x")
    import pickle
    (d / "pickle.pth").write_bytes(pickle.dumps({"format": "x", "call": Call()}, protocol=4))
    for name, n in (("ftr", 30), ("fq", 6), ("fdb", 12)):
        with h5py.File(d / f"{name}.h5", "w") as f:
            f["features"] = rng.random((n, 16)).astype(np.float32)
            f["labels"] = np.eye(3, dtype=np.uint8)[np.arange(n) % 3]
    with h5py.File(d / "fq_nan.h5", "w") as f:
        f["features"] = np.where(np.arange(96).reshape(6, 16) == 40, np.nan, 0.5)
        f["labels"] = np.eye(3, dtype=np.uint8)[np.arange(6) % 3]
    (d / "wide_numbers.csv").write_text("table,method,dataset,bits,map\n1," + "x" * 200000 + ",mine,12,0.5\n")
    (d / "pipe_numbers.csv").write_text("table,method,dataset,bits,map\n1,a|b,mine,12,0.5\n")
    # a fourth attempt: special files where text is read, images OpenCV cannot read, fetch
    os.mkfifo(d / "fifo_list.txt")
    (d / "wfifo").mkdir()
    os.mkfifo(d / "wfifo" / "bvlc_reference_caffenet.caffemodel")
    (d / "wempty").mkdir()
    (d / "wempty" / "caffenet.pth").write_bytes(b"")
    Image.fromarray(np.arange(2000, dtype=np.int32).reshape(40, 50) * 100000).save(d / "imgs" / "i32.tif")
    Image.fromarray(np.zeros((40, 50), np.float32)).save(d / "imgs" / "f32.tif")
    (d / "tif_list.txt").write_text("0.png 1 0\ni32.tif 0 1\n")
    (d / "float_list.txt").write_text("f32.tif 0 1\n")
    (d / "same_label_list.txt").write_text("".join(f"{i}.png 1 0\n" for i in range(4)))
    (d / "corrupt_run").mkdir()
    (d / "corrupt_run" / "config.json").write_text("{ not json")
    (d / "corrupt_run" / "snapshot_iter_4.pth").write_bytes(b"x")
    (d / "results").mkdir()
    (d / "results" / "run.json").write_text("{ half written")
    # Outputs a user already has: every failing command below must leave them exactly so.
    (d / "out").mkdir()
    (d / "out" / "codes.h5").write_bytes(b"previous codes")
    (d / "out" / "metrics.json").write_text('{"previous": true}\n')
    (d / "out" / "precision_at_n.csv").write_text("n,precision,recall\n")
    (d / "out" / "model.pth").write_bytes(b"previous model")
    return d


def snapshot(folder):
    return {p: open(os.path.join(root, p), "rb").read()
            for root, _, names in os.walk(folder) for p in names}


def cases(w):
    """(command, argv, fragment of the one-line message)."""
    lst, imgs, out = str(w / "list.txt"), str(w / "imgs"), str(w / "out")
    tr = ["--train-list", lst, "--root", imgs, "--weights", str(w / "base.pth"), "--bits", "8",
          "--max-iter", "2", "--batch-size", "2", "--workers", "0", "--quiet"]
    enc0 = ["--checkpoint", str(w / "dhn.pth"), "--list", lst, "--root", imgs, "--workers", "0",
            "--device", "cpu"]
    enc = enc0 + ["--out", str(w / "out" / "codes.h5"), "--force"]
    ev = ["--query", str(w / "q.npz"), "--database", str(w / "q.npz"), "--out", out, "--force"]
    smoke = ["--weights", str(w / "base.pth"), "--smoke", "--workers", "0", "--device", "cpu",
             "--work", str(w / "work"), "--out", str(w / "res")]   # work: lists, caches (not outputs)
    return [
        # train: every number is range-checked, per lr policy as Caffe's CHECKs and more
        ("train", tr + ["--out", str(w / "r"), "--gamma", "-5"], "argument --gamma"),
        ("train", tr + ["--out", str(w / "r"), "--gamma", "nan"], "argument --gamma"),
        ("train", tr + ["--out", str(w / "r"), "--keep-snapshots", "-1"], "argument --keep-snapshots"),
        ("train", tr + ["--out", str(w / "r"), "--threshold", "nan"], "argument --threshold"),
        ("train", tr + ["--out", str(w / "r"), "--dropout", "1.5"], "argument --dropout"),
        ("train", tr + ["--out", str(w / "r"), "--workers", "-1"], "argument --workers"),
        ("train", tr + ["--out", str(w / "r"), "--bits", "0"], "argument --bits"),
        ("train", tr + ["--out", str(w / "r"), "--bits", "99999999"], "argument --bits"),
        ("train", tr + ["--out", str(w / "r"), "--max-iter", "0"], "argument --max-iter"),
        ("train", tr + ["--out", str(w / "r"), "--base-lr", "0"], "argument --base-lr"),
        ("train", tr + ["--out", str(w / "r"), "--momentum", "1"], "argument --momentum"),
        ("train", tr + ["--out", str(w / "r"), "--lr-policy", "exp", "--gamma", "2"], "gamma 2.0 > 1"),
        ("train", tr + ["--out", str(w / "r"), "--lr-policy", "poly", "--power", "-1"], "power >= 0"),
        ("train", tr + ["--out", str(w / "r"), "--lr-policy", "multistep"], "needs stepvalue"),
        ("train", tr + ["--out", str(w / "r"), "--mean", "nan,0,0"], "three finite numbers"),
        ("train", tr + ["--out", str(w / "r"), "--mean", "1e400,0,0"], "three finite numbers"),
        ("train", tr + ["--out", str(w / "r"), "--mean-file", str(w / "nan_mean.npy")], "nan_mean.npy"),
        ("train", tr[:4] + ["--weights", str(w / "nan.pth")] + tr[6:] + ["--out", str(w / "r")],
         "fc7.weight holds 1 NaN"),
        ("train", tr + ["--out", str(w / "afile" / "run")], "afile"),
        ("train", tr + ["--out", str(w / "corrupt_run"), "--resume"], "config.json: not a valid run configuration"),
        ("train", ["--train-list", str(w / "labels_sup.txt")] + tr[2:] + ["--out", str(w / "r")], "labels_sup.txt:1"),
        ("train", ["--train-list", str(w / "labels_dash.txt")] + tr[2:] + ["--out", str(w / "r")], "labels_dash.txt:1"),
        ("train", ["--train-list", str(w / "labels_class.txt")] + tr[2:] + ["--out", str(w / "r")], "labels_class.txt:1"),
        ("train", ["--train-list", str(w / "labels_big.txt")] + tr[2:] + ["--out", str(w / "r")], "labels_big.txt:1"),
        # encode
        ("encode", enc + ["--mean", "nan,0,0"], "three finite numbers"),
        ("encode", enc + ["--mean", "1e400,0,0"], "three finite numbers"),
        ("encode", enc + ["--mean-file", str(w / "nan_mean.npy")], "nan_mean.npy"),
        ("encode", ["--checkpoint", str(w / "nan.pth")] + enc[2:], "fc7.weight holds 1 NaN"),
        ("encode", ["--checkpoint", str(w / "bad_bits.pth")] + enc[2:], "'bits' entry is '12'"),
        ("encode", enc0 + ["--out", str(w / "out")], "is a folder"),
        ("encode", enc0 + ["--out", str(w / "afile" / "x.h5")], "afile"),
        ("encode", enc + ["--batch-size", "0"], "argument --batch-size"),
        ("encode", enc + ["--workers", "-1"], "argument --workers"),
        ("encode", enc + ["--pipeline", "opencv"], "argument --pipeline"),
        # evaluate
        ("evaluate", ev + ["--topk", "0"], "argument --topk"),
        ("evaluate", ev + ["--radius", "-1"], "argument --radius"),
        ("evaluate", ev + ["--ns", "0"], "argument --ns"),
        ("evaluate", ["--query", str(w / "nan_codes.npz")] + ev[2:], "nan_codes.npz"),
        ("evaluate", ["--query", str(w / "huge_label.npz")] + ev[2:], "huge_label.npz"),
        ("evaluate", ["--query", str(w / "garbage.caffemodel")] + ev[2:], "garbage.caffemodel"),
        ("evaluate", ev[:4] + ["--out", str(w / "afile")], "afile"),
        # compare
        ("compare", ["--dataset", "cifar10", "--runs", str(w / "runs"), "--out", out], "metrics.map"),
        ("compare", ["--dataset", "cifar10", "--runs", str(w / "nothere"), "--out", out], "nothere"),
        ("compare", ["--dataset", "cifar10", "--runs", str(w / "runs"), "--out", out, "--curve-bits", "0"],
         "argument --curve-bits"),
        # demo: everything it takes is checked before any training
        ("demo", ["--bits", "0", "--out", out], "argument --bits"),
        ("demo", ["--max-iter", "0", "--out", out], "argument --max-iter"),
        ("demo", ["--baselines", "bogus", "--out", out], "argument --baselines"),
        ("demo", ["--seeds", "-1", "--out", out], "argument --seeds"),
        # convert_weights, weights
        ("convert_weights", [str(w / "garbage.caffemodel"), "--out", str(w / "out" / "model.pth"), "--force"],
         "garbage.caffemodel"),
        ("convert_weights", [str(w / "nothere.caffemodel"), "--out", str(w / "x.pth")], "nothere"),
        ("convert_weights", [str(w / "garbage.caffemodel"), "--out", str(w / "out")], "is a folder"),
        ("weights", ["fetch", "resnet"], "argument arch"),
        # the per-dataset commands
        ("cifar10", ["--root", str(w / "nothere"), "--no-download"] + smoke + ["--out", str(w / "res")], "nothere"),
        ("cifar10", ["--root", imgs, "--bits", "0"] + smoke, "argument --bits"),
        ("nus_wide", ["--root", imgs, "--seeds", "-1"] + smoke, "argument --seeds"),
        ("nus_wide", ["--root", imgs] + smoke + ["--out", str(w / "res")], "exactly one of"),
        ("flickr", ["--root", imgs, "--num-images", "0"] + smoke, "argument --num-images"),
        ("flickr", ["--root", imgs, "--validation-fraction", "1.5"] + smoke, "argument --validation-fraction"),
        ("imagenet100", ["--root", imgs, "--bits", "0"] + smoke, "argument --bits"),
        ("coco", ["--root", str(w / "nothere")] + smoke, "missing under"),
        ("custom", ["--name", "mine", "--root", imgs] + [a for s in ("train", "query", "database")
                    for a in (f"--{s}-list", lst)] + ["--topk", "0"] + smoke, "argument --topk"),
        ("custom", ["--name", "a b", "--root", imgs] + [a for s in ("train", "query", "database")
                    for a in (f"--{s}-list", lst)] + ["--topk", "all"] + smoke + ["--out", str(w / "res")],
         "--name 'a b'"),
        ("custom", ["--name", "mine", "--root", imgs] + [a for s in ("train", "query", "database")
                    for a in (f"--{s}-list", lst)] + ["--topk", "all", "--paper-numbers", lst] + smoke
         + ["--out", str(w / "res")], "expected the header"),
        # a second attempt: new inputs of the same classes
        ("train", tr + ["--out", str(w / "r"), "--base-lr", "1e300"], "argument --base-lr"),
        ("train", tr + ["--out", str(w / "r"), "--weight-decay", "1e300"], "argument --weight-decay"),
        ("train", tr + ["--out", str(w / "r"), "--max-iter", "99999999999999999999"], "argument --max-iter"),
        ("train", tr + ["--out", str(w / "r"), "--batch-size", "2147483648"], "argument --batch-size"),
        ("train", tr + ["--out", str(w / "r"), "--seed", "99999999999999999999"], "argument --seed"),
        ("train", tr + ["--out", str(w / "r"), "--workers", "1000000"], "argument --workers"),
        ("train", tr + ["--out", str(w / "r"), "--cache", ""], "argument --cache: empty value"),
        ("train", tr + ["--out", str(w / "r"), "--mean", ""], "argument --mean: empty value"),
        ("train", tr + ["--out", str(w / "r"), "--mean", "300,0,0"], "0..255"),
        ("encode", enc + ["--batch-size", "99999999999999999999"], "argument --batch-size"),
        ("encode", enc + ["--workers", "1000000"], "argument --workers"),
        ("encode", enc + ["--device", "meta"], "--device meta"),
        ("encode", enc + ["--mean-file", str(w / "big_mean.npy")], "big_mean.npy: the mean image holds 1e+300"),
        ("encode", enc + ["--mean-file", str(w / "neg_mean.npy")], "outside the pixel range"),
        ("encode", enc0 + ["--out", str(w / "fifo.h5"), "--force"], "fifo.h5: is not a regular file"),
        ("encode", ["--list", str(w / "nul_list.txt")] + enc[:2] + enc[4:], "1.png\\x00"),
        ("evaluate", ev + ["--radius", "99999999999999999999"], "argument --radius"),
        ("evaluate", ev + ["--ns", "9223372036854775808"], "argument --ns"),
        ("evaluate", ["--query", str(w / "adir.npz")] + ev[2:], "adir.npz: is a folder"),
        ("compare", ["--dataset", "", "--runs", str(w / "runs_pr"), "--out", out], "argument --dataset: empty"),
        ("compare", ["--dataset", "../../etc", "--topk", "all", "--runs", str(w / "runs_pr"), "--out", out],
         "--dataset '../../etc'"),
        ("compare", ["--dataset", "cifar10", "--runs", str(w / "runs_pr"), "--out", out],
         "precision_within_radius must be a number in [0, 1]"),
        ("compare", ["--dataset", "cifar10", "--runs", str(w / "runs_nan"), "--out", out],
         "precision_at_n.precision must hold numbers in [0, 1]"),
        ("compare", ["--dataset", "cifar10", "--import", "X\nY:8:" + str(w / "q.npz") + ":" + str(w / "q.npz"),
                     "--out", out], "NAME must be printable"),
        ("convert_weights", [str(w / "fch0.caffemodel.h5"), "--out", str(w / "x.pth")], "bits in 1..4096"),
        ("convert_weights", [str(w / "double.caffemodel.h5"), "--out", str(w / "x.pth")],
         "beyond float32's range"),
        ("custom", ["--name", "mine", "--root", imgs, "--baselines", "sh", "--bits", "12"]
         + [a for s in ("train", "query", "database") for a in (f"--{s}-list", lst)] + ["--topk", "all"] + smoke
         + ["--out", str(w / "res")], "need 13"),
        # a third attempt
        ("train", tr + ["--out", str(w / "bad_log_run"), "--resume"], "bad_log_run/log.jsonl:2"),
        ("train", tr + ["--out", str(w / "renamed_run"), "--resume"], "holds iteration 2, but its name says 9"),
        ("train", tr + ["--out", str(w / "nan_momentum_run"), "--resume"], "non-finite weights or momentum"),
        ("train", tr + ["--out", str(w / "nested_run"), "--resume"], "nested_run/config.json: not a valid"),
        ("train", tr + ["--out", str(w / "r"), "--lr-policy", "inv", "--gamma", "10", "--power=-1000"],
         "the learning rate at iteration 2 is beyond float32"),
        ("train", tr + ["--out", str(w / "r"), "--lr-policy", "step", "--gamma", "1e30", "--stepsize", "1"],
         "beyond float32"),
        ("encode", ["--checkpoint", str(w / "pickle.pth")] + enc[2:], "holds Python objects beyond tensors"),
        ("compare", ["--dataset", "cifar10", "--features", *(str(w / f"{n}.h5") for n in ("ftr", "fq", "fdb")),
                     "--baselines", "mlh", "--bits", "8", "--baseline-option", "mlh:eta=nan", "--out", out],
         "mlh:eta=nan: nan is not a finite number"),
        ("compare", ["--dataset", "cifar10", "--features", *(str(w / f"{n}.h5") for n in ("ftr", "fq", "fdb")),
                     "--baselines", "lsh", "--bits", "8", "--baseline-option", "lsh:seed=5", "--out", out],
         "seed is set by --seed"),
        ("compare", ["--dataset", "cifar10", "--features", *(str(w / f"{n}.h5") for n in ("ftr", "fq", "fdb")),
                     "--baselines", "itq", "--bits", "8", "--baseline-option", "itq:n_iter=99999999999999999999",
                     "--out", out], "option n_iter must be an integer"),
        ("compare", ["--dataset", "cifar10", "--features", str(w / "ftr.h5"), str(w / "fq_nan.h5"),
                     str(w / "fdb.h5"), "--baselines", "lsh", "--bits", "8", "--out", out],
         "fq_nan.h5: features row 2 holds NaN"),
        ("custom", ["--name", "mine", "--root", imgs] + [a for s in ("train", "query", "database")
                    for a in (f"--{s}-list", lst)] + ["--topk", "all", "--paper-numbers", str(w / "wide_numbers.csv")]
         + smoke + ["--out", str(w / "res")], "wide_numbers.csv:2: not a CSV row"),
        ("custom", ["--name", "mine", "--root", imgs] + [a for s in ("train", "query", "database")
                    for a in (f"--{s}-list", lst)] + ["--topk", "all", "--paper-numbers", str(w / "pipe_numbers.csv")]
         + smoke + ["--out", str(w / "res")], "without '|'"),
        ("cifar10", ["--root", str(w / "afile"), "--no-download"] + smoke, "is a file, not the dataset's folder"),
        # a fourth attempt
        ("encode", ["--list", str(w / "fifo_list.txt")] + enc[:2] + enc[4:], "fifo_list.txt: is not a regular file"),
        ("encode", ["--list", str(w / "tif_list.txt")] + enc[:2] + enc[4:], "i32.tif: cannot decode image"),
        ("encode", ["--list", str(w / "float_list.txt")] + enc[:2] + enc[4:], "OpenCV's imread"),
        ("weights", ["fetch", "caffenet", "--dir", str(w / "wfifo")], "caffemodel: is not a regular file"),
        ("weights", ["fetch", "caffenet", "--dir", str(w / "wempty")], "caffenet.pth: not a readable checkpoint"),
        ("compare", ["--dataset", "cifar10", "--features", *(str(w / f"{n}.h5") for n in ("ftr", "fq", "fdb")),
                     "--baselines", "lsh", "--bits", "8", "--curve-bits", "16", "--out", out],
         "--curve-bits 16: no run, import or baseline has that length"),
        # a fifth attempt
        ("train", tr + ["--out", str(w / "r"), "--method", "dnnh"], "--batch-size 2: dnnh needs batches of at least 3"),
        ("train", ["--train-list", str(w / "same_label_list.txt")] + tr[2:] + ["--out", str(w / "r"), "--method",
                   "dnnh", "--batch-size", "4"], "form no triplet"),
        ("evaluate", ev + ["--ns", *map(str, range(1, 1002))], "--ns: 1001 cut-offs; at most 1000"),
        # a sixth attempt: a value given twice made two jobs of one name (a ValueError traceback)
        ("custom", ["--name", "mine", "--root", imgs] + [a for s in ("train", "query", "database")
                    for a in (f"--{s}-list", lst)] + ["--topk", "all", "--bits", "8", "8"] + smoke,
         "--bits: 8 is given twice"),
        ("custom", ["--name", "mine", "--root", imgs] + [a for s in ("train", "query", "database")
                    for a in (f"--{s}-list", lst)] + ["--topk", "all", "--sweep", "--sweep-lrs", "1e-3",
                                                      "0.0010000001"] + smoke,
         "--sweep-lrs: 0.001 and 0.0010000001 name one job (lr0.001)"),
        ("demo", ["--out", str(w / "res"), "--work", str(w / "work"), "--bits", "8", "--seeds", "0", "0",
                  "--baselines", "lsh", "--methods"], "--seeds: 0 is given twice"),
    ]


def run(command, argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(COMMANDS[command], argv)
    return exit_info.value.code, capsys.readouterr().err


CASE_IDS = [f"{c}-{i}" for i, (c, _, _) in enumerate(cases(__import__("pathlib").Path("w")))]


@pytest.mark.parametrize("index", range(len(CASE_IDS)), ids=CASE_IDS)
def test_bad_input_is_one_line_exit_2_and_damages_nothing(world, capsys, index):
    command, argv, fragment = cases(world)[index]
    before = snapshot(world / "out")
    code, err = run(command, argv, capsys)
    # progress bars (an image found undecodable while encoding) are display, not message lines
    lines = [line for line in err.replace("\r", "\n").strip().splitlines() if not PROGRESS.match(line)]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert fragment in lines[0], err
    assert snapshot(world / "out") == before
    assert not [n for n in os.listdir(world / "out") if n.startswith(".")]     # no temporaries
    assert not os.path.exists(world / "r") and not os.path.exists(world / "res")


def test_the_case_table_covers_every_command():
    assert {c for c, _, _ in cases(__import__("pathlib").Path("w"))} == set(COMMANDS)


def test_error_lines_are_printable_and_bounded(tmp_path, capsys):
    """A list written by Notepad (a byte-order mark), a NUL in a path, a path of megabytes: the
    one line shows the invisible characters as escapes and keeps its length bounded."""
    from reproduce.utils.messages import MAX_MESSAGE, printable
    from reproduce.errors import UserError
    assert printable("image \ufeff0.png not found") == "image \\ufeff0.png not found"
    assert printable("a\x00b\nc") == "a\\x00b\\nc"
    assert printable("±1 codes, label ²") == "±1 codes, label ²"        # printable stays as is
    long = printable("x" * 10**7)
    assert len(long) < MAX_MESSAGE + 100 and "[9998000 characters]" in long

    def main(argv):
        raise UserError("p" * 10**6 + "\ufeff")
    with pytest.raises(SystemExit) as e:
        run_cli(main, [])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and len(err) < MAX_MESSAGE + 100 and "\\ufeff" in err


def test_fetch_from_a_server_that_does_not_speak_http(tmp_path, capsys):
    """A reply that is not HTTP (a proxy's banner, a cut connection) is the network's failure:
    one line with the manual steps, nothing kept."""
    import socket
    import threading
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def reply():
        conn, _ = server.accept()
        conn.recv(65536)
        conn.sendall(b"HELLO THERE\r\n\r\n")
        conn.close()
    thread = threading.Thread(target=reply, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.getsockname()[1]}/x"
    code, err = run("weights", ["fetch", "caffenet", "--dir", str(tmp_path / "w"), "--url", url], capsys)
    thread.join(10)
    server.close()
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "BadStatusLine" in lines[0] and "manual" in lines[0].lower(), err
    assert not (tmp_path / "w").exists() or os.listdir(tmp_path / "w") == []


def test_flickr_annotation_number_of_thousands_of_digits(tmp_path):
    from reproduce.datasets.flickr import LABEL_NAMES, read_annotations
    from reproduce.errors import UserError
    for name in LABEL_NAMES:
        (tmp_path / f"{name}.txt").write_text("1\n2\n")
    (tmp_path / "animals.txt").write_text("1\n" + "1" * 5000 + "\n")
    with pytest.raises(UserError, match=r"animals.txt:2: '1111.*' is not an image number"):
        read_annotations(tmp_path, num_images=40)
    (tmp_path / "animals.txt").write_text("1\x0b\n2\n")          # a vertical tab is not a line end
    assert read_annotations(tmp_path, num_images=40)[:2].sum() > 0


@pytest.mark.parametrize("plan", [False, True], ids=["run", "plan"])
def test_a_validation_fraction_leaving_no_sweep_training_image_is_refused(tmp_path, random_caffenet, capsys, plan):
    """--sweep --validation-fraction 0.99 on 30 training images held all 30 out: the first sweep
    job stopped on the split's own (empty) sweep/lists/train.txt, a file the user never named, and
    --plan showed every job pending. The option value is refused, naming it, before any job."""
    argv = fake_datasets.make_toy_list_dataset(tmp_path / "ds", random_caffenet) + [
        "--smoke", "--bits", "12", "--baselines", "lsh", "--methods", "--variants", "dhn", "--sweep",
        "--sweep-bits", "12", "--validation-fraction", "0.99", "--out", str(tmp_path / "res"),
        "--work", str(tmp_path / "work")] + (["--plan"] if plan else [])
    code, err = run("custom", argv, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("error: --validation-fraction 0.99: holds out 30 of the 30 training images"), err
    assert not (tmp_path / "res").exists()
    assert not (tmp_path / "work" / "jobs").exists() and not (tmp_path / "work" / "sweep").exists()


@pytest.mark.parametrize("env, fragment", [
    ({"RANK": "1"}, "RANK must lie in 0..WORLD_SIZE-1"),
    ({"RANK": "-1"}, "RANK must lie in 0..WORLD_SIZE-1"),
    ({"WORLD_SIZE": "abc"}, "not whole numbers"),
    ({"RANK": "1", "WORLD_SIZE": "2"}, "MASTER_ADDR and MASTER_PORT not set"),
], ids=["rank-outside-world", "negative-rank", "not-a-number", "no-rendezvous"])
def test_standalone_train_refuses_a_torchrun_environment_that_cannot_be(world, capsys, monkeypatch, env, fragment):
    """RANK=1 left in a shell made a standalone train skip the --out lock (rank 0's job) and stop
    on an empty share of the list with a traceback; WORLD_SIZE=abc or a world without torchrun's
    MASTER_ADDR were tracebacks too. Each is one line naming the environment, exit 2, nothing written."""
    for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    out = world / "rank_run"
    code, err = run("train", ["--train-list", str(world / "list.txt"), "--root", str(world / "imgs"), "--weights",
                              str(world / "base.pth"), "--bits", "8", "--max-iter", "2", "--batch-size", "2",
                              "--workers", "0", "--quiet", "--cache", "none", "--out", str(out)], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: environment "), err
    assert fragment in lines[0], err
    assert not out.exists()


def test_a_dataset_command_refuses_an_impossible_torchrun_environment_before_any_job(tmp_path, random_caffenet,
                                                                                      capsys, monkeypatch):
    """Its training jobs inherit the environment: RANK=1 left in a shell stopped the first of them
    only after the image caches were built, and --plan showed every job pending."""
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("RANK", "1")
    argv = fake_datasets.make_toy_list_dataset(tmp_path / "ds", random_caffenet) + [
        "--smoke", "--bits", "12", "--baselines", "lsh", "--methods", "--variants", "dhn", "--max-iter", "2",
        "--out", str(tmp_path / "res"), "--work", str(tmp_path / "work")]
    for extra in (["--plan"], []):
        code, err = run("custom", argv + extra, capsys)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and "RANK must lie in 0..WORLD_SIZE-1" in lines[0], (extra, err)
        assert not (tmp_path / "res").exists() and not (tmp_path / "work").exists()
