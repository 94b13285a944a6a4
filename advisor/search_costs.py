"""What a trial will cost before it runs, and the order that keeps the budget's promise.

A trial is export + (calibration) + latency measurement + evaluation, plus, for a training
chain, its training time — which the search caps (`train_allowance`) and the training loop
sizes to that cap from its measured step time (`advisor.train`). So a trial's cost is
predicted as *overhead + allowance*:

- the overhead of a family (int8, Tucker, pruning, ...) is the median of what its measured trials
  took apart from training; a family not measured yet borrows the median over all measured
  trials, and before any trial ran, the time the baseline's own export, measurement and
  evaluation took (the same work on the same model) times `FIRST_GUESS_FACTOR`;
- the allowance is the share of the time left that the search grants the chain.

Post-training candidates run before every training chain (`schedule`): they are cheap, need
no budget for training, and give the user what int8 alone gives even when the budget is
short. A trial whose estimate does not fit the time left is not started; the record says so.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from advisor.decide.candidate import Candidate

# a trial runs the baseline's work again plus its own pass (calibration, decomposition, ...)
FIRST_GUESS_FACTOR = 1.5
# the search starts no trial expected to end past the budget; the whole run may overrun it by
# this share at most (a trial slower than estimated), which the report states
OVERRUN_ALLOWED = 0.10


def schedule(candidates: list[Candidate]) -> list[Candidate]:
    """Post-training candidates first, then training chains; the rule ranking within each."""
    return [c for c in candidates if not c.trains] + [c for c in candidates if c.trains]


@dataclass
class CostModel:
    first_guess_s: float  # a post-training trial before any was measured
    observed: dict[str, list[float]] = field(default_factory=dict)  # family -> overhead s

    def overhead(self, family: str) -> float:
        own = self.observed.get(family)
        if own:
            return statistics.median(own)
        every = [s for v in self.observed.values() for s in v]
        return statistics.median(every) if every else self.first_guess_s

    def estimate(self, c: Candidate, train_s: float | None) -> float:
        return self.overhead(c.family) + ((train_s or 0.0) if c.trains else 0.0)

    def observe(self, c: Candidate, seconds: float, steps: list[dict]) -> None:
        """A finished trial's time apart from its training steps (those the allowance caps)."""
        from advisor.passes.base import load_builtin_passes

        passes = load_builtin_passes()
        training = sum(float(s.get("seconds") or 0.0) for s in steps
                       if getattr(passes.get(s.get("pass")), "trains", False))
        self.observed.setdefault(c.family, []).append(max(0.0, seconds - training))


def train_allowance(c: Candidate, left: float | None, chains_left: int,
                    overhead_s: float) -> float | None:
    """Seconds a training chain may train: an equal share of the time left to the chains still
    to run, less the chain's own overhead (its export, measurement and evaluation)."""
    if not c.trains or left is None:
        return None
    return max(10.0, 0.9 * left / max(1, chains_left) - overhead_s)
