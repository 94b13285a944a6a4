"""The terminal summary of an analysis prints the report's text as written."""
from __future__ import annotations

import io
from types import SimpleNamespace

from rich.console import Console

from advisor.cli.render import print_analysis


def _report():
    measured = {"runtime": "onnxruntime", "latency_ms": {"p50": 0.15}, "speedup": 2.34,
                "size_mb": 0.2, "size_ratio": 0.3, "accuracy": 0.98}
    cands = [{"id": f"c{i}", "name": f"int8 static [calibration={c}]", "status": "ok",
              "measured": measured, "meets_constraints": True, "violations": [],
              "plan": {"steps": [{"pass": "int8_static", "config": {"calibration": c}}]}}
             for i, c in enumerate(("minmax", "entropy"), 1)]
    cands.append({"id": "c3", "name": "Tucker-2 [energy=0.9]", "status": "failed",
                  "error": "export failed at [bold]node[/]"})
    return {"model": {"path": "m[1].pt2"}, "target": {"name": "cpu"},
            "factors": {"goal": "latency", "max_drop": 1.0, "retrain": "none",
                        "allowed_drop_points": 1.0},
            "baseline": {"runtime": "onnxruntime", "latency_ms": {"p50": 0.34}, "size_mb": 0.68,
                         "accuracy": 0.98, "accuracy_test": 0.99},
            "data": {"verified": True}, "candidates": cands,
            "chosen": {**cands[1], "accuracy_test": 0.99},
            "warnings": ["seeded split [50/50]"]}


def test_candidate_settings_in_brackets_are_shown_not_eaten_as_markup():
    out = io.StringIO()
    print_analysis(SimpleNamespace(report=_report(), files={"plan": "out/[x]/plan.json"}),
                   Console(file=out, width=200, color_system=None))
    text = out.getvalue()
    assert "int8 static [calibration=minmax]" in text
    assert "int8 static [calibration=entropy]" in text  # the row and the recommendation
    assert text.count("[calibration=entropy]") == 2
    assert "Tucker-2 [energy=0.9]" in text and "export failed at [bold]node[/]" in text
    assert "seeded split [50/50]" in text and "out/[x]/plan.json" in text


def test_the_int8_layer_cost_finding_is_printed_after_the_recommendation():
    report = _report()
    report["chosen"]["int8_layer_cost"] = {"text": "int8 pays less on this model: [depthwise]"}
    out = io.StringIO()
    print_analysis(SimpleNamespace(report=report, files={}), Console(file=out, width=300,
                                                                     color_system=None))
    text = out.getvalue()
    assert text.index("recommendation") < text.index("int8 pays less on this model: [depthwise]")
