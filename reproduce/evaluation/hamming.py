"""Compiled kernels of Hamming ranking: packed codes, XOR + popcount, counting sort by distance.

A K-bit code is packed into ceil(K/64) uint64 words; the Hamming distance of two codes is the
popcount of their XOR, and takes only K+1 values, so a ranking never needs a comparison sort: per
query, one O(N) pass builds the histogram of distances (`hist[d]` items, `relhist[d]` of them
relevant), from which every metric that does not depend on the order *inside* a distance group
(precision within a radius, the PR curve, the tie-aware expected AP) follows directly. For the
index-ordered ranking (equal distances keep database order, like a stable sort), the rank of item
j at distance d is

    rank_j = (#items at distance < d) + (#items at distance d with index <= j),

which a second O(N) pass over the stored distances counts without sorting. The first pass runs
one packed word at a time over the whole database (stored word-major, (W, N)), so its inner loops
are plain contiguous loops that LLVM vectorises; only the histogram and the second pass scatter.

Relevance is "shares at least one label" (the authors' similarity): multi-hot labels are packed
into uint64 bitmasks the same way, and an item is relevant when some word of (query AND item) is
non-zero, for any number of labels C (ceil(C/64) words).

The group functions (`expected_ap_from_groups`, `expected_hits_from_groups`) take the sizes of the
tie groups in rank order, so the continuous (inner-product) ranking of `reproduce.evaluation.metrics` uses
them too. All kernels are numba `@njit(cache=True)`; the per-query kernel is parallel over queries.
"""
import math

import numpy as np
from numba import njit, prange, types
from numba.extending import intrinsic


def pack_bits(bits):
    """(N, K) bool -> (N, ceil(K/64)) uint64: each row's K bits packed into words.

    np.packbits orders bits inside each byte; the order does not matter as long as the query and
    database are packed alike (the words are only XORed, ANDed and popcounted). Padding bits are 0.
    """
    bits = np.asarray(bits, dtype=bool)
    n, k = bits.shape
    words = max(1, -(-k // 64))
    packed = np.zeros((n, words * 8), dtype=np.uint8)
    packed[:, :-(-k // 8)] = np.packbits(bits, axis=1)
    return np.ascontiguousarray(packed).view(np.uint64)


@intrinsic
def _popcount64(typingctx, x):
    """LLVM's ctpop on a uint64 (the CPU's popcnt instruction where there is one), typed int64 so
    that sums with other integers stay integers (numba turns uint64 + int64 into float64)."""
    sig = types.int64(types.uint64)

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])
    return sig, codegen


@njit(cache=True)
def _log_choose(n, k):
    return math.lgamma(n + 1.0) - math.lgamma(k + 1.0) - math.lgamma(n - k + 1.0)


@njit(cache=True)
def _harmonic_sums(s, m):
    """H1 = sum_{p=1..m} 1/(s+p) and H2 = sum_{p=1..m} (p-1)/(s+p): positions s+1..s+m."""
    h1 = 0.0
    h2 = 0.0
    for p in range(1, m + 1):
        inv = 1.0 / (s + p)
        h1 += inv
        h2 += (p - 1.0) * inv
    return h1, h2


@njit(cache=True)
def _expected_gain(rb, m, y, h1, h2):
    """E[sum of precision@rank over the relevant items among positions s+1..s+m], given that y of
    those m positions hold relevant items in uniformly random order and rb relevant items rank
    before them. Each position is relevant with probability y/m; given that, the number of other
    relevant items before position p is (p-1)(y-1)/(m-1) in expectation (McFee & Lanckriet 2012).
    """
    if y == 0:
        return 0.0
    inner = (rb + 1.0) * h1
    if m > 1:
        inner += (y - 1.0) / (m - 1.0) * h2
    return y / m * inner


@njit(cache=True)
def expected_ap_from_groups(sizes, rels, cut, skip):
    """Tie-aware AP@cut: the expectation of the authors' AP@R over all orders inside tie groups.

    sizes, rels: (G,) int64, the tie groups in rank order (items, relevant items; empty groups are
    ignored). AP@R = sum_{k<=R} rel_k P@k / (relevant items in the top R).

    Groups wholly inside the top R contribute their expected gain A (the normaliser, the number of
    relevant items in them, rb, is fixed). When the cut falls inside a group (n items, r relevant,
    m = R - s of them inside the top R), the number Y of relevant items it contributes is
    hypergeometric(n, r, m) and the normaliser rb + Y is random, so we compute exactly

        E[AP] = sum_y P(Y=y) (A + E[gain | Y=y]) / (rb + y),

    using that the orders inside different groups are independent and that, given Y=y, the y
    relevant items are uniformly placed among the m positions. Orders with no relevant item in the
    top R (rb + y = 0) have no AP: with skip (the authors' convention) the result is the
    conditional expectation given at least one hit, NaN when no order has a hit; without skip
    (zero_hit="zero") they count 0. Without a cut group this is McFee & Lanckriet's tie-aware AP.
    """
    s = 0
    rb = 0
    a = 0.0
    for g in range(sizes.shape[0]):
        n = sizes[g]
        if n == 0:
            continue
        r = rels[g]
        if s + n <= cut:
            if r > 0:
                h1, h2 = _harmonic_sums(s, n)
                a += _expected_gain(rb, n, r, h1, h2)
            s += n
            rb += r
            if s == cut:
                break
            continue
        m = cut - s
        if r == 0 or m == 0:
            break
        h1, h2 = _harmonic_sums(s, m)
        lo = max(0, m - (n - r))
        hi = min(r, m)
        log_total = _log_choose(n, m)
        val = 0.0
        p_hit = 0.0
        p_all = 0.0
        for y in range(lo, hi + 1):
            p = math.exp(_log_choose(r, y) + _log_choose(n - r, m - y) - log_total)
            p_all += p
            if rb + y == 0:
                continue
            val += p * (a + _expected_gain(rb, m, y, h1, h2)) / (rb + y)
            p_hit += p
        # p_all is 1 up to lgamma rounding; dividing by it keeps the pmf exactly normalised.
        if skip:
            return val / p_hit if p_hit > 0.0 else np.nan
        return val / p_all
    if rb > 0:
        return a / rb
    return np.nan if skip else 0.0


@njit(cache=True)
def expected_hits_from_groups(sizes, rels, cut):
    """Expected number of relevant items in the top `cut` over all orders inside tie groups:
    the groups before the cut plus m * r / n of the group the cut falls in."""
    s = 0
    rb = 0
    for g in range(sizes.shape[0]):
        n = sizes[g]
        if s + n <= cut:
            s += n
            rb += rels[g]
            continue
        return rb + (cut - s) * rels[g] / n
    return float(rb)


@njit(cache=True)
def _cut_group(start, hist, cut):
    """The distance d whose group holds rank `cut` (1-based), and how many of its items rank
    within the top `cut` (cut <= total items)."""
    for d in range(hist.shape[0]):
        if start[d] + hist[d] >= cut:
            return d, cut - start[d]
    return hist.shape[0] - 1, hist[-1]


@njit(cache=True)
def _index_ties_pass(buf, hist, relhist, cut, ns, skip, hits_out):
    """Second pass for ties="index": the rank of each item from the histograms and the count of
    items already seen at the same distance (database order), then AP@cut and hits@ns.

    buf: (N,) uint32 holding v = 2 * distance + relevant, in database order.
    """
    nb = hist.shape[0]
    start = np.zeros(nb, np.int64)
    relstart = np.zeros(nb, np.int64)
    acc = 0
    racc = 0
    for d in range(nb):
        start[d] = acc
        relstart[d] = racc
        acc += hist[d]
        racc += relhist[d]
    # Only distances up to the one holding rank max(cut, ns) matter. hits@n = relevant items
    # at smaller distances + those among the first m_n (database order) of the cut group d_n.
    dcut = _cut_group(start, hist, cut)[0]
    nt = ns.shape[0]
    d_n = np.empty(nt, np.int64)
    m_n = np.empty(nt, np.int64)
    in_cut = np.zeros(nb, np.bool_)
    for t in range(nt):
        d_n[t], m_n[t] = _cut_group(start, hist, ns[t])
        in_cut[d_n[t]] = True
        dcut = max(dcut, d_n[t])
        hits_out[t] = relstart[d_n[t]]
    seen = np.zeros(2 * nb, np.int64)      # items seen so far per v = 2 * distance + relevant
    total = 0.0
    hits = 0
    for j in range(buf.shape[0]):
        v = np.int64(buf[j])
        d = v >> 1
        if d > dcut:
            continue
        seen[v] += 1
        if v & 1:
            pos = seen[2 * d] + seen[2 * d + 1]     # position inside the distance group
            rank = start[d] + pos
            if rank <= cut:
                total += (relstart[d] + seen[v]) / rank
                hits += 1
            if in_cut[d]:
                for t in range(nt):
                    if d == d_n[t] and pos <= m_n[t]:
                        hits_out[t] += 1.0
    if hits > 0:
        return total / hits
    return np.nan if skip else 0.0


@njit(parallel=True, cache=True)
def hamming_rank_stats(q_codes, db_codes_t, q_labels, db_labels_t, bits, cut, ns, expected, skip):
    """Per-query statistics of the Hamming ranking of the database.

    q_codes (Q, W): packed query codes (uint64); db_codes_t (W, N): packed database codes,
    word-major (pack_bits(...).T, contiguous); q_labels (Q, L), db_labels_t (L, N): packed labels
    likewise; bits: K; cut: R in 1..N (AP@R); ns: (T,) int64 cut-offs in 1..N; expected:
    ties="expected" (else "index"); skip: zero_hit="skip" (else "zero").
    Returns ap (Q,) float64 (NaN: left out), hist and relhist (Q, K+1) int64 (items / relevant
    items at each distance), hits_at_n (Q, T) float64 (relevant items in the top n, expected over
    tie orders with `expected`).
    """
    nq = q_codes.shape[0]
    n = db_codes_t.shape[1]
    ap = np.empty(nq, np.float64)
    hist = np.zeros((nq, bits + 1), np.int64)
    relhist = np.zeros((nq, bits + 1), np.int64)
    hits_at_n = np.zeros((nq, ns.shape[0]), np.float64)
    for i in prange(nq):
        # buf[j] = v = 2 * distance + relevant, built one word at a time over the whole database:
        # loops over contiguous rows with no scatter, which LLVM vectorises (3x faster than
        # computing each item's distance, relevance and histogram entry in one loop).
        buf = np.zeros(n, np.uint32)
        for w in range(q_codes.shape[1]):
            qw = q_codes[i, w]
            row = db_codes_t[w]
            for j in range(n):
                buf[j] += np.uint32(_popcount64(qw ^ row[j]))
        for j in range(n):
            buf[j] <<= 1
        for w in range(q_labels.shape[1]):     # low bit: (query AND item) != 0 in some word
            qw = q_labels[i, w]
            row = db_labels_t[w]
            for j in range(n):
                buf[j] |= np.uint32((qw & row[j]) != 0)
        h2 = np.zeros(2 * bits + 2, np.int64)   # histogram of v: one increment per item
        for j in range(n):
            h2[buf[j]] += 1
        h = hist[i]
        rh = relhist[i]
        for d in range(bits + 1):
            h[d] = h2[2 * d] + h2[2 * d + 1]
            rh[d] = h2[2 * d + 1]
        if expected:
            ap[i] = expected_ap_from_groups(h, rh, cut, skip)
            for t in range(ns.shape[0]):
                hits_at_n[i, t] = expected_hits_from_groups(h, rh, ns[t])
        else:
            ap[i] = _index_ties_pass(buf, h, rh, cut, ns, skip, hits_at_n[i])
    return ap, hist, relhist, hits_at_n
