"""Pieces every shallow baseline shares: input checks, PCA, ITQ's rotation and the `Baseline` base
class (fit / project / encode). The methods are in reproduce.baselines.unsupervised and
reproduce.baselines.supervised; the registry and `make_baseline` in reproduce.baselines."""

import inspect

import numpy as np
import scipy.linalg

from ..errors import UserError
from ..utils.limits import FLOAT32_MAX, INT_MAX

ENCODE_CHUNK = 8192           # rows converted to float64 at a time in project/encode (memory bound)
MATLAB_EPS = np.finfo(np.float64).eps   # MATLAB's `eps`, used by trainSH.m's box


# ----------------------------------------------------------------------------- input checks
def check_features(X, what):
    """X as a float64 (N x D) array; UserError unless 2-D, non-empty and finite."""
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise UserError(f"{what}: features must be a non-empty N x D matrix, got shape {X.shape}")
    if not np.issubdtype(X.dtype, np.number) or np.iscomplexobj(X):
        raise UserError(f"{what}: features must be real numbers, got dtype {X.dtype}")
    X = X.astype(np.float64)
    if not np.all(np.isfinite(X)):
        rows = np.flatnonzero(~np.isfinite(X).all(axis=1))
        raise UserError(f"{what}: features contain NaN or infinity (first at row {rows[0]}, "
                        f"{len(rows)} rows in all)")
    return X


def check_labels(labels, n, what):
    """labels as a float64 N x C 0/1 matrix: accepts N x C multi-hot or N integer class ids."""
    L = np.asarray(labels)
    if L.ndim == 1:                       # class ids -> one-hot (Gong's CCA-ITQ uses indicators)
        if L.shape[0] != n or not (np.issubdtype(L.dtype, np.integer) or L.dtype == bool):
            raise UserError(f"{what}: class labels must be {n} integers, got shape {L.shape} "
                            f"dtype {L.dtype}")
        _, ids = np.unique(L, return_inverse=True)
        L = np.eye(ids.max() + 1)[ids]
    if L.ndim != 2 or L.shape[0] != n or L.shape[1] == 0:
        raise UserError(f"{what}: labels must be {n} x C (one row per feature row), "
                        f"got shape {L.shape}")
    L = L.astype(np.float64)
    if not np.all((L == 0) | (L == 1)):
        raise UserError(f"{what}: multi-hot labels must be 0/1, found values "
                        f"{np.unique(L[(L != 0) & (L != 1)])[:5].tolist()}")
    return L


# ----------------------------------------------------------------------------- shared algebra
def fix_signs(vectors):
    """Flip each column so its largest-magnitude entry is positive: eigen/singular vectors have an
    arbitrary sign per LAPACK build, this makes codes identical for one seed on every machine."""
    idx = np.argmax(np.abs(vectors), axis=0)
    signs = np.sign(vectors[idx, np.arange(vectors.shape[1])])
    signs[signs == 0] = 1
    return vectors * signs


def pca_components(X, k, what, rel_tol=1e-9):
    """Top-k principal directions of X (N x D) as a D x k matrix, largest variance first.

    The authors' code takes `[pc, l] = eigs(cov(X), k)`. Same directions, computed from whichever
    of cov (D x D) or the Gram matrix (N x N) is smaller, since fc7 training sets often have
    N < D. A direction whose variance is ~0 (rel_tol of the largest) is not a direction of the
    data: with fewer than k+1 distinct samples, or constant features, this is a UserError.
    """
    n, d = X.shape
    Xc = X - X.mean(axis=0)
    small = min(n, d)
    if k > small:
        raise UserError(f"{what}: {k} principal components asked from {n} samples x {d} "
                        f"features; at most {small - 1 if n <= d else d} exist (use fewer bits "
                        "or more samples)")
    if d <= n:
        evals, pc = scipy.linalg.eigh(Xc.T @ Xc / (n - 1), subset_by_index=[d - k, d - 1])
    else:                                 # eigenvectors of cov from those of the Gram matrix
        evals, u = scipy.linalg.eigh(Xc @ Xc.T / (n - 1), subset_by_index=[n - k, n - 1])
        pc = Xc.T @ u / np.sqrt(np.maximum(evals, 1e-300) * (n - 1))
    evals, pc = evals[::-1], pc[:, ::-1]
    top = evals[0] if len(evals) else 0.0
    rank = int(np.sum(evals > rel_tol * top)) if top > 0 else 0
    if rank < k:
        raise UserError(f"{what}: the {n} training samples vary along only {rank} independent "
                        f"direction(s) (constant or repeated features), fewer than the {k} "
                        f"needed (use fewer bits or more, distinct samples)")
    return fix_signs(pc)


def itq_rotation(V, n_iter, rng):
    """ITQ's orthogonal Procrustes iterations (Gong & Lazebnik 2011, Gong's ITQ.m).

    V: N x K zero-centred projected data. Returns R (K x K orthogonal) and the quantization loss
    ||B - V R||_F before each update (n_iter + 1 values, non-increasing: each B and each R step
    minimises the loss with the other fixed). ITQ.m loops `for iter = 0:n_iter`, so n_iter = 50
    means 51 updates; it starts from a random orthogonal matrix (left singular vectors of
    randn(K, K)) and binarises with Z >= 0 -> +1.
    """
    k = V.shape[1]
    R = np.linalg.svd(rng.standard_normal((k, k)))[0]
    losses = np.empty(n_iter + 1)
    for it in range(n_iter + 1):
        Z = V @ R
        B = np.where(Z >= 0, 1.0, -1.0)
        losses[it] = np.linalg.norm(B - Z)
        UB, _, UAt = np.linalg.svd(B.T @ V)          # C = UX' * V = UB * sigma * UA'
        R = UAt.T @ UB.T                             # R = UA * UB'
    return R, losses


# ----------------------------------------------------------------------------- base class
class Baseline:
    """Common interface; subclasses set `name`, `supervised`, `zero_is_positive` and implement
    `_fit(X, labels, rng)` (X float64 N x D, labels N x C or None) and `_project(X) -> N x K`."""
    name = "baseline"
    supervised = False
    zero_is_positive = True    # a projection of exactly 0 becomes +1 (`>= 0`) or -1 (`> 0`)

    def __init__(self, bits, seed=0):
        if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or bits < 1:
            raise UserError(f"{self.name}: bits must be a positive integer, got {bits!r}")
        self.bits, self.seed = int(bits), int(seed)
        self.dim_ = None

    def _option(self, key, value, low, integer=True):
        """Validate an option (>= low) and return it; UserError names the method and option."""
        ok = (isinstance(value, (int, np.integer)) if integer
              else isinstance(value, (int, float, np.number))) and not isinstance(value, bool)
        high = INT_MAX if integer else FLOAT32_MAX       # bounded as every number a user passes
        if not ok or not low <= value <= high:           # (NaN fails this test too)
            kind = "an integer" if integer else "a number"
            raise UserError(f"{self.name}: option {key} must be {kind} >= {low} and <= {high:{'d' if integer else 'g'}}, "
                            f"got {value!r}")
        return int(value) if integer else float(value)

    def settings(self):
        """{method, bits, seed, every option}: what a results file records about this baseline."""
        params = inspect.signature(type(self).__init__).parameters
        return {"method": self.name, **{k: getattr(self, k) for k in params if k != "self"}}

    def min_train_samples(self, dim):
        """The fewest training samples of `dim` features a fit can use (checked by the commands
        before any work): 2 here; the PCA-based methods need one more than their components."""
        return 2

    def fit(self, X, labels=None):
        X = check_features(X, f"{self.name} training set")
        if X.shape[0] < 2:
            raise UserError(f"{self.name}: at least 2 training samples are needed, "
                            f"got {X.shape[0]}")
        if np.ptp(X, axis=0).max() == 0:
            raise UserError(f"{self.name}: every feature is constant over the {X.shape[0]} "
                            "training samples; there is nothing to hash")
        if self.supervised:
            if labels is None:
                raise UserError(f"{self.name} is supervised: training labels are required")
            labels = check_labels(labels, X.shape[0], f"{self.name} training labels")
        self.dim_ = X.shape[1]
        self._fit(X, labels, np.random.default_rng(self.seed))
        return self

    def project(self, X, chunk=ENCODE_CHUNK):
        """Real-valued projections (N x K float64), computed `chunk` rows at a time so a
        149,736 x 4,096 database (or an h5py dataset) never needs a float64 copy in memory."""
        if self.dim_ is None:
            raise RuntimeError(f"{self.name}: fit() before project()/encode()")
        shape = getattr(X, "shape", None) or np.shape(X)
        if len(shape) != 2 or shape[1] != self.dim_:
            raise UserError(f"{self.name}: features to encode have shape {tuple(shape)}, the "
                            f"training features had {self.dim_} columns")
        out = np.empty((shape[0], self.bits))
        for start in range(0, shape[0], chunk):
            block = check_features(X[start:start + chunk], f"{self.name} rows {start}..")
            out[start:start + len(block)] = self._project(block)
        return out

    def encode(self, X, chunk=ENCODE_CHUNK):
        """+-1 codes (N x K int8): the sign of `project`, with the method's rule for 0."""
        P = self.project(X, chunk)
        return np.where(P >= 0 if self.zero_is_positive else P > 0, 1, -1).astype(np.int8)
