"""Facts read off a report dict that every section needs: verified or not, the target's label,
the allowed drop, the plotted quality (accuracy, or top-1 agreement when unverified), drops,
steps as text, and the chosen candidate.

Without evaluation data accuracy is "unverified" and top-1 agreement with the original model is
shown (and plotted) instead.
"""
from __future__ import annotations

from typing import Any

from advisor.report.fmt import DASH, pct


def verified(report: dict) -> bool:
    return bool(report["data"]["verified"])


def target_label(report: dict) -> str:
    """Target name, marked '(emulated)' when latency comes from this host standing in for it,
    or with the device it was measured on."""
    t = report["target"]
    on = t.get("measured_on")
    if on:
        return f"{t['name']} (measured on the device {on['label']} {on['how']})"
    return f"{t['name']} (emulated)" if t.get("emulated") else t["name"]


def allowed_drop(report: dict) -> float:
    """The accuracy drop allowed, in points, as the search computed it (a relative limit is
    already turned into points there: `Factors.allowed_drop_points`)."""
    return float(report["factors"]["allowed_drop_points"])


def max_drop_text(report: dict) -> str:
    f = report["factors"]
    if f.get("max_drop_relative") is not None:
        return f"{f['max_drop_relative'] * 100:g}% of the baseline ({allowed_drop(report):.2f} pts)"
    return f"{f['max_drop']:g} pts"


def quality(report: dict, measured: dict | None) -> float | None:
    """The plotted quality of a measurement: accuracy when verified, else top-1 agreement."""
    if not measured:
        return None
    if verified(report):
        return measured.get("accuracy")
    agree = measured.get("agreement") or {}
    return agree.get("top1_agreement")


def baseline_quality(report: dict) -> float | None:
    """Baseline accuracy, or 1.0 when unverified (the original agrees with itself)."""
    return report["baseline"].get("accuracy") if verified(report) else 1.0


def quality_axis(report: dict) -> str:
    if verified(report):
        return "accuracy on the validation split (%)"
    return "top-1 agreement with the original (%) — accuracy unverified"


def accuracy_text(report: dict, measured: dict | None) -> str:
    if not verified(report):
        return "unverified"
    return pct((measured or {}).get("accuracy"))


def drop_points(report: dict, measured: dict | None) -> float | None:
    """Validation accuracy drop versus the baseline, in points (None when unverified)."""
    if not verified(report) or not measured:
        return None
    return measured.get("accuracy_drop")  # derived once, by advisor.outcome


def agreement_text(measured: dict | None) -> str:
    """Top-1 agreement with the original model (the max logit difference is in report.json)."""
    agree = (measured or {}).get("agreement")
    return pct(agree["top1_agreement"]) if agree else DASH


def steps_text(plan: dict | None, with_config: bool = False) -> str:
    """A plan's steps as 'pass → pass', optionally with their scalar settings."""
    steps = (plan or {}).get("steps") or []
    if not steps:
        return DASH
    return " → ".join(step_text(s) if with_config else s["pass"] for s in steps)


def step_text(step: dict) -> str:
    """'pass(key=value, ...)' with the scalar settings; nested ones are summarised as '…'."""
    cfg = step.get("config") or {}
    parts = [f"{k}={_short(v)}" for k, v in cfg.items() if v is not None]
    return f"{step['pass']}({', '.join(parts)})" if parts else step["pass"]


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (str, int, bool)):
        return str(v)
    if isinstance(v, (list, tuple)) and len(v) <= 4 and all(
            isinstance(x, (int, float, str)) for x in v):
        return "[" + ", ".join(_short(x) for x in v) + "]"
    return "…"


def candidate_by_id(report: dict) -> dict[str, dict]:
    return {c["id"]: c for c in report["candidates"]}


def chosen_id(report: dict) -> str | None:
    chosen = report.get("chosen")
    return chosen.get("id") if chosen else None


def test_drop(report: dict) -> float | None:
    """The chosen plan's accuracy drop on the held-out split, in points."""
    return (report.get("chosen") or {}).get("accuracy_drop_test")  # computed once, in analyze
