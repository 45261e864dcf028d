"""Minimal loss hashing (MLH): the supervised baseline of Table 1 (see reproduce.baselines).

Learns linear hash functions b(x) = [W (x; 1) > 0] by stochastic descent on a convex-concave upper
bound of a hinge-like loss on pairs, as Norouzi & Fleet's published MATLAB code does. Pairwise
similarity comes from the labels (the field's multi-label rule: similar if two samples share >= 1
label), so the method runs on the DHN protocols the way the authors' code runs semantic LabelMe.
"""
import math

import numpy as np
from threadpoolctl import threadpool_limits

from ..errors import UserError
from .common import Baseline

PAIRS_PER_EPOCH = 10 ** 5      # learnMLH.m: `ntraining = 10^5` pairs per iteration ("epoch")
MAX_PATTERN_TABLE = 4096       # label patterns up to which the pattern-pair table is precomputed


# ----------------------------------------------------------------------------- pieces
def unit_rows(X, mean):
    """create_data.m: centre, then divide every sample by its Euclidean norm. A sample equal to
    the mean (norm 0; MATLAB would give NaN) is left at 0."""
    Z = X - mean
    norms = np.sqrt(np.einsum("ij,ij->i", Z, Z))
    norms[norms == 0] = 1.0
    return Z / norms[:, None]


def hinge_loss_table(bits, rho, similar):
    """learnMLH.m's loss of a pair as a function of the Hamming distance m = 0..bits of its codes,
    one row per pair (P x (bits + 1)):

        similar:     max(m - rho + 1, 0) / (bits - rho + 1)    (`[zeros(1,rho) 1:(nb-rho+1)]`)
        dissimilar:  max(rho + 1 - m, 0) / (rho + 1)          (`[(rho+1):-1:1 zeros(1,nb-rho)]`)

    (The paper's lambda-weighted negatives became, in the code, this normalised pair of hinges;
    lambda instead sets the fraction of positive pairs in a minibatch.)"""
    m = np.arange(bits + 1, dtype=np.float64)
    pos = np.maximum(m - rho + 1, 0) / (bits - rho + 1)
    neg = np.maximum(rho + 1 - m, 0) / (rho + 1)
    return np.where(np.asarray(similar, dtype=bool)[:, None], pos, neg)


def loss_adjusted_inference(Wx1, Wx2, loss):
    """argmax over g, h in {-1, +1}^K of g.Wx1 + h.Wx2 + loss[hamming(g, h)], per pair (row), as
    loss_adj_inf_mex.cpp solves it exactly:

    per bit, the best score with the two bits equal is |Wx1 + Wx2| (both +1 when Wx1 + Wx2 > 0,
    else both -1) and with them different |Wx1 - Wx2| (g = +1, h = -1 when Wx1 - Wx2 > 0, else
    g = -1, h = +1). Bits are sorted by (different - equal), descending (ties: higher bit index
    first, C++ `sort` of (value, index) pairs with `greater`); the number of differing bits
    m = argmax_m loss[m] + sum of the m largest gains (first maximum) makes the first m bits differ.

    Wx1, Wx2: P x K projections; loss: P x (K + 1). Returns g, h (P x K, +-1 floats) and m (P,).
    """
    P, K = Wx1.shape
    s, d = Wx1 + Wx2, Wx1 - Wx2
    same_sign = np.where(s > 0, 1.0, -1.0)
    diff_sign = np.where(d > 0, 1.0, -1.0)
    gain = np.abs(d) - np.abs(s)
    order = K - 1 - np.argsort(-gain[:, ::-1], axis=1, kind="stable")   # descending, ties: high k
    cum = np.zeros((P, K + 1))
    np.cumsum(np.take_along_axis(gain, order, axis=1), axis=1, out=cum[:, 1:])
    nflip = np.argmax(cum + loss, axis=1)
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(K)[None, :].repeat(P, axis=0), axis=1)
    flip = rank < nflip[:, None]
    return (np.where(flip, diff_sign, same_sign), np.where(flip, -diff_sign, same_sign), nflip)


def mlh_update(W, bias, inc, inc_bias, Xs, similar, rho, eta, momentum, weight_decay,
               learn_bias, work=None):
    """One minibatch of learnMLH.m, in place on the weights W (K x D), offsets bias (K) and
    their momentum terms inc, inc_bias (the code's W = [W bias], Winc = [inc inc_bias]):

        y = sign(W x + bias)  (0 where the projection is 0), (g, h) = loss-adjusted inference,
        grad = sum over pairs of (y1 - g) x1~' + (y2 - h) x2~'      (x~ = [x; 1])
        Winc = momentum Winc + eta (grad / P - shrink_w [W 0])      (no decay on the offsets)
        Winc(:, end) = 0 unless the offsets are learned;  W = W + Winc

    grad is minus the gradient of the bound max_{g,h}[g'Wx1 + h'Wx2 + loss(||g - h||_H)] -
    (y1'Wx1 + y2'Wx2) >= loss(||y1 - y2||_H). Xs: the P first and P second samples of the pairs
    stacked (2P x D); similar: P booleans; work: an optional K x D scratch array. Returns the
    minibatch's sums over pairs of the loss at the current codes' Hamming distance and of the
    bound (learnMLH.m's verbose `emploss` and `bound`), both before the update.
    """
    P = len(Xs) // 2
    Wx = Xs @ W.T
    Wx += bias
    y = np.sign(Wx)
    loss = hinge_loss_table(W.shape[0], rho, similar)
    g, h, nflip = loss_adjusted_inference(Wx[:P], Wx[P:], loss)
    Dy = y - np.concatenate([g, h])                                  # 2P x K
    grad = np.matmul(Dy.T, Xs, out=work)                             # K x D (rows with Dy = 0
    grad_bias = Dy.sum(axis=0)                                       # add exact zeros)
    rows = np.arange(P)
    bound = loss[rows, nflip].sum() - (np.vdot(W, grad) + bias @ grad_bias)
    empirical = loss[rows, np.count_nonzero(y[:P] != y[P:], axis=1)].sum()
    inc *= momentum
    grad /= P
    grad -= weight_decay * W
    grad *= eta
    inc += grad
    W += inc
    if learn_bias:
        inc_bias *= momentum
        inc_bias += eta * (grad_bias / P)
        bias += inc_bias
    return empirical, bound


class PositivePairs:
    """Ordered pairs (i, j) sharing >= 1 label (i = j included), drawn uniformly: learnMLH.m's
    `indPos(ceil(rand(ncases2, 1) * nPos))` over `find(Straining == 1)`, without the N x N list.

    Pairs are grouped by label pattern (u = 10 on CIFAR-10): a pattern pair (u, v) is drawn with
    weight n_u n_v [patterns share a label], then a member of each uniformly."""

    def __init__(self, labels):
        patterns, index = np.unique(labels, axis=0, return_inverse=True)
        index = index.ravel()
        self.patterns = patterns
        self.index = index
        self.members = np.argsort(index, kind="stable")
        self.counts = np.bincount(index).astype(np.int64)
        self.starts = np.cumsum(self.counts) - self.counts
        u = len(patterns)
        if u <= MAX_PATTERN_TABLE:
            share = (patterns @ patterns.T > 0)
            self.table = np.cumsum((np.outer(self.counts, self.counts) * share).ravel()
                                   .astype(np.float64))
            self.total = float(self.table[-1])
            self.row_cum = None
        else:                                  # rows computed on demand: no u x u table
            self.table = None
            self.row_tot = np.array([self._row(k).sum() for k in range(u)])
            self.row_cum = np.cumsum(self.row_tot)
            self.total = float(self.row_cum[-1])

    def _row(self, k):
        """Weights n_k n_v [pattern k and v share a label] of pattern k's pairs, over v."""
        return (self.counts[k] * self.counts * (self.patterns @ self.patterns[k] > 0)
                ).astype(np.float64)

    def share(self, i, j):
        """[labels_i . labels_j > 0] for index arrays i, j."""
        return np.einsum("ij,ij->i", self.patterns[self.index[i]], self.patterns[self.index[j]]) > 0

    def sample(self, k, rng):
        r = rng.random(k) * self.total
        u_cnt = len(self.counts)
        if self.table is not None:
            flat = np.minimum(np.searchsorted(self.table, r, side="right"), u_cnt * u_cnt - 1)
            u, v = np.divmod(flat, u_cnt)
        else:                                  # the same draw, row by row
            u = np.minimum(np.searchsorted(self.row_cum, r, side="right"), u_cnt - 1)
            offset = r - (self.row_cum[u] - self.row_tot[u])
            v = np.array([min(np.searchsorted(np.cumsum(self._row(uu)), rr, side="right"),
                              u_cnt - 1) for uu, rr in zip(u, offset)], dtype=np.int64)
        pick = rng.random((2, k))
        i = self.members[self.starts[u] + (pick[0] * self.counts[u]).astype(np.int64)]
        j = self.members[self.starts[v] + (pick[1] * self.counts[v]).astype(np.int64)]
        return i, j


def rho_heuristic(Xn, labels, bits, rng, recall=0.3):
    """RUN.m's starting value of rho: LSH codes `[randn(nb, D) zeros(nb, 1)]` on the training set
    split as create_training.m's 'train' (the last min(ceil(N / 10), 5000) samples query the
    others); rho = sum(r0 < .3), the number of Hamming radii whose recall of similar pairs is below
    30% (so the first radius reaching 30% recall), at least 1 (RUN.m drops rho < 1)."""
    n = len(Xn)
    n_val = min(math.ceil(n / 10), 5000)
    n_db = n - n_val
    B = np.where(Xn @ rng.standard_normal((bits, Xn.shape[1])).T > 0, 1.0, -1.0)
    ham = np.rint((bits - B[n_db:] @ B[:n_db].T) / 2).astype(np.int64)
    sim = labels[n_db:] @ labels[:n_db].T > 0
    good = sim.sum()
    if good == 0:
        return 1
    r0 = np.cumsum(np.bincount(ham[sim], minlength=bits + 1)) / good
    return int(min(max(np.sum(r0 < recall), 1), bits))


# ----------------------------------------------------------------------------- MLH
class MLH(Baseline):
    """Minimal loss hashing (Norouzi & Fleet, ICML 2011), following the authors' MATLAB code
    mlh_code v1.1 (read in github pombredanne/min-loss-hashing at b30b19d: learnMLH.m,
    loss_adj_inf_mex.cpp, MLH.m, RUN.m, create_data.m, create_training.m, eval_linear_hash.m).
    The DHN protocols are label-supervised, so the recipe is RUN.m's *semantic* 22K LabelMe run
    (RUN.m 294-395: no PCA, rho heuristic, lambda .5, 500 iterations, zero offsets):

    - Data: centre, then scale every sample to unit length (create_data.m 63-65). No PCA
      (RUN.m 295 `perform_pca = 0`; the Euclidean runs' do_pca(data, 40) is not used).
    - Hash functions b(x) = [W (x; 1) > 0], 0 -> -1 (eval_linear_hash.m 10); W (K x (D + 1))
      starts at LSH `[.1*randn(nb, D) zeros(nb, 1)]` (MLH.m 33, learnMLH.m 89).
    - Loss (learnMLH.m 181-182): similar pairs max(m - rho + 1, 0) / (K - rho + 1), dissimilar
      max(rho + 1 - m, 0) / (rho + 1), m the Hamming distance (`hinge_loss_table`). Similar =
      the labels share >= 1 label (the field's rule; i = j included).
    - Pairs (learnMLH.m 111-143): 10^5 per iteration in minibatches of 100 (1,000 updates);
      round(100 max(lambda - nPos / N^2, 0)) of each minibatch drawn uniformly among the similar
      ordered pairs (`PositivePairs`), the rest uniformly among all N^2 ordered pairs.
    - Update (learnMLH.m 159-250): y = sign(W x~); loss-adjusted inference (`loss_adjusted_
      inference`, loss_adj_inf_mex.cpp's exact algorithm); Winc = momentum Winc + eta (grad / 100
      - shrink_w W), offsets' increments zeroed (zerobias = 1), W += Winc (`mlh_update`);
      eta_t = eta (T - t) / T for iteration t = 1..T (shrink_eta = 1, learnMLH.m 125; the last
      iteration runs at rate 0, as there).

    Options (published value; default here):
      rho           RUN.m 326-349: heuristic rho = sum(r0 < .3) from LSH codes of a 90/10 split
                    of the training set, then validated over rho + {-2..2} round(K / 32) with
                    75-iteration runs (the small databases: fixed rho = 3, RUN.m 453). Default
                    None: the heuristic (`rho_heuristic`) without the validation runs; an
                    integer 1..K fixes rho.
      lam           lambda .5 (RUN.m 335; 0 for the small databases, RUN.m 466).
      eta           .1 (RUN.m 333); momentum .9 (RUN.m 393, "we always use .9", MLH.m);
      batch_size    100 (RUN.m 332); pairs_per_epoch 10^5 (learnMLH.m 111).
      weight_decay  shrink_w 1e-4 (RUN.m 334), then validated over {1e-2 .. 1e-6}
                    (RUN.m 367); default 1e-4 without validation.
      n_epochs      maxiter 500 (RUN.m 390, "in the paper we used 2000"; 50 for the small
                    databases, RUN.m 479). Impractical on 4,096-d fc7 features: one iteration is
                    2 x 1,000 products of 200 x 4096 x K, ~5-9 s on this project's 2-core
                    machine, so 500 would take ~1 h per fit. Default 4 (our choice: fit 24-29 s at
                    2,000 x 4,096, 48 bits, with the machine shared); n_epochs=500 runs the
                    published schedule. At least 2 with shrink_eta.
      shrink_eta    True (RUN.m 394, last argument); learn_bias False (zerobias = 1, RUN.m 391).
    Fitted: mean_, weights_ (K x (D + 1), offsets last), initial_weights_, rho_,
    positive_fraction_ (nPos / N^2), loss_history_ (per iteration, the mean loss of the sampled
    pairs at their codes before each update: learnMLH.m's verbose `emploss`), bound_history_
    (the mean of the upper bound the updates descend: its `bound`).
    Deviations: no validation runs; the training set's mean (create_data.m centres all data);
    positive pairs drawn through label patterns (same distribution as `indPos`); numpy's
    generator; a sample equal to the mean stays 0 (MATLAB: NaN); one BLAS thread, so that the
    round-off and hence the codes for a seed do not depend on the machine's thread count.
    """
    name = "mlh"
    supervised = True
    zero_is_positive = False     # eval_linear_hash.m: B = W * [X; 1] > 0

    def __init__(self, bits, seed=0, rho=None, lam=0.5, eta=0.1, momentum=0.9, batch_size=100,
                 weight_decay=1e-4, n_epochs=4, pairs_per_epoch=PAIRS_PER_EPOCH,
                 shrink_eta=True, learn_bias=False):
        super().__init__(bits, seed)
        if rho is not None:
            rho = self._option("rho", rho, 1)
            if rho > self.bits:
                raise UserError(f"{self.name}: option rho must be at most bits = {self.bits}, "
                                f"got {rho}")
        self.rho = rho
        self.lam = self._option("lam", lam, 0.0, integer=False)
        if self.lam > 1:
            raise UserError(f"{self.name}: option lam (fraction of positive pairs) must be in "
                            f"[0, 1], got {lam!r}")
        self.eta = self._option("eta", eta, 0.0, integer=False)
        self.momentum = self._option("momentum", momentum, 0.0, integer=False)
        if self.momentum >= 1:
            raise UserError(f"{self.name}: option momentum must be in [0, 1), got {momentum!r}")
        self.batch_size = self._option("batch_size", batch_size, 1)
        self.weight_decay = self._option("weight_decay", weight_decay, 0.0, integer=False)
        self.n_epochs = self._option("n_epochs", n_epochs, 1)
        self.pairs_per_epoch = self._option("pairs_per_epoch", pairs_per_epoch, self.batch_size)
        for key, value in (("shrink_eta", shrink_eta), ("learn_bias", learn_bias)):
            if not isinstance(value, (bool, np.bool_)):
                raise UserError(f"{self.name}: option {key} must be True or False, "
                                f"got {value!r}")
        self.shrink_eta, self.learn_bias = bool(shrink_eta), bool(learn_bias)
        if self.shrink_eta and self.n_epochs < 2:
            raise UserError(f"{self.name}: option n_epochs must be >= 2 with shrink_eta (the "
                            f"rate falls to 0 in the last iteration), got {n_epochs!r}")

    def _fit(self, X, labels, rng):
        n, d = X.shape
        if not np.any(labels.sum(axis=1) > 0):
            raise UserError(f"{self.name}: no training sample has a label, so no pair is "
                            "similar; MLH needs similar pairs")
        self.mean_ = X.mean(axis=0)
        Xn = unit_rows(X, self.mean_)
        self.rho_ = self.rho if self.rho is not None else rho_heuristic(Xn, labels, self.bits, rng)
        W = 0.1 * rng.standard_normal((self.bits, d))            # MLH.m: [.1*randn(nb, D) zeros]
        bias = np.zeros(self.bits)
        self.initial_weights_ = np.column_stack([W, bias])
        positives = PositivePairs(labels)
        self.positive_fraction_ = positives.total / float(n) ** 2
        nb = self.batch_size
        n_pos = min(math.floor(nb * max(self.lam - self.positive_fraction_, 0) + 0.5), nb)
        n_rand = nb - n_pos
        n_batches = self.pairs_per_epoch // nb
        T = self.n_epochs
        inc, inc_bias = np.zeros_like(W), np.zeros_like(bias)
        Xs, work = np.empty((2 * nb, d)), np.empty_like(W)
        self.loss_history_, self.bound_history_ = [], []
        with threadpool_limits(limits=1):     # round-off independent of the machine's threads
            for t in range(1, T + 1):
                eta = self.eta * (T - t) / T if self.shrink_eta else self.eta
                emp = bound = 0.0
                for _ in range(n_batches):
                    i = rng.integers(0, n, n_rand)
                    j = rng.integers(0, n, n_rand)
                    if n_pos:
                        pi, pj = positives.sample(n_pos, rng)
                        i, j = np.concatenate([i, pi]), np.concatenate([j, pj])
                    np.take(Xn, np.concatenate([i, j]), axis=0, out=Xs)
                    e, b = mlh_update(W, bias, inc, inc_bias, Xs, positives.share(i, j),
                                      self.rho_, eta, self.momentum, self.weight_decay,
                                      self.learn_bias, work)
                    emp += e
                    bound += b
                self.loss_history_.append(emp / (n_batches * nb))
                self.bound_history_.append(bound / (n_batches * nb))
        self.weights_ = np.column_stack([W, bias])

    def _project(self, X):
        return unit_rows(X, self.mean_) @ self.weights_[:, :-1].T + self.weights_[:, -1]
