"""Retrieval metrics of the paper: MAP, precision/recall within a Hamming radius, PR curve of
Hamming ranking, precision and recall at top-N, and the DHN-B inner-product ranking.

Inputs are arrays: codes (Q, K) / (N, K) and multi-hot labels (Q, C) / (N, C). A database item is
relevant to a query when they share at least one label (the authors' similarity, as in their
PairwiseLoss layer and evaluation script). Binary codes are ±1 (or 0/1, 0 read as -1); the
ranking is by Hamming distance, i.e. by -<b_q, b_db> of the sign codes, which is what
thuml/hash-caffe's predict_parallel.py sorts (dhn-caffe's generate.py saves the unsigned 10-crop
codes and signs nothing; ranking those is binary=False below; official_settings.md).

Conventions (official_settings.md, "Evaluation in the authors' code"):
  * AP@R = sum_{k<=R} P@k * rel_k / (number of relevant items within the top R); R = topk, or the
    whole database when topk is None (CIFAR-10: all; NUS-WIDE: 5000).
  * zero_hit="skip" (authors'): queries with no relevant item in the top R are left out of the
    mean; "zero" (swuxyj's port) counts them as 0. If every query is left out, the authors' code
    gives NaN (np.mean of nothing); this package reports 0.0 (its choice).
  * ties="index": equal distances keep database order (a stable sort), so results are
    deterministic; the authors' np.argsort has an arbitrary tie order. ties="expected": the
    expectation over all orders inside each tie group (McFee & Lanckriet 2012), computed exactly,
    also when the top-R cut falls inside a tie group (see hamming.expected_ap_from_groups; with
    "skip" it is the expectation given at least one hit in the top R).
  * Within radius r (as thulab's port): precision = relevant / retrieved with distance <= r, 0 when
    nothing is retrieved (thulab's too); recall = relevant retrieved / relevant in the database,
    and 0 when the database holds nothing relevant to the query (this package's choice: thulab's
    port gives 0/0 = NaN there). Both are means over all queries. The PR curve is the same at
    every radius 0..K (cuts at whole distances, so independent of tie order).
  * Precision@N = relevant in the top N / N and recall@N = that / relevant in the database, with
    N capped at the database size; under ties="expected" the expected count of relevant items.
  * binary=False (DHN-B, paper Table 2): rank by -<z_q, z_db> of the continuous codes in float64,
    with the same tie conventions (equal scores are a tie group); no radius metrics then.

The Hamming path packs codes and labels into uint64 words and runs compiled O(N)-per-query kernels
(reproduce.evaluation.hamming), chunked over queries so memory stays bounded.
"""
import numpy as np

from ..utils.signals import check_signal
from .hamming import (expected_ap_from_groups, expected_hits_from_groups, hamming_rank_stats,
                      pack_bits)

DEFAULT_NS = tuple(range(100, 1001, 100))   # paper Figs. 3-4 (c): precision vs top 100..1000
TIES = ("index", "expected")
ZERO_HIT = ("skip", "zero")
QUERY_CHUNK = 1024          # queries per compiled call (outputs are (chunk, K+1) histograms)
RANK_PAIRS = 1 << 28        # query-item pairs per compiled call at most: well under a second, so
                            # that Ctrl-C (taken only between calls, see utils.signals) is prompt
SCORE_BYTES = 64 << 20      # float64 score block per chunk in the inner-product ranking


def _check_array(a, name, ndim=2):
    a = np.asarray(a)
    if a.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array, got shape {a.shape}")
    if a.dtype.kind not in "biuf":
        raise ValueError(f"{name}: expected numbers, got dtype {a.dtype}")
    if a.shape[0] == 0:
        raise ValueError(f"{name}: empty (shape {a.shape})")
    return a


def binary_bits(codes, name="codes"):
    """(N, K) ±1 or 0/1 codes -> (N, K) bool (True = +1). Other values are a ValueError."""
    codes = _check_array(codes, name)
    if codes.dtype.kind == "b":
        return codes.copy()
    plus = codes == 1
    bad = ~(plus | (codes == -1) | (codes == 0))
    mixed = (codes == -1).any() and (codes == 0).any()
    if bad.any() or mixed:
        i, k = np.argwhere(bad)[0] if bad.any() else np.argwhere(codes == 0)[0]
        raise ValueError(f"{name}: binary codes must be ±1 or 0/1; found {codes[i, k]!r} at row {i}, "
                         f"bit {k}")
    return plus


def _prepare(query_codes, db_codes, query_labels, db_labels, binary):
    """Validate shapes and values; returns (qc, dc, ql_packed, dl_packed)."""
    qc = _check_array(query_codes, "query_codes")
    dc = _check_array(db_codes, "db_codes")
    ql = _check_array(query_labels, "query_labels")
    dl = _check_array(db_labels, "db_labels")
    if qc.shape[1] != dc.shape[1]:
        raise ValueError(f"query codes have {qc.shape[1]} bits, database codes {dc.shape[1]}")
    if ql.shape[1] != dl.shape[1]:
        raise ValueError(f"query labels have {ql.shape[1]} classes, database labels {dl.shape[1]}")
    for c, l, who in ((qc, ql, "query"), (dc, dl, "database")):
        if c.shape[0] != l.shape[0]:
            raise ValueError(f"{who}: {c.shape[0]} codes but {l.shape[0]} label rows")
        if c.dtype.kind == "f" and not np.isfinite(c).all():
            raise ValueError(f"{who} codes contain NaN or infinity")
    if binary:
        qc, dc = binary_bits(qc, "query_codes"), binary_bits(dc, "db_codes")
    else:
        qc, dc = qc.astype(np.float64), dc.astype(np.float64)
    return qc, dc, pack_bits(ql != 0), pack_bits(dl != 0)


def _check_conventions(ties, zero_hit, topk):
    if ties not in TIES:
        raise ValueError(f"ties must be one of {TIES}, got {ties!r}")
    if zero_hit not in ZERO_HIT:
        raise ValueError(f"zero_hit must be one of {ZERO_HIT}, got {zero_hit!r}")
    if topk is not None and int(topk) < 1:
        raise ValueError(f"topk must be a positive integer or None, got {topk!r}")


def _cutoffs(ns, n):
    ns = np.asarray(DEFAULT_NS if ns is None else ns, dtype=np.int64).reshape(-1)
    if (ns < 1).any():
        raise ValueError(f"top-N cut-offs must be positive, got {ns.tolist()}")
    return ns, np.minimum(ns, n)


def _relevance(ql_words, dl_words):
    """(q, L), (N, L) packed labels -> (q, N) bool: shares at least one label."""
    rel = np.zeros((ql_words.shape[0], dl_words.shape[0]), dtype=bool)
    for w in range(ql_words.shape[1]):
        rel |= (ql_words[:, None, w] & dl_words[None, :, w]) != 0
    return rel


def _inner_product_query(score, rel, cut, ns, expected, skip):
    """One query of the inner-product ranking: score (N,) float64 (smaller ranks first), rel (N,)
    bool. Returns (ap, hits (T,)). Only the top max(cut, ns) are sorted, plus every item tied
    with the last of them, so the tie groups that the cuts can fall in are complete."""
    n = score.shape[0]
    depth = max(cut, int(ns.max()))
    if depth >= n:
        order = np.argsort(score, kind="stable")
    else:
        last = np.partition(score, depth - 1)[depth - 1]
        candidates = np.flatnonzero(score <= last)
        order = candidates[np.argsort(score[candidates], kind="stable")]
    ranked = rel[order]
    if expected:
        ranked_score = score[order]
        starts = np.r_[0, np.flatnonzero(np.diff(ranked_score) != 0) + 1]
        sizes = np.diff(np.r_[starts, ranked.shape[0]]).astype(np.int64)
        rels = np.add.reduceat(ranked.astype(np.int64), starts)
        ap = expected_ap_from_groups(sizes, rels, cut, skip)
        hits = np.array([expected_hits_from_groups(sizes, rels, t) for t in ns])
        return ap, hits
    hits_cum = np.cumsum(ranked)
    top = ranked[:cut]
    if hits_cum[cut - 1] > 0:
        ranks = np.flatnonzero(top) + 1
        ap = float(np.sum(hits_cum[ranks - 1] / ranks) / hits_cum[cut - 1])
    else:
        ap = np.nan if skip else 0.0
    return ap, hits_cum[ns - 1].astype(np.float64)


def _ranking_stats(query_codes, db_codes, query_labels, db_labels, topk, ties, zero_hit, ns,
                   binary):
    """Every per-query quantity the metrics need, in one pass over the database.

    Returns dict: ap (Q,) float64 with NaN for queries left out; total_rel (Q,); hits_at_n (Q, T);
    ns (T,) capped cut-offs; n; bits; and with binary, hist / relhist (Q, K+1) per distance.
    """
    _check_conventions(ties, zero_hit, topk)
    qc, dc, ql, dl = _prepare(query_codes, db_codes, query_labels, db_labels, binary)
    nq, n, bits = qc.shape[0], dc.shape[0], qc.shape[1]
    cut = n if topk is None else min(int(topk), n)
    _, ns = _cutoffs(ns, n)
    expected, skip = ties == "expected", zero_hit == "skip"
    out = {"ap": np.empty(nq), "total_rel": np.empty(nq, np.int64),
           "hits_at_n": np.empty((nq, ns.shape[0])), "ns": ns, "n": n, "bits": bits}
    if binary:
        # database words word-major (W, N) so the kernel's inner loops run over contiguous rows
        qw, dw = pack_bits(qc), np.ascontiguousarray(pack_bits(dc).T)
        dl = np.ascontiguousarray(dl.T)
        out["hist"] = np.empty((nq, bits + 1), np.int64)
        out["relhist"] = np.empty((nq, bits + 1), np.int64)
        chunk = max(1, min(QUERY_CHUNK, RANK_PAIRS // n))
        for a in range(0, nq, chunk):
            b = min(nq, a + chunk)
            ap, hist, relhist, hits = hamming_rank_stats(qw[a:b], dw, ql[a:b], dl, bits, cut, ns,
                                                         expected, skip)
            # A signal that came while the kernel ran was only recorded (utils.signals._DEFER_IN:
            # raising inside a compiled call can crash it); it takes effect here.
            check_signal()
            out["ap"][a:b], out["hist"][a:b], out["relhist"][a:b] = ap, hist, relhist
            out["hits_at_n"][a:b] = hits
        out["total_rel"][:] = out["relhist"].sum(axis=1)
        return out
    chunk = max(1, SCORE_BYTES // (8 * n))
    for a in range(0, nq, chunk):
        b = min(nq, a + chunk)
        scores = -(qc[a:b] @ dc.T)      # rank by -<z_q, z_db> (DHN-B)
        rel = _relevance(ql[a:b], dl)
        out["total_rel"][a:b] = rel.sum(axis=1)
        for i in range(b - a):
            out["ap"][a + i], out["hits_at_n"][a + i] = _inner_product_query(
                scores[i], rel[i], cut, ns, expected, skip)
    return out


def _mean_ap(ap):
    counted = ~np.isnan(ap)
    return (float(ap[counted].mean()) if counted.any() else 0.0), int(counted.sum())


def average_precisions(query_codes, db_codes, query_labels, db_labels, topk=None, ties="index",
                       zero_hit="skip", binary=True):
    """(Q,) float64 AP@topk of each query; NaN for a query left out (zero_hit="skip")."""
    return _ranking_stats(query_codes, db_codes, query_labels, db_labels, topk, ties, zero_hit,
                          (1,), binary)["ap"]


def mean_average_precision(query_codes, db_codes, query_labels, db_labels, topk=None,
                           ties="index", zero_hit="skip", binary=True):
    """MAP@topk (topk=None: the whole database) with the conventions of the module docstring."""
    return _mean_ap(average_precisions(query_codes, db_codes, query_labels, db_labels, topk, ties,
                                       zero_hit, binary))[0]


def _within_radius(stats, radii):
    """Mean precision and recall within each radius: (len(radii),) arrays."""
    retrieved = np.cumsum(stats["hist"], axis=1)
    relevant = np.cumsum(stats["relhist"], axis=1)
    idx = np.minimum(np.asarray(radii), stats["bits"])
    retrieved, relevant = retrieved[:, idx], relevant[:, idx]
    precision = np.divide(relevant, retrieved, out=np.zeros(relevant.shape), where=retrieved > 0)
    total = stats["total_rel"][:, None]
    recall = np.divide(relevant, total, out=np.zeros(relevant.shape), where=total > 0)
    return precision.mean(axis=0), recall.mean(axis=0)


def _check_radius(radius):
    if int(radius) != radius or radius < 0:
        raise ValueError(f"radius must be a non-negative integer, got {radius!r}")
    return int(radius)


def precision_recall_within_radius(query_codes, db_codes, query_labels, db_labels, radius=2):
    """(precision, recall) within Hamming radius `radius` (paper: 2), means over queries."""
    radius = _check_radius(radius)
    stats = _ranking_stats(query_codes, db_codes, query_labels, db_labels, 1, "index", "skip",
                           (1,), True)
    p, r = _within_radius(stats, [radius])
    return float(p[0]), float(r[0])


def pr_curve(query_codes, db_codes, query_labels, db_labels):
    """PR curve of Hamming ranking: (radius (K+1,), precision (K+1,), recall (K+1,)), one point
    per radius 0..K (paper Figs. 3-4 (b))."""
    stats = _ranking_stats(query_codes, db_codes, query_labels, db_labels, 1, "index", "skip",
                           (1,), True)
    radii = np.arange(stats["bits"] + 1)
    p, r = _within_radius(stats, radii)
    return radii, p, r


def _at_n(stats):
    ns = stats["ns"]
    total = stats["total_rel"][:, None]
    hits = stats["hits_at_n"]
    recall = np.divide(hits, total, out=np.zeros(hits.shape), where=total > 0)
    return (hits / ns).mean(axis=0), recall.mean(axis=0)


def precision_recall_at_n(query_codes, db_codes, query_labels, db_labels, ns=DEFAULT_NS,
                          ties="index", binary=True):
    """(precision (T,), recall (T,)) over the top n of the ranking for each n in ns (paper
    Figs. 3-4 (c): n = 100..1000); n larger than the database is capped at its size."""
    stats = _ranking_stats(query_codes, db_codes, query_labels, db_labels, None, ties, "skip", ns,
                           binary)
    return _at_n(stats)


def evaluate_codes(query_codes, db_codes, query_labels, db_labels, topk=None, ties="index",
                   zero_hit="skip", radius=2, ns=None, binary=True):
    """Every metric above in one pass, as a JSON-ready dict of plain floats, ints and lists:

    num_queries, num_database, bits, map, map_queries_counted, precision_within_radius,
    recall_within_radius, pr_curve {radius, precision, recall}, precision_at_n {n, precision,
    recall} (n as requested). With binary=False (inner-product ranking) the radius metrics and
    the PR curve are None. ns=None: DEFAULT_NS.
    """
    radius = _check_radius(radius)
    requested, _ = _cutoffs(ns, 1)
    stats = _ranking_stats(query_codes, db_codes, query_labels, db_labels, topk, ties, zero_hit,
                           requested, binary)
    mean_ap, counted = _mean_ap(stats["ap"])
    p_n, r_n = _at_n(stats)
    result = {"num_queries": int(stats["ap"].shape[0]), "num_database": int(stats["n"]),
              "bits": int(stats["bits"]), "map": mean_ap, "map_queries_counted": counted,
              "precision_within_radius": None, "recall_within_radius": None, "pr_curve": None,
              "precision_at_n": {"n": requested.tolist(), "precision": p_n.tolist(),
                                 "recall": r_n.tolist()}}
    if binary:
        radii = np.arange(stats["bits"] + 1)
        p, r = _within_radius(stats, radii)
        p_r, r_r = _within_radius(stats, [radius])
        result.update(precision_within_radius=float(p_r[0]), recall_within_radius=float(r_r[0]),
                      pr_curve={"radius": radii.tolist(), "precision": p.tolist(),
                                "recall": r.tolist()})
    return result
