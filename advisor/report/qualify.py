"""When no plan qualified: the closest candidates, the smallest change of the factors that would
have let each qualify (in CLI words), and what else would open more options.
"""
from __future__ import annotations

import math

from advisor.report.facts import (allowed_drop, candidate_by_id, drop_points, max_drop_text,
                                  verified)


def closest_candidates(report: dict) -> list[dict]:
    by_id = candidate_by_id(report)
    return [by_id[i] for i in report.get("closest") or [] if i in by_id]


def needed_to_qualify(report: dict, cand: dict) -> list[str]:
    """The smallest changes of the factors that would have let `cand` qualify, in CLI words."""
    m = cand.get("measured") or {}
    f = report["factors"]
    needs = []
    drop = drop_points(report, m)
    if drop is None and not verified(report):
        drop = m.get("disagreement")
    if drop is not None and drop > allowed_drop(report) + 1e-9:
        needs.append(f"--max-drop {_ceil(drop, 2):g} (now {max_drop_text(report)})")
    p50 = (m.get("latency_ms") or {}).get("p50")
    if f.get("max_latency_ms") is not None and p50 is not None and p50 > f["max_latency_ms"]:
        needs.append(f"--max-latency {_ceil(p50, 2):g}ms (now {f['max_latency_ms']:g} ms)")
    size = m.get("size_mb")
    if f.get("max_size_mb") is not None and size is not None and size > f["max_size_mb"]:
        needs.append(f"--max-size {_ceil(size, 2):g}MB (now {f['max_size_mb']:g} MB)")
    if not needs and cand.get("violations"):
        needs.append("a different goal: it does not improve on the baseline for --goal "
                     f"{f['goal']}")
    return needs


def widen_hint(report: dict) -> str:
    """What else opens more options, given the factors used."""
    f = report["factors"]
    hints = []
    if f["retrain"] == "none":
        hints.append("a retraining budget (--retrain finetune --train-data ...) lets pruning "
                     "and distillation recover accuracy")
    if not verified(report):
        hints.append("validation data (--data) replaces the agreement proxy with real accuracy")
    hints.append("a larger --budget tries more variants")
    return "; ".join(hints) + "."


def _ceil(x: float, digits: int) -> float:
    scale = 10 ** digits
    return math.ceil(x * scale - 1e-9) / scale
