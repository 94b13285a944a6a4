"""The candidates table of the report: its columns and one row of display strings per
measurement (the baseline first, then every candidate, failed ones with their error).
"""
from __future__ import annotations

from dataclasses import dataclass

from advisor.report.facts import (accuracy_text, agreement_text, chosen_id, drop_points,
                                  steps_text, verified)
from advisor.report.fmt import DASH, mb, ms, points, times

COLUMNS = ("id", "plan", "steps", "status", "runtime", "p50 ms", "own p50 ms", "speed-up",
           "size MB",
           "size ratio", "accuracy", "drop", "agreement", "predicted", "time s (est./took)",
           "meets constraints?", "notes")


@dataclass
class Row:
    """One table row: display strings per column plus what the HTML uses for styling."""
    cells: dict[str, str]
    kind: str  # baseline | chosen | ok | violates | failed | skipped


def baseline_row(report: dict) -> Row:
    b = report["baseline"]
    agree = DASH if verified(report) else "100.0% (itself)"
    cells = {"id": "base", "plan": "original model", "steps": DASH, "status": "ok",
             "runtime": b.get("runtime", DASH), "p50 ms": ms(b["latency_ms"]["p50"]),
             "own p50 ms": ms(b["latency_ms"]["p50"]), "speed-up": times(1.0), "size MB": mb(b.get("size_mb")), "size ratio": times(1.0),
             "accuracy": accuracy_text(report, b), "drop": DASH, "agreement": agree,
             "predicted": DASH, "time s (est./took)": DASH, "meets constraints?": DASH,
             "notes": "baseline"}
    return Row(cells, "baseline")


def candidate_row(report: dict, cand: dict) -> Row:
    """A candidate's measured numbers, or its error when it did not run to the end."""
    m = cand.get("measured") or {}
    notes = [cand["error"]] if cand.get("error") else []
    notes += cand.get("violations") or []
    notes += cand.get("reasons") or []
    ok = cand["status"] == "ok" and bool(m)
    cells = {"id": cand["id"], "plan": cand["name"], "steps": steps_text(cand.get("plan")),
             "status": cand["status"], "runtime": m.get("runtime") or cand.get("runtime") or DASH,
             "p50 ms": ms((m.get("latency_ms") or {}).get("p50")) if ok else DASH,
             "own p50 ms": ms((m.get("latency_ms") or {}).get("own_p50")) if ok else DASH,
             "speed-up": speedup_text(m) if ok else DASH,
             "size MB": mb(m.get("size_mb")) if ok else DASH,
             "size ratio": times(m.get("size_ratio")) if ok else DASH,
             "accuracy": accuracy_text(report, m) if ok else DASH,
             "drop": drop_text(report, m) if ok else DASH,
             "agreement": agreement_text(m) if ok else DASH,
             "predicted": predicted_text(cand.get("predicted")),
             "time s (est./took)": cost_text(cand),
             "meets constraints?": (("yes" if cand.get("meets_constraints") else "no")
                                    if ok else DASH),
             "notes": "; ".join(notes) or DASH}
    return Row(cells, _row_kind(report, cand, ok))


def _row_kind(report: dict, cand: dict, ok: bool) -> str:
    if cand["status"] in ("failed", "skipped"):
        return cand["status"]
    if cand["id"] == chosen_id(report):
        return "chosen"
    return "ok" if ok and cand.get("meets_constraints") else "violates"


def predicted_text(pred: dict | None) -> str:
    """The rule engine's guess: 'speed-up / size ratio' (compare with the measured columns)."""
    pred = pred or {}
    s, r = pred.get("speedup"), pred.get("size_ratio")
    if s is None and r is None:
        return DASH
    return f"{DASH if s is None else f'{s:.1f}×'} / {times(r)}"


def drop_text(report: dict, m: dict) -> str:
    """The measured drop and its one-sided 95% upper bound: '0.56 pts (≤ 1.48)'."""
    upper = m.get("accuracy_drop_upper") if drop_points(report, m) is not None else None
    return points(drop_points(report, m)) + (f" (≤ {upper:.2f})" if upper is not None else "")


def speedup_text(m: dict) -> str:
    """The speed-up and, when paired, its interval from the run's stretches:
    '2.81x (2.6–2.9)'."""
    rng = m.get("speedup_range")
    return times(m.get("speedup")) + (f" ({rng[0]:.2f}–{rng[1]:.2f})" if rng else "")


def cost_text(cand: dict) -> str:
    """The search's cost estimate before the trial and the wall time it took."""
    est = (cand.get("predicted") or {}).get("seconds")
    took = cand.get("seconds") if cand["status"] != "skipped" else None
    if est is None and not took:
        return DASH
    return f"{DASH if est is None else f'{est:.0f}'} / {DASH if not took else f'{took:.0f}'}"


def table_rows(report: dict) -> list[Row]:
    return [baseline_row(report)] + [candidate_row(report, c) for c in report["candidates"]]
