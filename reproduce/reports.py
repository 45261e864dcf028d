"""Table 1 and Table 2 of the paper for any set of runs, beside the paper's own numbers.

A run is summarised by the `metrics.json` that `reproduce.evaluate` writes:

    {"method": "DHN", "dataset": "cifar10", "bits": 48, "seed": 0,
     "conventions": {"topk": null, "ties": "index", "zero_hit": "skip", "radius": 2, ...},
     "metrics": {"map": 0.61, "precision_within_radius": ..., "pr_curve": {...}, ...},
     "inputs": {...}}

`collect_metrics` reads such files (or walks folders for them) into records; `build_table` lays
out one table (methods as rows, bit lengths as columns; per cell this run's MAP, the paper's, and
the difference ours - paper); `write_tables` writes `table1.{md,csv,tex}` and `table2.{md,csv,tex}`.
The paper's numbers are package data (`data/paper_tables.csv`, copied from the paper's Tables 1-2).
The figures are in `reproduce.figures`.
"""
import csv
import io
import json
import math
import os
from dataclasses import dataclass, field
from importlib import resources

import numpy as np

from .errors import UserError
from .fileio import write_text_atomic

# Rows of the paper's tables, in the paper's order (Zhu et al. 2016, Tables 1 and 2).
TABLE1_METHODS = ("DHN", "DNNH", "CNNH*", "CNNH", "KSH", "ITQ-CCA", "MLH", "BRE", "SH", "ITQ", "LSH")
TABLE2_METHODS = ("DHN-B", "DHN", "DHN-Q", "DHN-E")
# The DHN variants of Table 2 other than DHN itself are ablations, not competitors: Table 1 omits them.
VARIANTS_ONLY = tuple(m for m in TABLE2_METHODS if m not in TABLE1_METHODS)
PAPER_DATASETS = ("nus_wide", "cifar10", "flickr")
DATASET_TITLES = {"nus_wide": "NUS-WIDE", "cifar10": "CIFAR-10", "flickr": "Flickr"}
TABLE_TITLES = {1: "MAP of Hamming ranking", 2: "MAP of the DHN variants"}
METRICS_FILE = "metrics.json"
MISSING = "\u2014"  # the em dash a cell shows where a number does not exist


def load_paper_tables():
    """The paper's numbers: {(table, method, dataset, bits): map} from data/paper_tables.csv.

    Both tables are kept: the paper prints DHN CIFAR-10 48 bits as 0.621 in Table 1 and 0.620 in
    Table 2, and each table is compared with its own number.
    """
    text = resources.files("reproduce").joinpath("data", "paper_tables.csv").read_text()
    return {(int(r["table"]), r["method"], r["dataset"], int(r["bits"])): float(r["map"])
            for r in csv.DictReader(io.StringIO(text))}


def canonical_method(name):
    """The paper's spelling of a method name given in any case (`itq-cca` -> `ITQ-CCA`); others as is."""
    for known in TABLE1_METHODS + TABLE2_METHODS:
        if str(name).lower() == known.lower():
            return known
    return str(name)


# ----------------------------------------------------------------------------- reading metrics.json

def read_metrics_record(path):
    """One metrics.json as a record dict: method (paper spelling), dataset, bits, seed, map,
    conventions, metrics (the file's whole "metrics" mapping) and path. UserError on a malformed file."""
    path = os.fspath(path)
    try:
        with open(path) as f:
            doc = json.load(f)
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        where = f"line {e.lineno}: {e.msg}" if isinstance(e, json.JSONDecodeError) else "not UTF-8 text"
        raise UserError(f"{path}: not a valid metrics.json ({where})") from None
    if not isinstance(doc, dict):
        raise UserError(f"{path}: not a metrics.json (top level is {type(doc).__name__}, not an object)")
    for key in ("method", "bits", "metrics"):
        if key not in doc:
            raise UserError(f"{path}: metrics.json has no '{key}' key")
    if not isinstance(doc["method"], str) or not doc["method"].strip():
        raise UserError(f"{path}: 'method' must be a non-empty string, got {doc['method']!r} "
                        "(name it with `python -m reproduce.evaluate --method`)")
    bits = doc["bits"]
    if isinstance(bits, bool) or not isinstance(bits, int) or bits <= 0:
        raise UserError(f"{path}: 'bits' must be a positive integer, got {bits!r}")
    seed = doc.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise UserError(f"{path}: 'seed' must be an integer or null, got {seed!r}")
    metrics = doc["metrics"]
    if not isinstance(metrics, dict) or "map" not in metrics:
        raise UserError(f"{path}: 'metrics' must be an object with a 'map' entry")
    value = metrics["map"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise UserError(f"{path}: metrics.map must be a number in [0, 1], got {value!r}")
    conventions = doc.get("conventions") or {}
    if not isinstance(conventions, dict):
        raise UserError(f"{path}: 'conventions' must be an object")
    return {"method": canonical_method(doc["method"].strip()), "dataset": doc.get("dataset"),
            "bits": bits, "seed": seed, "map": float(value), "conventions": conventions,
            "metrics": metrics, "path": path}


def collect_metrics(paths):
    """Records of every metrics.json named in `paths` (files) or found under them (folders, walked
    in sorted order). A folder without any metrics.json, or a missing path, is a UserError.
    The same file reached twice is read once."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files = []
    for p in paths:
        p = os.fspath(p)
        if os.path.isfile(p):
            files.append(p)
        elif os.path.isdir(p):
            found = []
            for root, dirs, names in os.walk(p):
                dirs.sort()
                if METRICS_FILE in names:
                    found.append(os.path.join(root, METRICS_FILE))
            if not found:
                raise UserError(f"{p}: no {METRICS_FILE} in this folder or below it")
            files.extend(found)
        else:
            raise UserError(f"{p}: no such file or folder")
    seen, records = set(), []
    for f in files:
        real = os.path.realpath(f)
        if real not in seen:
            seen.add(real)
            records.append(read_metrics_record(f))
    return records


def check_records(records, dataset):
    """The records of `dataset`, checked: every one names this dataset (or none), and no
    (method, bits, seed) comes from two files. Returns the records sorted by method, bits, seed."""
    out, owner = [], {}
    for r in records:
        if r.get("dataset") not in (None, dataset):
            raise UserError(f"{r['path']}: a run of dataset {r['dataset']!r}, not {dataset!r}")
        key = (r["method"], r["bits"], r["seed"])
        if key in owner:
            raise UserError(f"{r['path']}: a second result for {r['method']} {r['bits']} bits "
                            f"seed {r['seed']} (the first is {owner[key]})")
        owner[key] = r["path"]
        out.append(r)
    return sorted(out, key=lambda r: (r["method"], r["bits"], -1 if r["seed"] is None else r["seed"]))


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
    conventions = [(conventions dict, [methods using it])]."""
    number: int
    dataset: str
    bits: list
    rows: list
    conventions: list

    @property
    def title(self):
        name = DATASET_TITLES.get(self.dataset, self.dataset)
        return f"Table {self.number}: {TABLE_TITLES[self.number]} on {name}"


def build_table(records, dataset, number, paper=None):
    """Lay out Table `number` (1 or 2) for `dataset` from checked records.

    Rows: the paper's methods of that table in the paper's order (those with a paper number for
    this dataset or a run), then, in Table 1 only, every other method run, sorted by name.
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
    methods = [m for m in listed if m in run_methods or any(k[0] == m for k in paper_here)]
    methods += sorted(run_methods - set(listed))
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
    return Table(number, dataset, bits, rows, conventions)


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
    lines = [f"% {table.title}. Generated by reproduce.reports; needs \\usepackage{{booktabs}}.",
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


def write_tables(records, dataset, out_dir, overwrite=False):
    """Write table1.{md,csv,tex} and table2.{md,csv,tex} for `dataset` into out_dir (each file
    atomically; with overwrite=False an existing file is an error raised before anything is written).
    Returns the written paths."""
    records = check_records(records, dataset)
    paper = load_paper_tables()
    texts = {}
    for number in (1, 2):
        table = build_table(records, dataset, number, paper)
        for ext, fmt in FORMATS.items():
            texts[os.path.join(os.fspath(out_dir), f"table{number}.{ext}")] = fmt(table)
    if not overwrite:
        for path in texts:
            if os.path.exists(path):
                raise UserError(f"{path}: already exists; refusing to overwrite it (use --force)")
    for path, text in texts.items():
        write_text_atomic(path, text, overwrite=True)
    return list(texts)
