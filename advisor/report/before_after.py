"""The baseline beside the chosen plan: the hot-spot comparison (per layer when the names match,
per kind always) and the figures of the recommendation box.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from advisor.report.facts import allowed_drop, drop_points, test_drop, verified
from advisor.report.fmt import DASH, mb, ms, pct, points, times


@dataclass
class HotspotView:
    """Hot spots for the report: paired by layer name when the names match before/after, else
    the two top lists side by side (the deployed artefact often names layers differently:
    ONNX Runtime fuses nodes and renames them)."""
    paired: list[tuple[str, float | None, float | None]]  # (layer, before share, after share)
    before: list[dict]
    after: list[dict]
    kinds: list[tuple[str, float, float]]  # (kind, before share, after share)

    @property
    def matched(self) -> bool:
        return bool(self.paired)


def hotspot_view(report: dict, top: int = 8) -> HotspotView:
    before = _top(report["baseline"].get("hotspots") or [], top)
    chosen = report.get("chosen") or {}
    after_all = chosen.get("hotspots") or []
    after = _top(after_all, top)
    paired: list[tuple[str, float | None, float | None]] = []
    if before and after:
        after_by_name = {h["name"]: h["share"] for h in after_all}
        hits = sum(h["name"] in after_by_name for h in before)
        if hits * 2 >= len(before):
            paired = [(h["name"], h["share"], after_by_name.get(h["name"])) for h in before]
    kinds = _kind_pairs(report["baseline"].get("hotspots") or [], after_all) if after_all else []
    return HotspotView(paired, before, after, kinds)


def _top(rows: Sequence[dict], n: int) -> list[dict]:
    return sorted(rows, key=lambda h: h.get("share", 0.0), reverse=True)[:n]


def _kind_pairs(before: Sequence[dict], after: Sequence[dict]) -> list[tuple[str, float, float]]:
    def shares(rows):
        out: dict[str, float] = {}
        for h in rows:
            out[h.get("kind", "other")] = out.get(h.get("kind", "other"), 0.0) + h["share"]
        return out
    b, a = shares(before), shares(after)
    kinds = sorted(set(b) | set(a), key=lambda k: -b.get(k, 0.0))
    return [(k, b.get(k, 0.0), a.get(k, 0.0)) for k in kinds]


def chosen_summary(report: dict) -> list[tuple[str, str, str]]:
    """(label, value, detail) figures of the chosen plan for the recommendation box."""
    c, b = report["chosen"], report["baseline"]
    m = c["measured"]
    items = [("speed-up", times(m.get("speedup")),
              f"p50 {ms(m.get('baseline_latency_ms', b['latency_ms']['p50']))} → "
              f"{ms(m['latency_ms']['p50'])} ms ({m.get('runtime', DASH)})"),
             ("size ratio", times(m.get("size_ratio")),
              f"{mb(b.get('size_mb'))} → {mb(m.get('size_mb'))} MB")]
    if verified(report):
        items.append(("accuracy (validation)", pct(m.get("accuracy")),
                      f"baseline {pct(b.get('accuracy'))}, drop {points(drop_points(report, m))} "
                      f"(allowed {allowed_drop(report):.2f})"))
        items.append(("accuracy (held-out test)", pct(c.get("accuracy_test")),
                      f"baseline {pct(b.get('accuracy_test'))}, drop "
                      f"{points(test_drop(report))}"))
    else:
        items.append(("accuracy", "unverified", "no --data given"))
        agree = m.get("agreement") or {}
        diff = agree.get("max_abs_diff")
        items.append(("agreement with original", pct(agree.get("top1_agreement")),
                      "top-1" + ("" if diff is None else f"; max |Δ logit| {diff:.3g}")))
    return items
