"""How the report writes numbers: percentages, points, milliseconds, ratios, sizes, counts and
durations, with a dash for what is missing. Markdown and HTML both use these, so they agree.
Accuracies are fractions in [0, 1] shown as percentages with one decimal; drops are points.
"""
from __future__ import annotations

DASH = "—"


def pct(x: float | None) -> str:
    """A fraction as a percentage with one decimal (0.9734 → '97.3%')."""
    return DASH if x is None else f"{x * 100:.1f}%"


def points(x: float | None) -> str:
    """A drop in percentage points; a gain (negative drop) is shown with its sign."""
    return DASH if x is None else f"{x:.2f} pts"


def ms(x: float | None) -> str:
    """Milliseconds with precision that suits the magnitude (0.0421, 1.23, 45.6, 1234)."""
    if x is None:
        return DASH
    for limit, digits in ((0.1, 4), (10, 3), (100, 2), (1000, 1)):
        if abs(x) < limit:
            return f"{x:.{digits}f}"
    return f"{x:.0f}"


def times(x: float | None) -> str:
    """A ratio as '2.31×'."""
    return DASH if x is None else f"{x:.2f}×"


def mb(x: float | None) -> str:
    return DASH if x is None else f"{x:.2f}"


def count(x: float | None) -> str:
    """Large counts in engineering units (FLOPs, parameters): 1.2 G, 345.6 k."""
    if x is None:
        return DASH
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.1f} {unit}"
    return f"{x:.0f}"


def seconds(x: float | None) -> str:
    if x is None:
        return DASH
    return f"{x:.1f} s" if x < 120 else f"{x / 60:.1f} min"


def duration(x: float | None) -> str:
    """Seconds of a stage, without the unit (the column says it): '0.04', '3.21', '45.6', '812'."""
    if x is None:
        return DASH
    for limit, digits in ((10, 2), (100, 1)):
        if abs(x) < limit:
            return f"{x:.{digits}f}"
    return f"{x:.0f}"
