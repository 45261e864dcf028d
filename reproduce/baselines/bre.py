"""Binary reconstructive embedding (BRE): a baseline of Table 1 (see reproduce.baselines).

Kernel hash functions h_b(x) = [sum_q W_qb k(x_(q,b), x) > 0] over sampled training points,
learned by coordinate descent so that normalised Hamming distances reconstruct target distances
on sampled pairs, as Kulis & Darrell's published MATLAB code does. The target is, by default,
the label distance of the supervised comparisons (0 for pairs sharing a label, 1 otherwise), or
the authors' scaled Euclidean distance.
"""
import math

import numpy as np

from ..errors import UserError
from .common import Baseline, pca_components
from .mlh import unit_rows

TARGETS = ("labels", "euclidean")
KERNELS = ("linear", "rbf")
THRESHOLD_MARGIN = 1e-6        # BRE.m: thresh(end) + 1e-6, thresh(1) - 1e-6


def kernel_matrix(A, B, kernel, sigma=None):
    """k(a, b) for the rows of A and B: a.b (the authors' demo), or exp(-|a - b|^2 / (2 sigma))."""
    G = A @ B.T
    if kernel == "linear":
        return G
    d2 = (A * A).sum(1)[:, None] + (B * B).sum(1)[None, :] - 2 * G
    return np.exp(-np.maximum(d2, 0) / (2 * sigma))


def bre_objective(H, pairs_i, pairs_j, target):
    """BRE.m's f = 0.5 sum over the sampled pairs (i, j) of (d_H(i, j) / K - target_ij)^2, with
    H the n x K 0/1 codes and d_H the Hamming distance; target is per pair."""
    ham = np.count_nonzero(H[pairs_i] != H[pairs_j], axis=1)
    return 0.5 * np.sum((ham / H.shape[1] - target) ** 2)


def coordinate_step(KW, H, ham, W, K, hash_inds, b, r, pairs_i, pairs_j, target):
    """One update of BRE.m's inner loop, in place: bit b, base r (row r of W's column b).

    With every other weight fixed, the projection of point i is KW_ib + (w - W_rb) K_iq
    (q = hash_inds[r, b]), so its bit flips at w = t_i = W_rb - KW_ib / K_iq. BRE.m sorts the
    t_i, evaluates the objective at the midpoint of every pair of consecutive thresholds and just
    outside both ends (t_1 - 5e-7, t_n + 5e-7: the n + 1 distinct codes w can give) and sets W_rb
    to the best one (first minimum): an exact line search over w. BRE.m walks the candidates
    flipping one bit at a time; here the objective at every candidate comes at once, since a
    pair's term changes exactly for the candidates between its two points' thresholds.
    Points with K_iq = 0 never flip (MATLAB would divide by 0) and are left out of the
    thresholds. ham: per pair Hamming distances over all bits (updated). Returns f.
    """
    n, nbits = H.shape
    q = hash_inds[r, b]
    kcol, kw, w0 = K[:, q], KW[:, b], W[r, b]
    movable = np.flatnonzero(kcol != 0)
    thr = w0 - kw[movable] / kcol[movable]
    order = np.argsort(thr, kind="stable")
    ts = thr[order]
    m = len(ts)
    if m == 0:
        return 0.5 * np.sum((ham / nbits - target) ** 2)
    cand = 0.5 * (np.append(ts, ts[-1] + THRESHOLD_MARGIN)            # thresh1
                  + np.insert(ts, 0, ts[0] - THRESHOLD_MARGIN))       # thresh2
    h0 = (kw + (cand[0] - w0) * kcol) > 0                     # codes at the first candidate
    pos = np.full(n, m + 1)                                   # point i flips entering candidate
    pos[movable[order]] = np.arange(1, m + 1)                 # pos[i] (never: m + 1)
    other = ham - (H[pairs_i, b] != H[pairs_j, b])
    x0 = h0[pairs_i] != h0[pairs_j]
    r0 = (other + x0) / nbits - target
    step = np.where(x0, -1.0, 1.0) / nbits                    # one of the two flips: xor toggles
    delta = 0.5 * ((r0 + step) ** 2 - r0 ** 2)
    lo = np.minimum(pos[pairs_i], pos[pairs_j])
    hi = np.maximum(pos[pairs_i], pos[pairs_j])
    change = (np.bincount(lo, weights=delta, minlength=m + 2)
              - np.bincount(hi, weights=delta, minlength=m + 2))
    f_cand = 0.5 * np.sum(r0 ** 2) + np.cumsum(change)[:m + 1]   # toggled for lo <= c < hi
    best = int(np.argmin(f_cand))
    KW[:, b] = kw + (cand[best] - w0) * kcol
    W[r, b] = cand[best]
    H[:, b] = KW[:, b] > 0
    ham[:] = other + (H[pairs_i, b] != H[pairs_j, b])
    return 0.5 * np.sum((ham / nbits - target) ** 2)


class BRE(Baseline):
    """Binary reconstructive embedding (Kulis & Darrell, NIPS 2009), following Kulis's published
    package (BRE.m and the demo hashing_comparison_script.m; read in github
    Marjan-GH/HashingProject BRE/ at 0451f9e, a copy of the package, and in
    willard-yuan/hashing-baseline-for-image-retrieval BRE/trainBRE.m + init_BREparam.m, the same
    BRE.m wrapped for a toolbox):

    - Data (script 25-31): centre, then scale every sample to unit length; n = trN = 1000
      training points `rp = randperm(N); trIdx = rp(1:trN)` (script 13); PCA to npca = min(K, D)
      dims `eigs(cov(Xtr), npca)` of those points, projections not re-centred (script 48-50);
      linear kernel Ktrain = Xtr2 Xtr2' (script 58).
    - Hash functions (script 68-86): per bit, hash_size = 50 bases `randperm(n)(1:50)` drawn
      independently per bit; W0 = .001 randn(50, K); h_b(x) = [sum_q W_qb k(x_(q,b), x) > 0]
      (0 -> -1).
    - Objective (BRE.m 11-51): f = 0.5 sum_{(i,j) in N} (d_H(i,j) / K - d(i,j))^2 over sampled
      pairs N: for every training point, .05 n others `randperm(n)(1:.05*n)` less (i, i)
      (BRE.m 19-20; 50 per point for n = 1000; (i, j) and (j, i) may both be drawn).
    - Optimisation (BRE.m 57-122): sweeps over the bits; per bit one base `ceil(rand*hash_size)`
      drawn at random and its weight set by exact line search over the n + 1 codes it can give
      (`coordinate_step`); repeat while |f - f before the sweep| > 1e-6.

    Options (published; default here):
      target        BRE.m reconstructs Dist = .5 (K_ii + K_jj - 2 K_ij) / max (BRE.m 11-12):
                    "euclidean" (then unsupervised: labels are not needed). Default "labels":
                    d = 0 for pairs sharing a label, 1 otherwise (the two ends of the scaled
                    range), the supervised use of BRE that the DHN paper's Table 1 compares
                    with KSH, MLH and ITQ-CCA (our reading: the papers publish no BRE settings).
      kernel        "linear" (script 58); "rbf" = exp(-|x - y|^2 / (2 sigma)), sigma the mean
                    squared distance between the n training points (KSH's convention; our
                    choice, offered because kernel BRE is in the paper).
      n_train 1000 (script 13); n_bases 50 (script 68; 20 in Lin & Cai's toolbox wrapper);
      pair_fraction .05 (BRE.m 19); n_pca None = min(K, D) (script 48; 0 = no PCA, an integer
      = that many components); tol 1e-6 (BRE.m 57); max_sweeps: BRE.m has no cap; default
      500 (our bound; at 2,000 x 4,096, 48 bits the fit converged in 57 sweeps, 4-8 s);
      None = no cap.
    Fitted: mean_, pc_ (D x npca, or None), train_index_ (the n training rows), hash_inds_
    (n_bases x K, into train_index_), weights_ (n_bases x K), sigma_ (rbf), pairs_ (2 x P),
    pair_targets_ (P), codes_ (n x K training codes, 0/1), loss_history_ (f before the first
    sweep and after each sweep: non-increasing), converged_.
    Deviations: the training set's mean (the script centres all data); min(n_bases, n) bases and
    max(1, floor(.05 n)) partners for tiny n (the script would fail); points with k(x_q, x_i) = 0
    never flip and are left out of the line search (MATLAB divides by 0); the objective at all
    candidates computed at once instead of flip by flip (equal up to round-off); numpy's
    generator; a sample equal to the mean stays 0 (MATLAB: NaN).
    """
    name = "bre"

    def min_train_samples(self, dim):
        npca = min(self.bits, dim) if self.n_pca is None else min(self.n_pca, dim)
        return npca + 1 if npca > 0 else 2
    supervised = True
    zero_is_positive = False      # BRE demo: H_query = (Ktest(:, hash_inds) * W) > 0

    def __init__(self, bits, seed=0, target="labels", kernel="linear", n_train=1000, n_bases=50,
                 pair_fraction=0.05, n_pca=None, max_sweeps=500, tol=1e-6):
        super().__init__(bits, seed)
        if target not in TARGETS:
            raise UserError(f"{self.name}: option target must be one of {', '.join(TARGETS)}, "
                            f"got {target!r}")
        if kernel not in KERNELS:
            raise UserError(f"{self.name}: option kernel must be one of {', '.join(KERNELS)}, "
                            f"got {kernel!r}")
        self.target, self.kernel = target, kernel
        self.supervised = target == "labels"
        self.n_train = self._option("n_train", n_train, 2)
        self.n_bases = self._option("n_bases", n_bases, 1)
        self.pair_fraction = self._option("pair_fraction", pair_fraction, 0.0, integer=False)
        if not 0 < self.pair_fraction <= 1:
            raise UserError(f"{self.name}: option pair_fraction must be in (0, 1], "
                            f"got {pair_fraction!r}")
        self.n_pca = None if n_pca is None else self._option("n_pca", n_pca, 0)
        self.max_sweeps = None if max_sweeps is None else self._option("max_sweeps", max_sweeps, 0)
        self.tol = self._option("tol", tol, 0.0, integer=False)

    def _features(self, X):
        """Normalised (and PCA-projected) features, the space the kernel is evaluated in."""
        Z = unit_rows(X, self.mean_)
        return Z if self.pc_ is None else Z @ self.pc_

    def _pairs_and_targets(self, K, labels, n, rng):
        """The pairs BRE reconstructs (0.05 n random partners per point, BRE.m) and their targets:
        (pairs_i, pairs_j, target), each (P,)."""
        partners = max(1, math.floor(self.pair_fraction * n + 1e-9))
        rows = [np.setdiff1d(rng.permutation(n)[:partners], [i]) for i in range(n)]
        pairs_i = np.concatenate([np.full(len(r), i) for i, r in enumerate(rows)])
        pairs_j = np.concatenate(rows)
        if len(pairs_i) == 0:
            raise UserError(f"{self.name}: {n} training samples give no pair of distinct "
                            "samples to reconstruct; use more samples")
        if self.target == "euclidean":
            diag = np.diag(K)
            dist = 0.5 * (diag[pairs_i] + diag[pairs_j] - 2 * K[pairs_i, pairs_j])
            full_max = (0.5 * (diag[:, None] + diag[None, :] - 2 * K)).max()
            if full_max <= 0:
                raise UserError(f"{self.name}: all {n} training samples coincide after "
                                "normalisation; there are no distances to reconstruct")
            target = dist / full_max                      # Dist / max(max(Dist))
        else:
            target = np.where(np.einsum("ij,ij->i", labels[self.train_index_[pairs_i]],
                                        labels[self.train_index_[pairs_j]]) > 0, 0.0, 1.0)
        return pairs_i, pairs_j, target

    def _fit(self, X, labels, rng):
        n_all, d = X.shape
        self.mean_ = X.mean(axis=0)
        self.train_index_ = rng.permutation(n_all)[:min(self.n_train, n_all)]
        n = len(self.train_index_)
        Xtr = unit_rows(X[self.train_index_], self.mean_)
        npca = min(self.bits, d) if self.n_pca is None else min(self.n_pca, d)
        self.pc_ = pca_components(Xtr, npca, self.name) if npca > 0 else None
        Z = Xtr if self.pc_ is None else Xtr @ self.pc_
        if self.kernel == "rbf":
            sq = (Z * Z).sum(1)
            self.sigma_ = float(np.maximum(sq[:, None] + sq[None, :] - 2 * Z @ Z.T, 0).mean())
            if self.sigma_ == 0:
                raise UserError(f"{self.name}: the {n} training samples are identical after "
                                "normalisation; the kernel has no scale")
        else:
            self.sigma_ = None
        K = kernel_matrix(Z, Z, self.kernel, self.sigma_)
        n_bases = min(self.n_bases, n)
        self.hash_inds_ = np.stack([rng.permutation(n)[:n_bases] for _ in range(self.bits)],
                                   axis=1)
        W = 0.001 * rng.standard_normal((n_bases, self.bits))

        pairs_i, pairs_j, target = self._pairs_and_targets(K, labels, n, rng)
        self.pairs_ = np.stack([pairs_i, pairs_j])
        self.pair_targets_ = target
        KW = np.stack([K[:, self.hash_inds_[:, b]] @ W[:, b] for b in range(self.bits)], axis=1)
        H = KW > 0
        ham = np.count_nonzero(H[pairs_i] != H[pairs_j], axis=1)
        f = 0.5 * np.sum((ham / self.bits - target) ** 2)
        self.loss_history_ = [f]
        old, sweeps = np.inf, 0
        while abs(f - old) > self.tol and (self.max_sweeps is None or sweeps < self.max_sweeps):
            old, sweeps = f, sweeps + 1
            for b in range(self.bits):
                r = int(rng.integers(n_bases))
                f = coordinate_step(KW, H, ham, W, K, self.hash_inds_, b, r, pairs_i, pairs_j,
                                    target)
            self.loss_history_.append(f)
        self.converged_ = abs(f - old) <= self.tol
        self.weights_ = W
        self.codes_ = H
        # hash functions over the query's kernel values with the bases (of the train subset)
        self._basis = Z[self.hash_inds_]                           # n_bases x K x npca
        if self.kernel == "linear":                                # sum_q W_qb x_(q,b)
            self.projection_ = np.einsum("qb,qbd->db", W, self._basis)

    def _project(self, X):
        Z = self._features(X)
        if self.kernel == "linear":
            return Z @ self.projection_
        out = np.empty((len(Z), self.bits))
        for b in range(self.bits):
            k = kernel_matrix(Z, self._basis[:, b], "rbf", self.sigma_)
            out[:, b] = k @ self.weights_[:, b]
        return out
