"""Table 1 / Table 2 writers (reproduce.reporting.tables) and the paper's figures (reproduce.reporting.figures).

The metrics.json files are built here by `write_metrics` (the schema reproduce.evaluate writes),
so these tests do not depend on the evaluation code."""
import csv
import io
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from reproduce.errors import UserError
from reproduce.evaluation import records
from reproduce.reporting import figures, paper as paper_facts, tables as reports

DATASETS = ("nus_wide", "cifar10", "flickr")
CONV = {"topk": None, "ties": "index", "zero_hit": "skip", "radius": 2, "ranking": "hamming"}


def metrics_doc(method, dataset, bits, seed, map_value, rng=None, conventions=CONV):
    """A metrics.json document with the keys of reproduce.evaluation.metrics.evaluate_codes."""
    rng = rng or np.random.default_rng(seed or 0)
    radius = list(range(bits + 1))
    recall = np.sort(rng.random(bits + 1)).tolist()
    precision = rng.random(bits + 1).tolist()
    ns = list(range(100, 1001, 100))
    return {"method": method, "dataset": dataset, "bits": bits, "seed": seed,
            "conventions": dict(conventions),
            "metrics": {"map": map_value, "precision_within_radius": float(rng.random()),
                        "recall_within_radius": float(rng.random()),
                        "pr_curve": {"radius": radius, "precision": precision, "recall": recall},
                        "precision_at_n": {"n": ns, "precision": rng.random(10).tolist(),
                                           "recall": rng.random(10).tolist()}},
            "inputs": {}}


def write_metrics(folder, doc):
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "metrics.json")
    with open(path, "w") as f:
        json.dump(doc, f)
    return path


def paper_csv_rows():
    """The package's paper_tables.csv read plainly, next to this test's expectations."""
    path = os.path.join(os.path.dirname(reports.__file__), "paper_tables.csv")
    with open(path) as f:
        return list(csv.DictReader(f))


def record(method, bits, seed, value, dataset="cifar10", conventions=CONV, path=None):
    doc = metrics_doc(method, dataset, bits, seed, value, conventions=conventions)
    return {"method": method, "dataset": dataset, "bits": bits, "seed": seed, "map": value,
            "conventions": dict(conventions), "metrics": doc["metrics"],
            "path": path or f"<{method}-{bits}-{seed}>"}


def parse_csv(text):
    return {row["method"]: row for row in csv.DictReader(io.StringIO(text))}


# ----------------------------------------------------------------------------- paper numbers

def test_paper_tables_have_every_method_dataset_and_bits():
    paper = paper_facts.load_paper_tables()
    for table, methods in ((1, paper_facts.TABLE1_METHODS), (2, paper_facts.TABLE2_METHODS)):
        for m in methods:
            for d in DATASETS:
                for b in (12, 24, 32, 48):
                    assert 0 < paper[(table, m, d, b)] < 1
    assert len(paper) == 11 * 3 * 4 + 4 * 3 * 4
    # The paper prints DHN CIFAR-10 48 bits differently in its two tables; both are kept.
    assert paper[(1, "DHN", "cifar10", 48)] == 0.621 and paper[(2, "DHN", "cifar10", 48)] == 0.620


def test_paper_tables_equal_the_shared_reference(shared_reference):
    with open(shared_reference / "paper_tables.csv") as f:
        ref = {(int(r["table"]), r["method"], r["dataset"], int(r["bits"])): float(r["map"])
               for r in csv.DictReader(f)}
    assert paper_facts.load_paper_tables() == ref


@pytest.mark.parametrize("dataset", DATASETS)
def test_paper_column_of_every_table_matches_the_paper_csv(dataset):
    tables = {n: parse_csv(reports.format_csv(reports.build_table([], dataset, n))) for n in (1, 2)}
    rows = [r for r in paper_csv_rows() if r["dataset"] == dataset]
    assert len(rows) == 11 * 4 + 4 * 4
    for r in rows:
        got = tables[int(r["table"])][r["method"]]
        assert got[f"paper_{r['bits']}"] == r["map"]
        assert got[f"ours_{r['bits']}"] == "" and got[f"diff_{r['bits']}"] == ""
    assert list(tables[1]) == list(paper_facts.TABLE1_METHODS)
    assert list(tables[2]) == list(paper_facts.TABLE2_METHODS)


# ----------------------------------------------------------------------------- table numbers

def seeded_records(rng):
    """DHN at 12/48 bits with 3 seeds, LSH (lower case, as the baselines name it) with one seed,
    a method the paper does not have, and the DHN-B variant."""
    recs = []
    for bits in (12, 48):
        for seed in range(3):
            recs.append(record("DHN", bits, seed, float(rng.random())))
    recs.append(record("lsh", 48, 0, 0.125))
    recs.append(record("MyHash", 16, 0, 0.4))
    recs.append(record("DHN-B", 48, 0, 0.6, conventions=dict(CONV, ranking="inner_product")))
    for r in recs:
        r["method"] = paper_facts.canonical_method(r["method"])
    return records.check_records(recs, "cifar10")


def test_table1_means_std_differences_and_raw_values(rng):
    recs = seeded_records(rng)
    paper = paper_facts.load_paper_tables()
    table = reports.build_table(recs, "cifar10", 1)
    assert table.bits == [12, 16, 24, 32, 48]
    methods = [m for m, _ in table.rows]
    assert methods == list(paper_facts.TABLE1_METHODS) + ["MyHash"]  # DHN-B is Table 2 only
    rows = parse_csv(reports.format_csv(table))
    for bits in (12, 48):
        vals = [r["map"] for r in recs if r["method"] == "DHN" and r["bits"] == bits]
        mean = sum(vals) / 3
        std = (sum((v - mean) ** 2 for v in vals) / 2) ** 0.5  # sample std, ddof=1
        row = rows["DHN"]
        assert float(row[f"ours_{bits}"]) == pytest.approx(mean, abs=1e-6)
        assert float(row[f"std_{bits}"]) == pytest.approx(std, abs=1e-6)
        assert row[f"n_{bits}"] == "3"
        assert float(row[f"diff_{bits}"]) == pytest.approx(mean - paper[(1, "DHN", "cifar10", bits)], abs=1e-6)
        raw = dict(tok.split("=") for tok in row[f"runs_{bits}"].split())
        assert raw == {f"seed{s}": f"{v:.4f}" for s, v in enumerate(vals)}
    assert rows["LSH"]["ours_48"] == "0.125000" and rows["LSH"]["std_48"] == ""
    assert float(rows["LSH"]["diff_48"]) == pytest.approx(0.125 - 0.120)
    assert rows["MyHash"]["paper_16"] == "" and rows["MyHash"]["ours_16"] == "0.400000"
    assert rows["DNNH"]["ours_48"] == "" and rows["DNNH"]["paper_48"] == "0.581"


def test_table2_uses_its_own_paper_numbers_and_variants(rng):
    recs = seeded_records(rng)
    table = reports.build_table(recs, "cifar10", 2)
    rows = parse_csv(reports.format_csv(table))
    assert list(rows) == list(paper_facts.TABLE2_METHODS)
    assert rows["DHN"]["paper_48"] == "0.620"
    assert float(rows["DHN-B"]["diff_48"]) == pytest.approx(0.6 - 0.592)
    assert [users for _, users in table.conventions] == [["DHN"], ["DHN-B"]]


def test_markdown_columns_rows_and_seed_table(rng):
    recs = seeded_records(rng)
    text = reports.format_markdown(reports.build_table(recs, "cifar10", 1))
    lines = [l for l in text.splitlines() if l.startswith("|")]
    head = lines[0]
    ncol = head.count("|")
    main = lines[:2 + 12]
    assert all(l.count("|") == ncol for l in main)
    assert [l.split("|")[1].strip() for l in main[2:]] == list(paper_facts.TABLE1_METHODS) + ["MyHash"]
    dhn = main[2].split("|")[1:-1]
    assert dhn[0].strip() == "DHN" and "\u00b1" in dhn[1]
    assert dhn[2].strip() == "0.555" and re.fullmatch(r"[+-]\d\.\d{3}", dhn[3].strip())
    assert main[3].split("|")[2].strip() == reports.MISSING  # DNNH: no run
    assert "Per-seed MAP:" in text
    seeds = [l for l in lines[14:] if l.startswith("| DHN |")]
    assert len(seeds) == 2 and "seed0=" in seeds[0] and "seed2=" in seeds[0]


def test_latex_has_one_row_per_method_and_booktabs_structure(rng):
    recs = seeded_records(rng)
    recs.append(record("Z_B&C%", 48, 0, 0.3))
    table = reports.build_table(records.check_records(recs, "cifar10"), "cifar10", 1)
    tex = reports.format_latex(table)
    body = tex.split("\\midrule\n")[1].split("\\bottomrule")[0].strip().splitlines()
    assert len(body) == len(table.rows)
    ncol = 1 + 3 * len(table.bits)
    spec = re.search(r"\\begin\{tabular\}\{([lr]+)\}", tex).group(1)
    assert len(spec) == ncol
    for line, (method, _) in zip(body, table.rows):
        assert line.endswith("\\\\") and line.count("&") - line.count("\\&") == ncol - 1
    assert body[-1].startswith("Z\\_B\\&C\\%")
    for env in ("table", "tabular"):
        assert tex.count(f"\\begin{{{env}}}") == tex.count(f"\\end{{{env}}}") == 1
    assert tex.index("\\toprule") < tex.index("\\midrule") < tex.index("\\bottomrule")
    assert tex.count("{") == tex.count("}") + tex.count("\\{") - tex.count("\\}")
    assert "$\\pm$" in body[0] and "---" in body[1]
    used = set(re.findall(r"\\([a-zA-Z]+)", tex))
    assert used <= {"begin", "end", "centering", "small", "setlength", "tabcolsep", "caption",
                    "label", "toprule", "midrule", "bottomrule", "cmidrule", "multicolumn",
                    "Delta", "pm", "usepackage"}  # plain LaTeX + booktabs only


def test_dataset_without_paper_numbers_lists_only_runs():
    recs = records.check_records([record("DHN", 16, 0, 0.5, dataset="demo"),
                                  record("itq", 16, 0, 0.3, dataset="demo")], "demo")
    recs = [dict(r, method=paper_facts.canonical_method(r["method"])) for r in recs]
    t1 = reports.build_table(recs, "demo", 1)
    assert [m for m, _ in t1.rows] == ["DHN", "ITQ"] and t1.bits == [16]
    assert [m for m, _ in reports.build_table(recs, "demo", 2).rows] == ["DHN"]


# ----------------------------------------------------------------------------- collecting and writing

def test_collect_walks_folders_and_writes_all_formats(tmp_path, rng):
    for seed in range(2):
        write_metrics(tmp_path / "runs" / f"dhn_48_seed{seed}", metrics_doc("DHN", "flickr", 48, seed, 0.8 + seed / 100))
    write_metrics(tmp_path / "runs" / "deep" / "itq_12", metrics_doc("itq", "flickr", 12, 0, 0.5))
    recs = records.collect_records([tmp_path / "runs", tmp_path / "runs" / "deep"])  # ITQ reached twice
    assert sorted((r["method"], r["bits"], r["seed"]) for r in recs) == [("DHN", 48, 0), ("DHN", 48, 1), ("ITQ", 12, 0)]
    out = tmp_path / "out"
    paths = reports.write_tables(recs, "flickr", out)
    assert sorted(os.path.basename(p) for p in paths) == sorted(
        f"table{n}.{e}" for n in (1, 2) for e in ("md", "csv", "tex"))
    rows = parse_csv((out / "table1.csv").read_text())
    assert float(rows["DHN"]["ours_48"]) == pytest.approx(0.805)
    assert float(rows["ITQ"]["diff_12"]) == pytest.approx(0.5 - 0.544)  # paper: ITQ Flickr 12 bits
    with pytest.raises(UserError, match="table1.md: already exists"):
        reports.write_tables(recs, "flickr", out)
    reports.write_tables([r for r in recs if r["seed"] == 0 and r["method"] == "DHN"], "flickr", out,
                         overwrite=True)
    assert parse_csv((out / "table1.csv").read_text())["DHN"]["n_48"] == "1"


@pytest.mark.parametrize("content, message", [
    ("{not json", r"not a valid metrics.json \(line 1"),
    ("[1, 2]", "top level is list"),
    ('{"method": "DHN", "metrics": {"map": 0.5}}', "no 'bits' key"),
    ('{"method": "DHN", "bits": "48", "metrics": {"map": 0.5}}', "'bits' must be a positive integer"),
    ('{"method": "DHN", "bits": 48, "metrics": {"map": 1.5}}', r"metrics.map must be a number in \[0, 1\]"),
    ('{"method": "", "bits": 48, "metrics": {"map": 0.5}}', "'method' must be a non-empty string"),
    ('{"method": "DHN", "bits": 48, "seed": 0.5, "metrics": {"map": 0.5}}', "'seed' must be an integer"),
])
def test_malformed_metrics_json_names_the_file(tmp_path, content, message):
    path = tmp_path / "run" / "metrics.json"
    path.parent.mkdir()
    path.write_text(content)
    with pytest.raises(UserError, match=re.escape(str(path)) + ": (.*[ (])?" + message):
        records.collect_records([tmp_path])


def test_collect_refuses_missing_paths_empty_folders_duplicates_and_other_datasets(tmp_path):
    with pytest.raises(UserError, match="no such file or folder"):
        records.collect_records([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no metrics.json in this folder"):
        records.collect_records([tmp_path / "empty"])
    a = write_metrics(tmp_path / "a", metrics_doc("DHN", "cifar10", 48, 0, 0.6))
    b = write_metrics(tmp_path / "b", metrics_doc("DHN", "cifar10", 48, 0, 0.61))
    with pytest.raises(UserError, match=f"{re.escape(b)}: a second result for DHN 48 bits seed 0 "
                                        f"\\(the first is {re.escape(a)}\\)"):
        records.check_records(records.collect_records([a, b]), "cifar10")
    with pytest.raises(UserError, match=f"{re.escape(a)}: a run of dataset 'cifar10', not 'flickr'"):
        records.check_records(records.collect_records([a]), "flickr")
    c = write_metrics(tmp_path / "c", metrics_doc("DHN", "cifar10", 48, 1, 0.6, conventions=dict(CONV, topk=5000)))
    with pytest.raises(UserError, match=f"{re.escape(c)}: evaluated with other conventions"):
        reports.write_tables(records.collect_records([a, c]), "cifar10", tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- figures

def figure_records(rng, dataset="cifar10", bits_list=(12, 24, 32, 48)):
    recs = []
    for m in ("DHN", "DHN-B", "itq", "lsh", "Other"):
        for bits in bits_list:
            for seed in (0, 1):
                doc = metrics_doc(m, dataset, bits, seed, 0.5, rng=rng)
                if m == "DHN-B":  # inner-product ranking: no radius metrics (evaluate_codes gives None)
                    doc["metrics"].update(precision_within_radius=None, recall_within_radius=None, pr_curve=None)
                recs.append({"method": paper_facts.canonical_method(m), "dataset": dataset, "bits": bits,
                             "seed": seed, "map": 0.5, "conventions": {}, "metrics": doc["metrics"],
                             "path": f"<{m}{bits}{seed}>"})
    return recs


def test_panel_data_averages_over_seeds(rng):
    recs = figure_records(rng)
    a, b, c = figures.panel_data(recs, 48)
    assert list(a) == ["DHN", "ITQ", "LSH", "Other"]  # DHN-B has no radius numbers
    assert list(c) == ["DHN", "DHN-B", "ITQ", "LSH", "Other"] and "DHN-B" not in b
    itq = [r for r in recs if r["method"] == "ITQ"]
    for i, bits in enumerate((12, 24, 32, 48)):
        vals = [r["metrics"]["precision_within_radius"] for r in itq if r["bits"] == bits]
        assert a["ITQ"][0][i] == bits and a["ITQ"][1][i] == pytest.approx(np.mean(vals))
    at48 = [r["metrics"]["pr_curve"] for r in itq if r["bits"] == 48]
    np.testing.assert_allclose(b["ITQ"][0], (np.array(at48[0]["recall"]) + at48[1]["recall"]) / 2)
    np.testing.assert_allclose(b["ITQ"][1], (np.array(at48[0]["precision"]) + at48[1]["precision"]) / 2)


def test_figures_are_written_as_png_and_pdf(tmp_path, rng):
    recs = figure_records(rng, bits_list=(12, 32))  # no 48 bits: curves at the largest, 32
    paths = figures.write_figures(recs, "cifar10", tmp_path)
    names = sorted(os.path.basename(p) for p in paths)
    assert names == sorted(f"{n}.{e}" for n in ("fig_a_precision_radius2", "fig_b_pr_curve_32bits",
                                                "fig_c_precision_at_n_32bits") for e in ("png", "pdf"))
    for p in paths:
        head = open(p, "rb").read(8)
        assert head.startswith(b"\x89PNG" if p.endswith(".png") else b"%PDF")
        assert os.path.getsize(p) > 5000
    with pytest.raises(UserError, match="already exists"):
        figures.write_figures(recs, "cifar10", tmp_path)
    figures.write_figures(recs, "cifar10", tmp_path / "b48", bits=12)
    assert (tmp_path / "b48" / "fig_b_pr_curve_12bits.pdf").exists()


def test_figure_size_fonts_and_legend_below_the_data(rng):
    import matplotlib
    with matplotlib.rc_context(figures.FONT):
        figs = figures.make_figures(figure_records(rng), "CIFAR-10")
        for fig in figs.values():
            assert fig.get_figwidth() == pytest.approx(3.3)
            ax = fig.axes[0]
            fig.canvas.draw()
            legend = ax.get_legend()
            assert legend.get_window_extent().y1 <= ax.get_window_extent().y0
            sizes = [t.get_fontsize() for t in fig.findobj(matplotlib.text.Text) if t.get_text()]
            assert min(sizes) >= 7
            assert len(legend.get_texts()) == len(ax.get_lines())


def test_method_styles_are_stable_and_distinct():
    paper = list(figures.METHOD_STYLES)
    assert set(paper) == set(paper_facts.TABLE1_METHODS) | set(paper_facts.TABLE2_METHODS)
    assert len({figures.method_style(m)[0] for m in paper}) == len(paper)
    assert len({figures.method_style(m)[1] for m in paper}) == len(paper)
    others = ["MyHash", "DPSH", "HashNet", "dhn-pytorch"]
    here = [figures.method_style(m) for m in others]
    assert here == [figures.method_style(m) for m in others]
    assert all(s[2] == "--" and s[0] not in {c for c, _ in figures.METHOD_STYLES.values()} for s in here)
    code = ("from reproduce.reporting.figures import method_style; "
            f"print([method_style(m) for m in {others!r}])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=dict(os.environ, PYTHONHASHSEED="123"))
    assert out.stdout.strip() == str(here)
