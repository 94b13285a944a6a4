"""What the rule engine hands on: `Candidate` (a proposed chain of steps with its predicted gains
and risk) and `RuleResult` (one rule's verdict, its reasons and the candidates it proposes).

Plain data: the search tunes and measures candidates, the report lists the results.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from advisor.decide.plan import Step


@dataclass
class Candidate:
    name: str
    steps: list[Step]
    family: str
    rule: str
    predicted_speedup: float | None = None
    predicted_size_ratio: float | None = None
    accuracy_risk: float = 0.0  # rough expected drop in points before recovery
    note: str = ""
    knob: dict[str, Any] | None = None  # {"step": i, "field": name, "values": [...]} tuned by measurement
    score: float = 0.0
    trains: bool = False  # a step trains (set by evaluate_rules from the pass flags)


@dataclass
class RuleResult:
    rule: str
    verdict: str  # recommend | consider | avoid | info
    text: str
    cites: str | None = None
    candidates: list[Candidate] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"rule": self.rule, "verdict": self.verdict, "text": self.text, "cites": self.cites,
                "candidates": [c.name for c in self.candidates]}
