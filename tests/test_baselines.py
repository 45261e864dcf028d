"""Shallow hashing baselines (the reproduce.baselines package).

Each method is checked for its defining property on data built to show it, against plain float64
references written out here (loops over samples, MATLAB's formulas as the papers' code has them).
"""
import subprocess
import sys

import numpy as np
import pytest

from reproduce.baselines import (BASELINES, ITQ, LSH, SpectralHashing, itq_rotation, make_baseline,
                                 pca_components)
from reproduce.baselines.supervised import ITQCCA, KSH, PairwiseTarget, opt_projection_fast, smoothed_sign
from reproduce.errors import UserError
from reference import plain_map

FAST = {"ksh": dict(n_anchors=60, max_iter=100), "mlh": dict(n_epochs=2)}    # small settings keep the suite quick


def build(name, bits, seed=0):
    return make_baseline(name, bits, seed=seed, **FAST.get(name, {}))


def class_data(rng, n, d=32, c=5, multi_label=False, noise=4.0):
    """Classes live in the first c dims (centres 3 e_k, unit noise); the other d - c dims are
    noise of std `noise` (4: random projections see mostly noise and supervision is needed)."""
    y = rng.integers(0, c, n)
    L = np.eye(c)[y]
    if multi_label:                       # a second label for ~30% of the samples
        pick = rng.random(n) < 0.3
        L[pick, rng.integers(0, c, n)[pick]] = 1
    centres = np.zeros((c, d))
    centres[:, :c] = 3 * np.eye(c)
    scale = np.r_[np.ones(c), np.full(d - c, noise)]
    X = L @ centres + rng.standard_normal((n, d)) * scale
    return X, L


# ----------------------------------------------------------------------------- all methods
def test_registry_names_and_settings():
    assert list(BASELINES) == ["lsh", "sh", "itq", "itq-cca", "ksh", "mlh", "bre"]
    assert BASELINES["itq-cca"] is ITQCCA and BASELINES["ksh"] is KSH
    s = make_baseline("ksh", 16, seed=3, n_anchors=50).settings()
    assert s == {"method": "ksh", "bits": 16, "seed": 3, "n_anchors": 50, "n_labeled": 1000,
                 "max_iter": 500, "tol": 1e-2}
    assert make_baseline("itq", 8).settings() == {"method": "itq", "bits": 8, "seed": 0,
                                                  "n_iter": 50}


@pytest.mark.parametrize("name", list(BASELINES))
def test_codes_are_int8_pm1_and_deterministic(name, rng):
    X, L = class_data(rng, 300)
    Xq = rng.standard_normal((37, 32)).astype(np.float32)         # float32 as fc7 files hold
    codes = build(name, 12).fit(X.astype(np.float32), L).encode(Xq)
    assert codes.dtype == np.int8 and codes.shape == (37, 12)
    assert set(np.unique(codes)) <= {-1, 1}
    again = build(name, 12).fit(X.astype(np.float32), L)
    np.testing.assert_array_equal(again.encode(Xq), codes)
    np.testing.assert_array_equal(again.encode(Xq, chunk=5), codes)   # chunking changes nothing
    if name != "sh":                                                   # SH has no randomness
        assert not np.array_equal(build(name, 12, seed=1).fit(X, L).encode(Xq), codes)


def test_class_ids_equal_one_hot_labels(rng):
    X, L = class_data(rng, 200)
    ids = L.argmax(axis=1)
    for name in ("itq-cca", "ksh"):
        a = build(name, 8).fit(X, L).encode(X)
        np.testing.assert_array_equal(build(name, 8).fit(X, ids).encode(X), a)


def test_pca_matches_covariance_eigenvectors(rng):
    for n, d in ((40, 100), (300, 20)):          # Gram-matrix path (N < D) and covariance path
        X = rng.standard_normal((n, d)) * np.linspace(3, 0.5, d)
        pc = pca_components(X, 6, "test")
        evals, evecs = np.linalg.eigh(np.cov(X, rowvar=False))
        ref = evecs[:, ::-1][:, :6]
        np.testing.assert_allclose(pc.T @ pc, np.eye(6), atol=1e-10)
        np.testing.assert_allclose(np.abs(np.sum(pc * ref, axis=0)), 1, atol=1e-8)


# ----------------------------------------------------------------------------- LSH
def test_lsh_collision_probability_is_one_minus_angle_over_pi(rng):
    d, bits = 16, 4000
    Z = rng.standard_normal((50, d))
    offset = 5 * rng.standard_normal(d)                  # LSH centres: angles about the mean
    lsh = LSH(bits, seed=0).fit(np.vstack([Z, -Z]) + offset)
    np.testing.assert_allclose(lsh.mean_, offset)
    for theta in (np.pi / 6, np.pi / 3, np.pi / 2, 2 * np.pi / 3, 5 * np.pi / 6):
        for _ in range(3):
            x = rng.standard_normal(d)
            x /= np.linalg.norm(x)
            w = rng.standard_normal(d)
            w -= (w @ x) * x
            w /= np.linalg.norm(w)
            y = np.cos(theta) * x + np.sin(theta) * w
            b = lsh.encode(np.stack([x, y]) + offset)
            collisions = np.mean(b[0] == b[1])
            assert abs(collisions - (1 - theta / np.pi)) < 0.03, (theta, collisions)


# ----------------------------------------------------------------------------- SH
def test_spectral_hashing_modes_eigenvalues_and_codes(rng):
    X = rng.random((4000, 2)) * [2.5, 1.0]                  # uniform box 2.5 x 1
    sh = SpectralHashing(4).fit(X)
    # analytical eigenvalues (k pi / R)^2: dim0 k=1: 1.58, k=2: 6.32, dim1 k=1: 9.87, dim0 k=3: 14.2
    np.testing.assert_array_equal(sh.modes_, [[1, 0], [2, 0], [0, 1], [3, 0]])
    R = sh.mx_ - sh.mn_
    expected = [(np.pi / R[0]) ** 2, (2 * np.pi / R[0]) ** 2, (np.pi / R[1]) ** 2,
                (3 * np.pi / R[0]) ** 2]
    np.testing.assert_allclose(sh.eigenvalues_, expected)
    assert np.all(np.diff(sh.eigenvalues_) >= 0)
    codes = sh.encode(X)
    ref = np.empty_like(codes)
    for i, x in enumerate(X):                              # compressSH.m, one sample at a time
        p = x @ sh.pc_ - sh.mn_
        for j, mode in enumerate(sh.modes_):
            u = np.prod([np.sin(p[t] * (mode[t] * (np.pi / R[t])) + np.pi / 2) for t in range(2)])
            ref[i, j] = 1 if u > 0 else -1
    np.testing.assert_array_equal(codes, ref)
    assert np.all(np.abs(codes.mean(axis=0)) < 0.1)        # balanced on a uniform box


def test_spectral_hashing_more_bits_than_dims(rng):
    sh = SpectralHashing(10).fit(rng.standard_normal((100, 3)))
    assert sh.pc_.shape == (3, 3) and sh.modes_.shape == (10, 3)
    assert np.all(np.count_nonzero(sh.modes_, axis=1) == 1)  # one-dimensional eigenfunctions


# ----------------------------------------------------------------------------- ITQ
def test_itq_loss_decreases_and_rotation_is_orthogonal(rng):
    # hypercube vertices B0 (500 x 8), rotated at random and embedded in 40 dims with small noise:
    # a rotation for ITQ to undo (it finds a local optimum, the full undo for some seeds)
    B0 = np.where(rng.random((500, 8)) < 0.5, -1.0, 1.0)
    Q = np.linalg.qr(rng.standard_normal((40, 40)))[0][:8]        # 8 x 40 orthonormal rows
    X = B0 @ Q + 0.05 * rng.standard_normal((500, 40)) + 2.0
    itq = ITQ(8, seed=0).fit(X)
    R, loss = itq.rotation_, itq.quantization_loss_
    assert len(loss) == 51                                 # ITQ.m: for iter = 0:50
    np.testing.assert_allclose(R.T @ R, np.eye(8), atol=1e-10)
    assert np.all(np.diff(loss) <= 1e-9 * loss[0]) and loss[-1] < 0.9 * loss[0]
    V = (X - X.mean(axis=0)) @ itq.pc_
    Z = V @ R
    B = np.where(Z >= 0, 1, -1)
    np.testing.assert_array_equal(itq.encode(X), B)
    # converged: the Procrustes step for these codes gives back R (a fixed point of ITQ)
    U, _, Wt = np.linalg.svd(B.T @ V)
    np.testing.assert_allclose(Wt.T @ U.T, R, atol=1e-8)
    # and it quantizes better than PCA alone (R = I)
    assert loss[-1] < np.linalg.norm(np.where(V >= 0, 1, -1) - V)


def test_itq_rotation_zero_iterations_is_the_random_start(rng):
    V = rng.standard_normal((50, 4))
    R0 = np.linalg.svd(np.random.default_rng(7).standard_normal((4, 4)))[0]
    _, loss = itq_rotation(V, 0, np.random.default_rng(7))
    np.testing.assert_allclose(loss[0], np.linalg.norm(np.where(V @ R0 >= 0, 1, -1) - V @ R0))


# ----------------------------------------------------------------------------- supervised
@pytest.mark.parametrize("multi_label", [False, True])
def test_supervised_methods_beat_lsh(rng, multi_label):
    Xtr, Ltr = class_data(rng, 500, multi_label=multi_label)
    Xq, Lq = class_data(rng, 60, multi_label=multi_label)
    Xdb, Ldb = class_data(rng, 400, multi_label=multi_label)

    def score(name):
        b = build(name, 12).fit(Xtr, Ltr)
        return plain_map(b.encode(Xq), b.encode(Xdb), Lq, Ldb)

    lsh = score("lsh")
    assert score("itq-cca") > lsh + 0.2
    assert score("ksh") > lsh + 0.2


def reference_cca(X, Y, reg):
    """Gong's cca.m line by line (D x D Cholesky whitening), float64."""
    C = np.cov(np.hstack([X, Y]), rowvar=False)
    sx = X.shape[1]
    Cxx = C[:sx, :sx] + reg * np.eye(sx)
    Cxy = C[:sx, sx:]
    Cyy = C[sx:, sx:] + reg * np.eye(Y.shape[1])
    Rx = np.linalg.cholesky(Cxx).T                        # MATLAB chol: upper, Cxx = Rx' Rx
    invRx = np.linalg.inv(Rx)
    Z = invRx.T @ Cxy @ np.linalg.solve(Cyy, Cxy.T) @ invRx
    r2, W = np.linalg.eigh(0.5 * (Z + Z.T))
    order = np.argsort(-r2)
    return invRx @ W[:, order], np.sqrt(np.clip(r2[order], 0, None))


@pytest.mark.parametrize("n", [30, 200])                   # N < D (push-through) and N > D
def test_itq_cca_projection_equals_cca_m(rng, n):
    X, L = class_data(rng, n, d=50, multi_label=True)
    itq_cca = ITQCCA(8, seed=0, reg=1e-3).fit(X, L)
    Wx, r = reference_cca(X - X.mean(axis=0), L, 1e-3)
    ref = Wx[:, :5] * r[:5]                                # only C = 5 correlations are > 0
    np.testing.assert_allclose(itq_cca.canonical_correlations_[:5], r[:5], rtol=1e-6)
    assert np.all(itq_cca.canonical_correlations_[5:] == 0) and np.all(r[5:] < 1e-6)
    ours = itq_cca.cca_projection_
    for j in range(5):
        sign = np.sign(ours[:, j] @ ref[:, j])
        np.testing.assert_allclose(sign * ours[:, j], ref[:, j], rtol=1e-5, atol=1e-8)
    assert np.all(ours[:, 5:] == 0)


def test_pairwise_target_equals_dense_residual(rng):
    L = (rng.random((40, 6)) < 0.3).astype(float)
    L[:10] = L[10:20]                                      # repeated label patterns
    S = PairwiseTarget(L, r=8)
    ref = np.empty((40, 40))
    for i in range(40):
        for j in range(40):
            ref[i, j] = 8 * (1 if L[i] @ L[j] > 0 else -1)
    y = np.where(rng.random(40) < 0.5, 1.0, -1.0)
    S.subtract(y)
    ref -= np.outer(y, y)
    np.testing.assert_allclose(S.dense(), ref)
    v, M = rng.standard_normal(40), rng.standard_normal((40, 3))
    np.testing.assert_allclose(S @ v, ref @ v)
    np.testing.assert_allclose(S @ M, ref @ M)


def test_opt_projection_fast_decreases_the_smoothed_loss(rng):
    K = rng.standard_normal((80, 20))
    L = np.eye(4)[rng.integers(0, 4, 80)]
    S = PairwiseTarget(L, r=8)
    a0 = rng.standard_normal(20) * 0.1
    a, cost = opt_projection_fast(K, S, a0, max_iter=200, tol=1e-6)
    y0, y = smoothed_sign(K @ a0), smoothed_sign(K @ a)
    dense = S.dense()
    np.testing.assert_allclose(cost[0], -y0 @ dense @ y0 / 80)
    np.testing.assert_allclose(cost[-1], -y @ dense @ y / 80)
    assert cost[-1] < cost[0] - 1
    np.testing.assert_allclose(smoothed_sign(np.array([-3.0, 0.0, 2.0])),
                               2 / (1 + np.exp(-np.array([-3.0, 0.0, 2.0]))) - 1)
    a_dense, cost_dense = opt_projection_fast(K, dense, a0, max_iter=200, tol=1e-6)
    np.testing.assert_allclose(a_dense, a, rtol=1e-8)


def test_ksh_training_loss_decreases(rng):
    X, L = class_data(rng, 300, multi_label=True)
    ksh = KSH(8, seed=0, n_anchors=60, n_labeled=200).fit(X, L)
    assert len(ksh.cost_history_) == 8
    assert all(c[-1] < c[0] for c in ksh.cost_history_)
    assert ksh.anchors_.shape == (60, 32) and ksh.weights_.shape == (60, 8)
    # the codes' inner products fit K * S0 better than random (LSH) codes on the training set
    S0 = np.where(L @ L.T > 0, 1.0, -1.0)
    B, B_lsh = ksh.encode(X).astype(float), LSH(8).fit(X).encode(X).astype(float)
    assert np.linalg.norm(B @ B.T - 8 * S0) < 0.8 * np.linalg.norm(B_lsh @ B_lsh.T - 8 * S0)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("name", ["sh", "itq"])
def test_fewer_samples_than_bits_is_a_user_error(rng, name):
    with pytest.raises(UserError, match=f"{name}.*(direction|components)"):
        make_baseline(name, 16).fit(rng.standard_normal((10, 64)))
    with pytest.raises(UserError, match="direction"):     # 40 rows, but only 5 distinct ones
        make_baseline(name, 8).fit(np.repeat(rng.standard_normal((5, 64)), 8, axis=0))


@pytest.mark.parametrize("name", list(BASELINES))
def test_constant_features_are_a_user_error(name):
    X = np.full((50, 8), 3.0)
    with pytest.raises(UserError, match=f"{name}: every feature is constant"):
        build(name, 4).fit(X, np.eye(2)[np.arange(50) % 2])


def test_bad_inputs_are_user_errors(rng):
    X, L = class_data(rng, 40)
    bad = X.copy()
    bad[7, 3] = np.nan
    cases = [
        (lambda: ITQ(4).fit(bad), "NaN.*row 7"),
        (lambda: ITQ(4).fit(X[0]), "N x D"),
        (lambda: ITQ(4).fit(X[:1]), "at least 2"),
        (lambda: KSH(4).fit(X), "supervised: training labels are required"),
        (lambda: ITQCCA(4).fit(X, L[:-1]), "40 x C"),
        (lambda: ITQCCA(4).fit(X, 2 * L), "0/1"),
        (lambda: ITQCCA(4).fit(X, np.ones((40, 3))), "same labels"),
        (lambda: ITQCCA(64).fit(X, L), "64 bits from 32"),
        (lambda: ITQCCA(4, reg=0).fit(X[:10], L[:10]), "singular with reg = 0"),
        (lambda: LSH(4).fit(X).encode(X[:, :5]), "training features had 32 columns"),
        (lambda: LSH(4).fit(X).encode(bad), "NaN"),
        (lambda: make_baseline("pca", 8), "unknown baseline 'pca'"),
        (lambda: make_baseline("itq", 8, anchors=3), "unknown option.*n_iter"),
        (lambda: make_baseline("lsh", 8, n_iter=3), "no options"),
        (lambda: make_baseline("ksh", 8, n_anchors=0), "n_anchors must be an integer >= 1"),
        (lambda: make_baseline("itq", 0), "positive integer"),
    ]
    for call, message in cases:
        with pytest.raises(UserError, match=message):
            call()


def test_supervised_module_imports_on_its_own():
    out = subprocess.run([sys.executable, "-c", "import reproduce.baselines.supervised as s; "
                          "from reproduce.baselines import BASELINES; print(sorted(BASELINES))"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(sorted(["lsh", "sh", "itq", "itq-cca", "ksh", "mlh", "bre"]))
