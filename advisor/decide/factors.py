"""The lecture's four decision factors as one value, and the parsing of their CLI spellings.

1. deploy hardware (from the target: cpu / cuda / edge),
2. the main problem (`goal`: latency, size or balanced),
3. the tolerable accuracy drop (`max_drop`, in percentage points; or relative),
4. the retraining budget (`retrain`: none / finetune / full, plus a wall-clock `budget`).

`--max-drop 1%` or `--max-drop 1` means one percentage point of top-1 (absolute: 98.0 → 97.0).
`--max-drop 2%rel` means 2% of the baseline's accuracy (98.0 → 96.04).
Pure Python: no torch import (the rule engine is unit-tested without it).
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Literal

from advisor.errors import FactorError

Goal = Literal["latency", "size", "balanced"]
Retrain = Literal["none", "finetune", "full"]


@dataclass(frozen=True)
class Factors:
    hardware: str = "cpu"  # cpu | cuda | edge
    goal: Goal = "latency"
    max_drop: float = 1.0  # percentage points of the metric
    max_drop_relative: float | None = None  # fraction of the baseline metric, if given that way
    max_latency_ms: float | None = None
    max_size_mb: float | None = None
    retrain: Retrain = "none"
    budget_seconds: float | None = None

    def allowed_drop_points(self, baseline_accuracy: float | None) -> float:
        """The drop allowed, in points, for a baseline accuracy given as a fraction."""
        if self.max_drop_relative is not None and baseline_accuracy is not None:
            return self.max_drop_relative * baseline_accuracy * 100.0
        return self.max_drop

    def to_json(self) -> dict:
        return asdict(self)


def parse_drop(text: str) -> tuple[float, float | None]:
    """'1%' / '1' / '0.5pp' → (points, None); '2%rel' / 'rel:2%' → (0, 0.02)."""
    s = text.strip().lower().replace(" ", "")
    m = re.fullmatch(r"(?:rel:)?([0-9]*\.?[0-9]+)(%|pp|points?)?(rel)?", s)
    if not m:
        raise FactorError(f"cannot read --max-drop {text!r}",
                          "use points like '1%' or '0.5', or relative like '2%rel'")
    value = float(m.group(1))
    relative = s.startswith("rel:") or m.group(3) == "rel"
    if relative:
        if value >= 100:
            raise FactorError(f"--max-drop {text!r}: a relative drop must be below 100%")
        return 0.0, value / 100.0
    if value > 100:
        raise FactorError(f"--max-drop {text!r}: more than 100 points")
    return value, None


_UNITS_MS = {"us": 1e-3, "µs": 1e-3, "ms": 1.0, "s": 1000.0, "": 1.0}
_UNITS_MB = {"b": 1 / 2 ** 20, "kb": 1 / 1024, "k": 1 / 1024, "mb": 1.0, "m": 1.0, "gb": 1024.0,
             "g": 1024.0, "kib": 1 / 1024, "mib": 1.0, "gib": 1024.0, "": 1.0}
_UNITS_S = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "": 1.0}


def _parse_with_units(text: str, units: dict[str, float], what: str, example: str) -> float:
    s = text.strip().lower().replace(" ", "")
    m = re.fullmatch(r"([0-9]*\.?[0-9]+)([a-zµ]*)", s)
    if not m or m.group(2) not in units:
        raise FactorError(f"cannot read {what} {text!r}", f"for example {example}")
    value = float(m.group(1)) * units[m.group(2)]
    if value <= 0:
        raise FactorError(f"{what} must be positive, got {text!r}")
    return value


def parse_latency_ms(text: str) -> float:
    return _parse_with_units(text, _UNITS_MS, "--max-latency", "'10ms' or '0.5s'")


def parse_size_mb(text: str) -> float:
    return _parse_with_units(text, _UNITS_MB, "--max-size", "'5MB' or '800KB'")


def parse_duration_s(text: str) -> float:
    return _parse_with_units(text, _UNITS_S, "--budget", "'10m', '90s' or '1h'")


def make_factors(*, hardware: str, goal: str = "latency", max_drop: str = "1%",
                 max_latency: str | None = None, max_size: str | None = None,
                 retrain: str = "none", budget: str | None = None,
                 has_train_data: bool = False) -> Factors:
    """Validate and combine the CLI spellings into `Factors` (clear errors for inconsistencies)."""
    if goal not in ("latency", "size", "balanced"):
        raise FactorError(f"unknown --goal {goal!r}", "use latency, size or balanced")
    if retrain not in ("none", "finetune", "full"):
        raise FactorError(f"unknown --retrain {retrain!r}", "use none, finetune or full")
    if retrain != "none" and not has_train_data:
        raise FactorError(f"--retrain {retrain} needs labelled training data",
                          "pass --train-data FILE, or use --retrain none")
    points, relative = parse_drop(max_drop)
    return Factors(hardware=hardware, goal=goal, max_drop=points, max_drop_relative=relative,
                   max_latency_ms=parse_latency_ms(max_latency) if max_latency else None,
                   max_size_mb=parse_size_mb(max_size) if max_size else None,
                   retrain=retrain,  # type: ignore[arg-type]
                   budget_seconds=parse_duration_s(budget) if budget else None)


# what every latency measurement of analyze (baseline and trials) takes
MEASURE_KEYS = ("warmup", "repeats", "max_seconds", "processes")


def check_search_limits(*, max_trials: int, measure: dict | None = None) -> None:
    """Refuse search/measurement limits that would try or time nothing (`--max-trials 0`,
    `--repeats 0`, a non-positive `--max-seconds`) before any work; the CLI's options already
    say `min=1`, this guards the library call `analyze(...)`."""
    import math

    if isinstance(max_trials, bool) or not isinstance(max_trials, int) or max_trials < 1:
        raise FactorError(f"max_trials must be an integer of at least 1, got {max_trials!r}",
                          "try at least one candidate (--max-trials 1 or more)")
    unknown = sorted(set(measure or {}) - set(MEASURE_KEYS))
    if unknown:  # a key the trials' latency measurement does not take would fail every trial
        raise FactorError(f"unknown measurement setting(s): {', '.join(unknown)}",
                          f"analyze's measure= takes {', '.join(MEASURE_KEYS)}")
    for key, low in (("repeats", 1), ("warmup", 0), ("processes", 1)):
        v = (measure or {}).get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < low):
            raise FactorError(f"{key} must be an integer of at least {low}, got {v!r}",
                              f"pass --{key} {max(low, 1)} or more")
    v = (measure or {}).get("max_seconds")
    if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or
                          not math.isfinite(v) or v <= 0):
        raise FactorError(f"max_seconds must be a positive number, got {v!r}",
                          "pass --max-seconds 1 or more")
