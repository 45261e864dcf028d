"""The evaluate command: every accepted file format and orientation, the outputs and their
overwrite rule, and one-line errors with exit status 2 for bad input."""
import csv
import hashlib
import json
import subprocess
import sys

import h5py
import numpy as np
import pytest
import scipy.io

from reproduce import evaluate
from reproduce.cli import run_cli
from reproduce.data.lists import write_list
from reproduce.errors import UserError
from reproduce.evaluation import codes as code_files, records
from reproduce.evaluation.metrics import evaluate_codes

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]


def make_set(rng, n, bits=12, classes=5):
    """Real-valued codes (like tanh outputs, with exact zeros) and multi-hot labels."""
    codes = np.tanh(rng.standard_normal((n, bits))).astype(np.float32)
    codes[0, :3] = 0.0                      # sign rule: 0 -> +1
    labels = (rng.random((n, classes)) < 0.3).astype(np.uint8)
    return codes, labels


def write_encode_h5(path, codes, labels, **attrs):
    """A file as reproduce.encode writes it."""
    with h5py.File(path, "w") as f:
        f.create_dataset("codes", data=codes)
        f.create_dataset("labels", data=labels)
        f.create_dataset("paths", data=[f"img{i}.jpg" for i in range(len(codes))],
                         dtype=h5py.string_dtype("utf-8"))
        f.attrs.update({"format": "reproduce-dhn-codes/1", "arch": "caffenet",
                        "bits": codes.shape[1], **attrs})
    return str(path)


def sign(codes):
    return np.where(codes >= 0, 1, -1)


@pytest.fixture
def encoded(tmp_path, rng):
    qc, ql = make_set(rng, 30)
    dc, dl = make_set(rng, 200)
    q = write_encode_h5(tmp_path / "q.h5", qc, ql, method="DHN", dataset="cifar10", seed=3)
    d = write_encode_h5(tmp_path / "db.h5", dc, dl)
    return q, d, (qc, dc, ql, dl)


def read_csv(path):
    with open(path) as f:
        rows = list(csv.reader(f))
    return rows[0], np.array(rows[1:], dtype=float)


def test_encode_files_give_metrics_json_and_curves(encoded, tmp_path):
    q, d, (qc, dc, ql, dl) = encoded
    out = tmp_path / "out"
    evaluate.main(["--query", q, "--database", d, "--out", str(out), "--topk", "50"])
    doc = json.loads((out / "metrics.json").read_text())
    want = evaluate_codes(sign(qc), sign(dc), ql, dl, topk=50)
    assert doc["metrics"] == want
    assert (doc["method"], doc["dataset"], doc["seed"], doc["bits"]) == ("DHN", "cifar10", 3, 12)
    assert doc["conventions"] == {"topk": 50, "ties": "index", "zero_hit": "skip", "radius": 2,
                                  "ns": list(range(100, 1001, 100)), "ranking": "hamming",
                                  "sign_rule": records.SIGN_RULE}
    qi = doc["inputs"]["query"]
    assert qi["sha1"] == hashlib.sha1(open(q, "rb").read()).hexdigest()
    assert (qi["format"], qi["orientation"], qi["n"], qi["bits"]) == ("reproduce.encode", "N x K", 30, 12)
    header, pr = read_csv(out / "pr_curve.csv")
    assert header == ["radius", "precision", "recall"]
    np.testing.assert_array_equal(pr[:, 1], want["pr_curve"]["precision"])
    header, pn = read_csv(out / "precision_at_n.csv")
    assert header == ["n", "precision", "recall"] and pn[:, 0].tolist() == want["precision_at_n"]["n"]
    np.testing.assert_array_equal(pn[:, 2], want["precision_at_n"]["recall"])


def test_options_override_attributes_and_conventions_are_recorded(encoded, tmp_path):
    q, d, (qc, dc, ql, dl) = encoded
    out = tmp_path / "o"
    evaluate.main(["--query", q, "--database", d, "--out", str(out), "--ties", "expected",
                   "--zero-hit", "zero", "--radius", "3", "--ns", "5", "500", "--method", "DHN-Q",
                   "--seed", "7", "--dataset", "flickr"])
    doc = json.loads((out / "metrics.json").read_text())
    assert (doc["method"], doc["dataset"], doc["seed"]) == ("DHN-Q", "flickr", 7)
    c = doc["conventions"]
    assert (c["topk"], c["ties"], c["zero_hit"], c["radius"], c["ns"]) == (None, "expected", "zero", 3, [5, 500])
    assert doc["metrics"] == evaluate_codes(sign(qc), sign(dc), ql, dl, ties="expected",
                                            zero_hit="zero", radius=3, ns=[5, 500])


def test_continuous_ranks_by_inner_product_without_sign(encoded, tmp_path):
    q, d, (qc, dc, ql, dl) = encoded
    out = tmp_path / "b"
    evaluate.main(["--query", q, "--database", d, "--out", str(out), "--continuous"])
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["conventions"]["ranking"] == "inner_product"
    assert doc["metrics"]["map"] == evaluate_codes(qc, dc, ql, dl, binary=False)["map"]
    assert doc["metrics"]["map"] != evaluate_codes(sign(qc), sign(dc), ql, dl)["map"]
    assert not (out / "pr_curve.csv").exists() and (out / "precision_at_n.csv").exists()


def test_existing_outputs_same_ok_different_refused_unless_force(encoded, tmp_path):
    q, d, _ = encoded
    out = tmp_path / "o"
    base = ["--query", q, "--database", d, "--out", str(out)]
    evaluate.main(base)
    first = (out / "metrics.json").read_text()
    evaluate.main(base)                                  # same evaluation: fine
    with pytest.raises(UserError, match="metrics.json: exists with different content"):
        evaluate.main(base + ["--topk", "10"])
    assert (out / "metrics.json").read_text() == first   # nothing partially written
    evaluate.main(base + ["--topk", "10", "--force"])
    assert json.loads((out / "metrics.json").read_text())["conventions"]["topk"] == 10
    evaluate.main(base + ["--continuous", "--force"])     # a stale PR curve does not survive
    assert not (out / "pr_curve.csv").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp")]


def test_mat_codes_transposed_zero_one_with_transposed_labels(tmp_path, rng):
    """MATLAB toolbox style: B stored K x N as 0/1 (logical), labels C x N."""
    qc, ql = make_set(rng, 20, bits=16)
    dc, dl = make_set(rng, 90, bits=16)
    for name, c, lab in (("q.mat", qc, ql), ("d.mat", dc, dl)):
        scipy.io.savemat(tmp_path / name, {"B": (c >= 0).T, "L": lab.T.astype(float)})
    out = tmp_path / "o"
    evaluate.main(["--query", str(tmp_path / "q.mat"), "--database", str(tmp_path / "d.mat"),
                   "--out", str(out)])
    doc = json.loads((out / "metrics.json").read_text())
    info = doc["inputs"]["database"]
    assert (info["orientation"], info["values"], info["codes_key"], info["labels_key"]) == \
        ("K x N, transposed", "0/1", "B", "L")
    assert doc["metrics"] == evaluate_codes(sign(qc), sign(dc), ql, dl)


def test_mat_packed_codes_class_vectors_and_keys(tmp_path, rng):
    """compactbit-packed uint8 codes (12 bits in 2 bytes, LSB first), 1-based class vectors, and
    query and database in one file under other names."""
    q = rng.choice([-1, 1], (15, 12))
    d = rng.choice([-1, 1], (70, 12))
    qy, dy = rng.integers(1, 5, 15), rng.integers(1, 5, 70)

    def compactbit(b):     # the MATLAB function, bit j -> byte j // 8, bit j % 8 (LSB first)
        out = np.zeros((b.shape[0], 2), np.uint8)
        for j in range(b.shape[1]):
            out[:, j // 8] |= ((b[:, j] > 0).astype(np.uint8) << (j % 8))
        return out
    path = str(tmp_path / "all.mat")
    scipy.io.savemat(path, {"B_tst": compactbit(q), "B_trn": compactbit(d), "tst_y": qy[None, :],
                            "trn_y": dy[:, None]})
    args = ["--query", path, "--database", path, "--out", str(tmp_path / "o"), "--bits", "12",
            "--query-codes-key", "B_tst", "--query-labels-key", "tst_y",
            "--database-codes-key", "B_trn", "--database-labels-key", "trn_y"]
    evaluate.main(args)
    doc = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert doc["bits"] == 12 and doc["inputs"]["query"]["values"].startswith("packed")
    onehot = lambda y: np.eye(5, dtype=np.uint8)[y]   # noqa: E731
    assert doc["metrics"] == evaluate_codes(q, d, onehot(qy), onehot(dy))


def test_hdf5_foreign_names_v73_mat_npz_npy_and_list_labels(tmp_path, rng):
    qc, ql = make_set(rng, 25, bits=10)
    dc, dl = make_set(rng, 80, bits=10)
    want = evaluate_codes(sign(qc), sign(dc), ql, dl)
    # MATLAB v7.3 (HDF5, column-major: arrays appear transposed) and another .h5 naming
    with h5py.File(tmp_path / "q.mat", "w") as f:
        f["hash_codes"] = sign(qc).T.astype(np.float64)
        f["gnd"] = ql.T.astype(np.float64)
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["B"] = sign(dc).astype(np.int8)
        f["labels"] = dl
    out = tmp_path / "a"
    evaluate.main(["--query", str(tmp_path / "q.mat"), "--database", str(tmp_path / "d.h5"), "--out", str(out)])
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["metrics"] == want and doc["inputs"]["query"]["orientation"] == "K x N, transposed"
    assert doc["inputs"]["query"]["values"] == "±1" and doc["method"] is None
    # .npz and .npy with labels from a list file and from .npy
    np.savez(tmp_path / "q.npz", codes=sign(qc), labels=ql)
    np.save(tmp_path / "d.npy", (dc >= 0).astype(np.uint8))
    write_list(tmp_path / "d.txt", [f"x{i}.jpg" for i in range(80)], dl)
    out = tmp_path / "b"
    evaluate.main(["--query", str(tmp_path / "q.npz"), "--database", str(tmp_path / "d.npy"),
                   "--database-labels", str(tmp_path / "d.txt"), "--out", str(out)])
    assert json.loads((out / "metrics.json").read_text())["metrics"] == want
    np.save(tmp_path / "dl.npy", dl)
    codes, labels = code_files.load_codes(tmp_path / "q.npz")
    assert codes.dtype == np.int8 and (codes == sign(qc)).all() and (labels == ql).all()
    f = code_files.read_codes(tmp_path / "d.npy", labels=code_files.read_external_labels(tmp_path / "dl.npy"))
    assert (f.binary_codes() == sign(dc)).all() and f.info["values"] == "0/1"


def test_real_valued_foreign_codes_need_sign(tmp_path, rng):
    qc, ql = make_set(rng, 10)
    dc, dl = make_set(rng, 40)
    np.savez(tmp_path / "q.npz", codes=qc, labels=ql)
    np.savez(tmp_path / "d.npz", codes=dc, labels=dl)
    args = ["--query", str(tmp_path / "q.npz"), "--database", str(tmp_path / "d.npz"),
            "--out", str(tmp_path / "o")]
    with pytest.raises(UserError, match=r"q.npz: codes are not ±1 or 0/1 .*--sign"):
        evaluate.main(args)
    evaluate.main(args + ["--sign"])
    doc = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert doc["metrics"] == evaluate_codes(sign(qc), sign(dc), ql, dl)


# ------------------------------------------------------------------------------- bad input
def bad_case(tmp_path, rng, case):
    """Write the files of a bad-input case; returns (argv, text the message must contain)."""
    qc, ql = make_set(rng, 10)
    dc, dl = make_set(rng, 40)
    q, d = tmp_path / "q.h5", tmp_path / "d.h5"
    if case == "bits":
        dc = dc[:, :8]
    if case == "classes":
        dl = dl[:, :4]
    if case == "nan":
        dc[5, 2] = np.nan
    if case == "empty":
        qc, ql = qc[:0], ql[:0]
    write_encode_h5(q, qc, ql)
    write_encode_h5(d, dc, dl)
    expect = {"bits": "q.h5: 12-bit codes, but", "classes": "q.h5: labels have 5 classes",
              "nan": "d.h5: codes contain NaN", "empty": "q.h5: the code set is empty",
              "missing": "nothing.h5: no such code file", "truncated": "d.h5: cannot read",
              "binary": "d.npz: codes are not ±1 or 0/1", "labels": "d.npz: labels must be 0/1"}[case]
    if case == "missing":
        d = tmp_path / "nothing.h5"
    if case == "truncated":
        d.write_bytes(d.read_bytes()[:700])
    if case in ("binary", "labels"):
        d = tmp_path / "d.npz"
        codes = sign(dc) if case == "labels" else sign(dc) * 0.5
        np.savez(d, codes=codes, labels=dl * (2 if case == "labels" else 1))
    return ["--query", str(q), "--database", str(d), "--out", str(tmp_path / "o")], expect


@pytest.mark.parametrize("case", ["bits", "classes", "nan", "empty", "missing", "truncated",
                                  "binary", "labels"])
def test_bad_input_is_one_line_exit_2(tmp_path, rng, capsys, case):
    argv, expect = bad_case(tmp_path, rng, case)
    with pytest.raises(SystemExit) as e:
        run_cli(evaluate.main, argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and expect in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("case", ["bits", "truncated"])
def test_bad_input_from_the_shell(tmp_path, rng, case):
    argv, expect = bad_case(tmp_path, rng, case)
    r = subprocess.run([sys.executable, "-m", "reproduce.evaluate", *argv], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr and expect in r.stderr
