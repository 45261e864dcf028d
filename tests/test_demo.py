"""The offline demo: the whole chain on scikit-learn's digits, and its committed example output."""
import json
import os

import pytest
import torch

from reproduce import demo
from reproduce.errors import UserError
from conftest import REPO


def test_demo_runs_the_whole_chain(tmp_path, capsys):
    argv = ["--out", str(tmp_path), "--work", str(tmp_path / "work"), "--bits", "12", "--seeds", "0",
            "--max-iter", "300", "--baselines", "lsh", "itq-cca", "--methods", "cnnh"]
    demo.main(argv)
    printed = capsys.readouterr().out
    assert "What this demo changes from the paper's setup" in printed
    for name in ("table1.md", "table1.csv", "table1.tex", "table2.md", "fig_a_precision_radius2.png",
                 "fig_b_pr_curve_12bits.png", "fig_c_precision_at_n_12bits.pdf", "sweep.md", "run.json"):
        assert (tmp_path / name).exists(), name
    methods = sorted(os.listdir(tmp_path / "metrics"))
    assert methods == ["CNNH_12bits_seed0", "DHN-B_12bits_seed0", "DHN-E_12bits_seed0", "DHN-Q_12bits_seed0",
                       "DHN_12bits_seed0", "ITQ-CCA_12bits_seed0", "LSH_12bits_seed0"]
    dhn = json.load(open(tmp_path / "metrics" / "DHN_12bits_seed0" / "metrics.json"))
    lsh = json.load(open(tmp_path / "metrics" / "LSH_12bits_seed0" / "metrics.json"))
    assert dhn["metrics"]["num_queries"] == 100 and dhn["metrics"]["num_database"] == 1697
    assert dhn["metrics"]["map"] > lsh["metrics"]["map"] + 0.2      # the learned codes beat random projections
    final = tmp_path / "work" / "train" / "dhn_12bits_seed0" / "final.pth"
    meta = torch.load(final, weights_only=True)["meta"]
    assert meta["last_loss"] < meta["first_loss"]
    assert "train/dhn_12bits_seed0" in dhn["identity"]["lineage"]       # the metrics know their model
    # Built from the plan: a re-run finds every job done and changes nothing; --plan says so.
    stamp = final.stat().st_mtime_ns
    demo.main(argv)
    assert final.stat().st_mtime_ns == stamp
    capsys.readouterr()
    demo.main(argv + ["--plan"])
    assert capsys.readouterr().out.splitlines()[-1].endswith("jobs: 32 done")
    # Other settings into the same folders: refused before any work, saying what changed.
    with pytest.raises(UserError, match=r"sweep/dhn_12bits/lr0.001: trained with max_iter 300, now 200"):
        demo.main([a if a != "300" else "200" for a in argv])
    assert final.stat().st_mtime_ns == stamp


def test_committed_demo_output_is_complete():
    out = REPO / "results" / "demo"
    run = json.load(open(out / "run.json"))
    assert run["config"]["bits"] == [12, 24, 32, 48] and run["config"]["seeds"] == [0, 1, 2]
    for n in (1, 2):
        for ext in ("md", "csv", "tex"):
            assert (out / f"table{n}.{ext}").stat().st_size > 0
    # DHN, -B, -Q, -E and CNNH, CNNH*, DNNH x 4 bits x 3 seeds + 7 shallow baselines x 4 bits
    assert len(os.listdir(out / "metrics")) == 4 * 3 * (4 + 3) + 4 * 7
    table1 = open(out / "table1.md").read()
    from reproduce.reporting.paper import TABLE1_METHODS
    for method in TABLE1_METHODS:                      # all eleven rows, each with a number
        row = next(line for line in table1.splitlines() if line.startswith(f"| {method} |"))
        assert row.split("|")[2].strip() not in ("", "\u2014"), method
