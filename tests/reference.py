"""Plain, obviously right float64 reference implementations shared by several test files."""
import numpy as np


def plain_map(qB, dB, qL, dL):
    """MAP over the whole ranking: stable argsort of Hamming distances (database order breaks
    ties), relevant = shares >= 1 label, queries without relevant items left out."""
    aps = []
    for i in range(len(qB)):
        ham = np.array([np.sum(qB[i] != b) for b in dB], dtype=np.float64)
        rel = (dL[np.argsort(ham, kind="stable")] @ qL[i] > 0).astype(np.float64)
        if rel.sum() == 0:
            continue
        precision = np.cumsum(rel) / np.arange(1, len(rel) + 1)
        aps.append(np.sum(precision * rel) / rel.sum())
    return float(np.mean(aps))
