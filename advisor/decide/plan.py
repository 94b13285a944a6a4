"""A plan is data: an ordered list of `{pass, config}` steps plus what it was chosen for.

plan.json is schema-versioned; loading checks the version and that every step names a pass in
the registry (an allowlist) — a plan file can never make advisor import or call anything else.
Pure Python: the registry check is done by the caller passing the known pass names.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from advisor.errors import PlanError

PLAN_SCHEMA_VERSION = 1
PLAN_KIND = "advisor-plan"


@dataclass
class Step:
    pass_name: str
    config: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"pass": self.pass_name, "config": self.config}


@dataclass
class Plan:
    name: str
    steps: list[Step]
    factors: dict[str, Any] = field(default_factory=dict)
    target: str = "cpu"
    seed: int = 0
    data: dict[str, Any] = field(default_factory=dict)  # data specs used (train/calib), for replay
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    @property
    def pass_names(self) -> list[str]:
        return [s.pass_name for s in self.steps]

    def to_json(self) -> dict:
        return {"schema_version": PLAN_SCHEMA_VERSION, "kind": PLAN_KIND, "name": self.name,
                "steps": [s.to_json() for s in self.steps], "factors": self.factors,
                "target": self.target, "seed": self.seed, "data": self.data,
                "created": self.created}


def plan_from_json(data: Any, known_passes: Iterable[str], source: str = "plan") -> Plan:
    """Validate plan JSON data; unknown versions, kinds or passes are a PlanError."""
    known = set(known_passes)
    if not isinstance(data, dict):
        raise PlanError(f"{source}: not a plan (expected a JSON object)")
    if data.get("kind") != PLAN_KIND:
        raise PlanError(f"{source}: not an advisor plan (kind={data.get('kind')!r})",
                        "plans are written by `advisor analyze --out DIR` as DIR/plan.json")
    if data.get("schema_version") != PLAN_SCHEMA_VERSION:
        raise PlanError(f"{source}: plan schema version {data.get('schema_version')!r} is not "
                        f"supported (this advisor reads version {PLAN_SCHEMA_VERSION})")
    steps_data = data.get("steps")
    if not isinstance(steps_data, list) or not steps_data:
        raise PlanError(f"{source}: the plan has no steps")
    steps = []
    for i, s in enumerate(steps_data):
        if not isinstance(s, dict) or not isinstance(s.get("pass"), str) or \
                not isinstance(s.get("config", {}), dict):
            raise PlanError(f"{source}: step {i + 1} must be {{'pass': name, 'config': {{...}}}}")
        if s["pass"] not in known:
            raise PlanError(f"{source}: step {i + 1} names unknown pass {s['pass']!r}",
                            f"known passes: {', '.join(sorted(known))}")
        steps.append(Step(s["pass"], dict(s.get("config", {}))))
    return Plan(name=str(data.get("name", "plan")), steps=steps,
                factors=dict(data.get("factors", {})), target=str(data.get("target", "cpu")),
                seed=int(data.get("seed", 0)), data=dict(data.get("data", {})),
                created=str(data.get("created", "")))


def load_plan(path: str | Path, known_passes: Iterable[str]) -> Plan:
    p = Path(path)
    if not p.is_file():
        raise PlanError(f"plan file not found: {p}")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PlanError(f"{p}: not valid JSON ({e.__class__.__name__}: {e})") from None
    return plan_from_json(data, known_passes, source=str(p))
