"""CNNH's stage 1 (Xia et al., AAAI 2014), used by reproduce.methods.cnnh.

Approximate codes H for the n training images from the pairwise similarity
S (S_ij = +1 when images i and j share a label, -1 otherwise; S_ii = +1):

    min_H || S - (1/q) H H^T ||_F^2,   H in {-1, 1}^{n x q}, relaxed to H in [-1, 1]^{n x q},

i.e. min ||H H^T - q S||_F^2, solved by the paper's coordinate descent: pick one entry H_ij, take
the Newton step of the objective g along it, clipped to the box, with L = H H^T - q S,

    g'(H_ij)  = 4 L_i. H_.j,        g''(H_ij) = 4 (H_.j^T H_.j + H_ij^2 + L_ii),
    d = max(-1 - H_ij, min(-g'/g'', 1 - H_ij)),
    L_i. += d H_.j^T,  L_.i += d H_.j,  L_ii += d^2,  H_ij += d

(the paper's update, as formulas 6-8 in swuxyj/DeepHash-pytorch CNNH.py have it). The codes are
sign(H) (>= 0 -> +1).

How it is computed here (same iterates, bounded memory and time): L is never stored. With
G = H^T H (q x q) and the row norms r_i = ||H_i||^2 kept up to date,
L_i. H_.j = H_i. G_.j - q S_i. H_.j and L_ii = r_i - q, so one update costs O(n + q) (one row of S,
int8) instead of O(n) writes into an n x n float matrix. Each sweep visits all n*q entries once:
the rows in a random order and, within a row, its q entries in a random order (drawn from
numpy.random.default_rng(seed); a row of S then stays in cache for its q updates).
Deviations, both guards the paper does not state: when g'' <= 0 the Newton step is undefined and
the better box end is taken; a step that would raise the exact objective (the change is a quartic
in d, computed in closed form) is skipped, so the objective never increases. Sweeps stop after
`max_sweeps`, when a sweep lowers the objective by less than `tol` (relative), or once
`max_seconds` have passed.
"""
import time

import numpy as np
from numba import njit

DEFAULT_MAX_SWEEPS = 10     # our choice (the paper's T is not stated); see stage1()
DEFAULT_TOL = 1e-4          # our choice: stop when a sweep gains < 0.01 % of the objective
SIM_BLOCK = 1024            # rows of S built / multiplied at a time (one n x 1024 float block)


def similarity_matrix(labels):
    """CNNH's S as int8 (n x n): +1 if two rows share >= 1 label, -1 otherwise, +1 on the diagonal
    (also for an unlabelled row: (1/q) H_i.H_i^T can only be >= 0)."""
    L = np.asarray(labels, dtype=np.float32)
    n = L.shape[0]
    S = np.empty((n, n), dtype=np.int8)
    for a in range(0, n, SIM_BLOCK):
        share = ((L[a:a + SIM_BLOCK] @ L.T) > 0).view(np.int8)
        share *= 2
        share -= 1
        S[a:a + SIM_BLOCK] = share
    np.fill_diagonal(S, 1)
    return S


def stage1_objective(H, S):
    """|| S - (1/q) H H^T ||_F^2 (float64), by blocks of rows."""
    H = np.asarray(H, dtype=np.float64)
    q = H.shape[1]
    total = 0.0
    for a in range(0, H.shape[0], SIM_BLOCK):
        R = H[a:a + SIM_BLOCK] @ H.T
        R *= -1.0 / q
        R += S[a:a + SIM_BLOCK]
        total += float(np.einsum("ij,ij->", R, R))
    return total


@njit(cache=True)
def _quartic_change(d, a, c2, hij):
    """Exact change of ||H H^T - q S||_F^2 when H_ij moves by d (a = L_i. H_.j,
    c2 = 2 (H_.j^T H_.j + H_ij^2 + L_ii))."""
    return 4.0 * a * d + c2 * d * d + 4.0 * hij * d * d * d + d * d * d * d


@njit(cache=True)
def _row_dot(Si, h):
    """sum_m Si[m] h[m] with eight fixed partial sums: vectorisable and the same rounding on
    every CPU (fastmath would let LLVM pick the order per instruction set)."""
    n = h.shape[0]
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0.0
    m = 0
    while m + 8 <= n:
        a0 += Si[m] * h[m]
        a1 += Si[m + 1] * h[m + 1]
        a2 += Si[m + 2] * h[m + 2]
        a3 += Si[m + 3] * h[m + 3]
        a4 += Si[m + 4] * h[m + 4]
        a5 += Si[m + 5] * h[m + 5]
        a6 += Si[m + 6] * h[m + 6]
        a7 += Si[m + 7] * h[m + 7]
        m += 8
    total = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))
    while m < n:
        total += Si[m] * h[m]
        m += 1
    return total


@njit(cache=True)
def _sweep(Ht, S, G, r, rows, cols):
    """One pass of coordinate descent: rows i in the order `rows`, and in row i the entries
    H_ij, j in the order cols[i]. Ht: q x n (H transposed, so a column H_.j is contiguous),
    S: n x n int8, G = H^T H, r_i = ||H_i||^2; all updated in place. Returns the summed exact
    change of ||H H^T - q S||_F^2."""
    q = Ht.shape[0]
    change = 0.0
    for t in range(rows.shape[0]):
        i = rows[t]
        Si = S[i]
        for u in range(q):
            j = cols[i, u]
            hg = 0.0
            for k in range(q):
                hg += Ht[k, i] * G[k, j]
            a = hg - q * _row_dot(Si, Ht[j])             # L_i. H_.j
            hij = Ht[j, i]
            c2 = 2.0 * (G[j, j] + hij * hij + (r[i] - q))    # g''/2 (S_ii = 1)
            low, high = -1.0 - hij, 1.0 - hij
            if c2 > 0.0:
                d = -2.0 * a / c2                        # -g'/g'' = -4a / (2 c2)
                d = min(max(d, low), high)
            elif _quartic_change(low, a, c2, hij) < _quartic_change(high, a, c2, hij):
                d = low
            else:
                d = high
            if d == 0.0:
                continue
            delta = _quartic_change(d, a, c2, hij)
            if delta > 0.0:
                continue
            for k in range(q):
                if k != j:
                    v = d * Ht[k, i]
                    G[j, k] += v
                    G[k, j] += v
            G[j, j] += 2.0 * d * hij + d * d
            r[i] += 2.0 * d * hij + d * d
            Ht[j, i] = hij + d
            change += delta
    return change


class Stage1Result:
    """What stage 1 gives: H (n x q relaxed codes in [-1, 1], float64), codes (sign(H), +-1
    float32), history (the objective ||S - HH^T/q||_F^2 before the first and after each sweep),
    sweeps, seconds."""

    def __init__(self, H, history, seconds):
        self.H = H
        self.codes = np.where(H >= 0, 1.0, -1.0).astype(np.float32)
        self.history = history
        self.sweeps = len(history) - 1
        self.seconds = seconds


def stage1(labels=None, bits=48, seed=0, max_sweeps=DEFAULT_MAX_SWEEPS, tol=DEFAULT_TOL,
           max_seconds=None, similarity=None):
    """CNNH stage 1 on the training labels (n x C multi-hot) or a given S (n x n, +-1).

    H starts uniform in [-1, 1] (our choice; the paper does not say) from
    numpy.random.default_rng(seed), which also draws each sweep's order. Returns a Stage1Result.
    Memory: S as int8 (n^2 bytes: 169 MB for n = 13,000); time: about n^2 q multiply-adds a sweep.
    """
    start = time.perf_counter()
    if (labels is None) == (similarity is None):
        raise ValueError("pass exactly one of labels and similarity")
    if similarity is None:
        S = similarity_matrix(labels)
    else:
        S = np.ascontiguousarray(similarity, dtype=np.int8)
        if S.ndim != 2 or S.shape[0] != S.shape[1] or not np.all((S == 1) | (S == -1)):
            raise ValueError("similarity must be a square +-1 matrix")
        if not np.all(np.diagonal(S) == 1):
            raise ValueError("similarity must be +1 on the diagonal")
    n, q = S.shape[0], int(bits)
    rng = np.random.default_rng(seed)
    Ht = np.ascontiguousarray(rng.uniform(-1.0, 1.0, size=(n, q)).T)
    history = [stage1_objective(Ht.T, S)]
    for _ in range(int(max_sweeps)):
        if max_seconds is not None and time.perf_counter() - start > max_seconds:
            break
        G = Ht @ Ht.T                                   # exact every sweep: no drift
        r = np.einsum("ij,ij->j", Ht, Ht)
        rows = rng.permutation(n).astype(np.int64)
        cols = rng.permuted(np.tile(np.arange(q, dtype=np.int64), (n, 1)), axis=1)
        _sweep(Ht, S, G, r, rows, cols)
        history.append(stage1_objective(Ht.T, S))
        before, after = history[-2], history[-1]
        if before <= 0 or (before - after) / before < tol:
            break
    return Stage1Result(np.ascontiguousarray(Ht.T), history, time.perf_counter() - start)
