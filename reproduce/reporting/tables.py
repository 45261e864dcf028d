"""Table 1 and Table 2 of the paper for any set of runs, beside the paper's own numbers.

The runs are metrics records (reproduce.evaluation.records: `collect_records` reads every metrics.json of
some folders). `build_table` lays out one table (methods as rows, bit lengths as columns; per cell
this run's MAP, the paper's, and the difference ours - paper); `write_tables` writes
`table1.{md,csv,tex}` and `table2.{md,csv,tex}`. The paper's numbers: reproduce.reporting.paper. The figures
are in reproduce.reporting.figures.
"""
import csv
import io
import json
import math
import os
from dataclasses import dataclass, field

import numpy as np

from ..errors import UserError
from ..evaluation.records import check_records
from ..utils.fileio import write_text_atomic
from .paper import DATASET_TITLES, TABLE1_METHODS, TABLE2_METHODS, VARIANTS_ONLY, load_paper_tables

TABLE_TITLES = {1: "MAP of Hamming ranking", 2: "MAP of the DHN variants"}
MISSING = "\u2014"  # the em dash a cell shows where a number does not exist


# ----------------------------------------------------------------------------- table layout

@dataclass
class Cell:
    """One method at one bit length: runs = [(seed, map, path)], paper = the paper's MAP or None."""
    runs: list = field(default_factory=list)
    paper: float = None

    @property
    def mean(self):
        return float(np.mean([v for _, v, _ in self.runs])) if self.runs else None

    @property
    def std(self):
        # Sample standard deviation (ddof=1) over seeds; undefined for a single run.
        return float(np.std([v for _, v, _ in self.runs], ddof=1)) if len(self.runs) > 1 else None

    @property
    def diff(self):
        return None if self.mean is None or self.paper is None else self.mean - self.paper


@dataclass
class Table:
    """number (1 or 2), dataset, bits (column order), rows = [(method, {bits: Cell})],
    conventions = [(conventions dict, [methods using it])], backbone: the --arch of our runs when
    not the authors' network (named in the title), else None."""
    number: int
    dataset: str
    bits: list
    rows: list
    conventions: list
    backbone: str | None = None

    @property
    def title(self):
        name = DATASET_TITLES.get(self.dataset, self.dataset)
        return f"Table {self.number}: {TABLE_TITLES[self.number]} on {name}" + backbone_suffix(self.backbone)


def backbone_suffix(backbone):
    """What a title adds to name the backbone of our runs: nothing for None (the authors'
    network, as in the paper), else ", <arch> backbone"."""
    return f", {backbone} backbone" if backbone else ""


def build_table(records, dataset, number, paper=None, backbone=None):
    """Lay out Table `number` (1 or 2) for `dataset` from checked records.

    Rows: the paper's methods of that table in the paper's order (those with a paper number for
    this dataset or a run), then, in Table 1 only, every other method run or given a published
    number, sorted by name.
    Columns: every bit length with a paper number or a run, ascending.
    """
    if number not in (1, 2):
        raise ValueError(f"table number must be 1 or 2, not {number!r}")
    paper = load_paper_tables() if paper is None else paper
    paper_here = {(m, b): v for (t, m, d, b), v in paper.items() if t == number and d == dataset}
    listed = TABLE1_METHODS if number == 1 else TABLE2_METHODS
    mine = [r for r in records if (r["method"] in listed or
                                   (number == 1 and r["method"] not in VARIANTS_ONLY))]
    run_methods = {r["method"] for r in mine}
    paper_methods = {m for m, _ in paper_here}
    methods = [m for m in listed if m in run_methods or m in paper_methods]
    if number == 1:     # every other method run, or with a published number (--paper-numbers)
        methods += sorted((run_methods | paper_methods) - set(listed) - set(VARIANTS_ONLY))
    bits = sorted({b for _, b in paper_here} | {r["bits"] for r in mine})
    cells = {(m, b): Cell(paper=paper_here.get((m, b))) for m in methods for b in bits}
    conv_of = {}
    for r in mine:
        cell_key = (r["method"], r["bits"])
        conv = json.dumps(r["conventions"], sort_keys=True)
        if conv_of.setdefault(cell_key, (conv, r["path"]))[0] != conv:
            raise UserError(f"{r['path']}: evaluated with other conventions than "
                            f"{conv_of[cell_key][1]} ({r['method']} {r['bits']} bits); "
                            "a cell must average runs evaluated the same way")
        cells[cell_key].runs.append((r["seed"], r["map"], r["path"]))
    groups = {}
    for (m, _), (conv, _) in sorted(conv_of.items()):
        users = groups.setdefault(conv, [])
        if m not in users:
            users.append(m)
    conventions = [(json.loads(c), users) for c, users in groups.items()]
    rows = [(m, {b: cells[(m, b)] for b in bits}) for m in methods]
    return Table(number, dataset, bits, rows, conventions, backbone)


# ----------------------------------------------------------------------------- formatting

def _num(v, signed=False):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return MISSING
    return f"{v:+.3f}" if signed else f"{v:.3f}"


def _ours(cell, pm="\u00b1"):
    if cell.mean is None:
        return MISSING
    return _num(cell.mean) if cell.std is None else f"{cell.mean:.3f} {pm} {cell.std:.3f}"


def _runs_text(cell):
    """Raw per-seed values: `seed0=0.7120 seed1=0.7150` (four decimals, so means can be checked);
    a run without a seed (imported codes) is its bare value."""
    return " ".join(f"{v:.4f}" if s is None else f"seed{s}={v:.4f}" for s, v, _ in cell.runs)


def _conventions_text(conv):
    return ", ".join(f"{k}={v}" for k, v in sorted(conv.items())) or "not recorded"


def format_markdown(table):
    """GitHub Markdown: per bit length three columns (ours, paper, difference ours - paper);
    cells with several seeds show mean ± std and are listed per seed in a second table."""
    head = ["Method"]
    for b in table.bits:
        head += [f"{b} bits: ours", f"{b} bits: paper", f"{b} bits: \u0394"]
    lines = [f"### {table.title}", "",
             "| " + " | ".join(head) + " |",
             "|" + "|".join([":---"] + ["---:"] * (len(head) - 1)) + "|"]
    multi = []
    for method, cells in table.rows:
        row = [method]
        for b in table.bits:
            c = cells[b]
            row += [_ours(c), _num(c.paper), _num(c.diff, signed=True)]
            if len(c.runs) > 1:
                multi.append((method, b, c))
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Ours: MAP of this reproduction (mean \u00b1 sample std over seeds where there are "
              "several); paper: Zhu et al. (AAAI 2016); \u0394 = ours \u2212 paper; "
              f"{MISSING} = no number."]
    if multi:
        lines += ["", "Per-seed MAP:", "", "| Method | Bits | Runs | MAP per seed | Mean \u00b1 std |",
                  "|:---|---:|---:|:---|---:|"]
        lines += [f"| {m} | {b} | {len(c.runs)} | {_runs_text(c)} | {_ours(c)} |" for m, b, c in multi]
    if table.conventions:
        lines += ["", "Evaluation conventions:"]
        lines += [f"- {', '.join(users)}: {_conventions_text(conv)}" for conv, users in table.conventions]
    return "\n".join(lines) + "\n"


def csv_columns(bits):
    """Header of the CSV: method, then per bit length b: ours_b (mean), std_b, n_b, paper_b, diff_b, runs_b."""
    cols = ["method"]
    for b in bits:
        cols += [f"ours_{b}", f"std_{b}", f"n_{b}", f"paper_{b}", f"diff_{b}", f"runs_{b}"]
    return cols


def format_csv(table):
    """Machine-readable: one row per method, empty fields where a number does not exist; ours and
    std to six decimals, the paper's numbers as printed, runs_b = space-separated `seed<s>=<map>`
    (a bare `<map>` for a run without seed)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(csv_columns(table.bits))
    f6 = lambda v: "" if v is None else f"{v:.6f}"  # noqa: E731
    for method, cells in table.rows:
        row = [method]
        for b in table.bits:
            c = cells[b]
            row += [f6(c.mean), f6(c.std), len(c.runs), "" if c.paper is None else f"{c.paper:.3f}",
                    f6(c.diff), _runs_text(c)]
        w.writerow(row)
    return buf.getvalue()


def latex_escape(text):
    """Escape LaTeX's special characters in a method name (`ITQ_CCA` -> `ITQ\\_CCA`)."""
    table = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
             "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
    return "".join(table.get(ch, ch) for ch in str(text))


TEX_MISSING = "---"  # LaTeX's em dash


def _tex_num(v, signed=False):
    if v is None:
        return TEX_MISSING
    return (f"$-${abs(v):.3f}" if v < 0 else f"$+${v:.3f}") if signed else f"{v:.3f}"


def format_latex(table):
    """A `table` float with a booktabs `tabular` (needs only \\usepackage{booktabs}): per bit length
    three columns (ours, paper, Delta); mean$\\pm$std where several seeds exist."""
    ncol = 1 + 3 * len(table.bits)
    label = f"tab:{table.dataset}-table{table.number}"
    lines = [f"% {table.title}. Generated by reproduce.reporting.tables; needs \\usepackage{{booktabs}}.",
             "\\begin{table}[t]", "\\centering", "\\small", "\\setlength{\\tabcolsep}{3pt}",
             f"\\caption{{{latex_escape(table.title)}: ours, the paper's, and $\\Delta$ = ours $-$ paper.}}",
             f"\\label{{{label}}}",
             "\\begin{tabular}{l" + "rrr" * len(table.bits) + "}", "\\toprule",
             "Method & " + " & ".join(f"\\multicolumn{{3}}{{c}}{{{b} bits}}" for b in table.bits) + " \\\\",
             " ".join(f"\\cmidrule(lr){{{2 + 3 * i}-{4 + 3 * i}}}" for i in range(len(table.bits))),
             " & " + " & ".join(["Ours & Paper & $\\Delta$"] * len(table.bits)) + " \\\\",
             "\\midrule"]
    for method, cells in table.rows:
        row = [latex_escape(method)]
        for b in table.bits:
            c = cells[b]
            ours = TEX_MISSING if c.mean is None else (
                _tex_num(c.mean) if c.std is None else f"{c.mean:.3f}$\\pm${c.std:.3f}")
            row += [ours, _tex_num(c.paper), _tex_num(c.diff, signed=True)]
        assert len(row) == ncol
        lines.append(" & ".join(row) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    for conv, users in table.conventions:
        lines.append(f"% conventions ({', '.join(users)}): {_conventions_text(conv)}")
    return "\n".join(lines) + "\n"


FORMATS = {"md": format_markdown, "csv": format_csv, "tex": format_latex}


def write_tables(records, dataset, out_dir, overwrite=False, paper=None, backbone=None):
    """Write table1.{md,csv,tex} and table2.{md,csv,tex} for `dataset` into out_dir (each file
    atomically; with overwrite=False an existing file is an error raised before anything is written).
    paper: the published numbers beside ours (default: the paper's, reproduce.reporting.paper);
    backbone: named in the titles (Table.backbone). Returns the written paths."""
    records = check_records(records, dataset)
    paper = load_paper_tables() if paper is None else paper
    texts = {}
    for number in (1, 2):
        table = build_table(records, dataset, number, paper, backbone)
        for ext, fmt in FORMATS.items():
            texts[os.path.join(os.fspath(out_dir), f"table{number}.{ext}")] = fmt(table)
    if not overwrite:
        for path in texts:
            if os.path.exists(path):
                raise UserError(f"{path}: already exists; refusing to overwrite it (use --force)")
    for path, text in texts.items():
        write_text_atomic(path, text, overwrite=True)
    return list(texts)
