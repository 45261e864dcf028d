"""The comparison command (reproduce.compare) end to end on small random codes and features:
runs' metrics.json + imported codes + shallow baselines -> methods/*/metrics.json, tables, figures."""
import csv
import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from reproduce import compare
from reproduce.baselines import make_baseline
from reproduce.errors import UserError
from reproduce.evaluation import protocols, records
from reproduce.reporting import comparison

from test_reports import metrics_doc, write_metrics
from reference import plain_map

FAST = ["--baseline-option", "ksh:n_anchors=30", "--baseline-option", "ksh:n_labeled=120",
        "--baseline-option", "ksh:max_iter=20"]


def class_features(rng, n, d=24, c=4):
    """Features with class structure in the first c dims; multi-hot labels, ~25% with 2 labels."""
    y = rng.integers(0, c, n)
    L = np.eye(c, dtype=np.uint8)[y]
    two = rng.random(n) < 0.25
    L[two, rng.integers(0, c, n)[two]] = 1
    X = np.zeros((n, d), np.float32)
    X[:, :c] = 3 * L
    X += rng.standard_normal((n, d)).astype(np.float32)
    return X, L


def write_features(path, X, L):
    with h5py.File(path, "w") as f:
        f["features"] = X
        f["labels"] = L
    return str(path)


@pytest.fixture
def features(tmp_path, rng):
    """(train, query, database) features files of 160 / 30 / 200 samples."""
    parts = [class_features(rng, n) for n in (160, 30, 200)]
    return [write_features(tmp_path / f"{name}.h5", X, L)
            for name, (X, L) in zip(("train", "query", "db"), parts)], parts


def run_cli(args):
    return subprocess.run([sys.executable, "-m", "reproduce.compare", *args], capture_output=True,
                          text=True, cwd=os.path.dirname(os.path.dirname(compare.__file__)))


def table_rows(path):
    with open(path) as f:
        return {r["method"]: r for r in csv.DictReader(f)}


def test_protocol_comes_from_the_protocol_table():
    assert protocols.dataset_protocol("cifar10")["topk"] is None
    assert protocols.dataset_protocol("coco")["zero_hit"] == "zero" == protocols.dataset_protocol("imagenet100")["zero_hit"]
    assert protocols.dataset_protocol("custom_name", 7) == dict(protocols.dataset_protocol("cifar10"), topk=7)
    assert protocols.dataset_protocol("nus_wide")["topk"] == 5000
    assert protocols.dataset_protocol("flickr")["topk"] == 5000
    assert protocols.dataset_protocol("demo", None)["topk"] is None
    assert protocols.dataset_protocol("demo", 100)["topk"] == 100
    with pytest.raises(UserError, match="has no preset protocol"):
        protocols.dataset_protocol("demo")
    assert comparison.method_dir("o", "CNNH*", 48) == os.path.join("o", "methods", "CNNH-star_48")
    assert comparison.parse_baseline_options(["ksh:n_anchors=30", "ksh:tol=0.5"]) == {
        "ksh": {"n_anchors": 30, "tol": 0.5}}


def test_end_to_end_runs_imports_and_baselines(tmp_path, rng, features):
    paths, ((Xt, Lt), (Xq, Lq), (Xd, Ld)) = features
    runs = tmp_path / "runs"
    for seed in (0, 1):
        write_metrics(runs / f"dhn_16_{seed}", metrics_doc("DHN", "cifar10", 16, seed, 0.7 + seed / 50))
    # Imported codes: .npy without labels (labels from --features), and .h5 carrying its labels.
    qB = np.where(rng.random((30, 16)) < 0.5, 1, -1).astype(np.int8)
    dB = np.where(rng.random((200, 16)) < 0.5, 1, -1).astype(np.int8)
    np.save(tmp_path / "q.npy", qB)
    np.save(tmp_path / "d.npy", dB)
    for name, B, L in (("q01.h5", qB, Lq), ("d01.h5", dB, Ld)):
        with h5py.File(tmp_path / name, "w") as f:
            f["B"] = ((B + 1) // 2).astype(np.uint8).T  # 0/1, stored K x N as MATLAB toolboxes do
            f["labels"] = L
    out = tmp_path / "out"
    compare.main(["--dataset", "cifar10", "--runs", str(runs), "--out", str(out),
                  "--import", f"DPSH:16:{tmp_path / 'q.npy'}:{tmp_path / 'd.npy'}",
                  "--import", f"Other*:16:{tmp_path / 'q01.h5'}:{tmp_path / 'd01.h5'}",
                  "--baselines", "lsh", "sh", "itq", "itq-cca", "ksh", "--features", *paths,
                  "--bits", "8", "16", "--seed", "3", *FAST])
    made = sorted(os.listdir(out / "methods"))
    assert made == sorted(["DPSH_16", "Other-star_16"] + [f"{b}_{k}" for b in ("lsh", "sh", "itq", "itq-cca", "ksh")
                                                         for k in (8, 16)])
    want = plain_map(qB, dB, Lq, Ld)
    for folder in ("DPSH_16", "Other-star_16"):
        doc = json.loads((out / "methods" / folder / "metrics.json").read_text())
        assert doc["metrics"]["map"] == pytest.approx(want, abs=1e-12)
        assert doc["dataset"] == "cifar10" and doc["seed"] is None and doc["conventions"]["topk"] is None
        assert (out / "methods" / folder / "precision_at_n.csv").exists()
    for name in ("itq-cca", "ksh"):
        options = {"ksh": dict(n_anchors=30, n_labeled=120, max_iter=20)}.get(name, {})
        model = make_baseline(name, 8, seed=3, **options).fit(Xt, Lt)
        doc = json.loads((out / "methods" / f"{name}_8" / "metrics.json").read_text())
        assert doc["metrics"]["map"] == pytest.approx(plain_map(model.encode(Xq), model.encode(Xd), Lq, Ld), abs=1e-12)
        assert doc["seed"] == 3 and doc["inputs"]["baseline"]["bits"] == 8
    t1 = table_rows(out / "table1.csv")
    assert list(t1)[:1] == ["DHN"] and {"KSH", "ITQ-CCA", "SH", "ITQ", "LSH", "DPSH", "Other*"} <= set(t1)
    assert float(t1["DHN"]["ours_16"]) == pytest.approx(0.71) and t1["DHN"]["n_16"] == "2"
    assert t1["DPSH"]["ours_16"] == f"{want:.6f}" and t1["KSH"]["paper_12"] == "0.303"
    for name in ("fig_a_precision_radius2", "fig_b_pr_curve_16bits", "fig_c_precision_at_n_16bits"):
        assert (out / f"{name}.png").stat().st_size > 0
        assert (out / f"{name}.pdf").read_bytes().startswith(b"%PDF")
    assert "DPSH" in (out / "table1.md").read_text() and "\\bottomrule" in (out / "table1.tex").read_text()

    # Again into the same folder, collecting it as runs: refused without --force, then the
    # methods made now replace their earlier results instead of counting twice.
    again = ["--dataset", "cifar10", "--runs", str(runs), str(out), "--out", str(out),
             "--baselines", "lsh", "--features", *paths, "--bits", "8"]
    with pytest.raises(UserError, match="already exists"):
        compare.main(again)
    compare.main(again + ["--force"])
    assert table_rows(out / "table1.csv")["LSH"]["n_8"] == "1"


def test_build_comparison_from_a_folder_of_runs(tmp_path):
    for bits in (12, 32):
        write_metrics(tmp_path / "runs" / f"dhn_{bits}", metrics_doc("DHN", "nus_wide", bits, 0, 0.7))
    recs = records.collect_records([tmp_path / "runs"])
    paths = comparison.build_comparison("nus_wide", recs, tmp_path / "out")
    assert sorted(os.path.basename(p) for p in paths) == sorted(
        os.path.basename(p) for p in comparison.comparison_outputs(tmp_path / "out", 32))
    assert table_rows(tmp_path / "out" / "table1.csv")["DHN"]["paper_32"] == "0.748"
    before = (tmp_path / "out" / "table1.csv").read_text()
    with pytest.raises(UserError, match="table1.md: already exists"):
        comparison.build_comparison("nus_wide", recs[:1], tmp_path / "out")
    assert (tmp_path / "out" / "table1.csv").read_text() == before


def bad_cases(tmp_path, rng):
    runs = tmp_path / "runs"
    write_metrics(runs / "ok", metrics_doc("DHN", "cifar10", 16, 0, 0.7))
    bad = tmp_path / "bad" / "metrics.json"
    bad.parent.mkdir()
    bad.write_text('{"method": "DHN", "bits": 16')
    other = write_metrics(tmp_path / "other", metrics_doc("DHN", "flickr", 16, 0, 0.7))
    np.save(tmp_path / "q8.npy", np.ones((5, 8), np.int8))
    np.save(tmp_path / "d8.npy", np.ones((9, 8), np.int8))
    np.save(tmp_path / "ql.npy", np.eye(3, dtype=np.uint8)[np.arange(5) % 3])
    np.save(tmp_path / "dl.npy", np.eye(3, dtype=np.uint8)[np.arange(9) % 3])
    out = str(tmp_path / "out")
    imp = f"X:16:{tmp_path / 'q8.npy'}:{tmp_path / 'd8.npy'}"
    return [
        (["--dataset", "cifar10", "--runs", str(tmp_path / "bad"), "--out", out], f"{bad}: not a valid metrics.json"),
        (["--dataset", "mnist", "--runs", str(runs), "--out", out], "dataset 'mnist' has no preset protocol"),
        (["--dataset", "cifar10", "--runs", other, "--out", out], "a run of dataset 'flickr', not 'cifar10'"),
        (["--dataset", "cifar10", "--import", imp, "--labels", str(tmp_path / "ql.npy"), str(tmp_path / "dl.npy"),
          "--out", out], "q8.npy: codes of 8 bits, but --import says X has 16"),
        (["--dataset", "cifar10", "--import", "X:abc", "--out", out], "expected NAME:BITS:QUERY_CODES:DB_CODES"),
        (["--dataset", "cifar10", "--import", imp, "--import", imp, "--out", out], "X 16 bits is asked for twice"),
        (["--dataset", "cifar10", "--baselines", "itq", "--out", out], "--baselines needs --features"),
        (["--dataset", "cifar10", "--baselines", "itq", "--features", *[str(tmp_path / "q8.npy")] * 3,
          "--bits", "8", "--out", out], "q8.npy: not a readable HDF5 features file"),
        (["--dataset", "cifar10", "--baselines", "itq", "--features", *[str(tmp_path / "q8.npy")] * 3,
          "--baseline-option", "ksh:n_anchors=3", "--out", out], "--baseline-option for ksh, which is not"),
        (["--dataset", "cifar10", "--out", out], "nothing to compare"),
    ]


def test_bad_input_is_a_user_error_and_writes_nothing(tmp_path, rng):
    for argv, message in bad_cases(tmp_path, rng):
        with pytest.raises(UserError) as e:
            compare.main(argv)
        assert message in str(e.value) and "\n" not in str(e.value)
        assert not os.path.exists(tmp_path / "out")


@pytest.mark.parametrize("case", [0, 1, 3])  # malformed metrics.json, unknown dataset, mismatched bits
def test_bad_input_from_the_shell_is_one_line_exit_2(tmp_path, rng, case):
    argv, message = bad_cases(tmp_path, rng)[case]
    proc = run_cli(argv)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


def test_compare_names_the_runs_backbone_and_refuses_runs_of_two(tmp_path):
    # Runs encoded on another backbone record it (metrics.json "backbone"); compare's tables and
    # figures name it, as the per-dataset commands' summaries do, and a table of runs on two
    # backbones (here a vgg16 run beside one on the paper's network) is refused, writing nothing.
    for bits in (12, 32):
        write_metrics(tmp_path / "runs" / f"dhn_{bits}",
                      dict(metrics_doc("DHN", "cifar10", bits, 0, 0.7), backbone="vgg16"))
    compare.main(["--dataset", "cifar10", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out")])
    assert "vgg16 backbone" in (tmp_path / "out" / "table1.md").read_text()
    write_metrics(tmp_path / "runs" / "dhnq_12", metrics_doc("DHN-Q", "cifar10", 12, 0, 0.6))
    with pytest.raises(UserError, match=r"dhnq_12/metrics.json: a run on the caffenet/alexnet .* backbone, but "
                                        r".*dhn_12/metrics.json is on the vgg16 backbone"):
        compare.main(["--dataset", "cifar10", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out2")])
    assert not (tmp_path / "out2").exists()
    write_metrics(tmp_path / "bad", dict(metrics_doc("DHN", "cifar10", 12, 0, 0.7), backbone="resnet"))
    with pytest.raises(UserError, match=r"bad/metrics.json: 'backbone' must be one of caffenet, .*got 'resnet'"):
        records.read_record(tmp_path / "bad" / "metrics.json")


def test_a_records_backbone_is_the_codes_arch_when_not_the_papers():
    from reproduce.evaluation.codes import codes_backbone

    class Codes:                      # what codes_backbone reads of a CodeFile
        def __init__(self, attrs):
            self.attrs = attrs

    assert codes_backbone([Codes({"arch": "tv-resnet50"})] * 2) == "tv-resnet50"
    assert codes_backbone([Codes({"arch": "caffenet"})] * 2) is None       # the paper's: unnamed
    assert codes_backbone([Codes({})] * 2) is None                          # another program's codes
    assert codes_backbone([Codes({"arch": "vgg16"}), Codes({"arch": "caffenet"})]) is None   # --allow-mixed
    doc = records.evaluate_record("DHN", None, np.ones((2, 4)), np.ones((3, 4)), np.eye(2, 2), np.eye(3, 2)[:, :2],
                                  records.protocol(), backbone="vgg16")
    assert doc["backbone"] == "vgg16"
    assert "backbone" not in records.evaluate_record("DHN", None, np.ones((2, 4)), np.ones((3, 4)), np.eye(2, 2),
                                                     np.eye(3, 2)[:, :2], records.protocol())


def test_baselines_record_their_features_backbone_and_are_not_compared_with_runs_of_another(tmp_path, features):
    # A baseline fitted on features encoded on another backbone records it, as a DHN run's record
    # does: a per-dataset command's metrics/ folder of a tv-* run (DHN and LSH on its features) is
    # one backbone to compare, and a baseline on features of another backbone than the runs' is
    # refused, writing nothing (it once recorded none: the tv-* run's own folder was refused and
    # LSH on tv-resnet50 features stood unnamed beside runs of the paper's network).
    paths, _ = features
    for p in paths:
        with h5py.File(p, "r+") as f:
            f.attrs["arch"] = "tv-resnet50"
    docs = comparison.evaluate_baselines("cifar10", ["lsh"], [8], paths, log=lambda *a: None)
    assert docs[0]["backbone"] == "tv-resnet50"
    write_metrics(tmp_path / "runs" / "dhn_8", dict(metrics_doc("DHN", "cifar10", 8, 0, 0.7), backbone="tv-resnet50"))
    write_metrics(tmp_path / "runs" / "lsh_8", dict(docs[0], method="LSH", seed=0))
    compare.main(["--dataset", "cifar10", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out")])
    assert "tv-resnet50 backbone" in (tmp_path / "out" / "table1.md").read_text()
    write_metrics(tmp_path / "paper" / "dhn_8", metrics_doc("DHN", "cifar10", 8, 0, 0.7))
    with pytest.raises(UserError, match=r"train\.h5: a run on the tv-resnet50 backbone, but .*dhn_8/metrics\.json "
                                        r"is on the caffenet/alexnet"):
        compare.main(["--dataset", "cifar10", "--runs", str(tmp_path / "paper"), "--baselines", "lsh",
                      "--features", *paths, "--bits", "8", "--out", str(tmp_path / "out2")])
    assert not (tmp_path / "out2").exists()
    for p in paths:
        with h5py.File(p, "r+") as f:
            f.attrs["arch"] = "caffenet"                   # the paper's network: unnamed, as before
    assert "backbone" not in comparison.evaluate_baselines("cifar10", ["lsh"], [8], paths, log=lambda *a: None)[0]


def test_imported_codes_of_this_package_name_their_backbone(tmp_path, rng):
    # reproduce.encode files imported with --import say their arch: beside runs of another
    # backbone they are refused, writing nothing; codes of another program (no arch) are not.
    write_metrics(tmp_path / "runs" / "dhn_8", dict(metrics_doc("DHN", "cifar10", 8, 0, 0.7), backbone="tv-alexnet"))
    paths = []
    for name, n in (("q", 30), ("d", 60)):
        with h5py.File(tmp_path / f"{name}.h5", "w") as f:
            f["codes"] = np.where(rng.random((n, 8)) < 0.5, -1, 1).astype(np.int8)
            f["labels"] = np.eye(4, dtype=np.uint8)[rng.integers(0, 4, n)]
            f.attrs["arch"] = "tv-resnet50"
        paths.append(str(tmp_path / f"{name}.h5"))
    argv = ["--dataset", "cifar10", "--runs", str(tmp_path / "runs"), "--import", f"X:8:{paths[0]}:{paths[1]}"]
    with pytest.raises(UserError, match=r"q\.h5: a run on the tv-resnet50 backbone, but .*dhn_8/metrics\.json "
                                        r"is on the tv-alexnet backbone"):
        compare.main(argv + ["--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()
    for p in paths:
        with h5py.File(p, "r+") as f:
            del f.attrs["arch"]
    compare.main(argv + ["--out", str(tmp_path / "out")])
    assert "tv-alexnet backbone" in (tmp_path / "out" / "table1.md").read_text()
