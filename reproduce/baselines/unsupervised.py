"""The unsupervised baselines of Table 1: LSH, spectral hashing (SH), ITQ."""
import numpy as np

from .common import MATLAB_EPS, Baseline, itq_rotation, pca_components


# ----------------------------------------------------------------------------- LSH
class LSH(Baseline):
    """Locality-sensitive hashing by sign random projections (Charikar, STOC 2002; Andoni & Indyk,
    FOCS 2006): h_k(x) = sign(w_k . (x - mean)), w_k ~ N(0, I_D).

    Published setting (Gong's ITQ demo script, case 'LSH', which the hashing literature's tables
    use): centre the data, `XX * randn(D, bit)`, bit = XX >= 0. No options. Deviation: the mean is
    the training set's (Gong's script subtracted the mean of all data, queries included).
    Property: P[h(x) = h(y)] = 1 - angle(x, y) / pi per bit.
    """
    name = "lsh"

    def _fit(self, X, labels, rng):
        self.mean_ = X.mean(axis=0)
        self.projection_ = rng.standard_normal((X.shape[1], self.bits))     # D x K

    def _project(self, X):
        return (X - self.mean_) @ self.projection_


# ----------------------------------------------------------------------------- SH
class SpectralHashing(Baseline):
    """Spectral hashing (Weiss, Torralba & Fergus, NIPS 2008), as the authors' trainSH.m /
    compressSH.m compute it:

    1. PCA to npca = min(K, D) dims (`eigs(cov(X), npca)`); project X (uncentred: the box below
       absorbs the offset).
    2. Fit a uniform box per PC: mn = min - eps, mx = max + eps (the 5/95 percentile lines of
       trainSH.m are overwritten on the same line, so the full range is what runs).
    3. Enumerate one-dimensional modes k = 1 .. ceil((K+1) R_i / max R) - 1 on each PC i
       (R = mx - mn), with analytical eigenvalue (k pi / R_i)^2; sort ascending (MATLAB's stable sort), drop the
       constant mode, keep the K smallest.
    4. Bit j = [prod_i sin(pi/2 + k_ji pi (x_i - mn_i) / R_i) > 0], i.e. cos(k pi (x - mn) / R)
       of the single PC its mode lives on.
    No options; deterministic (the seed is unused and kept for the common interface).
    """
    name = "sh"

    def min_train_samples(self, dim):
        return min(self.bits, dim) + 1          # npca principal components
    zero_is_positive = False      # compressSH.m: B = compactbit(U > 0)

    def _fit(self, X, labels, rng):
        npca = min(self.bits, X.shape[1])
        self.pc_ = pca_components(X, npca, self.name)                       # D x npca
        P = X @ self.pc_
        self.mn_ = P.min(axis=0) - MATLAB_EPS
        self.mx_ = P.max(axis=0) + MATLAB_EPS
        R = self.mx_ - self.mn_
        max_mode = np.ceil((self.bits + 1) * R / R.max()).astype(int)
        modes = [np.zeros(npca, dtype=int)]                                 # the constant mode
        for i in range(npca):
            for k in range(1, max_mode[i]):
                row = np.zeros(npca, dtype=int)
                row[i] = k
                modes.append(row)
        modes = np.array(modes)
        eigval = ((modes * (np.pi / R)) ** 2).sum(axis=1)                   # -eigVal of trainSH.m
        order = np.argsort(eigval, kind="stable")
        self.modes_ = modes[order[1:self.bits + 1]]                         # K x npca
        self.eigenvalues_ = eigval[order[1:self.bits + 1]]                  # non-decreasing

    def _project(self, X):
        # compressSH.m multiplies sin(pi/2 + omega_i x_i) over all npca dims, but every mode is
        # one-dimensional and the other factors are sin(pi/2) = 1.0 exactly in floating point:
        # the single factor is the same number, at 1/npca of the cost.
        dim = np.argmax(self.modes_, axis=1)                                # K: the mode's PC
        omega = self.modes_[np.arange(self.bits), dim] * (np.pi / (self.mx_ - self.mn_))[dim]
        return np.sin((X @ self.pc_ - self.mn_)[:, dim] * omega + np.pi / 2)


# ----------------------------------------------------------------------------- ITQ
class ITQ(Baseline):
    """Iterative quantization (Gong & Lazebnik, CVPR 2011; TPAMI 2013), as Gong's demo script and
    ITQ.m run it: centre the data ("VERY IMPORTANT for ITQ to work"), PCA to K dims
    (`eigs(cov(X), K)`), then n_iter = 50 Procrustes iterations from a random orthogonal rotation;
    codes = [(x - mean) W R >= 0].

    Options: n_iter (default 50, Gong's demo). Fitted: mean_, pc_ (D x K), rotation_ (K x K),
    quantization_loss_ (||B - V R||_F per iteration). Deviation: the mean is the training set's
    (Gong's script centred with the mean of all data). Needs K <= rank of the centred training
    data (N >= K + 1 distinct samples).
    """
    name = "itq"

    def min_train_samples(self, dim):
        return self.bits + 1                    # K principal components

    def __init__(self, bits, seed=0, n_iter=50):
        super().__init__(bits, seed)
        self.n_iter = self._option("n_iter", n_iter, 0)

    def _fit(self, X, labels, rng):
        self.mean_ = X.mean(axis=0)
        self.pc_ = pca_components(X, self.bits, self.name)
        V = (X - self.mean_) @ self.pc_
        self.rotation_, self.quantization_loss_ = itq_rotation(V, self.n_iter, rng)

    def _project(self, X):
        return (X - self.mean_) @ self.pc_ @ self.rotation_
