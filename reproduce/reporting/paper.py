"""The paper's facts, stated once: its datasets, bit lengths, the methods of Tables 1 and 2, and
its published numbers (package data `reporting/paper_tables.csv`, copied from Zhu et al. 2016)."""
import csv
import io
from importlib import resources

from ..errors import UserError
from ..utils.fileio import refuse_special

PAPER_DATASETS = ("nus_wide", "cifar10", "flickr")
DATASET_TITLES = {"nus_wide": "NUS-WIDE", "cifar10": "CIFAR-10", "flickr": "Flickr"}
PAPER_BITS = (12, 24, 32, 48)        # the code lengths of Tables 1-2 and Figure (a)
CURVE_BITS = 48                      # Figures (b) and (c) are drawn at 48 bits
RADIUS = 2                           # Figure (a): precision within Hamming radius 2
# Rows of the paper's tables, in the paper's order (Tables 1 and 2).
TABLE1_METHODS = ("DHN", "DNNH", "CNNH*", "CNNH", "KSH", "ITQ-CCA", "MLH", "BRE", "SH", "ITQ", "LSH")
TABLE2_METHODS = ("DHN-B", "DHN", "DHN-Q", "DHN-E")
# The DHN variants of Table 2 other than DHN itself are ablations, not competitors: Table 1 omits them.
VARIANTS_ONLY = tuple(m for m in TABLE2_METHODS if m not in TABLE1_METHODS)


def load_paper_tables():
    """The paper's numbers: {(table, method, dataset, bits): map} from paper_tables.csv.

    Both tables are kept: the paper prints DHN CIFAR-10 48 bits as 0.621 in Table 1 and 0.620 in
    Table 2, and each table is compared with its own number.
    """
    text = resources.files(__package__).joinpath("paper_tables.csv").read_text(encoding="utf-8")
    return parse_paper_numbers(text, "reproduce/reporting/paper_tables.csv")


def read_paper_numbers(path, dataset=None):
    """Published numbers a user gives (`--paper-numbers CSV`, the layout of paper_tables.csv:
    table,method,dataset,bits,map); with `dataset`, only its rows, of which there must be some."""
    refuse_special(path, "published-numbers file")
    try:
        with open(path, encoding="utf-8-sig") as f:      # a spreadsheet's byte-order mark
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read ({getattr(e, 'strerror', None) or e})") from None
    numbers = parse_paper_numbers(text, path)
    if dataset is not None:
        numbers = {k: v for k, v in numbers.items() if k[2] == dataset}
        if not numbers:
            raise UserError(f"{path}: no row for dataset {dataset!r} (its 'dataset' column must "
                            "name the dataset of the run)")
    return numbers


def parse_paper_numbers(text, source):
    """{(table, method, dataset, bits): map} of a CSV text; UserError naming source:line."""
    reader = csv.DictReader(io.StringIO(text))
    want = ["table", "method", "dataset", "bits", "map"]
    if reader.fieldnames is None or [c.strip() for c in reader.fieldnames] != want:
        raise UserError(f"{source}:1: expected the header {','.join(want)}, got "
                        f"{','.join(reader.fieldnames or [])!r}")
    numbers = {}
    rows = iter(reader)
    while True:
        try:
            row = next(rows, None)
        except csv.Error as e:                      # a field over csv's limit, a NUL ...
            raise UserError(f"{source}:{reader.line_num + 1}: not a CSV row ({e})") from None
        if row is None:
            break
        where = f"{source}:{reader.line_num}"
        try:
            table, bits, value = int(row["table"]), int(row["bits"]), float(row["map"])
        except (TypeError, ValueError):
            raise UserError(f"{where}: table and bits must be integers and map a number") from None
        if table not in (1, 2) or not 1 <= bits <= 4096 or not 0.0 <= value <= 1.0:
            raise UserError(f"{where}: table must be 1 or 2, bits in 1..4096 and map in [0, 1]")
        method, dataset = (row["method"] or "").strip(), (row["dataset"] or "").strip()
        if not method or not dataset:
            raise UserError(f"{where}: method and dataset must not be empty")
        if not (method + dataset).isprintable() or "|" in method + dataset or len(method) > 64:
            # the names become table cells (markdown, LaTeX, CSV) and figure legends
            raise UserError(f"{where}: method and dataset must be printable names of at most 64 "
                            "characters, without '|'")
        key = (table, canonical_method(method), dataset, bits)
        if key in numbers:
            raise UserError(f"{where}: a second number for table {table}, {method}, {dataset}, {bits} bits")
        numbers[key] = value
    return numbers


def canonical_method(name):
    """The paper's spelling of a method name given in any case (`itq-cca` -> `ITQ-CCA`); others as is."""
    for known in TABLE1_METHODS + TABLE2_METHODS:
        if str(name).lower() == known.lower():
            return known
    return str(name)
