"""The supervised shallow baselines of Table 1: ITQ-CCA and KSH (see reproduce.baselines).

Both learn from labels: N x C multi-hot (NUS-WIDE, Flickr) or N class ids (CIFAR-10, turned into
one-hot rows). Pairwise similarity, where a method needs it, is the field's multi-label rule:
s = +1 if two samples share >= 1 label, else -1. Build them with
`reproduce.baselines.make_baseline("itq-cca" | "ksh", bits, seed, **options)`.
"""
import numpy as np
import scipy.linalg
import scipy.sparse
from threadpoolctl import threadpool_limits

from ..errors import UserError
from .common import Baseline, fix_signs, itq_rotation


# ----------------------------------------------------------------------------- ITQ-CCA
class ITQCCA(Baseline):
    """CCA-ITQ (Gong, Lazebnik, Gordo & Perronnin, TPAMI 2013), as Gong's cca.m and demo run it:

        [Wx, r] = cca(X, Y, 0.0001);             % Cxx + reg I, Cyy + reg I, chol whitening
        Wx = Wx(:, 1:bit) * diag(r(1:bit));      % scale by the canonical correlations
        [B, R] = ITQ(X * Wx, 50);                % codes = [X Wx R >= 0]

    on zero-centred features X and the label indicator matrix Y. Options: reg (default 1e-4, "works
    well" in cca.m), n_iter (50). Fitted: mean_, canonical_correlations_ (K), cca_projection_
    (D x K, = Wx diag(r)), projection_ (= Wx diag(r) R), quantization_loss_.

    Computed without the D x D Cholesky: with u the generalised eigenvectors of
    Cyx Cxx^-1 Cxy u = r^2 Cyy u (u' Cyy u = 1), Wx r = Cxx^-1 Cxy u exactly (same columns up to
    sign), and Cxx^-1 Cxy comes from an N x N solve when N < D. Only rank(Cxy) <= C directions
    have r > 0: for K > C the extra columns of Wx diag(r) are 0 here (in cca.m they are
    sqrt(round-off) ~ 1e-8 scaled), so K bits are K rotations of a C-dimensional embedding, as in
    the authors' runs. Deviation: the mean is the training set's; r^2 < 0 from round-off is 0.
    """
    name = "itq-cca"
    supervised = True

    def __init__(self, bits, seed=0, reg=1e-4, n_iter=50):
        super().__init__(bits, seed)
        self.reg = self._option("reg", reg, 0.0, integer=False)
        self.n_iter = self._option("n_iter", n_iter, 0)

    def _fit(self, X, labels, rng):
        n, d = X.shape
        if self.bits > d:
            raise UserError(f"{self.name}: {self.bits} bits from {d}-dimensional features; "
                            f"CCA gives at most {d} directions")
        if np.ptp(labels, axis=0).max() == 0:
            raise UserError(f"{self.name}: every training sample has the same labels; CCA has "
                            "nothing to correlate")
        self.mean_ = X.mean(axis=0)
        A = (X - self.mean_) / np.sqrt(n - 1)          # A'A = cov(X) (MATLAB cov: N - 1)
        Yc = (labels - labels.mean(axis=0)) / np.sqrt(n - 1)
        Cxy = A.T @ Yc
        try:
            if n < d:   # (A'A + reg I)^-1 A' = A' (A A' + reg I)^-1  (push-through identity)
                CxxinvCxy = A.T @ scipy.linalg.solve(A @ A.T + self.reg * np.eye(n), Yc,
                                                     assume_a="pos")
            else:
                CxxinvCxy = scipy.linalg.solve(A.T @ A + self.reg * np.eye(d), Cxy,
                                               assume_a="pos")
        except np.linalg.LinAlgError:
            raise UserError(f"{self.name}: the feature covariance is singular with reg = "
                            f"{self.reg}; use reg > 0 (the authors' 1e-4)") from None
        M = Cxy.T @ CxxinvCxy
        M = (M + M.T) / 2                                # cca.m: Z = 0.5 * (Z' + Z)
        Cyy = Yc.T @ Yc + self.reg * np.eye(Yc.shape[1])
        r2, U = scipy.linalg.eigh(M, Cyy)
        r2, U = r2[::-1], fix_signs(U[:, ::-1])          # descending, as cca.m sorts
        keep = min(self.bits, len(r2))
        proj = np.zeros((d, self.bits))
        proj[:, :keep] = CxxinvCxy @ U[:, :keep]         # = Wx(:, 1:bit) * diag(r(1:bit))
        self.canonical_correlations_ = np.zeros(self.bits)
        self.canonical_correlations_[:keep] = np.sqrt(np.clip(r2[:keep], 0, None))
        self.cca_projection_ = proj                      # before the ITQ rotation
        V = (X - self.mean_) @ proj
        R, self.quantization_loss_ = itq_rotation(V, self.n_iter, rng)
        self.projection_ = proj @ R

    def _project(self, X):
        return (X - self.mean_) @ self.projection_


# ----------------------------------------------------------------------------- KSH
def squared_distances(X, anchors):
    """||x - a||^2 (N x M), as sqdist.m: |x|^2 + |a|^2 - 2 x.a (round-off below 0 clipped)."""
    d2 = (X * X).sum(1)[:, None] + (anchors * anchors).sum(1)[None, :] - 2 * X @ anchors.T
    return np.maximum(d2, 0)


def smoothed_sign(u):
    """phi(u) = 2 / (1 + e^-u) - 1 of OptProjectionFast.m, written as tanh(u / 2) (the same
    function) so that large |u| does not overflow exp."""
    return np.tanh(u / 2)


def opt_projection_fast(K, S, a0, max_iter=500, tol=1e-2):
    """Liu's OptProjectionFast.m: minimise g(a) = -phi(K a)' S phi(K a) by Nesterov-accelerated
    gradient descent with backtracking (step 1/b, b = 2^j beta_t, j = 0..50).

    K: l x m centred kernel of the labelled samples; S: l x l residual target; a0: m start.
    Stops after max_iter steps, when no step passes the backtracking test, or when
    |g_t - g_(t-1)| / l <= tol. Returns the last iterate and the costs / l (first value twice,
    as the MATLAB code stores cost(1) = cost(2)).
    """
    n = K.shape[0]

    def value(a):
        y = smoothed_sign(K @ a)
        Sy = S @ y
        return -y @ Sy, y, Sy

    cost = [value(a0)[0]] * 2
    a_prev, a1 = a0, a0
    delta, beta = [0.0, 1.0], [1.0]
    for t in range(max_iter):
        alpha = (delta[t] - 1) / delta[t + 1]
        v = a1 + alpha * (a1 - a_prev)                                      # probe point
        gv, y, Sy = value(v)
        dgv = -K.T @ (Sy * (1 - y * y))
        for j in range(51):                                                  # seek beta
            b = 2.0 ** j * beta[t]
            z = v - dgv / b
            gz = value(z)[0]
            dif = z - v
            if gz <= gv + dgv @ dif + b * (dif @ dif) / 2:
                beta.append(b)
                a_prev, a1 = a1, z
                cost.append(gz)
                break
        else:
            break
        delta.append((1 + np.sqrt(1 + 4 * delta[t + 1] ** 2)) / 2)
        if abs(cost[-1] - cost[-2]) / n <= tol:
            break
    return a1, np.array(cost) / n


class PairwiseTarget:
    """KSH's residual target S = r * S0 - Y Y' (l x l) as an operator: `S @ v` for a vector or an
    l x m matrix, `dense()` for the full matrix, `subtract(y)` for the greedy update S -= y y'.

    S0 = 2 P - 1 1' with P_ij = [labels_i . labels_j > 0] depends only on the samples' label
    *patterns*: with E the l x u sample-to-pattern indicator, P = E Pu E'. So S @ v costs
    O(l + u^2 + l * bits) instead of O(l^2): u = 10 on CIFAR-10, a few hundred on NUS-WIDE. Same
    numbers as the dense product up to summation order (y' S y on +-1 codes is exact either way).
    """

    def __init__(self, labels, r):
        patterns, index = np.unique(labels, axis=0, return_inverse=True)
        self.index = index.ravel()                 # sample -> pattern
        l, u = len(self.index), len(patterns)
        self.Et = scipy.sparse.csr_matrix((np.ones(l), (self.index, np.arange(l))), shape=(u, l))
        self.Pu = (patterns @ patterns.T > 0).astype(np.float64)
        self.r = float(r)
        self.Y = np.zeros((l, 0))                  # the bits chosen so far, l x k

    def __matmul__(self, v):
        P_v = (self.Pu @ (self.Et @ v))[self.index]                       # E Pu E' v
        return self.r * (2 * P_v - v.sum(axis=0)) - self.Y @ (self.Y.T @ v)

    def subtract(self, y):
        """S <- S - y y' (the demo's `S = S - y*y'` before each new bit)."""
        self.Y = np.column_stack([self.Y, y])

    def dense(self):
        return self @ np.eye(len(self.index))


def top_generalized_eigenvector(A, B):
    """The eigenvector of A v = lambda B v with the largest lambda (MATLAB eig(LM, RM), sorted).
    B = K'K is singular when anchors repeat or l < m; a ridge of 1e-10 tr(B)/m then keeps it
    positive definite (a deviation only in that degenerate case)."""
    m = A.shape[0]
    try:
        v = scipy.linalg.eigh(A, B, subset_by_index=[m - 1, m - 1])[1]
    except np.linalg.LinAlgError:
        ridge = 1e-10 * np.trace(B) / m + np.finfo(float).tiny
        v = scipy.linalg.eigh(A, B + ridge * np.eye(m), subset_by_index=[m - 1, m - 1])[1]
    return fix_signs(v)[:, 0]


class KSH(Baseline):
    """Kernel-based supervised hashing (Liu, Wang, Ji, Jiang & Chang, CVPR 2012), following Liu's
    KSH demo script and OptProjectionFast.m:

    - m = 300 anchors `randsample(n, m)` from the training set; kernel k(x, a) =
      exp(-||x - a||^2 / (2 sigma)) with sigma = the mean *squared* distance of the training set
      to the anchors (the script's `sigma = mean(mean(sqdist(...)))`: its sigma is a variance);
      centred by the training mean mvec. h_k(x) = [(k(x) - mvec) a_k > 0].
    - l = 1000 labelled samples `randsample(n, l)` (all when fewer); S = r S0 (r = bits) with
      S0 = +-1 pairwise similarity, so that the code inner products approximate it:
      min ||B B' - r S0||_F^2.
    - Greedy, bit by bit on the residual S <- S - y y' of the chosen bit: spectral relaxation
      a = top eigenvector of (Kl' S Kl) a = lambda (Kl' Kl) a scaled so a' Kl'Kl a = l, then
      OptProjectionFast (500 iterations, stop at |delta cost| / l <= 1e-2) on the sigmoid-smoothed
      objective; its result replaces the spectral one only when it raises y' S y.
    Options: n_anchors (300), n_labeled (1000), max_iter (500), tol (1e-2). Fitted: anchors_,
    sigma_, mvec_, weights_ (m x K), cost_history_ (per bit, cost / l of the gradient descent),
    improved_ (per bit, whether the descent was kept: the script's `flag`).
    Deviations: tanh(u/2) for the sigmoid form; sign-fixed eigenvectors; m = N anchors when N < m;
    S applied through its label-pattern structure (`PairwiseTarget`: summation order only).
    """
    name = "ksh"
    supervised = True
    zero_is_positive = False      # KSH script: single(A1' * KTest' > 0), 0 -> -1

    def __init__(self, bits, seed=0, n_anchors=300, n_labeled=1000, max_iter=500, tol=1e-2):
        super().__init__(bits, seed)
        self.n_anchors = self._option("n_anchors", n_anchors, 1)
        self.n_labeled = self._option("n_labeled", n_labeled, 2)
        self.max_iter = self._option("max_iter", max_iter, 0)
        self.tol = self._option("tol", tol, 0.0, integer=False)

    def _kernel(self, X):
        """Centred kernel features (N x m) of X against the anchors."""
        return np.exp(-squared_distances(X, self.anchors_) / (2 * self.sigma_)) - self.mvec_

    def _fit(self, X, labels, rng):
        n = X.shape[0]
        m = min(self.n_anchors, n)
        self.anchors_ = X[rng.choice(n, m, replace=False)]
        d2 = squared_distances(X, self.anchors_)
        self.sigma_ = d2.mean()
        self.mvec_ = np.exp(-d2 / (2 * self.sigma_)).mean(axis=0)
        labeled = rng.choice(n, min(self.n_labeled, n), replace=False)
        l = len(labeled)
        Kl = np.exp(-d2[labeled] / (2 * self.sigma_)) - self.mvec_            # l x m
        S = PairwiseTarget(labels[labeled], self.bits)                         # S = r * S0
        RM = Kl.T @ Kl
        self.weights_ = np.zeros((m, self.bits))
        self.cost_history_, self.improved_ = [], []
        with threadpool_limits(limits=1):   # ~10^4 small matrix-vector products: one thread is
            self._greedy_bits(Kl, S, RM, l)  # faster, and its round-off is the same everywhere

    def _greedy_bits(self, Kl, S, RM, l):
        """The demo's `for rr = 1:r` loop; fills weights_, cost_history_, improved_."""
        y = None   # the previous bit's codes, whose fit is removed from the target
        for k in range(self.bits):
            if k > 0:
                S.subtract(y)                           # fit the residual of the bits so far
            a0 = top_generalized_eigenvector(Kl.T @ (S @ Kl), RM)
            a0 *= np.sqrt(l / (a0 @ RM @ a0))
            a, cost = opt_projection_fast(Kl, S, a0, self.max_iter, self.tol)
            y = np.where(Kl @ a0 > 0, 1.0, -1.0)
            y1 = np.where(Kl @ a > 0, 1.0, -1.0)
            better = y1 @ (S @ y1) > y @ (S @ y)
            if better:
                a0, y = a, y1
            self.weights_[:, k] = a0
            self.cost_history_.append(cost)
            self.improved_.append(bool(better))

    def _project(self, X):
        return self._kernel(X) @ self.weights_
