"""The deep hashing baselines of the paper's Table 1 -- CNNH, CNNH*, DNNH -- as heads and losses on
DHN's network (CaffeNet/AlexNet conv1 ... fc7, reproduce.model.nets.DHNNet.features).

Interface: `make_method(name, bits, **options)` gives a `DeepMethod` (reproduce.methods.base);
every method has

  make_head(bits=None, in_features=4096, generator=None) -> Head (nn.Module)
      Replaces DHN's hash_layer + TanH: fc7 (N x 4096) -> the outputs the loss sees (N x T').
      Parameters are named `<Caffe layer name>.weight|bias` (hash_layer, label_layer; ip_s1 ...
      ip_sK for DNNH's divide-and-encode module); `head.lr_mults(prefix="")` gives
      {parameter name: (lr_mult, decay_mult)} (DHN's new-layer multipliers, weight 10/1, bias
      20/0), to pass on, prefixed with where the head is mounted, as `lr_mults` of
      reproduce.training.solver.caffe_param_groups. Fillers: gaussian std 0.01, bias 0 (DHN's fch), drawn
      from `generator`.
  make_loss() -> MethodLoss (nn.Module)
      loss(outputs, targets) -> 0-d tensor, targets N x T float rows of `prepare_targets`
      (DNNH, CNNH* stage "one": the multi-hot labels, triplets / pairs formed inside the batch;
      CNNH, CNNH*: the stage-1 codes, + the labels for CNNH+). After a call, `loss.last` gives
      its parts as floats ("total" is the returned value).
  prepare_targets(train_labels, bits=None, seed=0) -> n x T float32 numpy
      What the training list's rows carry as targets. CNNH / CNNH* run stage 1 here on the
      training set's n x n similarity (bounded: `max_sweeps`, `tol`, `max_seconds`; the result is
      kept as `method.stage1_`); the others return the labels unchanged.
  codes(outputs) -> N x K real tensor; its sign (>= 0 -> +1) is the binary code
      (DNNH, CNNH*: 2b - 1 of the [0, 1] outputs; CNNH: the code outputs).
  solver_settings() -> reproduce.training.solver.SolverSettings to train with (DHN's preset).
  settings: {setting: (value, source)} -- what each value is and where it comes from.

The methods' docstrings (reproduce.methods.cnnh, reproduce.methods.dnnh) give the formulas, their
sources and what this reproduction had to choose.
"""
from ..errors import UserError
from .base import FC7_DIM, DeepMethod, Head, MethodLoss
from .cnnh import CNNH, CNNHHead, CNNHStar, CodeRegressionLoss, PairwiseCodeLoss
from .cnnh_stage1 import Stage1Result, similarity_matrix, stage1, stage1_objective
from .dnnh import DNNH, DivideEncodeHead, TripletRankingLoss, piecewise_threshold, slice_sizes

__all__ = ["DEEP_METHODS", "make_method", "DeepMethod", "Head", "MethodLoss", "FC7_DIM",
           "CNNH", "CNNHStar", "DNNH", "CNNHHead", "DivideEncodeHead", "CodeRegressionLoss",
           "PairwiseCodeLoss", "TripletRankingLoss", "Stage1Result", "stage1", "stage1_objective",
           "similarity_matrix", "piecewise_threshold", "slice_sizes"]

DEEP_METHODS = {"cnnh": CNNH, "cnnh*": CNNHStar, "dnnh": DNNH}


def make_method(name, bits, **options):
    """A deep method by registry name (case-insensitive: "CNNH*" works) with its options (each
    class documents its own); UserError on an unknown name or option, or a bad value."""
    key = str(name).lower()
    if key not in DEEP_METHODS:
        raise UserError(f"unknown deep method {name!r}; choose one of {', '.join(DEEP_METHODS)}")
    cls = DEEP_METHODS[key]
    allowed = cls.option_names()
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise UserError(f"deep method {key}: unknown option(s) {', '.join(unknown)}; it takes "
                        f"{', '.join(allowed)}")
    return cls(bits, **options)
