"""Reports of an analysis: report.md, a self-contained report.html, report.json.

Plots are hand-written inline SVG (no matplotlib): the HTML needs no extra dependency, no
network and no script, so it opens anywhere the user copies it.
"""
from __future__ import annotations

import html
from pathlib import Path

from advisor.fileio import write_json_atomic, write_text_atomic

REQUIRED = ("schema_version", "model", "target", "factors", "data", "baseline", "candidates",
            "chosen", "reasons")


def validate_report(report: dict) -> None:
    """Raise ValueError naming the first missing or malformed key."""
    for k in REQUIRED:
        if k not in report:
            raise ValueError(f"report.json: missing key {k!r}")
    b = report["baseline"]
    for k in ("latency_ms", "size_mb", "accuracy"):
        if k not in b:
            raise ValueError(f"report.json: baseline.{k} missing")
    if not isinstance(b["latency_ms"].get("p50"), (int, float)):
        raise ValueError("report.json: baseline.latency_ms.p50 must be a number")
    c = report["chosen"]
    if c is not None:
        for k in ("measured", "plan", "accuracy_test"):
            if k not in c:
                raise ValueError(f"report.json: chosen.{k} missing")


def _pct(x) -> str:
    return "—" if x is None else f"{x * 100:.1f}%"


def _quality(m: dict, verified: bool):
    if verified:
        return m.get("accuracy")
    return (m.get("agreement") or {}).get("top1_agreement")


def _rows(report: dict) -> list[list[str]]:
    verified = report["data"]["verified"]
    rows = []
    for c in report["candidates"]:
        m = c.get("measured") or {}
        lat = (m.get("latency_ms") or {}).get("p50")
        rows.append([c["id"], c["name"], " → ".join(s["pass"] for s in c["plan"]["steps"]),
                     c["status"], f"{lat:.3f}" if lat else "—",
                     f"{m['speedup']:.2f}x" if m.get("speedup") else "—",
                     f"{m['size_mb']:.2f}" if m.get("size_mb") is not None else "—",
                     _pct(_quality(m, verified)),
                     "yes" if c.get("meets_constraints") else
                     ("; ".join(c.get("violations") or []) or (c.get("error") or ""))[:120]])
    return rows


HEAD = ["id", "plan", "steps", "status", "p50 ms", "speed-up", "size MB", "accuracy", "meets / why not"]


def _summary_lines(report: dict) -> list[str]:
    b, f, t = report["baseline"], report["factors"], report["target"]
    verified = report["data"]["verified"]
    tname = t["name"] + (" (emulated)" if t.get("emulated") else "")
    lines = [f"model: {report['model']['path']} ({report['model']['format']}, input {report['model']['input_shape']})",
             f"target: {tname}; goal {f['goal']}; max drop {f['max_drop']:g} pts; retrain {f['retrain']}",
             f"baseline: p50 {b['latency_ms']['p50']:.3f} ms ({b.get('runtime')}), {b['size_mb']:.2f} MB, "
             f"accuracy {_pct(b.get('accuracy')) if verified else 'unverified'}"]
    c = report.get("chosen")
    if c:
        m = c["measured"]
        lines.append(f"RECOMMENDED: {c['name']} — {m['speedup']:.2f}x faster, size x{m['size_ratio']:.2f}, "
                     f"accuracy val {_pct(m.get('accuracy'))}, held-out {_pct(c.get('accuracy_test'))}"
                     if verified else
                     f"RECOMMENDED: {c['name']} — {m['speedup']:.2f}x faster, size x{m['size_ratio']:.2f}, "
                     f"accuracy unverified (agreement {_pct(_quality(m, False))})")
    else:
        lines.append("No plan met every constraint; closest: " + ", ".join(report.get("closest") or []))
    return lines


def render_markdown(report: dict) -> str:
    out = ["# advisor report", ""] + [f"- {x}" for x in _summary_lines(report)] + ["", "## Candidates", ""]
    out.append("| " + " | ".join(HEAD) + " |")
    out.append("|" + "---|" * len(HEAD))
    out += ["| " + " | ".join(x.replace("|", "/") for x in r) + " |" for r in _rows(report)]
    out += ["", "## Reasons", ""]
    out += [f"- **{r['rule']}** ({r['verdict']}): {r['text']}" + (f" — _{r['cites']}_" if r.get("cites") else "")
            for r in report["reasons"]]
    if report.get("warnings"):
        out += ["", "## Notes", ""] + [f"- {w}" for w in report["warnings"]]
    return "\n".join(out) + "\n"


def _pareto(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Non-dominated points (lower latency, higher accuracy), sorted by latency."""
    front, best = [], -1.0
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if y > best:
            front.append((x, y))
            best = y
    return front


def svg_scatter(points: list[dict], baseline: tuple[float, float] | None, ylabel: str,
                w: int = 640, h: int = 360) -> str:
    """Latency (x) vs accuracy (y) scatter with the Pareto front as a step line."""
    pad = 50
    xs = [p["x"] for p in points] + ([baseline[0]] if baseline else [])
    ys = [p["y"] for p in points] + ([baseline[1]] if baseline else [])
    if not xs:
        return "<p>no measured candidates</p>"
    x0, x1 = 0.0, max(xs) * 1.1
    y0, y1 = min(ys) - 0.02, min(1.0, max(ys) + 0.01)
    sx = lambda v: pad + (v - x0) / ((x1 - x0) or 1) * (w - 2 * pad)
    sy = lambda v: h - pad - (v - y0) / ((y1 - y0) or 1) * (h - 2 * pad)
    parts = [f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}">',
             f'<rect x="{pad}" y="{pad}" width="{w - 2 * pad}" height="{h - 2 * pad}" fill="#fafafa" stroke="#ccc"/>',
             f'<text x="{w / 2}" y="{h - 10}" text-anchor="middle" font-size="12">latency p50 (ms)</text>',
             f'<text x="14" y="{h / 2}" text-anchor="middle" font-size="12" transform="rotate(-90 14 {h / 2})">{html.escape(ylabel)}</text>']
    for i in range(5):
        xv, yv = x0 + (x1 - x0) * i / 4, y0 + (y1 - y0) * i / 4
        parts.append(f'<text x="{sx(xv):.1f}" y="{h - pad + 15}" font-size="10" text-anchor="middle">{xv:.2f}</text>')
        parts.append(f'<text x="{pad - 5}" y="{sy(yv):.1f}" font-size="10" text-anchor="end">{yv * 100:.1f}</text>')
    front = _pareto([(p["x"], p["y"]) for p in points])
    if front:
        d = f"M {sx(front[0][0]):.1f} {sy(front[0][1]):.1f} " + " ".join(
            f"H {sx(x):.1f} V {sy(y):.1f}" for x, y in front[1:])
        parts.append(f'<path class="pareto" d="{d}" fill="none" stroke="#2a7" stroke-width="2" stroke-dasharray="5 3"/>')
    if baseline:
        parts.append(f'<rect class="baseline" x="{sx(baseline[0]) - 5:.1f}" y="{sy(baseline[1]) - 5:.1f}" width="10" height="10" fill="#555"><title>baseline</title></rect>')
    for p in points:
        color = "#d33" if p.get("chosen") else "#36c"
        parts.append(f'<circle class="candidate" cx="{sx(p["x"]):.1f}" cy="{sy(p["y"]):.1f}" r="{7 if p.get("chosen") else 5}" fill="{color}"><title>{html.escape(p["label"])}</title></circle>')
    parts.append("</svg>")
    return "".join(parts)


def svg_bars(before: list[dict], after: list[dict], w: int = 640, top: int = 8) -> str:
    """Per-layer time (ms) of the baseline and of the chosen plan, top layers of each."""
    rows = [("before", r) for r in before[:top]] + [("after", r) for r in after[:top]]
    if not rows:
        return "<p>no per-layer measurements</p>"
    mx = max(r["ms"] for _, r in rows) or 1.0
    h = 22 * len(rows) + 20
    parts = [f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}">']
    for i, (which, r) in enumerate(rows):
        y = 10 + 22 * i
        bw = (w - 330) * r["ms"] / mx
        parts.append(f'<text x="0" y="{y + 13}" font-size="11">{which}: {html.escape(r["name"][:38])}</text>')
        parts.append(f'<rect x="300" y="{y}" width="{bw:.1f}" height="16" fill="{"#999" if which == "before" else "#d33"}"/>')
        parts.append(f'<text x="{305 + bw:.1f}" y="{y + 13}" font-size="10">{r["ms"]:.3f} ms</text>')
    parts.append("</svg>")
    return "".join(parts)


def render_html(report: dict) -> str:
    e = html.escape
    verified = report["data"]["verified"]
    pts = []
    chosen_id = (report.get("chosen") or {}).get("id")
    for c in report["candidates"]:
        m = c.get("measured") or {}
        q = _quality(m, verified)
        if c["status"] == "ok" and q is not None:
            pts.append({"x": m["latency_ms"]["p50"], "y": q, "label": f"{c['id']} {c['name']}",
                        "chosen": c["id"] == chosen_id})
    b = report["baseline"]
    base_pt = (b["latency_ms"]["p50"], b["accuracy"] if verified else 1.0) if (b.get("accuracy") is not None or not verified) else None
    ylabel = "accuracy (%)" if verified else "top-1 agreement with the original (%) — accuracy unverified"
    table = "<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in HEAD) + "</tr>" + "".join(
        "<tr>" + "".join(f"<td>{e(x)}</td>" for x in r) + "</tr>" for r in _rows(report)) + "</table>"
    reasons = "<ul>" + "".join(f"<li><b>{e(r['rule'])}</b> <i>({e(r['verdict'])})</i>: {e(r['text'])}"
                               + (f" <small>— {e(r['cites'])}</small>" if r.get("cites") else "") + "</li>"
                               for r in report["reasons"]) + "</ul>"
    summary = "".join(f"<p>{e(x)}</p>" for x in _summary_lines(report))
    after = (report.get("chosen") or {}).get("hotspots") or []
    notes = "".join(f"<li>{e(w)}</li>" for w in report.get("warnings", []))
    css = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
           "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ddd;padding:4px 6px}"
           "tr:nth-child(even){background:#f4f4f4}.box{border:2px solid #2a7;padding:8px 14px;border-radius:6px}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>advisor report</title><style>{css}</style></head><body>"
            f"<h1>advisor report</h1><div class='box'>{summary}</div>"
            f"<h2>Latency vs {'accuracy' if verified else 'agreement'} (Pareto front dashed)</h2>{svg_scatter(pts, base_pt, ylabel)}"
            f"<h2>Per-layer hot spots, before / after</h2>{svg_bars(b.get('hotspots') or [], after)}"
            f"<h2>Candidates</h2>{table}<h2>Reasons</h2>{reasons}"
            + (f"<h2>Notes</h2><ul>{notes}</ul>" if notes else "") + "</body></html>")


def write_reports(report: dict, out_dir: Path) -> dict[str, Path]:
    validate_report(report)
    out_dir = Path(out_dir)
    return {"report.md": write_text_atomic(out_dir / "report.md", render_markdown(report)),
            "report.html": write_text_atomic(out_dir / "report.html", render_html(report)),
            "report.json": write_json_atomic(out_dir / "report.json", report)}
