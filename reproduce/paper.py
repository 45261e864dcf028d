"""The paper's facts, stated once: its datasets, bit lengths, the methods of Tables 1 and 2, and
its published numbers (package data `data/paper_tables.csv`, copied from Zhu et al. 2016)."""
import csv
import io
from importlib import resources

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
