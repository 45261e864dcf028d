"""Shallow hashing baselines of the paper's Table 1, run on the same CNN features (fc7, N x 4096).

Every method is a small class: `fit(X, labels=None) -> self` on training features X (N x D) and,
for the supervised ones, labels (N x C multi-hot 0/1, or N integer class ids); `encode(X)` gives
int8 +-1 codes (N x K); `project(X)` the real-valued projections the codes are the signs of.
The randomness of a method (projections, initial rotation, anchors) comes only from
`numpy.random.default_rng(seed)` created in `fit`, so one seed gives identical codes.

    lsh      LSH, sign random projections (Charikar 2002)                       -- .unsupervised
    sh       spectral hashing (Weiss, Torralba, Fergus, NIPS 2008)              -- .unsupervised
    itq      iterative quantization (Gong, Lazebnik, CVPR 2011)                 -- .unsupervised
    itq-cca  CCA + ITQ, supervised (Gong et al., TPAMI 2013)                 -- .supervised
    ksh      kernel-based supervised hashing (Liu et al., CVPR 2012)            -- .supervised
    mlh      minimal loss hashing, supervised (Norouzi & Fleet, ICML 2011)      -- .mlh
    bre      binary reconstructive embeddings (Kulis & Darrell, NIPS 2009)      -- .bre

`make_baseline(name, bits, seed=0, **options)` builds one by name from `BASELINES`. Each class's
docstring gives the published default settings (paper and the authors' MATLAB code) and where this
implementation deviates. Input problems (NaN, too few samples for the bits asked for, constant
features, missing labels) raise `UserError` naming the method and what is wrong; a caller that
read the features from a file prefixes its name.
"""
import inspect

from ..errors import UserError
from .bre import BRE
from .common import Baseline, check_features, check_labels, fix_signs, itq_rotation, pca_components
from .mlh import MLH
from .supervised import ITQCCA, KSH
from .unsupervised import ITQ, LSH, SpectralHashing

__all__ = ["BASELINES", "make_baseline", "Baseline", "LSH", "SpectralHashing", "ITQ", "ITQCCA", "KSH", "MLH", "BRE",
           "check_features", "check_labels", "fix_signs", "itq_rotation", "pca_components"]


# ----------------------------------------------------------------------------- registry
BASELINES = {"lsh": LSH, "sh": SpectralHashing, "itq": ITQ, "itq-cca": ITQCCA, "ksh": KSH, "mlh": MLH,
             "bre": BRE}


def make_baseline(name, bits, seed=0, **options):
    """A baseline by registry name with its options (each class documents its own); UserError on
    an unknown name or option."""
    if name not in BASELINES:
        raise UserError(f"unknown baseline {name!r}; choose one of {', '.join(BASELINES)}")
    cls = BASELINES[name]
    allowed = [p for p in inspect.signature(cls.__init__).parameters
               if p not in ("self", "bits", "seed")]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise UserError(f"baseline {name}: unknown option(s) {', '.join(unknown)}; it takes "
                        f"{', '.join(allowed) if allowed else 'no options'}")
    return cls(bits, seed=seed, **options)
