"""The report dictionary of `advisor analyze`, assembled in one place from what the search
measured and decided (`advisor.outcome` derives the figures; this only arranges them).

`write_reports` (advisor.report) renders it as Markdown, HTML and JSON; `schema.json` is its
contract.
"""
from __future__ import annotations

from typing import Any

__all__ = ["build_report", "hot_row"]


def build_report(loaded, tgt, target_json: dict, prof: dict, device_profile, factors, data_b,
                 baseline, base_acc_test, records, chosen: dict | None, closest, rule_results,
                 rejected, warnings: list[str], version: str, seconds: float) -> dict[str, Any]:
    """The report of one analysis (see schema.json): inputs as api.analyze has them."""
    from datetime import datetime, timezone

    from advisor.measure.drop_bound import METHOD as DROP_BOUND_METHOD
    from advisor.outcome import LATENCY_METHOD

    hot = prof.get("hotspots")
    hot_rows = hot.get("layers", []) if isinstance(hot, dict) else (hot or [])
    reasons = [r.to_json() for r in rule_results]
    reasons += [{"rule": c.rule, "verdict": "avoid", "text": f"{c.name}: not tried — {why}",
                 "cites": None} for c, why in rejected]
    # the baseline row: the original on its fastest runtime, the reference of every speed-up
    base_rt = min(baseline.latency_p50, key=baseline.latency_p50.get)
    base_lat = (prof.get("runtimes") or {}).get(base_rt) or prof["latency_ms"]
    report = {
        "schema_version": 1,
        "tool": {"name": "advisor", "version": version},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": {"path": str(loaded.path) if loaded.path else "<in-memory module>",
                  "format": loaded.format, "input_shape": list(loaded.input_shape),
                  "arch": (loaded.metadata or {}).get("arch"),
                  "arch_kwargs": (loaded.metadata or {}).get("arch_kwargs"),
                  "layers": _layers_text(loaded.metadata or {})},
        "target": {**target_json, "description": tgt.description},
        "host": prof.get("host", {}),
        "factors": {"goal": factors.goal, "max_drop": factors.max_drop,
                    "max_drop_relative": factors.max_drop_relative,
                    "max_latency_ms": factors.max_latency_ms, "max_size_mb": factors.max_size_mb,
                    "retrain": factors.retrain, "budget_seconds": factors.budget_seconds,
                    "hardware": factors.hardware,
                    "allowed_drop_points": factors.allowed_drop_points(baseline.accuracy)},
        "measurement": {"latency": LATENCY_METHOD, "accuracy_bound": DROP_BOUND_METHOD},
        "data": {"verified": data_b.verified, "val": data_b.specs.get("val"),
                 "test": data_b.specs.get("test"), "train": data_b.specs.get("train"),
                 "metric": "top1" if data_b.verified else "agreement",
                 "preprocess": data_b.specs.get("preprocess"),
                 "preprocess_text": _preprocess_text(data_b)},
        "baseline": {"runtime": base_rt,
                     "latency_ms": {"p50": baseline.latency_p50[base_rt],
                                    "p90": base_lat.get("p90"), "cv": base_lat.get("cv")},
                     "latency_by_runtime": baseline.latency_p50,
                     "size_mb": baseline.size_mb, "peak_memory_mb": prof.get("peak_memory_mb"),
                     "flops": prof.get("flops"), "params": prof.get("params"),
                     "accuracy": baseline.accuracy, "accuracy_test": base_acc_test,
                     "hotspots": [hot_row(r) for r in hot_rows]},
        "candidates": [r.to_json() for r in records],
        "chosen": chosen,
        "closest": [r.id for r in closest],
        "reasons": reasons,
        "warnings": warnings,
        "timing": {"total_seconds": round(seconds, 1)},
    }
    if device_profile is not None:
        report["device_baseline"] = device_profile.to_json()
    return report


def hot_row(r: dict) -> dict:
    return {"name": r.get("name", "?"), "kind": r.get("kind", "other"),
            "share": float(r.get("share", 0.0)), "ms": float(r.get("ms", r.get("time_ms", 0.0)))}


def _preprocess_text(data_b) -> str | None:
    """One line saying how the images were prepared (None without data)."""
    if not data_b.verified or data_b.preprocess is None:
        return None
    return data_b.preprocess.describe()


def _layers_text(meta: dict) -> str | None:
    """How a model without an architecture got its layers (`advisor.lift`, `advisor.onnx_lift`),
    or why it has none."""
    if meta.get("lifted"):
        return next((n for n in meta.get("notes", []) if n.startswith("lifted from")),
                    "lifted from its graph")
    if meta.get("lift_refused"):
        return f"none: the graph could not be lifted into layers ({meta['lift_refused']})"
    return None
