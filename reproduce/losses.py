"""The DHN loss exactly as the authors' Caffe PairwiseLoss layer applies it.

The authors' layer (dhn-caffe, pairwise_loss_layer.cu) takes the tanh codes z (N x K) and the
multi-hot labels (N x C) of one mini-batch and

  * forms every ordered pair (i, j) of the batch, the diagonal included (N*N pairs);
  * s_ij = 1 if the label vectors share at least one label (inner product > 0), else 0;
  * theta_ij = <z_i, z_j>, not scaled;
  * pair loss  log(1 + e^theta) - s*theta,  replaced by  theta*(1 - s)  when theta >= l_threshold
    (15 in the authors' train_val.prototxt); the value is the mean over the pairs counted;
  * applies the gradient  l_lambda / count * D . Z  with  D_ij = 2*(sigmoid(theta_ij) - s_ij)
    (the same formula on both sides of the threshold);
  * adds the quantization term's gradient  q_gamma / N * sign(z) * tanh(|z| - 1), i.e. the
    derivative of  (q_gamma / N) * sum_ik log cosh(|z_ik| - 1)  (Caffe's sign: +1 at z == 0),
    while the value it prints is the mean of log cosh over all N*K elements.

`DHNLoss` returns a scalar whose autograd gradient is that applied gradient (l_lambda = 1): the
cross-entropy is written as logaddexp(0, theta) - s*theta, whose derivative is sigmoid(theta) - s
for every theta, and the linear piece above the threshold is added as a *detached* correction to
the value, so it changes what is reported but not the gradient, exactly as in the Caffe layer.
"""
import dataclasses
import math

import torch
from torch import nn

PAIR_LOSSES = ("cross_entropy", "squared")
DEFAULT_QUANT_WEIGHT = 0.3   # dhn-caffe PairwiseLoss q_gamma (hash-caffe: loss_weight 0.2)
HASH_CAFFE_QUANT_WEIGHT = 0.2  # thuml/hash-caffe QuantizationLoss loss_weight 0.2
DEFAULT_THRESHOLD = 15.0     # dhn-caffe PairwiseLoss l_threshold (and q_threshold)
LOG2 = math.log(2.0)

# Order of the detached numbers kept after each call; `DHNLoss.last` names them.
_LAST_FIELDS = ("pair_loss", "quantization_loss", "quantization_loss_caffe", "total",
                "total_caffe", "zero_label_rows", "pairs", "similar_pairs")


def pairwise_similarity(labels, other=None):
    """s_ij = 1.0 if labels[i] and other[j] share >= 1 label, else 0.0.

    labels: N x C, other: M x C (default: labels), 0/1 multi-hot of any dtype (bool, uint8,
    float). Returns an N x M tensor in float32 (or in the labels' float dtype). Like the Caffe
    layer (a gemm of the label blobs, then `> 0`) this is the sign of the label inner product.
    """
    if labels.dim() != 2:
        raise ValueError(f"labels must be N x C, got shape {tuple(labels.shape)}")
    other = labels if other is None else other
    if other.dim() != 2 or other.shape[1] != labels.shape[1]:
        raise ValueError(f"label shapes {tuple(labels.shape)} and {tuple(other.shape)} "
                         "do not have the same number of labels C")
    dtype = labels.dtype if labels.is_floating_point() else torch.float32
    a = labels.to(dtype)
    b = other.to(device=labels.device, dtype=dtype)
    return (a @ b.T > 0).to(dtype)


def log_cosh(x):
    """log cosh(x), elementwise, finite for every finite x.

    Written as logaddexp(x, -x) - log 2: torch's logaddexp is stable and its derivative,
    sigmoid(2x) - sigmoid(-2x) = tanh(x), is what the Caffe layer applies. (Caffe switches to
    x - log 2 above q_threshold = 15; the two differ by log1p(e^-2x) < 1e-13 there.)
    """
    return torch.logaddexp(x, -x) - LOG2


def _batch_similarity(z, labels, similarity):
    """(N, N) similarity of the batch in z's dtype and device: from (N, C) labels
    (pairwise_similarity), or a given (N, N) matrix (negative entries: pairs left out)."""
    n = z.shape[0]
    if (labels is None) == (similarity is None):
        raise ValueError("pass exactly one of labels (N x C) and similarity (N x N)")
    if labels is not None:
        if labels.dim() != 2 or labels.shape[0] != n:
            raise ValueError(f"labels must be {n} x C for z of shape {tuple(z.shape)}, "
                             f"got {tuple(labels.shape)}")
        return pairwise_similarity(labels.to(z.device)).to(z.dtype)
    if tuple(similarity.shape) != (n, n):
        raise ValueError(f"similarity must be {n} x {n} for z of shape "
                         f"{tuple(z.shape)}, got {tuple(similarity.shape)}")
    return similarity.to(device=z.device, dtype=z.dtype)


class DHNLoss(nn.Module):
    """Pairwise cross-entropy (or squared) loss + quant_weight * quantization loss of DHN.

    quant_weight: lambda of the paper, q_gamma of the authors' layer (default 0.3, dhn-caffe;
        0 gives the paper's DHN-Q variant).
    pair_loss: "cross_entropy" (DHN, the authors' layer) or "squared" (the paper's DHN-E:
        mean over the same pairs of (s_ij - theta_ij / K)^2).
    threshold: l_threshold of the authors' layer (default 15); theta >= threshold takes the
        linear value theta*(1 - s). None or a negative number disables the switch (as Caffe's
        `threshold >= 0` test does).

    Call: loss(z, labels) or loss(z, similarity=S) -> 0-d tensor.
        z: N x K codes (the tanh outputs; float16/bfloat16 are computed in float32).
        labels: N x C multi-hot (bool/uint8/int/float); a row of zeros is dissimilar to
            everything, itself included.
        similarity: N x N instead of labels, e.g. precomputed: 1 similar, 0 dissimilar, and a
            negative entry marks a pair left out of the mean (Caffe's -1 "unknown").
    N is whatever batch is passed: under DDP pass the all-gathered z and labels (64 rows) so the
    pairs are the 64 x 64 of one Caffe process.

    After each call `loss.last` gives the parts as floats (see `last`).
    """

    def __init__(self, quant_weight=DEFAULT_QUANT_WEIGHT, pair_loss="cross_entropy",
                 threshold=DEFAULT_THRESHOLD):
        super().__init__()
        if pair_loss not in PAIR_LOSSES:
            raise ValueError(f"pair_loss must be one of {PAIR_LOSSES}, got {pair_loss!r}")
        quant_weight = float(quant_weight)
        if not math.isfinite(quant_weight) or quant_weight < 0:
            raise ValueError(f"quant_weight must be a finite number >= 0, got {quant_weight}")
        if threshold is not None and not math.isfinite(float(threshold)):
            raise ValueError(f"threshold must be a finite number or None, got {threshold}")
        self.quant_weight = quant_weight
        self.pair_loss = pair_loss
        self.threshold = None if threshold is None or threshold < 0 else float(threshold)
        self._last = None

    def extra_repr(self):
        return (f"quant_weight={self.quant_weight}, pair_loss={self.pair_loss!r}, "
                f"threshold={self.threshold}")

    @property
    def last(self):
        """The parts of the latest call, as floats (read them at display intervals: one sync).

        pair_loss: the pair term, mean over the pairs counted (Caffe's "L loss").
        quantization_loss: (1/N) * sum_ik log cosh(|z_ik| - 1), the term as trained, before
            quant_weight.
        quantization_loss_caffe: mean of log cosh(|z| - 1) over N*K elements (Caffe's "Q loss",
            K times smaller).
        total: the returned value, pair_loss + quant_weight * quantization_loss.
        total_caffe: what the Caffe layer puts in its top blob, pair_loss +
            quantization_loss_caffe (0 when quant_weight is 0, as its `q_gamma > 0` test).
        zero_label_rows: rows whose labels are all zero (with a similarity matrix: rows not
            similar to themselves).
        pairs: pairs counted (N*N unless the similarity leaves some out).
        similar_pairs: pairs with s_ij = 1.
        """
        if self._last is None:
            return {}
        values = dict(zip(_LAST_FIELDS, self._last.tolist()))
        for key in ("zero_label_rows", "pairs", "similar_pairs"):
            values[key] = int(round(values[key]))
        return values

    def forward(self, z, labels=None, similarity=None):
        if z.dim() != 2 or z.shape[0] == 0 or z.shape[1] == 0:
            raise ValueError(f"z must be N x K with N, K >= 1, got shape {tuple(z.shape)}")
        if z.dtype in (torch.float16, torch.bfloat16):
            z = z.float()   # Caffe computes the layer in float32
        n, k = z.shape
        sim = _batch_similarity(z, labels, similarity)
        s = (sim > 0).to(z.dtype)            # Caffe: (similarity > 0)
        counted = sim >= 0                    # Caffe: count = 1 where similarity >= 0
        # Labels give every pair a 0/1 similarity; only a passed matrix can leave pairs out
        # (checked there alone: .all() waits for the device).
        all_counted = labels is not None or bool(counted.all())
        count = n * n if all_counted else counted.sum().clamp(min=1).to(z.dtype)

        theta = z @ z.T                       # N x N, <z_i, z_j>, unscaled
        if self.pair_loss == "cross_entropy":
            # log(1 + e^theta) - s*theta; d/dtheta = sigmoid(theta) - s for all theta, and via
            # theta = Z Z^T the gradient on z is (D + D^T)/2 . Z / count = 2(sigmoid - s) Z / count
            # (D symmetric), the Caffe layer's l_lambda / count * D . Z.
            per_pair = torch.logaddexp(torch.zeros_like(theta), theta) - s * theta
            if self.threshold is not None:
                with torch.no_grad():
                    # Caffe's value above the threshold is theta*(1 - s); its gradient is not
                    # changed there, so the difference enters the value only (detached).
                    above = theta >= self.threshold
                    correction = torch.where(above, theta * (1 - s) - per_pair,
                                             torch.zeros_like(per_pair))
                per_pair = per_pair + correction
        else:
            # DHN-E (paper Table 2): squared error between s and the inner product scaled to
            # [-1, 1] by 1/K.
            per_pair = (s - theta / k) ** 2
        if not all_counted:
            per_pair = torch.where(counted, per_pair, torch.zeros_like(per_pair))
        pair = per_pair.sum() / count

        # |z| with Caffe's sign convention (bottom_data >= 0 -> +1), so that the gradient
        # sign(z) * tanh(|z| - 1) is Caffe's also at z == 0 (torch.abs would give 0 there).
        sign = torch.where(z.detach() >= 0, 1.0, -1.0).to(z.dtype)
        q_elem = log_cosh(z * sign - 1)       # N x K
        quant = q_elem.sum() / n              # the normalisation the Caffe gradient implies
        total = pair + self.quant_weight * quant

        with torch.no_grad():
            quant_caffe = q_elem.mean()
            total_caffe = pair + quant_caffe * (self.quant_weight > 0)
            zero_rows = (torch.diagonal(s) <= 0).sum()
            pairs = counted.sum()
            similar = (s.bool() & counted).sum()
            self._last = torch.stack([t.detach().to(torch.float64) for t in (
                pair, quant, quant_caffe, total, total_caffe, zero_rows, pairs, similar)])
        return total


@dataclasses.dataclass(frozen=True)
class LossSettings:
    """The loss of one training run; defaults: the authors' dhn-caffe PairwiseLoss layer.

    quant_weight: lambda (q_gamma), 0.3 in dhn-caffe; pair_loss: "cross_entropy" (DHN) or
    "squared" (DHN-E); threshold: l_threshold, 15 (None: no linear piece).
    """
    quant_weight: float = DEFAULT_QUANT_WEIGHT
    pair_loss: str = "cross_entropy"
    threshold: float | None = DEFAULT_THRESHOLD

    def __post_init__(self):
        self.make_loss()          # the loss's own checks (names, ranges, finiteness)

    def make_loss(self):
        """The DHNLoss these settings describe."""
        return DHNLoss(quant_weight=self.quant_weight, pair_loss=self.pair_loss,
                       threshold=self.threshold)


# The loss part of the named presets (the solver part: reproduce.solver.PRESETS).
LOSS_PRESETS = {"dhn-caffe": LossSettings(),
                "hash-caffe": LossSettings(quant_weight=HASH_CAFFE_QUANT_WEIGHT)}
