"""Build the paper's comparison for one dataset: Tables 1-2 and Figures (a)-(c) from DHN runs,
imported codes of other methods and shallow baselines on the same fc7 features.

    python -m reproduce.compare --dataset NAME [--topk R|all] --runs DIR [DIR ...] --out DIR
        [--import NAME:BITS:QUERY_CODES:DB_CODES ...] [--labels QUERY DB] [--sign]
        [--baselines lsh sh itq itq-cca ksh --features TRAIN.h5 QUERY.h5 DB.h5]
        [--bits 12 24 32 48] [--baseline-option ksh:n_anchors=300 ...] [--curve-bits 48]
        [--seed 0] [--paper-numbers CSV] [--force]

Runs: every metrics.json under the --runs folders (written by reproduce.evaluate). Imported codes
(.h5 .mat .npy .npz, read by reproduce.evaluation.codes) and baselines (fitted on the training
features, with labels for the supervised ones; query and database encoded) are evaluated here with
the dataset's protocol (its MAP cut-off in reproduce.evaluation.protocols.PROTOCOLS; ties by database order,
queries without hits left out, radius 2, top-N 100..1000: reproduce.evaluation.records.protocol), each
into `--out/methods/<name>_<bits>/` (metrics.json and the curves as CSV, as reproduce.evaluate
writes them). Then `--out` receives table1/table2 (.md .csv .tex) and the three figures
(.png .pdf). `build_comparison` is the core the per-dataset commands call.
"""
import os

from .baselines import BASELINES
from .cli import BITS, NON_NEGATIVE, ArgumentParser, run_cli, topk_option
from .errors import UserError
from .evaluation.codes import ORIENTATIONS
from .evaluation.protocols import FROM_PRESET, check_dataset_name, dataset_protocol
from .evaluation.records import check_records, check_same_settings, collect_records, write_record
from .model.archs import named_backbone
from .reporting.comparison import (check_same_source, comparison_outputs, evaluate_baselines,
                                   evaluate_method, load_import, method_dir, parse_baseline_options,
                                   read_labels, write_comparison)
from .reporting.figures import default_curve_bits
from .reporting.paper import PAPER_BITS, PAPER_DATASETS, canonical_method, read_paper_numbers
from .utils.fileio import staged_outputs
from .utils.locks import refuse_inside_a_writer, remove_leftovers, writer_lock


def get_args_parser():
    p = ArgumentParser(prog="python -m reproduce.compare", description=__doc__.split("\n")[0])
    p.add_argument("--dataset", required=True,
                   help=f"the dataset's name: {', '.join(PAPER_DATASETS)} (the paper's) and the other "
                        "presets of reproduce.datasets bring their protocol (MAP cut-off) and the "
                        "paper's numbers; any other name needs --topk")
    p.add_argument("--topk", type=topk_option, default=FROM_PRESET, metavar="R|all",
                   help="MAP over the top R, or over the whole database (default: the dataset's preset)")
    p.add_argument("--paper-numbers", default=None, metavar="CSV",
                   help="published numbers to show beside ours (table,method,dataset,bits,map as "
                        "reproduce/reporting/paper_tables.csv; default: the paper's)")
    p.add_argument("--runs", nargs="*", default=[], metavar="DIR",
                   help="folders (or files) with the runs' metrics.json, walked recursively")
    p.add_argument("--out", required=True, help="output folder of tables, figures and methods/")
    p.add_argument("--import", dest="imports", action="append", default=[],
                   metavar="NAME:BITS:QUERY_CODES:DB_CODES",
                   help="codes of another method (.h5 .mat .npy .npz); repeat per method and bits")
    p.add_argument("--labels", nargs=2, metavar=("QUERY", "DB"),
                   help="labels of imported codes whose files hold none: .h5 with 'labels', list "
                        "file or .npy (default: the --features query and database files)")
    p.add_argument("--sign", action="store_true",
                   help="binarise real-valued imported codes by sign (code >= 0 -> +1)")
    p.add_argument("--baselines", nargs="*", default=[], choices=list(BASELINES),
                   help="shallow baselines to fit on --features (reproduce.baselines)")
    p.add_argument("--features", nargs=3, metavar=("TRAIN", "QUERY", "DB"),
                   help="fc7 features and labels (`reproduce.encode --features`) of the three splits")
    p.add_argument("--bits", nargs="+", type=BITS,
                   help="bit lengths of the baselines (default: those of the runs, else the "
                        "paper's 12 24 32 48)")
    p.add_argument("--baseline-option", action="append", default=[], metavar="NAME:KEY=VALUE",
                   help="a baseline setting other than its published default (e.g. ksh:n_anchors=300)")
    p.add_argument("--curve-bits", type=BITS, default=None,
                   help="bit length of figures (b)/(c) (default: the paper's 48 when present, "
                        "else the largest)")
    p.add_argument("--seed", type=NON_NEGATIVE, default=0, help="seed of the baselines' randomness (default 0)")
    p.add_argument("--orientation", choices=ORIENTATIONS, default=None,
                   help="NxK or KxN: for an imported code file with as many bits as items")
    p.add_argument("--allow-mixed", action="store_true",
                   help="accept query and database codes (or --features) of different checkpoints, "
                        "pipelines, means or crops (recorded in metrics.json); refused otherwise")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    return p


def _plan(args, records):
    """(bit lengths of the baselines, the methods/<name>_<bits> folder of each method evaluated
    here in order, bits of figures (b)/(c)); an existing output without --force, or a method
    asked for twice, is an error before any work."""
    bits_list = args.bits or sorted({r["bits"] for r in records}) or list(PAPER_BITS)
    if min(bits_list) < 1:
        raise UserError(f"--bits: bit lengths must be positive, got {bits_list}")
    unused = sorted(set(parse_baseline_options(args.baseline_option)) - set(args.baselines))
    if unused:
        raise UserError(f"--baseline-option for {', '.join(unused)}, which is not in --baselines")
    planned = [(spec.split(":")[0], spec.split(":")[1] if spec.count(":") >= 3 else "?")
               for spec in args.imports]
    planned += [(b, k) for b in args.baselines for k in bits_list]
    folders = [method_dir(args.out, n, k) for n, k in planned]
    for i, f in enumerate(folders):
        if f in folders[:i]:
            raise UserError(f"{planned[i][0]} {planned[i][1]} bits is asked for twice "
                            f"(--import / --baselines); both would be {f}")
    known_bits = [int(k) for _, k in planned if str(k).isdigit()] + [r["bits"] for r in records]
    if args.curve_bits is not None and args.curve_bits not in known_bits:
        raise UserError(f"--curve-bits {args.curve_bits}: no run, import or baseline has that length "
                        f"(they have {', '.join(map(str, sorted(set(known_bits)))) or 'none'})")
    curve_bits = args.curve_bits or default_curve_bits([{"bits": b} for b in known_bits])
    for p in [os.path.join(f, "metrics.json") for f in folders] + comparison_outputs(args.out, curve_bits):
        if os.path.exists(p) and not args.force:
            raise UserError(f"{p}: already exists; refusing to overwrite it (use --force)")
    return bits_list, folders, curve_bits


PROTOCOL_KEYS = ("topk", "zero_hit", "ties", "radius")


def _check_protocol(record, protocol, dataset):
    """A run evaluated with other conventions than the table's protocol is refused: its number
    would stand beside the others as if it were comparable."""
    conv = record["conventions"]
    for key in PROTOCOL_KEYS:
        if key in conv and conv[key] != protocol[key]:
            raise UserError(f"{record['path']}: evaluated with {key}={conv[key]!r}, but the {dataset} "
                            f"protocol here is {key}={protocol[key]!r}; evaluate it again with the table's "
                            "protocol (reproduce.evaluate --topk/--zero-hit/--ties/--radius, or --topk here)")


def _check_import_names(imports, records):
    """An imported method named like a run's method would be averaged in as another seed."""
    have = {r["method"] for r in records}
    for spec in imports:
        name = canonical_method(spec.split(":", 1)[0].strip())
        if name in have:
            raise UserError(f"--import {spec}: the runs already hold {name}; give the import another "
                            f"name (e.g. {name}-imported:{spec.split(':', 1)[1] if ':' in spec else '...'})")


def main(argv=None):
    args = get_args_parser().parse_args(argv)
    if args.baselines and not args.features:
        raise UserError("--baselines needs --features TRAIN.h5 QUERY.h5 DB.h5")
    if not (args.runs or args.imports or args.baselines):
        raise UserError("nothing to compare: give --runs, --import or --baselines")
    protocol = dataset_protocol(check_dataset_name(args.dataset, "--dataset"), args.topk)
    paper = read_paper_numbers(args.paper_numbers, args.dataset) if args.paper_numbers else None
    records = check_records(collect_records(args.runs), args.dataset) if args.runs else []
    for r in records:
        _check_protocol(r, protocol, args.dataset)
    # runs of several folders (several plans) are averaged as seeds: only runs that differ by it
    check_same_settings(records)
    _one_backbone(records)        # refused before any baseline is fitted; again below with them
    _check_import_names(args.imports, records)
    if args.features:
        check_same_source(args.features, "features", args.allow_mixed, roles=("train", "query", "database"))
    bits_list, folders, curve_bits = _plan(args, records)
    # Results of an earlier compare in the methods folders made again now are replaced.
    redo = {os.path.realpath(f) for f in folders}
    records = [r for r in records if os.path.realpath(os.path.dirname(r["path"])) not in redo]

    labels = None
    if args.labels:
        labels = [read_labels(p) for p in args.labels]
    elif args.features and args.imports:
        labels = [read_labels(p) for p in args.features[1:]]
    docs, named = [], []          # named: results that say their backbone, to check against the runs'
    for spec in args.imports:
        name, bits, ((qc, ql), (dc, dl)), inputs, arch = load_import(spec, args.sign, labels, args.orientation,
                                                                     args.allow_mixed)
        docs.append(evaluate_method(name, args.dataset, qc, dc, ql, dl, inputs=inputs, protocol=protocol,
                                    backbone=named_backbone(arch) if arch else None))
        if arch:                  # this package's codes; those of another program name no backbone
            named.append({"backbone": named_backbone(arch), "path": spec.split(":", 3)[2]})
        print(f"{name} {bits} bits: MAP {docs[-1]['metrics']['map']:.4f}")
    if args.baselines:
        docs += evaluate_baselines(args.dataset, args.baselines, bits_list, args.features, args.seed,
                                   parse_baseline_options(args.baseline_option), protocol=protocol)
        named += [{"backbone": d.get("backbone"), "path": args.features[0]} for d in docs
                  if "baseline" in d["inputs"]]
    # baselines on features, or this package's codes imported, of another backbone than the runs'
    # are refused as runs of two are
    backbone = _one_backbone(records + named)
    # Every output (methods/*, tables, figures) is written into one staging folder and moved
    # into place together: a failure at any point leaves --out as it was. One writer at a time.
    refuse_inside_a_writer(args.out, "--out")      # e.g. a dataset command's --out, while it runs
    with writer_lock(args.out, "--out"):
        remove_leftovers([args.out])          # what a killed compare left is never read
        _write_outputs(args, folders, docs, records, curve_bits, paper, backbone)


def _one_backbone(records):
    """The backbone the runs' tables and figures name (None: the paper's network). Runs of two
    backbones in one table would read as one method's numbers: refused, naming one of each."""
    first = {}
    for r in records:
        first.setdefault(r["backbone"], r["path"])
    if len(first) > 1:
        (a, pa), (b, pb) = list(first.items())[:2]
        name = lambda arch: arch or "caffenet/alexnet (or codes of another program)"
        raise UserError(f"{pb}: a run on the {name(b)} backbone, but {pa} is on the {name(a)} backbone; "
                        "compare the runs of one backbone at a time")
    return next(iter(first), None)


def _write_outputs(args, folders, docs, records, curve_bits, paper, backbone):
    with staged_outputs(args.out) as stage:
        for folder, doc in zip(folders, docs):
            rel = os.path.relpath(folder, args.out)
            written = write_record(os.path.join(stage, rel), doc, force=True)  # checked in _plan
            records += [dict(r, path=os.path.join(folder, os.path.basename(r["path"])))
                        for r in collect_records([written[0]])]
        paths = write_comparison(check_records(records, args.dataset), args.dataset, stage, curve_bits,
                                 paper=paper, backbone=backbone)
    for p in paths:
        print(os.path.join(args.out, os.path.relpath(p, stage)))


if __name__ == "__main__":
    run_cli(main)
