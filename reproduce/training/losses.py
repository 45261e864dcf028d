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
    b = a if other is labels else other.to(device=labels.device, dtype=dtype)
    return (a @ b.T > 0).to(dtype)


def log_cosh(x):
    """log cosh(x), elementwise, finite for every finite x.

    Written as logaddexp(x, -x) - log 2: torch's logaddexp is stable and its derivative,
    sigmoid(2x) - sigmoid(-2x) = tanh(x), is what the Caffe layer applies. (Caffe switches to
    x - log 2 above q_threshold = 15; the two differ by log1p(e^-2x) < 1e-13 there.)
    """
    return torch.logaddexp(x, -x) - LOG2


def _batch_similarity(z, labels, similarity):
    """(s, counted) of the batch, in z's dtype and device: s_ij = 1.0 if similar else 0.0 (Caffe:
    similarity > 0), counted the boolean mask of the pairs in the mean (Caffe: similarity >= 0),
    None when every pair counts. From (N, C) labels (pairwise_similarity: every pair counts), or
    a given (N, N) matrix (negative entries: pairs left out)."""
    n = z.shape[0]
    if (labels is None) == (similarity is None):
        raise ValueError("pass exactly one of labels (N x C) and similarity (N x N)")
    if labels is not None:
        if labels.dim() != 2 or labels.shape[0] != n:
            raise ValueError(f"labels must be {n} x C for z of shape {tuple(z.shape)}, "
                             f"got {tuple(labels.shape)}")
        return pairwise_similarity(labels.to(z.device)).to(z.dtype), None   # already 0/1
    if tuple(similarity.shape) != (n, n):
        raise ValueError(f"similarity must be {n} x {n} for z of shape "
                         f"{tuple(z.shape)}, got {tuple(similarity.shape)}")
    sim = similarity.to(device=z.device, dtype=z.dtype)
    counted = sim >= 0
    # .all() waits for the device: only a passed matrix can leave pairs out
    return (sim > 0).to(z.dtype), None if bool(counted.all()) else counted


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
        s, counted = _batch_similarity(z, labels, similarity)
        # Row-major codes (the training loop's) take one graph node, _DHNLossFunction; others
        # the recorded graph, as torch's mm backward orders its operands by their strides.
        if z.is_contiguous():
            total, self._last = _DHNLossFunction.apply(z, s, counted, self)
        else:
            total, self._last, _ = self._value(z, s, counted)
        return total

    def _value(self, z, s, counted):
        """(total, parts for `last`, (count, theta, sign, x)): the loss, differentiable by
        autograd (the reference _DHNLossFunction's backward reproduces), and the intermediates
        that backward reads."""
        n = z.shape[0]
        count = n * n if counted is None else counted.sum().clamp(min=1).to(z.dtype)
        theta = z @ z.T                       # N x N, <z_i, z_j>, unscaled
        per_pair = self._per_pair(theta, s, z.shape[1])
        if counted is not None:
            per_pair = torch.where(counted, per_pair, torch.zeros_like(per_pair))
        pair = per_pair.sum() / count
        # |z| with Caffe's sign convention (bottom_data >= 0 -> +1), so that the gradient
        # sign(z) * tanh(|z| - 1) is Caffe's also at z == 0 (torch.abs would give 0 there).
        sign = torch.where(z.detach() >= 0, 1.0, -1.0).to(z.dtype)
        x = z * sign - 1
        q_elem = log_cosh(x)                  # N x K
        quant = q_elem.sum() / n              # the normalisation the Caffe gradient implies
        total = pair + self.quant_weight * quant
        with torch.no_grad():
            parts = self._parts(pair, quant, q_elem, total, s, counted)
        return total, parts, (count, theta, sign, x)

    def _per_pair(self, theta, s, k):
        """The pair term of every pair (N x N), before the mean; k: the code length."""
        if self.pair_loss == "squared":
            # DHN-E (paper Table 2): squared error between s and the inner product scaled to
            # [-1, 1] by 1/K.
            return (s - theta / k) ** 2
        # log(1 + e^theta) - s*theta; d/dtheta = sigmoid(theta) - s for all theta, and via
        # theta = Z Z^T the gradient on z is (D + D^T)/2 . Z / count = 2(sigmoid - s) Z / count
        # (D symmetric), the Caffe layer's l_lambda / count * D . Z.
        per_pair = torch.logaddexp(torch.zeros_like(theta), theta) - s * theta
        if self.threshold is None:
            return per_pair
        with torch.no_grad():
            # Caffe's value above the threshold is theta*(1 - s); its gradient is not changed
            # there, so the difference enters the value only (detached).
            correction = torch.where(theta >= self.threshold, theta * (1 - s) - per_pair, 0.0)
        return per_pair + correction

    def _per_pair_backward(self, grad, theta, s, k):
        """Autograd's gradient on theta of _per_pair's sum, given its gradient on each pair."""
        if self.pair_loss == "squared":
            scaled = s - theta / k
            return (grad * (2.0 * scaled.pow(1.0))).neg() / k       # pow, s - ..., / k
        # logaddexp(0, theta) (the threshold's correction is detached) and - s * theta
        return grad / (1 + torch.exp(torch.zeros_like(theta) - theta)) + grad.neg() * s

    def _parts(self, pair, quant, q_elem, total, s, counted):
        """What `last` reads, as one float64 tensor in _LAST_FIELDS order (no sync)."""
        quant_caffe = q_elem.mean()
        total_caffe = pair + quant_caffe * (self.quant_weight > 0)
        losses = torch.stack([pair, quant, quant_caffe, total, total_caffe]).to(torch.float64)
        zero_rows = (torch.diagonal(s) <= 0).sum().to(torch.float64)
        if counted is None:     # every pair counts; s is 0/1, so its float64 sum is the count
            pairs = torch.full((), s.numel(), dtype=torch.float64, device=s.device)
            similar = s.sum(dtype=torch.float64)
        else:
            pairs = counted.sum().to(torch.float64)
            similar = (s.bool() & counted).sum().to(torch.float64)
        return torch.cat([losses, torch.stack([zero_rows, pairs, similar])])


class _DHNLossFunction(torch.autograd.Function):
    """DHNLoss on row-major codes as one autograd node: the forward is DHNLoss._value, the
    backward writes out, operation for operation, what autograd computes from the graph that
    _value records (torch's formula for each node, the same operands, and the order in which
    its engine adds the gradients reaching z), so the gradient is bitwise the recorded graph's
    (tests/test_losses.py compares them). Why: at the batch of 64 recording and replaying the
    ~40 nodes costs more than the arithmetic. Returns (total, parts for `last`)."""

    @staticmethod
    def forward(ctx, z, s, counted, loss):
        total, parts, (count, theta, sign, x) = loss._value(z, s, counted)
        ctx.save_for_backward(z, s, counted, theta, sign, x)
        ctx.loss, ctx.count = loss, count
        ctx.mark_non_differentiable(parts)
        ctx.set_materialize_grads(False)
        return total, parts

    @staticmethod
    def backward(ctx, grad, _):
        if grad is None:                      # no gradient reached total (grads not materialised)
            return None, None, None, None
        z, s, counted, theta, sign, x = ctx.saved_tensors
        loss, (n, k) = ctx.loss, z.shape
        # total = pair + quant_weight * quant; the quantization branch, recorded last, runs
        # first, and its gradient is the first to reach z
        g_z = _log_cosh_backward((grad * loss.quant_weight / n).expand(n, k), x) * sign
        g_pair = (grad / ctx.count).expand(n, n)                     # sum / count
        if counted is not None:
            g_pair = torch.where(counted, g_pair, 0)
        g_theta = loss._per_pair_backward(g_pair, theta, s, k)
        # theta = z @ z.T: torch's mm_mat1_backward, then mm_mat2_backward through the
        # transpose, as they read row-major z
        return (g_z + g_theta.mm(z)) + g_theta.t().mm(z), None, None, None


def _log_cosh_backward(grad, x):
    """Autograd's gradient of log_cosh(x) = logaddexp(x, -x) - log 2 (logaddexp's formula for
    each operand, then the negation)."""
    neg = -x
    return grad / (1 + torch.exp(neg - x)) + (grad / (1 + torch.exp(x - neg))).neg()


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


# The loss part of the named presets (the solver part: reproduce.training.solver.PRESETS).
LOSS_PRESETS = {"dhn-caffe": LossSettings(),
                "hash-caffe": LossSettings(quant_weight=HASH_CAFFE_QUANT_WEIGHT)}
