"""The report layer of `advisor analyze`: report.md, report.html and report.json from one dict.

`write_reports(report, out_dir)` validates the report against schema.json (when jsonschema is
installed: it is a dev dependency), renders all three files in memory and only then writes each
one atomically, so a rendering error never leaves a half-written set behind.
plan.json is written by the analysis itself; its schema is plan_schema.json beside this file.
"""
from __future__ import annotations

from pathlib import Path

from advisor.fileio import write_json_atomic, write_text_atomic
from advisor.report.html import render_html
from advisor.report.md import render_markdown
from advisor.report.schema import (PLAN_SCHEMA, REPORT_SCHEMA, have_jsonschema, to_json_data,
                                   validate_plan, validate_report)
from advisor.report.svg import svg_bars, svg_scatter

__all__ = ["write_reports", "render_markdown", "render_html", "validate_report",
           "validate_plan", "svg_scatter", "svg_bars", "REPORT_SCHEMA", "PLAN_SCHEMA"]


def write_reports(report: dict, out_dir: Path) -> dict[str, Path]:
    """Write report.md, report.html and report.json into `out_dir`; return their paths.

    Keys of the result: "report_md", "report_html", "report_json".
    Raises ValueError when the report does not match schema.json (checked only when jsonschema
    is importable).
    """
    out_dir = Path(out_dir)
    data = to_json_data(report)
    if have_jsonschema():
        validate_report(data)
    texts = {"report_md": ("report.md", render_markdown(data)),
             "report_html": ("report.html", render_html(data))}
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {key: write_text_atomic(out_dir / name, text) for key, (name, text) in texts.items()}
    paths["report_json"] = write_json_atomic(out_dir / "report.json", data)
    return paths
