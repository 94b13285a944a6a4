"""A plan is data: an ordered list of `{pass, config}` steps plus what it was chosen for.

plan.json is schema-versioned; loading checks the version and that every step names a pass in
the registry (an allowlist) — a plan file can never make advisor import or call anything else.
Each step also records the version of its pass's config class (`config_version`; absent in older
plans, which reads as 1); whether the registered class can read it is checked against the
registry by `advisor.passes.config.check_plan_configs`.
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
    config_version: int = 1  # the pass's CONFIG_VERSION the config was written for

    def to_json(self) -> dict:
        return {"pass": self.pass_name, "config": self.config,
                "config_version": self.config_version}


@dataclass
class Plan:
    name: str
    steps: list[Step]
    factors: dict[str, Any] = field(default_factory=dict)
    target: str = "cpu"
    seed: int = 0
    data: dict[str, Any] = field(default_factory=dict)  # data specs used (train/calib), for replay
    # the original model's architecture: {"arch": "pkg.module:factory", "arch_kwargs": {...}};
    # `apply --arch` with the same factory uses these kwargs (the plan itself never imports it);
    # {"lifted": version}: the model was lifted from its exported graph (`advisor.lift`)
    model: dict[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    # what `analyze` measured for this plan (artefact sha256, outputs on probe inputs): `apply`
    # checks that its replay reproduced it (see advisor.reproduce)
    expected: dict[str, Any] = field(default_factory=dict)
    # how the training steps ran when that changes the weights: {"workers": N} data-parallel
    # training processes (`advisor.train_workers`); empty = one process
    training: dict[str, Any] = field(default_factory=dict)

    @property
    def train_workers(self) -> int:
        return int(self.training.get("workers", 1))

    @property
    def pass_names(self) -> list[str]:
        return [s.pass_name for s in self.steps]

    def to_json(self) -> dict:
        return {"schema_version": PLAN_SCHEMA_VERSION, "kind": PLAN_KIND, "name": self.name,
                "steps": [s.to_json() for s in self.steps], "factors": self.factors,
                "target": self.target, "seed": self.seed, "data": self.data,
                **({"model": self.model} if self.model else {}), "created": self.created, **({"expected": self.expected} if self.expected else {}),
                **({"training": self.training} if self.training else {})}


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
    if steps_data is not None and not isinstance(steps_data, list):
        raise PlanError(f"{source}: 'steps' must be a list of {{'pass': name, 'config': {{...}}}}, "
                        f"got {_kind(steps_data)}")
    if not steps_data:
        raise PlanError(f"{source}: the plan has no steps")
    steps = []
    for i, s in enumerate(steps_data):
        if not isinstance(s, dict) or not isinstance(s.get("pass"), str):
            raise PlanError(f"{source}: step {i + 1} must be {{'pass': name, 'config': {{...}}}}, "
                            f"got {_kind(s)}")
        if s["pass"] not in known:
            raise PlanError(f"{source}: step {i + 1} names unknown pass {s['pass']!r}",
                            f"known passes: {', '.join(sorted(known))}")
        config = s.get("config", {})
        if not isinstance(config, dict):
            raise PlanError(f"{source}: step {i + 1} ({s['pass']}): 'config' must be an object "
                            f"{{field: value}}, got {_kind(config)}")
        version = 1 if s.get("config_version") is None else s["config_version"]
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise PlanError(f"{source}: step {i + 1} ({s['pass']}): 'config_version' must be an "
                            f"integer >= 1, got {_kind(version)}")
        steps.append(Step(s["pass"], dict(config), version))
    name = _field(data, "name", str, "plan", source)
    factors = _field(data, "factors", dict, {}, source)
    target = _field(data, "target", str, "cpu", source)
    seed = _field(data, "seed", int, 0, source)
    if isinstance(seed, bool) or seed < 0:
        raise PlanError(f"{source}: 'seed' must be a non-negative integer, got {seed!r}")
    plan_data = _field(data, "data", dict, {}, source)
    _check_data(plan_data, source)
    model = _field(data, "model", dict, {}, source)
    _check_model(model, source)
    created = _field(data, "created", str, "", source)
    expected = _field(data, "expected", dict, {}, source)
    training = _field(data, "training", dict, {}, source)
    _check_training(training, source)
    return Plan(name=name, steps=steps, factors=dict(factors), target=target, seed=seed,
                data=dict(plan_data), model=dict(model), created=created,
                expected=dict(expected), training=dict(training))


def _kind(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:40] + '...' if len(text) > 40 else text}"


_KIND_NAMES = {str: "a string", int: "an integer", dict: "an object"}


def _field(data: dict, key: str, kind: type, default: Any, source: str) -> Any:
    """`data[key]` (absent or null → default), which must be of `kind` (bool is not an int)."""
    value = data.get(key)
    if value is None:
        return default
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise PlanError(f"{source}: {key!r} must be {_KIND_NAMES[kind]}, got {_kind(value)}",
                        "plans are written by `advisor analyze --out DIR`; fix the field or "
                        "write the plan again")
    return value


# the `data` section: {"val"|"test"|"train": spec or null, "sha256": {role: hex digest}}
DATA_ROLES = ("val", "test", "train")


def _check_data(d: dict, source: str) -> None:
    for k, v in d.items():
        if k == "preprocess":  # read by advisor.preprocess.Preprocess.from_dict
            if v is not None and not isinstance(v, dict):
                raise PlanError(f"{source}: 'data.preprocess' must be an object, got {_kind(v)}")
        elif k == "sha256":
            if not isinstance(v, dict) or not all(isinstance(h, (str, type(None)))
                                                  for h in v.values()):
                raise PlanError(f"{source}: 'data.sha256' must map data roles to hex digests, "
                                f"got {_kind(v)}")
        elif v is not None and not isinstance(v, str):
            raise PlanError(f"{source}: 'data.{k}' must be a data spec (a path or "
                            f"pkg.module:function) or null, got {_kind(v)}")


def _check_model(m: dict, source: str) -> None:
    if m.get("arch") is not None and not isinstance(m["arch"], str):
        raise PlanError(f"{source}: 'model.arch' must be a pkg.module:factory string, got "
                        f"{_kind(m['arch'])}")
    if m.get("arch_kwargs") is not None and not isinstance(m["arch_kwargs"], dict):
        raise PlanError(f"{source}: 'model.arch_kwargs' must be an object, got "
                        f"{_kind(m['arch_kwargs'])}")
    lifted = m.get("lifted")
    if lifted is not None and (isinstance(lifted, bool) or not isinstance(lifted, int)):
        raise PlanError(f"{source}: 'model.lifted' must be the lifting's version (an integer), "
                        f"got {_kind(lifted)}")


def _check_training(t: dict, source: str) -> None:
    unknown = set(t) - {"workers"}
    if unknown:
        raise PlanError(f"{source}: 'training' has unknown fields {sorted(unknown)}",
                        "it may hold only 'workers'")
    workers = t.get("workers", 1)
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 64:
        raise PlanError(f"{source}: 'training.workers' must be an integer from 1 to 64, got "
                        f"{workers!r}")


def load_plan(path: str | Path, known_passes: Iterable[str]) -> Plan:
    p = Path(path)
    if not p.is_file():
        raise PlanError(f"plan file not found: {p}")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PlanError(f"{p}: not valid JSON ({e.__class__.__name__}: {e})") from None
    return plan_from_json(data, known_passes, source=str(p))
