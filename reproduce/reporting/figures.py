"""The paper's figures (Zhu et al. 2016, Figures 3-4; one panel per file, as printed per dataset):

    (a) fig_a_precision_radius2        precision within Hamming radius 2 vs number of bits
    (b) fig_b_pr_curve_<K>bits         precision-recall curve of Hamming ranking at K bits (48)
    (c) fig_c_precision_at_n_<K>bits   precision vs number of top returned images at K bits (48)

each as PNG and PDF, drawn from the records `reproduce.evaluation.records.collect_records` reads (the
"metrics" of a metrics.json as reproduce.evaluation.metrics.evaluate_codes returns them:
precision_within_radius, pr_curve {radius, precision, recall}, precision_at_n {n, precision,
recall}; None where a ranking has no such number, e.g. DHN-B's inner-product ranking has no
radius). A record without a panel's numbers is left out of that panel. Every method keeps the same colour and marker in every
figure and every call (a fixed table for the paper's methods, a CRC32-based choice otherwise).
Sized for one paper column (3.3 in wide, 7-8 pt text) with the legend below the axes, off the data.
Drawn on matplotlib's object API with the Agg renderer (no pyplot, no global backend change).
"""
import os
import zlib

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from ..errors import UserError
from ..evaluation.records import check_records
from ..utils.fileio import atomic_output
from .paper import CURVE_BITS, DATASET_TITLES, RADIUS, TABLE1_METHODS, TABLE2_METHODS
from .tables import MISSING

RADIUS_KEY = "precision_within_radius"  # reproduce.evaluation.metrics.evaluate_codes' name
COLUMN_WIDTH_IN = 3.3  # one column of the AAAI two-column format
PANEL_HEIGHT_IN = 2.3
FONT = {"font.size": 7, "axes.titlesize": 8, "axes.labelsize": 8, "legend.fontsize": 7,
        "xtick.labelsize": 7, "ytick.labelsize": 7, "lines.linewidth": 1.0, "lines.markersize": 4,
        "pdf.fonttype": 42}  # TrueType in the PDF, so the text stays text (and searchable)

# The paper's methods: DHN and its variants in warm colours, deep competitors in blues/greens,
# shallow methods in the remaining hues; markers all distinct.
METHOD_STYLES = {
    "DHN": ("#d62728", "o"), "DHN-B": ("#ff7f0e", "h"), "DHN-Q": ("#e377c2", "8"),
    "DHN-E": ("#8c564b", "d"), "DNNH": ("#1f77b4", "s"), "CNNH*": ("#2ca02c", "^"),
    "CNNH": ("#17becf", "v"), "KSH": ("#9467bd", "D"), "ITQ-CCA": ("#bcbd22", "P"),
    "MLH": ("#7f7f7f", "X"), "BRE": ("#aec7e8", "<"), "SH": ("#98df8a", ">"),
    "ITQ": ("#000000", "p"), "LSH": ("#c49c94", "*"),
}
# Dark tones kept apart from the fixed table's hues (tab20c/tab20b darks).
FALLBACK_COLORS = ("#393b79", "#637939", "#8c6d31", "#7b4173", "#5254a3",
                   "#8ca252", "#bd9e39", "#a55194", "#6b6ecf", "#525252")
FALLBACK_MARKERS = ("o", "s", "^", "v", "D", "<", ">", "p", "h", "*")


def method_style(name):
    """(colour, marker, linestyle) of a method, the same in every figure and process: the fixed
    table for the paper's methods; otherwise chosen by the CRC32 of the name (not Python's salted
    hash()), drawn dashed so it never passes for one of the paper's methods."""
    if name in METHOD_STYLES:
        color, marker = METHOD_STYLES[name]
        return color, marker, "-"
    h = zlib.crc32(str(name).encode("utf-8"))
    return FALLBACK_COLORS[h % len(FALLBACK_COLORS)], FALLBACK_MARKERS[(h // 16) % len(FALLBACK_MARKERS)], "--"


def figure_names(bits=CURVE_BITS):
    """Base names (no extension) of panels (a), (b), (c) for curves drawn at `bits`."""
    return (f"fig_a_precision_radius{RADIUS}", f"fig_b_pr_curve_{bits}bits",
            f"fig_c_precision_at_n_{bits}bits")


def _method_order(records):
    """The paper's methods first in the paper's order, then the others by name."""
    known = list(dict.fromkeys(TABLE1_METHODS[:1] + TABLE2_METHODS + TABLE1_METHODS))
    present = {r["method"] for r in records}
    return [m for m in known if m in present] + sorted(present - set(known))


def _curve(records, key, x_key, y_key, grid_key):
    """Mean curve over seeds: metrics[key][x_key] and [y_key] averaged point by point over the
    records whose metrics[key][grid_key] (the radius 0..K, or the top-N cut-offs) equals the first
    record's; returns ((M,) x, (M,) y) or None when no record has the curve."""
    grid, xs, ys = None, [], []
    for r in records:
        c = r["metrics"].get(key)
        if not isinstance(c, dict) or not all(k in c for k in (x_key, y_key, grid_key)):
            continue
        g, x, y = (np.asarray(c[k], dtype=np.float64) for k in (grid_key, x_key, y_key))
        if g.ndim != 1 or not g.shape == x.shape == y.shape:
            raise UserError(f"{r['path']}: metrics.{key}: {grid_key}, {x_key} and {y_key} are not "
                            f"lists of one length ({g.shape}, {x.shape}, {y.shape})")
        if grid is None:
            grid = g
        if np.array_equal(grid, g):
            xs.append(x)
            ys.append(y)
    if grid is None:
        return None
    return np.mean(xs, axis=0), np.mean(ys, axis=0)


def panel_data(records, bits=CURVE_BITS):
    """What the three panels draw, per method (in legend order):
    a: {method: (bits (M,), precision within radius 2 (M,))}; b: {method: (recall, precision)};
    c: {method: (n, precision)}. Means over seeds."""
    a, b, c = {}, {}, {}
    for m in _method_order(records):
        mine = [r for r in records if r["method"] == m]
        xs, ys = [], []
        for k in sorted({r["bits"] for r in mine}):
            vals = [r["metrics"][RADIUS_KEY] for r in mine
                    if r["bits"] == k and isinstance(r["metrics"].get(RADIUS_KEY), (int, float))]
            if vals:
                xs.append(k)
                ys.append(float(np.mean(vals)))
        if xs:
            a[m] = (np.asarray(xs), np.asarray(ys))
        at_bits = [r for r in mine if r["bits"] == bits]
        pr = _curve(at_bits, "pr_curve", "recall", "precision", "radius")
        if pr is not None:
            b[m] = pr
        pn = _curve(at_bits, "precision_at_n", "n", "precision", "n")
        if pn is not None:
            c[m] = pn
    return a, b, c


def _draw(series, xlabel, ylabel, title, xticks=None, markevery=None):
    """One panel: a Figure with every method's line, legend under the axes."""
    fig = Figure(figsize=(COLUMN_WIDTH_IN, PANEL_HEIGHT_IN))
    ax = fig.add_subplot()
    for rank, (method, (x, y)) in enumerate(series.items()):
        color, marker, ls = method_style(method)
        every = None if markevery is None else max(1, len(x) // markevery)
        # Earlier in the legend = drawn on top: DHN stays visible where curves coincide.
        ax.plot(x, y, color=color, marker=marker, linestyle=ls, label=method, markevery=every,
                markerfacecolor="none" if ls == "--" else color, clip_on=False,
                zorder=3 + len(series) - rank)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.set_ylim(0.0, 1.0)  # precision and recall live in [0, 1]: equal axes across datasets
    ax.grid(True, linewidth=0.3, alpha=0.5)
    if xticks is not None:
        ax.set_xticks(list(xticks))
    if series:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=min(4, len(series)),
                  frameon=False, handlelength=2.2, columnspacing=1.0)
    else:
        ax.text(0.5, 0.5, f"{MISSING} no run has these numbers {MISSING}", ha="center",
                va="center", transform=ax.transAxes)
    return fig


def make_figures(records, dataset_title, bits=CURVE_BITS):
    """The three panels as {base name: Figure} (unsaved)."""
    a, b, c = panel_data(records, bits)
    all_bits = sorted({int(k) for x, _ in a.values() for k in x})
    name_a, name_b, name_c = figure_names(bits)
    return {
        name_a: _draw(a, "Number of bits", f"Precision (Hamming dist. \u2264 {RADIUS})",
                      f"{dataset_title}: precision within radius {RADIUS}", xticks=all_bits),
        name_b: _draw(b, "Recall", "Precision", f"{dataset_title}: precision-recall @ {bits} bits",
                      markevery=8),
        name_c: _draw(c, "Number of top returned images", "Precision",
                      f"{dataset_title}: precision @ N, {bits} bits", markevery=10),
    }


def default_curve_bits(records):
    """48 bits (the paper's) when some record has it, else the largest bit length present."""
    present = {r["bits"] for r in records}
    return CURVE_BITS if CURVE_BITS in present or not present else max(present)


def write_figures(records, dataset, out_dir, bits=None, overwrite=False, dataset_title=None):
    """Write the three panels as PNG (300 dpi) and PDF into out_dir, atomically. bits: the bit
    length of panels (b) and (c) (default: default_curve_bits). Returns the written paths."""
    records = check_records(records, dataset)
    bits = default_curve_bits(records) if bits is None else int(bits)
    title = dataset_title or DATASET_TITLES.get(dataset, dataset)
    paths = [os.path.join(os.fspath(out_dir), f"{n}.{ext}") for n in figure_names(bits) for ext in ("png", "pdf")]
    if not overwrite:
        for p in paths:
            if os.path.exists(p):
                raise UserError(f"{p}: already exists; refusing to overwrite it (use --force)")
    with matplotlib.rc_context(FONT):
        figures = make_figures(records, title, bits)
        for name, fig in figures.items():
            for ext in ("png", "pdf"):
                # No dates or versions in the files: the same runs give the same bytes.
                meta = {"Software": None} if ext == "png" else {"CreationDate": None, "Producer": None}
                with atomic_output(os.path.join(os.fspath(out_dir), f"{name}.{ext}"), overwrite=True) as tmp:
                    fig.savefig(tmp, format=ext, dpi=300, bbox_inches="tight", metadata=meta)
    return paths
