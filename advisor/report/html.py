"""report.html: one self-contained page (inline CSS, inline SVG plots, no scripts, no URLs).

A Content-Security-Policy meta tag forbids every external load, so the page renders the same
offline, from a CI artefact or an e-mail attachment. Every string that came from the user or the
model (paths, layer names, error messages) is HTML-escaped.
"""
from __future__ import annotations

from functools import lru_cache
from html import escape
from pathlib import Path

from advisor.report import (before_after, candidate_table, facts, fmt, plot_data, qualify,
                            stage_table, summary)
from advisor.report.svg import SERIES_FILL, svg_bars, svg_scatter

CSS_FILE = Path(__file__).resolve().parent / "templates" / "report.css"
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
NUMERIC = {"p50 ms", "speed-up", "size MB", "size ratio", "accuracy", "drop"}


def e(s: object) -> str:
    """HTML-escape any value (None → dash)."""
    return escape(fmt.DASH if s is None else str(s), quote=True)


@lru_cache(maxsize=1)
def css() -> str:
    return CSS_FILE.read_text(encoding="utf-8")


def render_html(report: dict) -> str:
    """The whole report as one HTML document."""
    body = "".join([_header(report), _recommendation(report), _tradeoff(report),
                    _hotspots(report), _candidates(report), _stages(report), _reasons(report),
                    _warnings(report), _applied(report), _settings(report), _footer(report)])
    title = f"advisor report: {report['model']['path']} on {facts.target_label(report)}"
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{e(title)}</title><style>{css()}</style></head>"
            f"<body><main>{body}</main></body></html>\n")


def _facts(items: list[tuple[str, str]]) -> str:
    return '<dl class="facts">' + "".join(f"<dt>{e(k)}</dt><dd>{e(val)}</dd>"
                                          for k, val in items) + "</dl>"


def _header(report: dict) -> str:
    m = report["model"]
    badges = ""
    if report["target"].get("emulated") or report["target"].get("measured_on"):
        kind = "device" if report["target"].get("measured_on") else "emulated"
        badges += f' <span class="badge {kind}">{e(facts.target_label(report))}</span>'
    if not facts.verified(report):
        badges += ' <span class="badge unverified">accuracy unverified</span>'
    return (f"<header><h1>Optimization report{badges}</h1>"
            f'<p class="sub"><code>{e(m["path"])}</code> · {e(m["format"])} · '
            f"target <b>{e(facts.target_label(report))}</b></p>"
            f"{_facts(summary.summary_items(report))}"
            f"<h3>Baseline (original model)</h3>{_facts(summary.baseline_items(report))}</header>")


# ---- recommendation ----------------------------------------------------------------------------

def _recommendation(report: dict) -> str:
    if report.get("chosen"):
        return _chosen_box(report)
    return _none_box(report)


def _chosen_box(report: dict) -> str:
    c = report["chosen"]
    numbers = "".join(f"<div><span>{e(label)}</span><b>{e(value)}</b><span>{e(detail)}</span></div>"
                      for label, value, detail in before_after.chosen_summary(report))
    steps = "".join(f"<li><code>{e(facts.step_text(s))}</code></li>" for s in c["plan"]["steps"])
    why = "".join(f"<li>{e(r)}</li>" for r in c.get("reasons") or [])
    return (f'<section class="rec" id="recommendation"><h2>Recommendation</h2>'
            f'<p class="headline">{e(c["name"])} <span class="badge">{e(c["id"])}</span></p>'
            f'<div class="numbers">{numbers}</div>'
            f"<h3>Steps</h3><ol>{steps}</ol>"
            + (f"<h3>Notes</h3><ul>{why}</ul>" if why else "") +
            '<p class="caption">The plan is saved as <code>plan.json</code>; replay it on the '
            "original model with <code>advisor apply MODEL --plan plan.json --out DIR</code>.</p>"
            "</section>")


def _none_box(report: dict) -> str:
    closest = qualify.closest_candidates(report)
    items = "".join(_closest_item(report, c) for c in closest) or \
        "<li>No candidate could be measured (see the errors in the table below).</li>"
    return ('<section class="rec none" id="recommendation"><h2>Recommendation</h2>'
            '<p class="headline">Nothing met the constraints</p>'
            "<p>Closest plans (nothing was dropped: all are in the table below):</p>"
            f"<ol>{items}</ol>"
            f"<p>{e(qualify.widen_hint(report))}</p></section>")


def _closest_item(report: dict, c: dict) -> str:
    m = c.get("measured") or {}
    quality = facts.accuracy_text(report, m) if facts.verified(report) else \
        f"agreement {fmt.pct(facts.quality(report, m))}"
    needs = qualify.needed_to_qualify(report, c)
    return (f"<li><b>{e(c['name'])}</b> ({e(c['id'])}): {e(fmt.times(m.get('speedup')))} faster, "
            f"size {e(fmt.times(m.get('size_ratio')))}, {e(quality)}<br>"
            f"violates: {e('; '.join(c.get('violations') or []) or fmt.DASH)}<br>"
            f"would qualify with: {e('; '.join(needs) or fmt.DASH)}</li>")


# ---- plots -------------------------------------------------------------------------------------

def tradeoff_svg(report: dict) -> str:
    """Latency vs accuracy (or agreement) of every measured candidate with the Pareto front."""
    pts = plot_data.plot_points(report)
    hlines, vlines = [], []
    floor = plot_data.quality_floor(report)
    if floor is not None:
        hlines.append((floor, f"allowed drop ({facts.allowed_drop(report):.2f} pts)"))
    limit = report["factors"].get("max_latency_ms")
    if limit is not None and pts and limit <= max(p.x for p in pts):
        vlines.append((limit, f"max latency {limit:g} ms"))
    return svg_scatter(pts, title="latency vs accuracy", x_label="latency p50 (ms)",
                       y_label=facts.quality_axis(report), front=plot_data.pareto_front(pts),
                       hlines=hlines, vlines=vlines, y_max=100.0)


def _tradeoff(report: dict) -> str:
    front = plot_data.pareto_front(plot_data.plot_points(report))
    what = "accuracy" if facts.verified(report) else \
        "top-1 agreement with the original model (accuracy is unverified without --data)"
    return ('<section id="tradeoff"><h2>Latency vs accuracy</h2>'
            f'<div class="figure">{tradeoff_svg(report)}</div>'
            f'<p class="caption">Every measured candidate; y is {e(what)}. The blue step line is '
            f"the Pareto front (nothing is both faster and better): "
            f"{e(', '.join(p.id for p in front) or fmt.DASH)}. Dashed red lines are the "
            "constraints. Hover a point for its numbers.</p></section>")


def hotspot_svgs(report: dict) -> list[str]:
    """Before/after per-layer time shares: paired bars when layer names match, else two charts;
    plus the shares by layer kind, which always match."""
    hv = before_after.hotspot_view(report)
    if hv.matched:
        rows = [(name, [_pc(b), _pc(a)]) for name, b, a in hv.paired]
        charts = [svg_bars(rows, ["before", "after"], title="per-layer hot spots before/after",
                           x_label="share of forward time (%)")]
    else:
        charts = [svg_bars([(h["name"], [_pc(h["share"])]) for h in hv.before],
                           ["before: original model"], title="hot spots before",
                           x_label="share of forward time (%)", width=580, label_width=160)]
        if hv.after:
            charts.append(svg_bars([(h["name"], [_pc(h["share"])]) for h in hv.after],
                                   ["after: chosen plan"], title="hot spots after",
                                   x_label="share of forward time (%)", width=580,
                                   label_width=160, colors=SERIES_FILL[1:]))
    if hv.kinds:
        charts.append(svg_bars([(k, [_pc(b), _pc(a)]) for k, b, a in hv.kinds],
                               ["before", "after"], title="time share by layer kind",
                               x_label="share of forward time (%)", width=560, label_width=90))
    return charts


def _pc(share: float | None) -> float | None:
    return None if share is None else share * 100.0


def _hotspots(report: dict) -> str:
    hv = before_after.hotspot_view(report)
    if not hv.before and not hv.after:
        return ('<section id="hotspots"><h2>Per-layer hot spots before/after</h2>'
                '<p class="caption">No per-layer timing was recorded.</p></section>')
    charts = hotspot_svgs(report)
    if hv.matched or not hv.after:
        figs = "".join(f'<div class="figure">{c}</div>' for c in charts)
    else:
        figs = ('<div class="pair">' + "".join(f'<div class="figure">{c}</div>'
                                               for c in charts[:2]) + "</div>" +
                "".join(f'<div class="figure">{c}</div>' for c in charts[2:]))
    return ('<section id="hotspots"><h2>Per-layer hot spots before/after</h2>'
            f"{figs}<p class=\"caption\">{e(_hotspot_caption(report, hv))}</p>"
            f"{_int8_note(report)}</section>")


def _int8_note(report: dict) -> str:
    note = (report.get("chosen") or {}).get("int8_layer_cost")
    return f'<p class="finding">{e(note["text"])}</p>' if note else ""


def _hotspot_caption(report: dict, hv: before_after.HotspotView) -> str:
    if not report.get("chosen"):
        return "The original model's top layers by share of forward time (no plan was chosen)."
    if hv.matched:
        return ("Top layers of the original by share of forward time, and the same layers in the "
                "chosen plan. A missing 'after' bar means the layer is gone.")
    return ("The deployed artefact names its layers differently (the runtime fuses and renames "
            "them), so the top layers before and after are shown side by side; the by-kind "
            "shares compare directly.")


# ---- tables ------------------------------------------------------------------------------------

def _candidates(report: dict) -> str:
    head = "".join(f"<th>{e(c)}</th>" for c in candidate_table.COLUMNS)
    body = "".join(_row(r) for r in candidate_table.table_rows(report))
    return ('<section id="candidates"><h2>Candidates</h2>'
            '<div class="figure"><table class="candidates">'
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"
            '<p class="caption">Speed-up and size ratio are against the baseline on the same '
            "runtime; accuracy is on the validation split; drop is in percentage points; "
            "predicted = the rule engine's estimate (speed-up / size ratio) before measuring.</p>"
            "</section>")


def _stages(report: dict) -> str:
    columns = stage_table.columns(report)
    if not columns:
        return ""
    head = "".join(f"<th>{e(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(
        f'<td class="num">{e(r[c])}</td>' if c.endswith(" s") else f"<td>{e(r[c])}</td>"
        for c in columns) + "</tr>" for r in stage_table.rows(report))
    return ('<section id="stages"><h2>Where and how long</h2>'
            '<div class="figure"><table class="stages">'
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"
            f'<p class="caption">{e(stage_table.CAPTION)}</p></section>')


def _row(row: candidate_table.Row) -> str:
    cells = []
    for col in candidate_table.COLUMNS:
        text = row.cells[col]
        cls = []
        if col in NUMERIC:
            cls.append("num")
        if col in ("plan", "steps", "notes"):
            cls.append(col)
        if col == "status" and text != "ok":
            cls.append(f"status-{text}")
        if col == "meets constraints?" and text in ("yes", "no"):
            cls.append(text)
        attr = f' class="{" ".join(cls)}"' if cls else ""
        body = _breakable(text) if col in ("plan", "steps") else e(text)
        cells.append(f"<td{attr}>{body}</td>")
    return f'<tr class="{row.kind}">' + "".join(cells) + "</tr>"


def _breakable(text: str) -> str:
    """Escaped text with line-break opportunities after '_', '=', '[' and ',' so plan names
    such as 'int8 static [calibration=percentile]' wrap at sensible places in narrow cells."""
    out = e(text)
    for ch in ("_", "=", "[", ","):
        out = out.replace(ch, ch + "<wbr>")
    return out


def _reasons(report: dict) -> str:
    rows = "".join(
        f"<tr><td><code>{e(r['rule'])}</code></td>"
        f'<td><span class="badge {e(r["verdict"])}">{e(r["verdict"])}</span></td>'
        f"<td>{e(r['text'])}</td><td>{e(r.get('cites'))}</td></tr>"
        for r in report["reasons"])
    if not rows:
        rows = '<tr><td colspan="4">No rule fired.</td></tr>'
    return ('<section id="reasons"><h2>Reasons</h2><table class="reasons"><thead><tr>'
            "<th>rule</th><th>verdict</th><th>why</th><th>source</th></tr></thead>"
            f"<tbody>{rows}</tbody></table></section>")


def _warnings(report: dict) -> str:
    if not report["warnings"]:
        return ""
    items = "".join(f"<li>{e(w)}</li>" for w in report["warnings"])
    return f'<section id="warnings"><h2>Warnings</h2><ul class="warnings">{items}</ul></section>'


def _applied(report: dict) -> str:
    applied = report.get("applied")
    if not applied:
        return ""
    files = "".join(f"<li>{e(k)}: <code>{e(p)}</code></li>"
                    for k, p in (applied.get("files") or {}).items())
    return ('<section id="applied"><h2>Applied</h2>'
            f"<p>Output in <code>{e(applied.get('out_dir'))}</code>" +
            (f": {e(applied['source'])}, byte for byte (sha256 <code>{e(applied['sha256'])}"
             "</code>)" if applied.get("source") else "") + f".</p><ul>{files}</ul></section>")


def _settings(report: dict) -> str:
    return ('<section id="settings"><h2>Measurement settings</h2>'
            f"{_facts(summary.settings_items(report))}</section>")


def _footer(report: dict) -> str:
    return (f"<footer>advisor {e(report['tool']['version'])} · report schema "
            f"{e(report['schema_version'])} · created {e(report['created'])} · "
            f"analysis took {e(fmt.seconds(report['timing']['total_seconds']))}</footer>")
