"""DNNH: Lai, Pan, Liu & Yan, "Simultaneous Feature Learning and Hash Coding with Deep Neural
Networks", CVPR 2015 (arXiv 1504.03410; also called NINH), on DHN's CaffeNet trunk.

The paper's three blocks, and what this module makes of them:

  * shared sub-network (stacked convolution layers, network-in-network style): here CaffeNet
    conv1 ... fc7, as for every deep method of this reproduction (the head reads fc7, N x 4096).
  * divide-and-encode module (`DivideEncodeHead`): the feature vector is divided into K slices;
    slice k goes through its own fully-connected layer with ONE output (Caffe layer `ip_s<k>`),
    a sigmoid, and the piece-wise threshold function

        g(s) = 0 if s < 0.5 - eps,   s if 0.5 - eps <= s <= 0.5 + eps,   1 if s > 0.5 + eps

    (the paper's function, "to encourage the output of binary hash bits"); the K outputs are
    concatenated into the approximate code b in [0, 1]^K. The gradient is g's own: 1 inside the
    band (boundaries included), 0 outside.
  * triplet ranking loss (`TripletRankingLoss`), paper Eq. for (I, I+, I-) with I more similar to
    I+ than to I-:  l = max(0, 1 - (||F(I) - F(I-)||_H - ||F(I) - F(I+)||_H)), relaxed to

        l(b, b+, b-) = max(0, ||b - b+||^2 - ||b - b-||^2 + margin),   margin 1,

    with the paper's gradients  dl/db = (2b- - 2b+) [l > 0],  dl/db+ = (2b+ - 2b) [l > 0],
    dl/db- = (2b - 2b-) [l > 0].

Binary code: b >= 0.5 -> 1, i.e. the sign of 2b - 1 (`DNNH.codes`).

Triplets: every (i, j, k) of the mini-batch with j != i sharing a label with i and k sharing none
with i (the labels' rule of this reproduction: similar = share >= 1 label; an unlabelled image is
similar to nothing); the loss is the mean over those triplets, an anchor without a positive or a
negative partner in the batch adds none, a batch without any triplet gives 0.
"""
import numpy as np
import torch
from torch import nn

from ..errors import UserError
from ..training.losses import pairwise_similarity
from .base import FC7_DIM, FILLER_STD, DeepMethod, Head, MethodLoss, check_train_labels, zeros_like_loss

DEFAULT_MARGIN = 1.0     # paper: max(0, 1 - (d- - d+))
DEFAULT_EPSILON = 0.1    # our choice: the paper leaves eps "a small positive hyper-parameter"


def piecewise_threshold(s, epsilon):
    """DNNH's g(s): 0 below 0.5 - eps, 1 above 0.5 + eps, s in between (boundaries included).
    Autograd gives g's derivative: 1 inside the band, 0 outside. epsilon None: g is the identity."""
    if epsilon is None:
        return s
    low, high = 0.5 - epsilon, 0.5 + epsilon
    zero, one = torch.zeros_like(s), torch.ones_like(s)
    return torch.where(s < low, zero, torch.where(s > high, one, s))


def slice_sizes(in_features, bits):
    """Lengths of the K slices of an in_features vector, in order: equal when K divides it,
    else the first (in_features mod K) slices one longer (4096 = 16 x 86 + 32 x 85 for K = 48)."""
    base, extra = divmod(in_features, bits)
    return [base + (1 if k < extra else 0) for k in range(bits)]



def _can_form_triplets(labels, max_patterns=4096):
    """Whether (n, C) 0/1 labels hold an anchor with a positive (sharing a label) and a negative
    (sharing none), computed over the distinct label rows (u x u, not n x n)."""
    patterns, counts = np.unique(labels, axis=0, return_counts=True)
    if len(patterns) > max_patterns:
        return True                          # thousands of label patterns: surely some triplet
    P = patterns.astype(np.int64)
    share = P @ P.T > 0                      # u x u; the diagonal: the pattern has a label
    positive = (share & ~np.eye(len(P), dtype=bool)).any(axis=1) | (np.diagonal(share) & (counts >= 2))
    negative = (~share).any(axis=1)
    return bool((positive & negative).any())

class DivideEncodeHead(Head):
    """fc7 (N x in_features) -> b = g(sigmoid(ip_s<k>(slice k))), k = 1..K, N x K in [0, 1].

    Caffe layers ip_s1 ... ip_sK (InnerProduct, 1 output each; blob shapes 1 x len_k and 1), as
    the authors' prototxt names them; fillers gaussian(0, filler_std) / 0; multipliers DHN's for a
    new layer (weight 10/1, bias 20/0).
    """

    def __init__(self, bits, in_features=FC7_DIM, epsilon=DEFAULT_EPSILON, filler_std=FILLER_STD,
                 generator=None):
        super().__init__()
        if not 1 <= bits <= in_features:
            raise ValueError(f"divide-and-encode needs 1 <= bits <= in_features ({in_features}), "
                             f"got {bits}")
        self.bits, self.in_features = bits, in_features
        self.epsilon, self.filler_std = epsilon, filler_std
        self.sizes = slice_sizes(in_features, bits)
        for k, size in enumerate(self.sizes, 1):
            setattr(self, f"ip_s{k}", nn.Linear(size, 1))
        self.reset_parameters(generator)

    def extra_repr(self):
        return f"bits={self.bits}, in_features={self.in_features}, epsilon={self.epsilon}"

    def layers(self):
        return [self._modules[f"ip_s{k}"] for k in range(1, self.bits + 1)]

    def encode(self, fc7):
        """sigmoid outputs before the threshold, N x K.

        The K one-output layers are evaluated together (one multiply and one index_add over the
        slices, not K small matmuls): slice k's output is sum(fc7[slice k] * ip_sk.weight) + bias."""
        if fc7.dim() != 2 or fc7.shape[1] != self.in_features:
            raise ValueError(f"expected N x {self.in_features} features, got {tuple(fc7.shape)}")
        layers = self.layers()
        weight = torch.cat([layer.weight for layer in layers], dim=1)   # 1 x in_features, no K reshapes
        bias = torch.cat([layer.bias for layer in layers])
        if getattr(self, "_slice_of", None) is None or self._slice_of.device != fc7.device:
            self._slice_of = torch.repeat_interleave(
                torch.arange(self.bits, device=fc7.device), torch.tensor(self.sizes, device=fc7.device))
        out = torch.zeros(fc7.shape[0], self.bits, dtype=fc7.dtype, device=fc7.device)
        out = out.index_add(1, self._slice_of, fc7 * weight)
        return torch.sigmoid(out + bias)

    def forward(self, fc7):
        return piecewise_threshold(self.encode(fc7), self.epsilon)


def divide_encode_head(method, bits, in_features, generator):
    """The DivideEncodeHead of a method with `epsilon` and `filler_std` (DNNH, CNNH*)."""
    bits = method._bits(bits)
    if bits > in_features:
        raise UserError(f"{method.name}: {bits} bits need at least {bits} features to divide, "
                        f"got {in_features}")
    return DivideEncodeHead(bits, in_features, method.epsilon, method.filler_std, generator)


class TripletRankingLoss(MethodLoss):
    """DNNH's relaxed triplet ranking loss over every triplet of the mini-batch (module docstring).

    Call: loss(b, labels) -> mean over the valid triplets of max(0, ||b_i - b_j||^2 -
    ||b_i - b_k||^2 + margin); b: N x K approximate codes, labels: N x C multi-hot.
    `last`: total, triplets (valid triplets), active (those with a positive hinge).
    """

    _fields = ("total", "triplets", "active")

    def __init__(self, margin=DEFAULT_MARGIN):
        super().__init__()
        self.margin = float(margin)

    def extra_repr(self):
        return f"margin={self.margin}"

    def _int_fields(self):
        return ("triplets", "active")

    def forward(self, b, labels):
        b, _ = self._check(b, labels, what="codes")
        n = b.shape[0]
        s = pairwise_similarity(labels.to(b.device)) > 0
        positive = s & ~torch.eye(n, dtype=torch.bool, device=b.device)   # j != i, shares a label
        negative = ~s                                                     # shares none with i
        # squared distances from the differences (exact for 0/1 codes: integer sums)
        dist = ((b[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        with torch.no_grad():
            uses_pos, uses_neg = _active_uses(dist, positive, negative, self.margin, b.dtype)
            # valid triplets (i, j, k): positives of i times negatives of i, summed over i
            count = (positive.sum(1) * negative.sum(1)).sum()
            n_active = uses_pos.to(torch.int64).sum()
        if int(count) == 0:
            total = zeros_like_loss(b)
        else:
            # sum of the hinges = sum over the active triplets of margin + D_ij - D_ik: the same
            # value and gradient (relu' = [> 0], the paper's indicator), with autograd over N x N
            # instead of N x N x N.
            hinge_sum = (self.margin * n_active.to(b.dtype) + (uses_pos * dist).sum()
                         - (uses_neg * dist).sum())
            total = hinge_sum / count.to(b.dtype)
        self._record(total, count, n_active)
        return total


def _active_uses(dist, positive, negative, margin, dtype):
    """(uses_pos, uses_neg), N x N in `dtype`: for anchor i, the active triplets (i, j, k) (j
    positive, k negative, margin + D_ij - D_ik > 0) with positive j, and those with negative k.

    The hinge test is the same float32 expression at every (i, j, k); the counts over k and over
    j are batched products with the 0/1 masks, exact (integers up to N, far below 2^24) and
    cheaper than masking and summing the N x N x N boolean tensors.
    """
    hinge = (margin + dist)[:, :, None] - dist[:, None, :]                    # (i, j, k)
    # 1.0 where > 0, else 0.0, written over the differences: a float `out` is ~10x faster than
    # a boolean result converted to float
    hinge = torch.gt(hinge, 0, out=hinge)
    uses_pos = torch.bmm(hinge, negative.to(dtype)[:, :, None])[:, :, 0] * positive.to(dtype)
    uses_neg = torch.bmm(positive.to(dtype)[:, None, :], hinge)[:, 0, :] * negative.to(dtype)
    return uses_pos, uses_neg


class DNNH(DeepMethod):
    """DNNH (Lai et al., CVPR 2015) on the CaffeNet trunk: divide-and-encode head + triplet loss.

    Options:
      margin     triplet margin (default 1, the paper's loss).
      epsilon    half-width of the piece-wise threshold's linear band (default 0.1, our choice;
                 None: no threshold, plain sigmoid outputs).
      filler_std gaussian std of the ip_s<k> weights (default 0.01, DHN's new-layer filler; the
                 prototxt after the authors' code uses 0.1 when training from scratch).
    Targets: the training labels unchanged (triplets are formed inside each mini-batch).
    """

    name = "dnnh"
    min_batch_size = 3      # an anchor, a positive and a negative
    settings = {
        "loss": ("mean over in-batch triplets of max(0, ||b-b+||^2 - ||b-b-||^2 + margin)",
                 "paper Sec. 3 (triplet ranking loss, relaxed); HYPJUDY/caffe-dnnh "
                 "src/caffe/layers/triplet_ranking_hinge_loss_layer.cpp divides by the batch"),
        "margin": (DEFAULT_MARGIN, "paper's loss max(0, 1 - (...)); HYPJUDY/caffe-dnnh "
                   "runtime/48bit/train48.prototxt sets margin 2 (not used)"),
        "threshold epsilon": (DEFAULT_EPSILON, "our choice; paper: a small positive "
                              "hyper-parameter"),
        "divide-and-encode": ("K slices of fc7, InnerProduct(1) + Sigmoid each, concat",
                              "paper Sec. 3; HYPJUDY/caffe-dnnh train48.prototxt (Slice, ip_s<k>, "
                              "sigmoid_s<k>, Concat)"),
        "slices of 4096": ("numpy.array_split sizes", "our choice (4096 is not a multiple of 12, "
                           "24, 48)"),
        "network": ("CaffeNet conv1-fc7, pretrained", "this reproduction (paper: NIN-style "
                    "stacked convolutions trained from scratch)"),
        "lr_mult/decay_mult": ("ip_s<k> weight 10/1, bias 20/0; trunk 1/1, 2/0",
                               "DHN's multipliers (the DNNH prototxt has 1/1, 2/0 everywhere, "
                               "training from scratch)"),
        "filler": ("gaussian std 0.01, bias 0", "DHN's fch filler (DNNH prototxt: std 0.1)"),
        "solver": ("DHN's dhn-caffe solver", "our choice; DNNH reimplementation: base_lr 0.001, "
                   "multistep 60000/70000 gamma 0.1, max_iter 100000, momentum 0.9, "
                   "weight_decay 5e-4, 100 triplets a batch (HYPJUDY/caffe-dnnh "
                   "runtime/48bit/train48_solver.prototxt)"),
    }

    def __init__(self, bits, margin=DEFAULT_MARGIN, epsilon=DEFAULT_EPSILON,
                 filler_std=FILLER_STD):
        super().__init__(bits)
        self.margin = self._option("margin", margin, low=0.0)
        self.epsilon = self._option("epsilon", epsilon, low=0.0, high=0.5, allow_none=True)
        self.filler_std = self._option("filler_std", filler_std, low=0.0)

    def make_head(self, bits=None, in_features=FC7_DIM, generator=None):
        return divide_encode_head(self, bits, in_features, generator)

    def make_loss(self):
        return TripletRankingLoss(self.margin)

    def prepare_targets(self, train_labels, bits=None, seed=0):
        labels = check_train_labels(train_labels, self.name)
        if not _can_form_triplets(labels):
            # a triplet needs an image, one that shares a label with it and one that shares none:
            # without any, the ranking loss is 0 at every iteration and nothing is learned
            raise UserError(f"{self.name}: the {labels.shape[0]} training images form no triplet (no "
                            "pair shares a label, or every image shares one with all others)")
        return labels.astype("float32")

    def codes(self, outputs):
        """2b - 1: its sign (>= 0 -> +1) is the code bit b >= 0.5."""
        return 2.0 * outputs - 1.0
