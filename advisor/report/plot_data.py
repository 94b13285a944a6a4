"""The latency/quality plot of the report as data: the measured points, the Pareto front and the
quality floor the constraints allow (drawn by `report.svg`, listed by `report.md`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from advisor.report.facts import allowed_drop, baseline_quality, chosen_id, quality
from advisor.report.fmt import ms, pct, times


@dataclass
class Point:
    """One measured configuration in the latency/quality plane (y in percent)."""
    id: str
    label: str
    x: float
    y: float
    role: str  # baseline | chosen | ok | violates
    tooltip: str


def plot_points(report: dict) -> list[Point]:
    """The baseline and every candidate that was measured (failed ones have no numbers)."""
    out = []
    b = report["baseline"]
    base_q = baseline_quality(report)
    if base_q is not None:
        out.append(Point("base", "baseline", b["latency_ms"]["p50"], base_q * 100, "baseline",
                         f"baseline: {ms(b['latency_ms']['p50'])} ms, {pct(base_q)}"))
    for c in report["candidates"]:
        m = c.get("measured") or {}
        q = quality(report, m)
        p50 = (m.get("latency_ms") or {}).get("p50")
        if c["status"] != "ok" or q is None or p50 is None:
            continue
        role = "chosen" if c["id"] == chosen_id(report) else \
            ("ok" if c.get("meets_constraints") else "violates")
        tip = f"{c['id']} {c['name']}: {ms(p50)} ms ({times(m.get('speedup'))}), {pct(q)}"
        out.append(Point(c["id"], c["id"], p50, q * 100, role, tip))
    return out


def pareto_front(pts: Iterable[Point]) -> list[Point]:
    """Non-dominated points (lower latency and higher quality are better), by latency.

    A point is dominated when another is at least as fast and at least as good and strictly
    better in one of the two. Along the returned list both latency and quality increase.
    """
    front: list[Point] = []
    for p in sorted(pts, key=lambda p: (p.x, -p.y)):
        if not front or p.y > front[-1].y:
            front.append(p)
    return front


def quality_floor(report: dict) -> float | None:
    """The lowest acceptable plotted quality (percent): baseline minus the allowed drop."""
    base = baseline_quality(report)
    return None if base is None else base * 100 - allowed_drop(report)
