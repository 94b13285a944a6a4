"""Which measured plan to choose: the best on the goal among those that meet every constraint,
without choosing on noise.

- **Objective** (lower is better): relative latency, relative size, or their product.
- **Accuracy, with its uncertainty.** A plan is feasible when its measured drop is within the
  allowed drop (`search.check_constraints`). Among feasible plans those whose *upper bound* on
  the drop (`advisor.measure.drop_bound`: paired, one-sided 95%) is within it too come first,
  unless the best of them is more than `SURE_COSTS_AT_MOST` slower than the best on the
  measured value; a pick that is not sure says that the split is too small to be sure (and the
  held-out split then confirms it or sends the choice to the next plan).
- **Speed, with its uncertainty.** Plans whose paired speed-up intervals (a notch from the
  run's stretches: `measure.latency.speedup_interval`) overlap the best one's are ties, broken by accuracy, then size, then the point estimate —
  and the pick says whom it was chosen over and why. Accuracy breaks a tie only where it is
  known apart from noise: a plan surely within the allowed drop beats one that is not; between
  plans that are both sure, a drop two images lower on a few hundred is noise too, so the
  smaller wins (on a noisy host nearly every plan ties, and ranking those by their margin
  chose the least changed, slowest model: 1.72x over 3.26x at the same accuracy). Without a
  bound (no per-sample correctness) the measured drop decides.
- `selection_order` lists every feasible plan in the order they would be chosen, so that a pick
  the held-out split rejects can fall back to the next (`api`, confirm stage).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from advisor.decide.factors import Factors

# a speed-up interval wider than this share of the speed-up says the host was noisy
NOISY_SPREAD = 0.25
# a plan surely within the allowed drop is preferred to a faster one that is within it only on
# the measured value, unless the sure one is more than this share slower (a 1.03x plan is not
# a better answer than a 1.71x one that two images of 359 put at 0.56 points)
SURE_COSTS_AT_MOST = 0.10

if TYPE_CHECKING:
    from advisor.search import TrialRecord


def objective(rec: "TrialRecord", factors: Factors) -> float:
    """Lower is better: relative latency, relative size, or their product (balanced)."""
    m = rec.measured or {}
    rel_lat = 1.0 / m.get("speedup", 1.0)
    rel_size = m.get("size_ratio", 1.0)
    return {"latency": rel_lat + 1e-3 * rel_size, "size": rel_size + 1e-3 * rel_lat,
            "balanced": rel_lat * rel_size}[factors.goal]


def select(records: list["TrialRecord"], factors: Factors, n_closest: int = 3
           ) -> tuple["TrialRecord | None", list["TrialRecord"]]:
    """The best feasible trial, or (None, the closest trials) when none is feasible."""
    order = selection_order(records, factors)
    if order:
        return order[0], []
    ok = [r for r in records if r.status == "ok"]
    closest = sorted(ok, key=lambda r: (len(r.violations), objective(r, factors)))
    return None, closest[:n_closest]


def selection_order(records: list["TrialRecord"], factors: Factors) -> list["TrialRecord"]:
    """Every feasible trial, the one to choose first (see the module docstring)."""
    feasible = [r for r in records if r.status == "ok" and r.meets_constraints]
    if not feasible:
        return []
    sure = [r for r in feasible if _sure(r)]
    fastest = min(feasible, key=lambda r: objective(r, factors))
    # a sure plan is preferred unless that costs more than SURE_COSTS_AT_MOST of the objective
    pool = sure if sure and objective(min(sure, key=lambda r: objective(r, factors)), factors) \
        <= objective(fastest, factors) / (1 - SURE_COSTS_AT_MOST) else feasible
    rest = [r for r in feasible if r not in pool]
    order = sorted(pool, key=lambda r: objective(r, factors))
    best = order[0]
    ties = [r for r in order if factors.goal == "latency" and _overlap(r, best)]
    pick = min(ties, key=lambda r: _tie_key(r, factors)) if len(ties) > 1 else best
    if pick is not best:
        lo, hi = best.outcome.speedup_range
        why = ("this plan is surely within the allowed drop and that one is not"
               if _sure(pick) and not _sure(best) else
               "this plan keeps more accuracy" if _tie_key(pick, factors)[1] <
               _tie_key(best, factors)[1] else "this plan is smaller")
        _say(pick, f"chosen over {best.id} ({best.name}, {best.measured['speedup']:.2f}x): their "
                   f"speed-ups overlap within the paired timing's interval ({lo:.2f}–{hi:.2f}x), "
                   f"and {why}")
    rng = getattr(pick.outcome, "speedup_range", None)
    if rng and pick.measured.get("speedup") and \
            (rng[1] - rng[0]) / pick.measured["speedup"] > NOISY_SPREAD:
        _say(pick, f"the host was noisy while this plan was timed: its speed-up is known only "
                   f"to lie between {rng[0]:.2f}x and {rng[1]:.2f}x; on a quiet host the "
                   "candidates separate better")
    if not _sure(pick) and _bounded(pick):
        m = pick.measured
        _say(pick, f"within the allowed drop on the measured value ({m['accuracy_drop']:.2f} pts) "
                   f"but not surely: its upper bound is {m['accuracy_drop_upper']:.2f} pts on "
                   f"{m['drop_samples']} validation samples; more validation data would tell")
    return [pick] + [r for r in order if r is not pick] + \
        sorted(rest, key=lambda r: objective(r, factors))


def _say(rec: "TrialRecord", text: str) -> None:
    if text not in rec.reasons:
        rec.reasons.append(text)


def _bounded(r: "TrialRecord") -> bool:
    return (r.measured or {}).get("accuracy_drop_upper") is not None


def _sure(r: "TrialRecord") -> bool:
    """The drop's upper bound is within the allowed drop (True where no bound was measured)."""
    m = r.measured or {}
    upper = m.get("accuracy_drop_upper")
    return upper is None or upper <= m.get("allowed_drop", float("inf")) + 1e-9


def _overlap(r: "TrialRecord", best: "TrialRecord") -> bool:
    """Whether r's speed-up range reaches into the best's (both measured paired)."""
    a = getattr(r.outcome, "speedup_range", None)
    b = getattr(best.outcome, "speedup_range", None)
    return r is best or bool(a and b and a[1] >= b[0])


def _tie_key(r: "TrialRecord", factors: Factors) -> tuple:
    """How speed ties are broken (the module docstring): surely within the drop first, then the
    measured drop where no bound says how exact it is, then size, then the point estimate."""
    accuracy = 0.0 if _bounded(r) else _quality_loss(r)
    return (not _sure(r), accuracy, (r.measured or {}).get("size_mb", 0), objective(r, factors))


def _quality_loss(r: "TrialRecord") -> float:
    m = r.measured or {}
    for key in ("accuracy_drop_upper", "accuracy_drop", "disagreement"):
        if m.get(key) is not None:
            return m[key]
    return 0.0
