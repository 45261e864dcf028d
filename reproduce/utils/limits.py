"""The bounds every number a user gives is checked against, before any work starts.

Every integer a user passes is a count, an index or a seed: bounded by Caffe's int32 (the solver
fields max_iter, stepsize, snapshot, display are int32 in caffe.proto; Blob::Reshape bounds blob
dimensions by INT_MAX), so that no value reaches numpy or torch as an overflow or as an impossible
allocation. Caffe's real-valued settings (base_lr, gamma, momentum, weight_decay ...) and blobs
are float32.
"""
import math

INT_MAX = 2 ** 31 - 1
FLOAT32_MAX = 3.4028234663852886e38
# Sizes that allocate per unit: a batch of 227x227 images is 0.6 MB of input per image (the
# authors used 64; 4,096 is 2.5 GB of input alone), and each loader process holds its own copy of
# the decoding state (more than 64 only compete for cores and memory).
MAX_BATCH, MAX_WORKERS = 4096, 64


def is_finite_number(value):
    """A finite int or float that is not a bool (a value read from JSON or given as an option)."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
