"""The cross-validation grid's extension past an edge (reproduce.pipeline.sweep)."""
from reproduce.pipeline.sweep import search


def test_best_inside_the_grid_is_not_extended():
    best, rows = search([1e-3, 1e-2, 1e-1], lambda v: -abs(v - 1e-2))
    assert best == 1e-2 and [r[2] for r in rows] == [False] * 3


def test_best_at_the_top_edge_extends_up_to_the_peak_or_the_limit():
    calls = []

    def score(v):
        calls.append(v)
        return -abs(v - 3.0)                  # peak between 1 and 10
    best, rows = search([1e-3, 1e-2, 1e-1], score, limits=(1e-5, 100.0))
    assert best == 1.0 and [round(r[0], 9) for r in rows if r[2]] == [1.0, 10.0]
    best, rows = search([1e-3, 1e-2, 1e-1], lambda v: v, limits=(1e-5, 10.0))   # rising forever
    assert round(best, 9) == 10.0 and len(rows) == 5                           # stops at the limit


def test_best_at_the_bottom_edge_extends_down_and_ties_do_not_extend():
    best, rows = search([1e-3, 1e-2], lambda v: -v, limits=(1e-5, 1.0))
    assert round(best, 12) == 1e-5 and sum(r[2] for r in rows) == 2
    best, rows = search([1e-3, 1e-2], lambda v: 0.5)                            # all equal: first wins
    assert best == 1e-3 and len(rows) == 2
