"""The paper's cross-validation grid, and its extension when the best value lies at an edge.

The paper chose the learning rate in 1e-5 ... 1e-2 and λ in 1e-5 ... 100, in x10 steps
(official_settings.md). A best value at the edge of a grid says the grid was too narrow: `search`
then extends the grid in that direction, x10 (or /10) at a time, while the best stays at the
edge and the next value is within the stated limits, and records every value it added.
"""
import dataclasses
import json
import math
import os

import numpy as np

from .datasets.common import write_split
from .errors import FLOAT32_MAX, UserError, is_finite_number
from .fileio import read_json, write_text_atomic
from .paper import canonical_method

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


def _best(table, keys):
    """The "best" settings of a finished sweep's table, checked: finite numbers, base_lr > 0,
    quant_weight >= 0."""
    doc = read_json(table, "sweep table")
    best = doc.get("best") if isinstance(doc, dict) else None
    if not isinstance(best, dict) or not all(
            is_finite_number(best.get(k)) and 0 <= best[k] <= FLOAT32_MAX and (best[k] > 0 or k == "quant_weight")
            for k in keys):
        raise UserError(f"{table}: no valid 'best' {', '.join(keys)}; remove the "
                        "file to run the sweep again")
    return best


class Sweeps:
    """The per-dataset engine's cross-validation (a mixin of reproduce.reproduction.Reproduction,
    whose runs, lists and settings it uses): DHN's base_lr x λ grid and each deep baseline's
    base_lr, on a validation split of the training list."""

    def validation_split(self):
        """The sweep's split of the training list (the query set is never used): a seeded
        validation_fraction of it as queries, the rest as training images and database."""
        train_list = self.lists["train"]
        order = np.random.default_rng([0, len(train_list)]).permutation(len(train_list))
        n_val = max(1, int(round(self.args.validation_fraction * len(train_list))))
        split = {"train": train_list.subset(np.sort(order[n_val:])), "query": train_list.subset(np.sort(order[:n_val]))}
        split["database"] = split["train"]
        write_split(split, os.path.join(self.work, "sweep", "lists"), overwrite=True)
        return split

    def sweep(self):
        """The paper's cross-validation of base_lr and λ on a validation split of the training
        list: the whole grid, then each axis extended past an edge holding the best (reproduce.sweep)."""
        a = self.args
        table = os.path.join(self.out, "sweep.json")
        if os.path.exists(table):                       # a finished sweep
            return _best(table, ("base_lr", "quant_weight"))
        split = self.validation_split()
        scores = {}

        def score(lr, qw):
            if (lr, qw) not in scores:
                scores[lr, qw] = self._sweep_run(split, lr, qw)
            return scores[lr, qw]

        grid = [(lr, qw) for lr in a.sweep_lrs for qw in a.sweep_quant_weights]
        for lr, qw in grid:
            score(lr, qw)
        best_lr, best_qw = max(grid, key=lambda k: scores[k])        # first of equals, grid order
        best_lr, _ = search(a.sweep_lrs, lambda lr: score(lr, best_qw), LR_LIMITS)
        best_qw, _ = search(a.sweep_quant_weights, lambda qw: score(best_lr, qw), QUANT_WEIGHT_LIMITS)
        rows = [{"base_lr": lr, "quant_weight": qw, "validation_map": m, "extended": (lr, qw) not in grid}
                for (lr, qw), m in scores.items()]
        best = {"base_lr": best_lr, "quant_weight": best_qw, "validation_map": scores[best_lr, best_qw]}
        self._write_sweep(rows, best, len(split["query"]), len(self.lists["train"]))
        write_text_atomic(table, json.dumps({"rows": rows, "best": best}, indent=2) + "\n")
        return best

    def sweep_method(self, name):
        """A deep baseline's base_lr, cross-validated as DHN's (the lr axis; no λ), recorded in
        sweep_<method>.json."""
        table = os.path.join(self.out, f"sweep_{name.replace('*', '-star')}.json")
        if os.path.exists(table):
            return _best(table, ("base_lr",))["base_lr"]
        split = self.validation_split()
        qw = self.settings()[1].quant_weight
        best, rows = search(self.args.sweep_lrs, lambda lr: self._sweep_run(split, lr, qw, name), LR_LIMITS)
        doc = {"rows": [{"base_lr": lr, "validation_map": m, "extended": ext} for lr, m, ext in rows],
               "best": {"base_lr": best}}
        write_text_atomic(table, json.dumps(doc, indent=2) + "\n")
        return best

    def _sweep_run(self, split, lr, qw, method=None):
        """Validation MAP of one sweep setting (a training run on the split's training part)."""
        a = self.args
        solver, loss = self.settings()
        if a.sweep_max_iter:
            solver = dataclasses.replace(solver, max_iter=a.sweep_max_iter)
        sweep_dir = os.path.join(self.work, "sweep")
        tag = f"{method.replace('*', '-star')}_" if method else ""
        run_dir = os.path.join(sweep_dir, f"{tag}lr{lr:g}_lambda{qw:g}")
        cfg = self.run_config(run_dir, os.path.join(sweep_dir, "lists", "train.txt"), a.sweep_bits, 0,
                              dataclasses.replace(solver, base_lr=lr), dataclasses.replace(loss, quant_weight=qw),
                              method=method)
        final = self.run_training(cfg)
        codes = [self.encode(final, s, os.path.join(run_dir, f"codes_{s}.h5"), image_list=split[s])
                 for s in ("query", "database")]
        name = canonical_method(method) if method else "DHN"
        return self.evaluate(name, a.sweep_bits, 0, codes, out_dir=os.path.join(run_dir, "metrics"))["metrics"]["map"]

    def _write_sweep(self, rows, best, n_val, n_train):
        lines = ["| base_lr | λ | validation MAP | |", "|---|---|---|---|"]
        lines += [f"| {r['base_lr']:g} | {r['quant_weight']:g} | {r['validation_map']:.4f} | "
                  f"{'added: the best was at the edge of the grid' if r['extended'] else ''} |" for r in rows]
        write_text_atomic(os.path.join(self.out, "sweep.md"), "\n".join(lines) + f"\n\nbest: base_lr "
                          f"{best['base_lr']:g}, λ {best['quant_weight']:g} (validation split: {n_val} of the "
                          f"{n_train} training images as queries, the rest as database; the query set is "
                          f"never used; an axis whose best lies at an edge is extended x10 within "
                          f"base_lr {LR_LIMITS[0]:g}..{LR_LIMITS[1]:g}, λ {QUANT_WEIGHT_LIMITS[0]:g}.."
                          f"{QUANT_WEIGHT_LIMITS[1]:g})\n")
