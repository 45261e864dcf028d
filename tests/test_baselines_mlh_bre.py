"""MLH and BRE (reproduce.baselines.mlh, reproduce.baselines.bre).

Each quantity the authors' code defines exactly (MLH's loss table, loss-adjusted inference and
update, its rho heuristic; BRE's objective and coordinate step) is compared with a plain float64
reference written out with loops here; the training objectives must go down; both methods must
beat LSH on held-out data of a separable problem.
"""
import itertools
import math

import numpy as np
import pytest

from test_baselines import class_data
from reproduce.baselines import LSH, mlh as mlh_module
from reproduce.baselines.bre import BRE, bre_objective, coordinate_step, kernel_matrix
from reproduce.baselines.mlh import (MLH, PositivePairs, hinge_loss_table, loss_adjusted_inference,
                                     mlh_update, rho_heuristic, unit_rows)
from reproduce.errors import UserError
from reference import plain_map

FAST_MLH = {"n_epochs": 4, "pairs_per_epoch": 20000}      # small settings keep the file quick


def separable_data(rng, n, d=32, c=5, multi_label=False):
    """Classes live in the first c dims (centres 3 e_k), unit noise everywhere: clearly separable
    by a linear code, while random projections see mostly the other d - c dims."""
    return class_data(rng, n, d, c, multi_label, noise=1.0)


# ----------------------------------------------------------------------------- MLH references
def reference_loss_row(bits, rho, similar):
    """learnMLH.m's kron lines, element by element."""
    if similar:
        row = [0.0] * rho + [float(k) for k in range(1, bits - rho + 2)]
        return [v / (bits - rho + 1) for v in row]
    row = [float(k) for k in range(rho + 1, 0, -1)] + [0.0] * (bits - rho)
    return [v / (rho + 1) for v in row]


def reference_inference(wx1, wx2, loss):
    """loss_adj_inf_mex.cpp for one pair, statement by statement."""
    n = len(wx1)
    same, diff, same_ind, diff_ind, pairs = [], [], [], [], []
    for i in range(n):
        s = wx1[i] + wx2[i]
        same.append(s if s > -s else -s)
        same_ind.append(0 if s > -s else 1)
        dd = wx1[i] - wx2[i]
        diff.append(dd if dd > -dd else -dd)
        diff_ind.append(0 if dd > -dd else 1)
        pairs.append((diff[i] - same[i], i))
    pairs.sort(reverse=True)                        # std::sort with greater<pair<double, int>>
    uptonow, best_score, best_ndiff = 0.0, loss[0], 0
    for i in range(n + 1):
        cur = loss[i] + uptonow
        if cur > best_score:
            best_score, best_ndiff = cur, i
        if i < n:
            uptonow += pairs[i][0]
    h1, h2 = [0.0] * n, [0.0] * n
    for i in range(n):
        j = pairs[i][1]
        if i < best_ndiff:
            h1[j], h2[j] = (-1.0, 1.0) if diff_ind[j] else (1.0, -1.0)
        else:
            h1[j] = h2[j] = -1.0 if same_ind[j] else 1.0
    return h1, h2, best_ndiff


def test_hinge_loss_table_is_learnmlh_loss():
    for bits, rho in ((8, 1), (8, 3), (12, 5), (12, 12)):
        similar = np.array([True, False, True])
        table = hinge_loss_table(bits, rho, similar)
        assert table.shape == (3, bits + 1)
        for p, s in enumerate(similar):
            np.testing.assert_array_equal(table[p], reference_loss_row(bits, rho, s))


def test_loss_adjusted_inference_is_exact_and_equals_the_mex(rng):
    K, P = 4, 60
    Wx1, Wx2 = rng.standard_normal((P, K)), rng.standard_normal((P, K))
    Wx1[:10], Wx2[:10] = rng.integers(-2, 3, (10, K)), rng.integers(-2, 3, (10, K))   # ties
    similar = rng.random(P) < 0.5
    loss = hinge_loss_table(K, 2, similar)
    g, h, nflip = loss_adjusted_inference(Wx1, Wx2, loss)
    codes = [np.array(c, dtype=float) for c in itertools.product([-1, 1], repeat=K)]
    for p in range(P):
        r1, r2, rn = reference_inference(list(Wx1[p]), list(Wx2[p]), list(loss[p]))
        np.testing.assert_array_equal(g[p], r1)
        np.testing.assert_array_equal(h[p], r2)
        assert nflip[p] == rn == np.sum(g[p] != h[p])
        # the mex's answer is the maximiser over all 2^K x 2^K code pairs
        best = max(c1 @ Wx1[p] + c2 @ Wx2[p] + loss[p][int(np.sum(c1 != c2))]
                   for c1 in codes for c2 in codes)
        np.testing.assert_allclose(g[p] @ Wx1[p] + h[p] @ Wx2[p] + loss[p][nflip[p]], best,
                                   rtol=0, atol=1e-12)


def reference_update(W, bias, inc, inc_bias, X1, X2, similar, rho, eta, mom, wd, learn_bias):
    """learnMLH.m's minibatch with loops over pairs, bits and dimensions (W = [W bias])."""
    K, D = W.shape
    P = len(X1)
    Wfull = np.column_stack([W, bias])
    grad = np.zeros((K, D + 1))
    emp = bound = 0.0
    for p in range(P):
        x1, x2 = np.append(X1[p], 1.0), np.append(X2[p], 1.0)
        wx1 = [sum(Wfull[k, t] * x1[t] for t in range(D + 1)) for k in range(K)]
        wx2 = [sum(Wfull[k, t] * x2[t] for t in range(D + 1)) for k in range(K)]
        y1, y2 = np.sign(wx1), np.sign(wx2)
        loss = reference_loss_row(K, rho, similar[p])
        g, h, nflip = reference_inference(wx1, wx2, loss)
        for k in range(K):
            for t in range(D + 1):
                grad[k, t] += (y1[k] - g[k]) * x1[t] + (y2[k] - h[k]) * x2[t]
        emp += loss[int(np.sum(y1 != y2))]
        bound += (loss[nflip] + sum(g[k] * wx1[k] + h[k] * wx2[k] for k in range(K))
                  - sum(y1[k] * wx1[k] + y2[k] * wx2[k] for k in range(K)))
    Winc = np.column_stack([inc, inc_bias])
    if learn_bias:
        Winc = mom * Winc + eta * (grad / P - wd * np.column_stack([W, np.zeros(K)]))
    else:
        Winc = mom * Winc + eta * (grad / P - wd * Wfull)
        Winc[:, -1] = 0
    Wfull = Wfull + Winc
    return Wfull[:, :-1], Wfull[:, -1], Winc[:, :-1], Winc[:, -1], emp, bound


@pytest.mark.parametrize("learn_bias", [False, True])
def test_mlh_update_equals_learnmlh_minibatch(rng, learn_bias):
    K, D, P = 5, 7, 12
    W, bias = rng.standard_normal((K, D)), (0.3 * rng.standard_normal(K) if learn_bias
                                             else np.zeros(K))
    inc, inc_bias = 0.1 * rng.standard_normal((K, D)), (0.1 * rng.standard_normal(K)
                                                        if learn_bias else np.zeros(K))
    X1, X2 = rng.standard_normal((P, D)), rng.standard_normal((P, D))
    X1[0] = X2[0]                                      # a pair (i, i)
    similar = rng.random(P) < 0.5
    ref = reference_update(W, bias, inc, inc_bias, X1, X2, similar, 2, 0.1, 0.9, 1e-2,
                           learn_bias)
    emp, bound = mlh_update(W, bias, inc, inc_bias, np.vstack([X1, X2]), similar, 2, 0.1, 0.9,
                            1e-2, learn_bias)
    for ours, theirs in zip((W, bias, inc, inc_bias, emp, bound), ref):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)
    assert bound >= emp - 1e-12                        # an upper bound on the empirical loss


def test_rho_heuristic_is_run_m_recipe(rng):
    X, L = separable_data(rng, 70, multi_label=True)
    Xn = unit_rows(X, X.mean(axis=0))
    bits = 10
    rho = rho_heuristic(Xn, L, bits, np.random.default_rng(5))
    Wl = np.random.default_rng(5).standard_normal((bits, 32))       # the same LSH draw
    n_val = math.ceil(70 / 10)                                        # the last 7 query
    B = [[1 if sum(Wl[k, t] * x[t] for t in range(32)) > 0 else 0 for k in range(bits)]
         for x in Xn]
    hits, good = [0] * (bits + 1), 0
    for q in range(70 - n_val, 70):
        for i in range(70 - n_val):
            if L[q] @ L[i] > 0:
                good += 1
                hits[sum(B[q][k] != B[i][k] for k in range(bits))] += 1
    recall = np.cumsum(hits) / good
    assert rho == max(1, sum(r < 0.3 for r in recall))


def test_positive_pairs_are_uniform_over_similar_pairs(rng, monkeypatch):
    L = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 1], [0, 0, 0]], float)
    pos = PositivePairs(L)
    similar = [(i, j) for i in range(6) for j in range(6) if L[i] @ L[j] > 0]
    assert pos.total == len(similar) == 13               # (i, i) included, unlabelled row out
    i, j = pos.sample(30000, np.random.default_rng(1))
    assert np.all(pos.share(i, j))
    counts = np.bincount(i * 6 + j, minlength=36)[[a * 6 + b for a, b in similar]]
    assert np.all(np.abs(counts / 30000 - 1 / 13) < 0.01)
    monkeypatch.setattr(mlh_module, "MAX_PATTERN_TABLE", 0)       # the row-by-row path
    i2, j2 = PositivePairs(L).sample(30000, np.random.default_rng(1))
    np.testing.assert_array_equal(i2, i)
    np.testing.assert_array_equal(j2, j)


def test_mlh_objective_decreases(rng):
    X, L = separable_data(rng, 300, multi_label=True)
    mlh = MLH(12, seed=0, **FAST_MLH).fit(X, L)
    assert len(mlh.loss_history_) == 4 and mlh.weights_.shape == (12, 33)
    assert mlh.loss_history_[-1] < mlh.loss_history_[0]      # per-iteration means of the pairs
    assert mlh.bound_history_[-1] < mlh.bound_history_[0]
    assert np.all(np.array(mlh.bound_history_) >= np.array(mlh.loss_history_))
    assert np.all(mlh.weights_[:, -1] == 0)                        # zerobias = 1
    # the loss over all N^2 ordered training pairs, at the start and at the end
    Xn = unit_rows(X, mlh.mean_)
    S = L @ L.T > 0

    def total_loss(W):
        B = np.where(Xn @ W[:, :-1].T + W[:, -1] > 0, 1, -1)
        ham = (12 - B @ B.T) // 2
        return np.mean(hinge_loss_table(12, mlh.rho_, S.ravel())[np.arange(S.size),
                                                                  ham.ravel()])
    assert total_loss(mlh.weights_) < 0.8 * total_loss(mlh.initial_weights_)


# ----------------------------------------------------------------------------- BRE references
def reference_objective(H, pairs, target):
    f = 0.0
    for (i, j), t in zip(pairs, target):
        ham = sum(H[i][k] != H[j][k] for k in range(len(H[i])))
        f += 0.5 * (ham / len(H[i]) - t) ** 2
    return f


def reference_coordinate_step(K, hash_inds, W, b, r, pairs, target):
    """BRE.m's update of W(r, b): every candidate threshold, codes and objective by loops."""
    n, nbits = K.shape[0], W.shape[1]
    q = hash_inds[r, b]

    def codes(Wm):
        return [[1 if sum(Wm[s, c] * K[i, hash_inds[s, c]] for s in range(W.shape[0])) > 0
                 else 0 for c in range(nbits)] for i in range(n)]
    KW_b = [sum(W[s, b] * K[i, hash_inds[s, b]] for s in range(W.shape[0])) for i in range(n)]
    thr = sorted(W[r, b] - KW_b[i] / K[i, q] for i in range(n))
    cands = [thr[0] - 5e-7] + [(thr[k] + thr[k + 1]) / 2 for k in range(n - 1)] + [thr[-1] + 5e-7]
    best_f, best_w = None, None
    for w in cands:
        Wc = W.copy()
        Wc[r, b] = w
        f = reference_objective(codes(Wc), pairs, target)
        if best_f is None or f < best_f:
            best_f, best_w = f, w
    Wc = W.copy()
    Wc[r, b] = best_w
    return best_w, best_f, codes(Wc)


def test_bre_coordinate_step_is_the_exact_line_search(rng):
    n, nb, nbits = 30, 6, 5
    Z = rng.standard_normal((n, 4))
    K = kernel_matrix(Z, Z, "linear")
    hash_inds = np.stack([rng.permutation(n)[:nb] for _ in range(nbits)], axis=1)
    W = rng.standard_normal((nb, nbits))
    pairs = [(i, j) for i in range(n) for j in rng.permutation(n)[:4] if j != i]
    pi, pj = np.array(pairs).T
    target = rng.random(len(pairs))
    KW = np.stack([K[:, hash_inds[:, c]] @ W[:, c] for c in range(nbits)], axis=1)
    H = KW > 0
    ham = np.count_nonzero(H[pi] != H[pj], axis=1)
    f0 = bre_objective(H, pi, pj, target)
    np.testing.assert_allclose(f0, reference_objective(H.astype(int).tolist(), pairs, target),
                               rtol=1e-12)
    for b, r in ((0, 2), (3, 0), (4, 5), (0, 2)):
        w_ref, f_ref, H_ref = reference_coordinate_step(K, hash_inds, W, b, r, pairs, target)
        f = coordinate_step(KW, H, ham, W, K, hash_inds, b, r, pi, pj, target)
        np.testing.assert_allclose(W[r, b], w_ref, rtol=1e-12)
        np.testing.assert_allclose(f, f_ref, rtol=1e-12)
        np.testing.assert_array_equal(H, np.array(H_ref, dtype=bool))
        np.testing.assert_array_equal(ham, np.count_nonzero(H[pi] != H[pj], axis=1))
        np.testing.assert_allclose(KW[:, b], K[:, hash_inds[:, b]] @ W[:, b], atol=1e-12)
        assert f <= f0 + 1e-12
        f0 = f


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_bre_objective_decreases_and_codes_match_hash_functions(rng, kernel):
    X, L = separable_data(rng, 400, multi_label=True)
    bre = BRE(10, seed=0, kernel=kernel, n_train=200).fit(X, L)
    f = np.array(bre.loss_history_)
    assert np.all(np.diff(f) <= 1e-9 * f[0]) and f[-1] < 0.85 * f[0]
    assert bre.converged_ or len(f) == 501
    pi, pj = bre.pairs_
    assert np.all(pi != pj)                 # .05 n = 10 partners per point, less (i, i)
    assert set(np.bincount(pi, minlength=200)) <= {9, 10}
    np.testing.assert_allclose(bre_objective(bre.codes_, pi, pj, bre.pair_targets_), f[-1],
                               rtol=1e-10)
    np.testing.assert_array_equal(bre.pair_targets_,
                                  [0.0 if L[bre.train_index_[i]] @ L[bre.train_index_[j]] > 0
                                   else 1.0 for i, j in zip(pi, pj)])
    # h_b(x) = [sum_q W_qb k(x_(q,b), x) > 0], written out for a few queries
    Xq = X[:5] + 0.1
    Zq = unit_rows(Xq, bre.mean_) @ bre.pc_
    Ztr = unit_rows(X[bre.train_index_], bre.mean_) @ bre.pc_
    P = bre.project(Xq)
    for x, z in enumerate(Zq):
        for b in range(10):
            s = 0.0
            for q in range(bre.weights_.shape[0]):
                base = Ztr[bre.hash_inds_[q, b]]
                k = (z @ base if kernel == "linear"
                     else math.exp(-np.sum((z - base) ** 2) / (2 * bre.sigma_)))
                s += bre.weights_[q, b] * k
            np.testing.assert_allclose(P[x, b], s, rtol=1e-9, atol=1e-12)
    # the training codes the objective saw are the hash functions' codes of those samples
    np.testing.assert_array_equal(bre.encode(X[bre.train_index_]) > 0, bre.codes_)


def test_bre_euclidean_target_is_scaled_distance(rng):
    X = rng.standard_normal((120, 16))
    bre = BRE(6, seed=1, target="euclidean", n_train=100, n_pca=0).fit(X)   # no labels
    Z = unit_rows(X[bre.train_index_], bre.mean_)
    dist = [[0.5 * (Z[i] @ Z[i] + Z[j] @ Z[j] - 2 * Z[i] @ Z[j]) for j in range(100)]
            for i in range(100)]
    top = max(max(row) for row in dist)
    pi, pj = bre.pairs_
    np.testing.assert_allclose(bre.pair_targets_, [dist[i][j] / top for i, j in zip(pi, pj)],
                               rtol=1e-10)
    assert bre.loss_history_[-1] < bre.loss_history_[0]


# ----------------------------------------------------------------------------- both
@pytest.mark.parametrize("multi_label", [False, True])
def test_mlh_and_bre_beat_lsh(rng, multi_label):
    Xtr, Ltr = separable_data(rng, 500, multi_label=multi_label)
    Xq, Lq = separable_data(rng, 60, multi_label=multi_label)
    Xdb, Ldb = separable_data(rng, 400, multi_label=multi_label)

    def score(method):
        method.fit(Xtr, Ltr)
        return plain_map(method.encode(Xq), method.encode(Xdb), Lq, Ldb)

    lsh = score(LSH(12))
    assert score(MLH(12)) > lsh + 0.1          # rho from RUN.m's heuristic, not validated
    assert score(BRE(12)) > lsh + 0.25


@pytest.mark.parametrize("make", [lambda s: MLH(12, seed=s, **FAST_MLH),
                                  lambda s: BRE(12, seed=s, n_train=200)], ids=["mlh", "bre"])
def test_seed_gives_identical_codes(rng, make):
    X, L = separable_data(rng, 300)
    Xq = rng.standard_normal((37, 32)).astype(np.float32)
    codes = make(0).fit(X.astype(np.float32), L).encode(Xq)
    assert codes.dtype == np.int8 and codes.shape == (37, 12)
    assert set(np.unique(codes)) <= {-1, 1}
    again = make(0).fit(X.astype(np.float32), L)
    np.testing.assert_array_equal(again.encode(Xq), codes)
    np.testing.assert_array_equal(again.encode(Xq, chunk=5), codes)
    assert not np.array_equal(make(1).fit(X, L).encode(Xq), codes)


def test_settings_record_every_option():
    assert MLH(16, seed=2).settings() == {
        "method": "mlh", "bits": 16, "seed": 2, "rho": None, "lam": 0.5, "eta": 0.1,
        "momentum": 0.9, "batch_size": 100, "weight_decay": 1e-4, "n_epochs": 4,
        "pairs_per_epoch": 100000, "shrink_eta": True, "learn_bias": False}
    assert BRE(16).settings() == {
        "method": "bre", "bits": 16, "seed": 0, "target": "labels", "kernel": "linear",
        "n_train": 1000, "n_bases": 50, "pair_fraction": 0.05, "n_pca": None,
        "max_sweeps": 500, "tol": 1e-6}
    assert MLH.supervised and BRE.supervised and not BRE(8, target="euclidean").supervised


def test_bad_inputs_are_user_errors(rng):
    X, L = separable_data(rng, 40)
    bad = X.copy()
    bad[7, 3] = np.nan
    cases = [
        (lambda: MLH(8, rho=0), "mlh: option rho must be an integer >= 1 and <= 2147483647, got 0"),
        (lambda: MLH(8, eta=float("nan")), "mlh: option eta must be a number >= 0"),
        (lambda: MLH(8, eta=float("inf")), "mlh: option eta must be a number >= 0"),
        (lambda: MLH(8, n_epochs=10**20), "mlh: option n_epochs must be an integer"),
        (lambda: MLH(8, rho=9), "mlh: option rho must be at most bits = 8, got 9"),
        (lambda: MLH(8, rho=2.5), "mlh: option rho must be an integer"),
        (lambda: MLH(8, lam=1.5), r"mlh: option lam .* must be in \[0, 1\]"),
        (lambda: MLH(8, momentum=1), r"mlh: option momentum must be in \[0, 1\)"),
        (lambda: MLH(8, eta=-1), "mlh: option eta must be a number >= 0"),
        (lambda: MLH(8, n_epochs=1), "mlh: option n_epochs must be >= 2 with shrink_eta"),
        (lambda: MLH(8, batch_size=0), "mlh: option batch_size must be an integer >= 1"),
        (lambda: MLH(8, pairs_per_epoch=10),
         "mlh: option pairs_per_epoch must be an integer >= 100"),
        (lambda: MLH(8, learn_bias=1), "mlh: option learn_bias must be True or False"),
        (lambda: MLH(0), "mlh: bits must be a positive integer"),
        (lambda: MLH(8).fit(X), "mlh is supervised: training labels are required"),
        (lambda: MLH(8).fit(bad, L), "mlh training set: features contain NaN"),
        (lambda: MLH(8).fit(X, L[:-1]), "mlh training labels: labels must be 40 x C"),
        (lambda: MLH(8).fit(X, np.zeros((40, 3))), "mlh: no training sample has a label"),
        (lambda: MLH(8, **FAST_MLH).fit(X, L).encode(X[:, :5]),
         "mlh: features to encode have shape"),
        (lambda: BRE(8, target="cosine"), "bre: option target must be one of labels, euclidean"),
        (lambda: BRE(8, kernel="poly"), "bre: option kernel must be one of linear, rbf"),
        (lambda: BRE(8, n_train=1), "bre: option n_train must be an integer >= 2"),
        (lambda: BRE(8, pair_fraction=0), r"bre: option pair_fraction must be in \(0, 1\]"),
        (lambda: BRE(8, max_sweeps=-1), "bre: option max_sweeps must be an integer >= 0"),
        (lambda: BRE(8).fit(X), "bre is supervised: training labels are required"),
        (lambda: BRE(8).fit(X, 2 * L), "bre training labels: multi-hot labels must be 0/1"),
        (lambda: BRE(16).fit(X[:10], L[:10]), "bre: 16 principal components asked from 10 "),
        (lambda: BRE(4).fit(np.full((30, 5), 2.0), L[:30]), "bre: every feature is constant"),
    ]
    for call, message in cases:
        with pytest.raises(UserError, match=message) as err:
            call()
        assert "\n" not in str(err.value)
