"""Rank selection: by retained energy per layer, or a global budget spread over the layers.

Energy: the smallest rank whose singular values keep `energy` of the squared norm of the mode's
unfolding (each Tucker-2 mode separately, as HOSVD truncation does).

Global budget (a FLOPs or latency saving for the whole model): every layer offers options
(keep it dense, or a rank choice with its cost and its lost energy ``1 − ||Ŵ||²/||W||²``, a
scale-free error comparable across layers). The options of each layer are reduced to the lower
convex hull of (cost, error); starting from "everything dense", a greedy step always takes the
move with the smallest error added per unit of cost saved, until the saving is reached. On convex
hulls this greedy is the Lagrangian optimum — the rule of classic bit allocation (*Efficient
bit allocation for an arbitrary set of quantizers*, Shoham & Gersho, 1988) — and it is the
"reconstruction error per FLOP saved" allocation asked for in low-rank CNN compression (e.g.
*Accelerating Very Deep Convolutional Networks for Classification and Detection*, Zhang et al.,
2015; arXiv:1505.06798, who allocate ranks globally under a complexity budget).
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

__all__ = ["Option", "energy_rank", "rank_grid", "lower_hull", "allocate"]


@dataclass(frozen=True)
class Option:
    """One choice for a layer: `ranks` None = keep the dense layer."""

    ranks: tuple[int, ...] | None
    cost: float
    error: float


def energy_rank(singular_values: np.ndarray, energy: float) -> int:
    """Smallest r such that the first r singular values keep `energy` of Σσ²."""
    s2 = np.asarray(singular_values, dtype=np.float64) ** 2
    total = s2.sum()
    if total <= 0:
        return 1
    kept = np.cumsum(s2) / total
    return int(min(len(s2), np.searchsorted(kept, energy - 1e-12) + 1))


def round_rank(r: int, multiple: int, limit: int) -> int:
    """`r` rounded up to a multiple of `multiple` (vector-friendly widths), at most `limit`."""
    if multiple <= 1:
        return int(min(max(r, 1), limit))
    return int(min(limit, max(multiple, -(-r // multiple) * multiple)))


def rank_grid(limit: int, multiple: int = 1, points: int = 48) -> list[int]:
    """Candidate ranks 1..limit: all of them for small layers, else `points` spread evenly
    (always including `limit`), every one a multiple of `multiple` where possible."""
    raw = range(1, limit + 1) if limit <= points else np.linspace(1, limit, points)
    return sorted({round_rank(int(round(r)), multiple, limit) for r in raw} | {limit})


def lower_hull(options: list[Option]) -> list[Option]:
    """The options on the lower convex hull of (cost, error), ordered by decreasing cost.

    Only these are ever worth taking under a global budget: any other option is beaten by a mix
    of two hull options at the same total cost.
    """
    pts = sorted(options, key=lambda o: (o.cost, o.error))
    pareto: list[Option] = []
    for o in pts:  # increasing cost: keep only options that lower the error
        if not pareto or o.error < pareto[-1].error - 1e-15:
            pareto.append(o)
    hull: list[Option] = []
    for o in pareto:
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            # b lies on or above the segment a–o: drop it (cross product of a→b and a→o)
            if (b.cost - a.cost) * (o.error - a.error) - (b.error - a.error) * (o.cost - a.cost) <= 0:
                hull.pop()
            else:
                break
        hull.append(o)
    return hull[::-1]


def allocate(layers: dict[str, list[Option]], saving: float
             ) -> tuple[dict[str, Option], float]:
    """Greedy global allocation: the cheapest error per unit of cost saved first, until the
    total cost has dropped by `saving` (or nothing is left to save).

    Each layer's list must contain its dense option (`ranks` None). Returns the chosen option per
    layer and the saving reached.
    """
    hulls = {name: lower_hull(opts) for name, opts in layers.items()}
    # every layer starts at its hull's costliest option: the dense layer, or an exact
    # factorization that is already cheaper than it
    pos = {name: 0 for name in hulls}
    dense = sum(next(o.cost for o in opts if o.ranks is None) for opts in layers.values())
    heap: list[tuple[float, str]] = []

    def push(name: str) -> None:
        hull, i = hulls[name], pos[name]
        if i + 1 < len(hull):
            d_cost = hull[i].cost - hull[i + 1].cost
            d_err = hull[i + 1].error - hull[i].error
            heapq.heappush(heap, (d_err / max(d_cost, 1e-30), name))

    for name in hulls:
        push(name)

    def current_saving() -> float:
        return dense - sum(hulls[n][pos[n]].cost for n in hulls)

    saved = current_saving()
    while heap and saved < saving:
        _, name = heapq.heappop(heap)
        pos[name] += 1
        saved = current_saving()
        push(name)
    return {name: hulls[name][pos[name]] for name in hulls}, saved
