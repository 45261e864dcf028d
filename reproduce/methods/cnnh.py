"""CNNH (Xia, Pan, Lai, Liu & Yan, "Supervised Hashing for Image Retrieval via Image Representation
Learning", AAAI 2014) and its variant CNNH*, on DHN's CaffeNet trunk.

Stage 1 (`stage1`, reproduce.methods.cnnh_stage1): approximate codes H for the training images
from their pairwise similarity, by the paper's coordinate descent.

Stage 2 (`CNNH`): the network predicts the codes: head = the authors' fch position, an
InnerProduct `hash_layer` on fc7 (N x 4096 -> K, linear), loss = squared error to the codes,
Caffe's EuclideanLoss normalisation 1/(2N) sum ||y - h||^2. The paper's variant with image labels
(CNNH+: label nodes beside the code nodes in the output layer) is `use_labels=True`: a second
InnerProduct `label_layer` (C outputs) with a softmax (or sigmoid) cross-entropy, added with
weight `label_weight`.

CNNH* (`CNNHStar`), see its docstring: CNNH's two stages with DNNH's coding module.
"""

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from ..training.losses import pairwise_similarity
from .base import FC7_DIM, FILLER_STD, DeepMethod, Head, MethodLoss, check_train_labels
from .cnnh_stage1 import DEFAULT_MAX_SWEEPS, DEFAULT_TOL, stage1
from .dnnh import DEFAULT_EPSILON, divide_encode_head

LABEL_LOSSES = ("softmax", "sigmoid")
ACTIVATIONS = ("linear", "tanh")


# ----------------------------------------------------------------------------- stage 2
# n^2 bytes of stage 1's similarity: 2 GiB is n = 46,340 training images (the paper's lists have
# 5,000 to 13,000; our choice of bound, so that a long list is refused before it exhausts memory)
MAX_STAGE1_BYTES = 2 << 30

class CNNHHead(Head):
    """fc7 -> [hash_layer(fc7) (K), label_layer(fc7) (C, CNNH+ only)]: InnerProduct layers, the
    code outputs linear (or tanh), the label outputs raw scores. Filler gaussian(0, filler_std) / 0;
    multipliers DHN's for a new layer (10/1, 20/0)."""

    def __init__(self, bits, in_features=FC7_DIM, num_labels=0, activation="linear",
                 filler_std=FILLER_STD, generator=None):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        self.bits, self.in_features, self.num_labels = bits, in_features, num_labels
        self.activation, self.filler_std = activation, filler_std
        self.hash_layer = nn.Linear(in_features, bits)
        self.label_layer = nn.Linear(in_features, num_labels) if num_labels else None
        self.reset_parameters(generator)

    def extra_repr(self):
        return f"activation={self.activation!r}"

    def forward(self, fc7):
        if fc7.dim() != 2 or fc7.shape[1] != self.in_features:
            raise ValueError(f"expected N x {self.in_features} features, got {tuple(fc7.shape)}")
        out = self.hash_layer(fc7)
        if self.activation == "tanh":
            out = torch.tanh(out)
        if self.label_layer is not None:
            out = torch.cat([out, self.label_layer(fc7)], dim=1)
        return out


class CodeRegressionLoss(MethodLoss):
    """CNNH's stage-2 loss: 1/(2N) sum_n ||h_n - y_n||^2 on the first K columns (Caffe's
    EuclideanLoss), plus label_weight x the label loss on the rest (CNNH+):

      softmax: -(1/N) sum_n sum_c t_nc log softmax(scores_n)_c, t_n = labels_n / |labels_n|
               (single-label rows: the usual softmax loss; unlabelled rows add 0);
      sigmoid: (1/N) sum_n sum_c BCE(sigmoid(scores_nc), labels_nc).

    unit_targets=True maps the code targets from {-1, 1} (or [-1, 1]) to [0, 1] by (y + 1) / 2
    first (CNNH*: sigmoid outputs). `last`: total, code_loss, label_loss.
    """

    _fields = ("total", "code_loss", "label_loss")

    def __init__(self, bits, num_labels=0, label_weight=1.0, label_loss="softmax",
                 unit_targets=False):
        super().__init__()
        if label_loss not in LABEL_LOSSES:
            raise ValueError(f"label_loss must be one of {LABEL_LOSSES}, got {label_loss!r}")
        self.bits, self.num_labels = int(bits), int(num_labels)
        self.label_weight, self.label_loss = float(label_weight), label_loss
        self.unit_targets = bool(unit_targets)

    def extra_repr(self):
        return (f"bits={self.bits}, num_labels={self.num_labels}, "
                f"label_weight={self.label_weight}, label_loss={self.label_loss!r}, "
                f"unit_targets={self.unit_targets}")

    def forward(self, outputs, targets):
        width = self.bits + self.num_labels
        outputs, targets = self._check(outputs, targets, width)
        if targets.shape[1] != width:
            what = "codes + labels" if self.num_labels else "codes"
            raise ValueError(f"targets must have {width} columns ({what}), "
                             f"got {targets.shape[1]}")
        n = outputs.shape[0]
        h, y = outputs[:, :self.bits], targets[:, :self.bits]
        if self.unit_targets:
            y = (y + 1.0) / 2.0
        code = ((h - y) ** 2).sum() / (2.0 * n)
        label = torch.zeros((), dtype=outputs.dtype, device=outputs.device)
        if self.num_labels:
            scores, t = outputs[:, self.bits:], targets[:, self.bits:]
            if self.label_loss == "softmax":
                count = t.sum(1, keepdim=True)
                t = torch.where(count > 0, t / count.clamp(min=1), torch.zeros_like(t))
                label = -(t * F.log_softmax(scores, dim=1)).sum() / n
            else:
                label = F.binary_cross_entropy_with_logits(scores, t, reduction="sum") / n
        total = code + self.label_weight * label
        self._record(total, code, label)
        return total


class PairwiseCodeLoss(MethodLoss):
    """CNNH's objective on the pairs of a mini-batch (CNNH* with stage="one"):
    (1/N^2) sum_ij (S_ij - z_i.z_j / K)^2 with z = 2b - 1 (b: the N x K sigmoid codes), S_ij = +1
    if i and j share a label else -1, S_ii = +1 (stage 1's S). `last`: total."""

    def forward(self, b, labels):
        b, _ = self._check(b, labels, what="codes")
        n, k = b.shape
        s = pairwise_similarity(labels.to(b.device)).to(b.dtype) * 2.0 - 1.0
        s = s.fill_diagonal_(1.0)
        z = 2.0 * b - 1.0
        total = ((s - (z @ z.T) / k) ** 2).sum() / (n * n)
        self._record(total)
        return total


class CNNH(DeepMethod):
    """CNNH (Xia et al., AAAI 2014) on the CaffeNet trunk (module docstring).

    Options:
      use_labels, num_labels  the paper's CNNH+ variant: also predict the C labels (default off:
                 DHN's Table 1 lists CNNH); num_labels = C is then required.
      label_weight, label_loss  weight (1) and form ("softmax" | "sigmoid") of the label term.
      activation  of the code outputs: "linear" (default) or "tanh".
      max_sweeps, tol, max_seconds  stage-1 budget (10 sweeps, 1e-4, none).
      binary_targets  train on sign(H) (default) or on the relaxed H in [-1, 1].
      filler_std  gaussian std of the new layers' weights (0.01, DHN's).
    Targets (prepare_targets): the stage-1 codes, n x K (+ the labels, n x C, with use_labels).
    """

    name = "cnnh"
    settings = {
        "stage 1": ("min ||S - HH^T/q||_F^2 over H in [-1,1]^(n x q), coordinate descent with "
                    "clipped Newton steps; S +1 similar / -1 dissimilar",
                    "paper Sec. 'Stage 1' (formulas as in swuxyj/DeepHash-pytorch CNNH.py)"),
        "stage-1 initialisation": ("uniform [-1, 1]", "our choice (as swuxyj's port)"),
        "stage-1 sweeps / tolerance": ((DEFAULT_MAX_SWEEPS, DEFAULT_TOL), "our choice (paper: T "
                                       "iterations and a tolerance, values not recovered)"),
        "stage-2 targets": ("sign(H)", "our choice (binary_targets=False: relaxed H)"),
        "stage-2 loss": ("1/(2N) sum ||h - y||^2 (Caffe EuclideanLoss)", "our choice: the paper "
                         "trains the output nodes to the codes; its loss form was not recovered"),
        "CNNH+ label term": ("softmax cross-entropy, weight 1, off by default", "paper Fig. 1 "
                             "(label nodes in the output layer); weight our choice"),
        "network": ("CaffeNet conv1-fc7 + hash_layer", "this reproduction (paper: 3 conv-pool "
                    "layers, 1 fully-connected, output layer, trained from scratch)"),
        "lr_mult/decay_mult": ("hash_layer/label_layer weight 10/1, bias 20/0", "DHN's"),
        "solver": ("DHN's dhn-caffe solver", "our choice (none published for this network)"),
    }

    def __init__(self, bits, use_labels=False, num_labels=None, label_weight=1.0,
                 label_loss="softmax", activation="linear", max_sweeps=DEFAULT_MAX_SWEEPS,
                 tol=DEFAULT_TOL, max_seconds=None, binary_targets=True, filler_std=FILLER_STD):
        super().__init__(bits)
        self.use_labels = bool(use_labels)
        if self.use_labels:
            if num_labels is None:
                raise UserError(f"{self.name}: use_labels needs num_labels (the C of the labels)")
            self.num_labels = self._option("num_labels", num_labels, low=1, integer=True)
        else:
            self.num_labels = 0
        self.label_weight = self._option("label_weight", label_weight, low=0.0)
        self.label_loss = self._choice("label_loss", label_loss, LABEL_LOSSES)
        self.activation = self._choice("activation", activation, ACTIVATIONS)
        self.max_sweeps = self._option("max_sweeps", max_sweeps, low=0, integer=True)
        self.tol = self._option("tol", tol, low=0.0)
        self.max_seconds = self._option("max_seconds", max_seconds, low=0.0, allow_none=True)
        self.binary_targets = bool(binary_targets)
        self.filler_std = self._option("filler_std", filler_std, low=0.0)
        self.stage1_ = None

    def make_head(self, bits=None, in_features=FC7_DIM, generator=None):
        return CNNHHead(self._bits(bits), in_features, self.num_labels, self.activation,
                        self.filler_std, generator)

    def make_loss(self):
        return CodeRegressionLoss(self.bits, self.num_labels, self.label_weight, self.label_loss)

    def run_stage1(self, train_labels, bits=None, seed=0):
        labels = check_train_labels(train_labels, self.name)
        self.stage1_ = stage1(labels, self._bits(bits), seed, self.max_sweeps, self.tol,
                              self.max_seconds)
        return self.stage1_

    def prepare_targets(self, train_labels, bits=None, seed=0):
        """Stage 1 on the training set's S; the rows' targets: codes (+ labels with use_labels).
        The Stage1Result is kept as `self.stage1_`."""
        labels = check_train_labels(train_labels, self.name)
        n = labels.shape[0]
        if n * n > MAX_STAGE1_BYTES:   # stage 1 holds S as an n x n int8 matrix (cnnh_stage1)
            raise UserError(f"{self.name}: stage 1 of {n} training images holds an {n} x {n} similarity "
                            f"matrix ({n * n / 2**30:.1f} GiB), above the {MAX_STAGE1_BYTES >> 30} GiB this "
                            "package allows; train on a subset (the paper's lists have 5,000-13,000)")
        if self.use_labels and labels.shape[1] != self.num_labels:
            raise UserError(f"{self.name}: num_labels is {self.num_labels} but the labels have "
                            f"{labels.shape[1]} columns")
        result = self.run_stage1(labels, bits, seed)
        codes = result.codes if self.binary_targets else result.H.astype(np.float32)
        if self.use_labels:
            codes = np.concatenate([codes, labels.astype(np.float32)], axis=1)
        return np.ascontiguousarray(codes, dtype=np.float32)

    def codes(self, outputs):
        """The code outputs (first K columns); their sign is the code."""
        return outputs[:, :self.bits]


class CNNHStar(CNNH):
    """CNNH* (introduced by the DNNH paper, Lai et al. CVPR 2015, as a variant of CNNH compared
    with DNNH on the same architecture; DHN's Table 1 repeats it). The defining sentence could not
    be retrieved from any stored copy of either paper, so the construction here is our reading,
    with the other reading as an option:

      stage="two" (default): CNNH's two stages with DNNH's coding module in stage 2 -- the stage-1
          codes (as CNNH) are regressed, mapped to {0, 1}, by the divide-and-encode head's
          thresholded sigmoid outputs (1/(2N) sum ||b - (y+1)/2||^2). Targets: stage-1 codes.
      stage="one": one-stage, CNNH's objective on the pairs of each mini-batch,
          (1/N^2) sum_ij (S_ij - z_i.z_j / K)^2 with z = 2b - 1, on the same head. Targets: labels.

    Options as CNNH's stage-1 ones, plus epsilon (DNNH's threshold band, 0.1) and filler_std.
    Codes: 2b - 1, as DNNH.
    """

    name = "cnnh*"
    settings = {
        "definition": ("CNNH with DNNH's architecture (stage 'two' default, 'one' option)",
                       "not retrieved: neither paper's text is in the stored corpora; our reading"),
        "head": ("divide-and-encode (ip_s<k> + sigmoid + piece-wise threshold)", "DNNH's module"),
        "stage-2 loss": ("1/(2N) sum ||b - (y+1)/2||^2", "CNNH's regression (our choice of form)"),
        "lr_mult/decay_mult": ("ip_s<k> weight 10/1, bias 20/0", "DHN's"),
        "solver": ("DHN's dhn-caffe solver", "our choice"),
    }

    def __init__(self, bits, stage="two", epsilon=DEFAULT_EPSILON, max_sweeps=DEFAULT_MAX_SWEEPS,
                 tol=DEFAULT_TOL, max_seconds=None, binary_targets=True, filler_std=FILLER_STD):
        super().__init__(bits, max_sweeps=max_sweeps, tol=tol, max_seconds=max_seconds,
                         binary_targets=binary_targets, filler_std=filler_std)
        self.stage = self._choice("stage", stage, ("two", "one"))
        self.epsilon = self._option("epsilon", epsilon, low=0.0, high=0.5, allow_none=True)

    def make_head(self, bits=None, in_features=FC7_DIM, generator=None):
        return divide_encode_head(self, bits, in_features, generator)

    def make_loss(self):
        if self.stage == "one":
            return PairwiseCodeLoss()
        return CodeRegressionLoss(self.bits, unit_targets=True)

    def prepare_targets(self, train_labels, bits=None, seed=0):
        if self.stage == "one":
            return check_train_labels(train_labels, self.name).astype(np.float32)
        return super().prepare_targets(train_labels, bits, seed)

    def codes(self, outputs):
        return 2.0 * outputs - 1.0
