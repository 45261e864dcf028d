"""The paper's cross-validation grid, and its extension when the best value lies at an edge.

The paper chose the learning rate in 1e-5 ... 1e-2 and λ in 1e-5 ... 100, in x10 steps
(official_settings.md). A best value at the edge of a grid says the grid was too narrow: `search`
then extends the grid in that direction, x10 (or /10) at a time, while the best stays at the
edge and the next value is within the stated limits, and records every value it added.
The per-dataset commands and the demo run it as jobs (reproduce.pipeline.grid.run_sweep).
"""
import math

SWEEP_LRS = (1e-5, 1e-4, 1e-3, 1e-2)                                 # the paper's base_lr grid
SWEEP_QUANT_WEIGHTS = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)  # the paper's λ grid
STEP = 10.0                      # the paper's grid step
LR_LIMITS = (1e-8, 1.0)          # base_lr beyond these trains nothing or diverges: our choice
QUANT_WEIGHT_LIMITS = (1e-8, 1e4)  # our choice, two steps past the paper's grid at the top


def search(values, score, limits=LR_LIMITS, step=STEP):
    """Evaluate `score(v)` (higher is better) on `values`, then extend the grid past the edge the
    best lies on, one x`step` at a time, while the next value stays within `limits`.

    Returns (best value, [(value, score, extended)] in the order evaluated). Among equal scores the
    first evaluated wins (grid order); a tie for the best, or a grid of one value, is not extended."""
    rows = [(v, score(v), False) for v in values]
    while True:
        best = max(rows, key=lambda r: r[1])       # the first of equals
        grid = sorted(r[0] for r in rows)
        if len(grid) < 2 or sum(r[1] == best[1] for r in rows) > 1:
            return best[0], rows       # one value, or a tie, says nothing about an edge
        if best[0] == grid[-1] and _within(best[0] * step, limits):
            nxt = best[0] * step
        elif best[0] == grid[0] and _within(best[0] / step, limits):
            nxt = best[0] / step
        else:
            return best[0], rows
        rows.append((nxt, score(nxt), True))


def _within(value, limits):
    low, high = limits
    return low * (1 - 1e-9) <= value <= high * (1 + 1e-9) and math.isfinite(value)
