"""report.md: the same content as report.html, as Markdown tables (plots are in the HTML).

User strings are escaped for Markdown: table pipes, and the characters that would start HTML,
links, emphasis or code (`< > [ ] * \\``), via CommonMark backslash escapes so the raw file
stays readable.
"""
from __future__ import annotations

from typing import Iterable, Sequence

from advisor.report import (before_after, candidate_table, facts, fmt, plot_data, qualify,
                            stage_table, summary)

_SPECIAL = "\\`*[]<>|"


def md(s: object) -> str:
    """Escape a value for a Markdown table cell or paragraph (one line)."""
    text = fmt.DASH if s is None else str(s)
    text = "".join("\\" + ch if ch in _SPECIAL else ch for ch in text)
    return " ".join(text.split())


def table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(md(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(md(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(report: dict) -> str:
    """The whole report as Markdown."""
    parts = [_header(report), _recommendation(report), _candidates(report), _stages(report),
             _tradeoff(report), _hotspots(report), _reasons(report), _warnings(report),
             _applied(report), _settings(report)]
    return "\n\n".join(p for p in parts if p) + "\n"


def _header(report: dict) -> str:
    flags = []
    if report["target"].get("emulated") or report["target"].get("measured_on"):
        flags.append(f"**target {md(facts.target_label(report))}**")
    if not facts.verified(report):
        flags.append("**accuracy unverified** (no validation data: agreement with the original "
                     "is reported instead)")
    return "\n\n".join([f"# Optimization report: {md(report['model']['path'])}",
                        *flags,
                        table(("setting", "value"), summary.summary_items(report)),
                        "### Baseline (original model)",
                        table(("measure", "value"), summary.baseline_items(report))])


def _recommendation(report: dict) -> str:
    c = report.get("chosen")
    if not c:
        return _nothing(report)
    figures = table(("", "value", "detail"), before_after.chosen_summary(report))
    steps = "\n".join(f"{i}. `{facts.step_text(s).replace('`', '')}`"
                      for i, s in enumerate(c["plan"]["steps"], 1))
    notes = "\n".join(f"- {md(r)}" for r in c.get("reasons") or [])
    return "\n\n".join(p for p in [
        "## Recommendation", f"**{md(c['name'])}** ({md(c['id'])})", figures,
        "Steps:", steps, notes,
        "Saved as `plan.json`; replay on the original model with "
        "`advisor apply MODEL --plan plan.json --out DIR`."] if p)


def _nothing(report: dict) -> str:
    closest = qualify.closest_candidates(report)
    rows = [(c["id"], c["name"], "; ".join(c.get("violations") or []) or fmt.DASH,
             "; ".join(qualify.needed_to_qualify(report, c)) or fmt.DASH) for c in closest]
    body = table(("id", "plan", "violates", "would qualify with"), rows) if rows else \
        "No candidate could be measured (see the errors in the candidates table)."
    return "\n\n".join(["## Recommendation", "**Nothing met the constraints.** Closest plans "
                        "(everything measured is in the candidates table):", body,
                        md(qualify.widen_hint(report))])


def _candidates(report: dict) -> str:
    columns = candidate_table.COLUMNS
    rows = [[r.cells[c] for c in columns] for r in candidate_table.table_rows(report)]
    return "\n\n".join(["## Candidates", table(columns, rows),
                        "Speed-up and size ratio are against the baseline on the same runtime; "
                        "drop is in percentage points; predicted = the rule engine's estimate "
                        "(speed-up / size ratio)."])


def _stages(report: dict) -> str:
    columns = stage_table.columns(report)
    if not columns:
        return ""
    rows = [[r[c] for c in columns] for r in stage_table.rows(report)]
    return "\n\n".join(["## Where and how long", table(columns, rows),
                        md(stage_table.CAPTION)])


def _tradeoff(report: dict) -> str:
    pts = plot_data.plot_points(report)
    front = plot_data.pareto_front(pts)
    metric = "accuracy" if facts.verified(report) else "top-1 agreement (accuracy unverified)"
    rows = [(p.id, fmt.ms(p.x), f"{p.y:.1f}%") for p in front]
    return "\n\n".join(["## Latency vs accuracy",
                        f"The plot is in report.html. Pareto front (latency p50 vs {metric}; "
                        "nothing is both faster and better):",
                        table(("point", "p50 ms", metric), rows)])


def _hotspots(report: dict) -> str:
    hv = before_after.hotspot_view(report)
    if not hv.before and not hv.after:
        return ""
    parts = ["## Per-layer hot spots before/after"]
    if hv.matched:
        parts.append(table(("layer", "before", "after"),
                           [(n, fmt.pct(b), fmt.pct(a)) for n, b, a in hv.paired]))
    else:
        parts.append("Before (original model):")
        parts.append(table(("layer", "kind", "share", "ms"), _hot_rows(hv.before)))
        if hv.after:
            parts.append("After (chosen plan; the runtime names layers differently):")
            parts.append(table(("layer", "kind", "share", "ms"), _hot_rows(hv.after)))
    if hv.kinds:
        parts.append(table(("kind", "before", "after"),
                           [(k, fmt.pct(b), fmt.pct(a)) for k, b, a in hv.kinds]))
    note = (report.get("chosen") or {}).get("int8_layer_cost")
    if note:
        parts.append(note["text"])
    return "\n\n".join(parts)


def _hot_rows(rows: Sequence[dict]) -> list[tuple[str, str, str, str]]:
    return [(h["name"], h.get("kind", fmt.DASH), fmt.pct(h["share"]), fmt.ms(h.get("ms")))
            for h in rows]


def _reasons(report: dict) -> str:
    rows = [(r["rule"], r["verdict"], r["text"], r.get("cites") or fmt.DASH)
            for r in report["reasons"]]
    return "\n\n".join(["## Reasons", table(("rule", "verdict", "why", "source"), rows)
                        if rows else "No rule fired."])


def _warnings(report: dict) -> str:
    if not report["warnings"]:
        return ""
    return "## Warnings\n\n" + "\n".join(f"- {md(w)}" for w in report["warnings"])


def _applied(report: dict) -> str:
    applied = report.get("applied")
    if not applied:
        return ""
    rows = list((applied.get("files") or {}).items())
    source = (f" It is {md(applied['source'])}, byte for byte (sha256 `{applied['sha256']}`)."
              if applied.get("source") else "")
    return "\n\n".join(["## Applied", f"Output in {md(applied.get('out_dir'))}.{source}",
                        table(("file", "path"), rows)])


def _settings(report: dict) -> str:
    return "## Measurement settings\n\n" + table(("setting", "value"),
                                                  summary.settings_items(report))
