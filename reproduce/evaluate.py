"""Evaluate query codes against database codes: MAP, precision/recall within a Hamming radius, the
PR curve of Hamming ranking and precision/recall at top-N, with the conventions recorded.

    python -m reproduce.evaluate --query Q.h5 --database DB.h5 --out DIR [--topk R]
        [--ties index|expected] [--zero-hit skip|zero] [--radius 2] [--continuous] [--force]

Writes DIR/metrics.json ({method, dataset, bits, seed, conventions, metrics, inputs, version};
"metrics" is reproduce.evaluation.metrics.evaluate_codes' dict), DIR/pr_curve.csv (radius, precision,
recall; Hamming ranking only) and DIR/precision_at_n.csv (n, precision, recall). An existing
output with different content is refused unless --force (re-running the same evaluation is fine).
The metrics and their conventions (AP normalisation, ties, zero-hit queries): reproduce.evaluation.metrics.
The accepted code files (this package's .h5, MATLAB .mat, .h5, .npz, .npy; codes N x K or K x N,
±1, 0/1 or packed; labels as matrices or class indices) are described in reproduce.evaluation.codes.
"""
import argparse

from .cli import BITS, NON_NEGATIVE, POSITIVE, ArgumentParser, run_cli
from .errors import UserError
from .evaluation.codes import (LABEL_KEYS, ORIENTATIONS, code_paths, codes_backbone, encoding_difference,
                               labels_by_path, read_codes, read_external_labels)
from .evaluation.metrics import DEFAULT_NS, TIES, ZERO_HIT
from .evaluation.records import evaluate_record, protocol, write_record
from .pipeline import identity as ids
from .utils.fileio import sha1_file
from .utils.locks import refuse_inside_a_writer, remove_leftovers, writer_lock


MAX_NS = 1000    # cut-offs of precision@N (the paper plots 20; our bound)


def get_args_parser():
    p = ArgumentParser(prog="python -m reproduce.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--query", required=True, help="query codes (.h5 of reproduce.encode, .mat, .h5, .npz, .npy)")
    p.add_argument("--database", required=True, help="database codes (same formats)")
    p.add_argument("--out", required=True, help="output folder for metrics.json and the curves")
    p.add_argument("--topk", type=POSITIVE, default=None,
                   help="MAP over the top R (default: the whole database, the CIFAR-10 protocol; "
                        "the authors used 5000 for NUS-WIDE)")
    p.add_argument("--ties", choices=TIES, default="index",
                   help="equal distances: database order (default, deterministic) or the expected "
                        "value over all tie orders (McFee & Lanckriet 2012)")
    p.add_argument("--zero-hit", choices=ZERO_HIT, default="skip",
                   help="queries with no relevant item in the top R: left out of MAP (default, the "
                        "authors' script) or counted as 0")
    p.add_argument("--radius", type=NON_NEGATIVE, default=2,
                   help="Hamming radius of precision/recall (default 2, the paper's)")
    p.add_argument("--ns", type=POSITIVE, nargs="+", default=list(DEFAULT_NS),
                   help="top-N cut-offs (default 100 200 ... 1000, the paper's Figs. 3-4 (c))")
    p.add_argument("--continuous", action="store_true",
                   help="DHN-B: rank by the inner product of the codes as stored, no sign")
    p.add_argument("--sign", action="store_true",
                   help="binarise real-valued foreign codes by sign (code >= 0 -> +1)")
    p.add_argument("--bits", type=BITS, default=None, help="K of packed uint8 codes (default 8 x bytes)")
    for who in ("query", "database"):
        p.add_argument(f"--{who}-labels", default=None,
                       help=f"{who} labels from a list file or .npy (default: from the code file)")
        p.add_argument(f"--{who}-codes-key", default=None, help=f"variable holding the {who} codes")
        p.add_argument(f"--{who}-labels-key", default=None, help=f"variable holding the {who} labels")
    p.add_argument("--orientation", choices=ORIENTATIONS, default=None,
                   help="NxK (rows are the items) or KxN: for a foreign code file with as many bits as items")
    p.add_argument("--allow-mixed", action="store_true",
                   help="evaluate query and database codes of different checkpoints, pipelines, means or "
                        "crops (recorded in metrics.json); refused otherwise")
    p.add_argument("--method", default=None, help="method name (default: the file's 'method' attribute)")
    p.add_argument("--dataset", default=None, help="dataset name (default: the file's 'dataset' attribute)")
    p.add_argument("--seed", type=NON_NEGATIVE, default=None, help="run seed (default: the file's 'seed' attribute)")
    p.add_argument("--force", action="store_true", help="replace different existing outputs")
    return p


def _attr(files, *names):
    """The first non-empty scalar HDF5 attribute of those names, query file first (an array or
    other non-scalar attribute is not a name or a seed and is passed over)."""
    for f in files:
        for k in names:
            value = f.attrs.get(k)
            if isinstance(value, (str, int, float)) and not isinstance(value, bool) and value != "":
                return value
    return None


def external_labels(source, code_path):
    """--query-labels / --database-labels: a list file's labels matched to the code file's images
    by path when it stores them (reproduce.encode's files do), else by row; or a .npy array."""
    paths = None if str(source).lower().endswith(".npy") else code_paths(code_path)
    return read_external_labels(source) if paths is None else labels_by_path(source, paths, code_path)


def codes_identity(f, who):
    """What a code file was made from: the identity its encoding recorded, else its content."""
    return ids.from_attr(f.attrs.get("identity")) or ids.file_identity(who, f.path)


def main(argv=None):
    args = get_args_parser().parse_args(argv)
    if (args.topk is not None and args.topk < 1) or args.radius < 0 or min(args.ns) < 1:
        raise UserError("--topk and --ns must be positive, --radius at least 0")
    if len(args.ns) > MAX_NS:     # the precision@N table is queries x cut-offs (8 bytes each)
        raise UserError(f"--ns: {len(args.ns)} cut-offs; at most {MAX_NS}")
    args.ns = sorted(set(args.ns))   # the curve's rows, once each, in order
    files = []
    for who, path in (("query", args.query), ("database", args.database)):
        ext = getattr(args, f"{who}_labels")
        f = read_codes(path, getattr(args, f"{who}_codes_key"), getattr(args, f"{who}_labels_key"),
                       labels=None if ext is None else external_labels(ext, path), bits=args.bits,
                       orientation=args.orientation)
        if f.labels is None:
            raise UserError(f"{path}: no labels found (looked for {', '.join(LABEL_KEYS)}); give "
                            f"them with --{who}-labels")
        f.info["labels_source"] = ext or path
        files.append(f)
    q, d = files
    if q.codes.shape[1] != d.codes.shape[1]:
        raise UserError(f"{q.path}: {q.codes.shape[1]}-bit codes, but {d.path} has "
                        f"{d.codes.shape[1]}-bit codes")
    mixed = encoding_difference([(q.path, q.attrs), (d.path, d.attrs)], roles=("query", "database"))
    if mixed and not args.allow_mixed:
        raise UserError(f"{mixed}; pass --allow-mixed to evaluate them together anyway")
    width = None
    if q.labels.ndim == 1 and d.labels.ndim == 1:
        width = int(max(q.labels.max(), d.labels.max())) + 1
    ql, dl = q.label_matrix(width), d.label_matrix(width)
    if ql.shape[1] != dl.shape[1]:
        raise UserError(f"{q.path}: labels have {ql.shape[1]} classes, but {d.path} labels have "
                        f"{dl.shape[1]}")
    if args.continuous:
        qc, dc = q.codes, d.codes
    else:
        qc, dc = q.binary_codes(args.sign), d.binary_codes(args.sign)
    seed = args.seed if args.seed is not None else _attr(files, "seed")
    if seed is not None and not str(seed).lstrip("-").isdigit():
        raise UserError(f"{q.path}: attribute seed={seed!r} is not an integer; give --seed")
    doc = evaluate_record(args.method or _attr(files, "method", "variant"),
                          args.dataset or _attr(files, "dataset"), qc, dc, ql, dl,
                          protocol(args.topk, args.ties, args.zero_hit, args.radius, args.ns),
                          seed=None if seed is None else int(seed), binary=not args.continuous,
                          inputs={"query": dict(q.info, sha1=sha1_file(q.path)),
                                  "database": dict(d.info, sha1=sha1_file(d.path)),
                                  **({"mixed": mixed} if mixed else {})},
                          where=f"{q.path}, {d.path}", backbone=codes_backbone(files))
    doc["identity"] = ids.make_identity("evaluate", "evaluate", dict(doc["conventions"], method=doc["method"]),
                                        {who: codes_identity(f, who) for who, f in (("query", q), ("database", d))})
    metrics = doc["metrics"]
    refuse_inside_a_writer(args.out, "--out")      # e.g. a dataset command's --out, while it runs
    with writer_lock(args.out, "--out"):
        remove_leftovers([args.out])
        written = write_record(args.out, doc, force=args.force)
    at = f"@{args.topk}" if args.topk else ""
    print(f"MAP{at} {metrics['map']:.4f} ({metrics['map_queries_counted']} of "
          f"{metrics['num_queries']} queries counted; {metrics['num_database']} database items, "
          f"{metrics['bits']} bits); wrote {', '.join(written)}")


if __name__ == "__main__":
    run_cli(main)
