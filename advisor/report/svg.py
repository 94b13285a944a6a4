"""Two small hand-written SVG plots: a scatter (with a Pareto step line) and horizontal bars.

Why not matplotlib: the report must be one self-contained HTML file and advisor must not pull a
plotting stack (matplotlib + its fonts and backends) into every install for two charts. A few
dozen lines of SVG text need no dependency, render the same in every browser, stay sharp at any
zoom, and carry native tooltips (`<title>`) without JavaScript.

The SVG has no xmlns attribute by default: inline `<svg>` in HTML5 gets the SVG namespace from
the parser, and the report stays free of any URL. Pass `standalone=True` for a .svg file.
Colours come from CSS classes (see templates/report.css) with inline fallbacks for standalone use.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape
from typing import Sequence

from advisor.report.plot_data import Point

FONT = "font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif"
ROLE_STYLE = {  # fill, stroke, radius: fallbacks when the CSS is absent
    "baseline": ("#212529", "#212529", 5.5),
    "ok": ("#2f9e44", "#2f9e44", 5.0),
    "violates": ("#ffffff", "#868e96", 4.5),
    "chosen": ("#e8590c", "#7d2a00", 7.5),
}
SERIES_FILL = ("#9fb3c8", "#1c7ed6", "#e8590c", "#2f9e44")


@dataclass(frozen=True)
class Frame:
    """Plot area inside the SVG and the data ranges mapped onto it."""
    width: int
    height: int
    left: int
    right: int
    top: int
    bottom: int
    x0: float
    x1: float
    y0: float
    y1: float

    def sx(self, x: float) -> float:
        span = (self.x1 - self.x0) or 1.0
        return self.left + (x - self.x0) / span * (self.width - self.left - self.right)

    def sy(self, y: float) -> float:
        span = (self.y1 - self.y0) or 1.0
        return self.height - self.bottom - (y - self.y0) / span * \
            (self.height - self.top - self.bottom)


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About `n` round tick values (1, 2, 2.5, 5 × 10^k steps) covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0]
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0) * 0.1
    raw = (hi - lo) / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step) * step
    ticks, t = [], first
    while t <= hi + step * 1e-6:
        ticks.append(round(t, 10))
        t += step
    if ticks[-1] < hi - step * 1e-6:
        ticks.append(round(t, 10))
    return ticks


def fmt_tick(v: float) -> str:
    return f"{v:.4g}"


def _open(width: int, height: int, label: str, standalone: bool, cls: str) -> str:
    ns = ' xmlns="http://www.w3.org/2000/svg"' if standalone else ""
    return (f'<svg{ns} class="{cls}" viewBox="0 0 {width} {height}" width="{width}" '
            f'height="{height}" role="img" aria-label="{escape(label)}" style="{FONT}">'
            f"<title>{escape(label)}</title>")


def _text(x: float, y: float, s: str, *, anchor: str = "start", size: int = 12,
          cls: str = "", rotate: bool = False, fill: str = "#343a40") -> str:
    tr = f' transform="rotate(-90 {x:.1f} {y:.1f})"' if rotate else ""
    c = f' class="{cls}"' if cls else ""
    return (f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}" '
            f'fill="{fill}"{c}{tr}>{escape(s)}</text>')


def _axes(f: Frame, xticks: Sequence[float], yticks: Sequence[float], x_label: str,
          y_label: str) -> list[str]:
    """Grid lines, tick labels, the axis lines and the axis titles."""
    out = []
    for t in xticks:
        x = f.sx(t)
        out.append(f'<line class="grid" x1="{x:.1f}" y1="{f.top}" x2="{x:.1f}" '
                   f'y2="{f.height - f.bottom}" stroke="#e9ecef"/>')
        out.append(_text(x, f.height - f.bottom + 16, fmt_tick(t), anchor="middle", size=11))
    for t in yticks:
        y = f.sy(t)
        out.append(f'<line class="grid" x1="{f.left}" y1="{y:.1f}" x2="{f.width - f.right}" '
                   f'y2="{y:.1f}" stroke="#e9ecef"/>')
        out.append(_text(f.left - 6, y + 4, fmt_tick(t), anchor="end", size=11))
    out.append(f'<path class="axis" d="M{f.left},{f.top} V{f.height - f.bottom} '
               f'H{f.width - f.right}" fill="none" stroke="#495057"/>')
    out.append(_text((f.left + f.width - f.right) / 2, f.height - 10, x_label, anchor="middle",
                     size=12))
    out.append(_text(16, (f.top + f.height - f.bottom) / 2, y_label, anchor="middle", size=12,
                     rotate=True))
    return out


def _padded(values: Sequence[float], pad: float = 0.08) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    span = (hi - lo) or (abs(hi) or 1.0) * 0.1
    return lo - span * pad, hi + span * pad


# ---- scatter -----------------------------------------------------------------------------------

def svg_scatter(points: Sequence[Point], *, title: str, x_label: str, y_label: str,
                front: Sequence[Point] = (), hlines: Sequence[tuple[float, str]] = (),
                vlines: Sequence[tuple[float, str]] = (), width: int = 900, height: int = 460,
                y_max: float | None = None, standalone: bool = False) -> str:
    """A scatter of `points` (each drawn by its role), the Pareto `front` as a step line, and
    dashed guide lines (e.g. the latency limit and the accuracy floor).

    The step line is the best quality reachable within each latency: it stays at a front point's
    quality until the next, faster-to-slower, front point raises it. `y_max` caps the y range
    (accuracy cannot exceed 100%).
    """
    if not points:
        return _empty(title, width, standalone)
    xs = [p.x for p in points] + [x for x, _ in vlines]
    ys = [p.y for p in points] + [y for y, _ in hlines]
    x0, x1 = _padded(xs)
    y0, y1 = _padded(ys)
    xt, yt = nice_ticks(max(0.0, x0), x1), nice_ticks(y0, y1)
    if y_max is not None and max(ys) <= y_max:
        yt = [t for t in yt if t <= y_max] if sum(t <= y_max for t in yt) >= 2 else yt
    f = Frame(width, height, 64, 24, 30, 48, xt[0], xt[-1], yt[0], yt[-1])
    out = [_open(width, height, title, standalone, "plot scatter")]
    out += _axes(f, xt, yt, x_label, y_label)
    out += [_guide_h(f, y, label) for y, label in hlines]
    out += [_guide_v(f, x, label) for x, label in vlines]
    if front:
        out.append(_step_path(f, front))
    order = {"violates": 0, "ok": 1, "baseline": 2, "chosen": 3}  # chosen drawn on top
    out += [_marker(f, p) for p in sorted(points, key=lambda p: order.get(p.role, 0))]
    out += _labels(f, sorted(points, key=lambda p: -order.get(p.role, 0)))
    out.append(_scatter_legend(f, {p.role for p in points}, bool(front)))
    out.append("</svg>")
    return "".join(out)


def _step_path(f: Frame, front: Sequence[Point]) -> str:
    pts = sorted(front, key=lambda p: p.x)
    d = [f"M{f.sx(pts[0].x):.1f},{f.sy(pts[0].y):.1f}"]
    for p in pts[1:]:
        d.append(f"H{f.sx(p.x):.1f} V{f.sy(p.y):.1f}")
    d.append(f"H{f.width - f.right:.1f}")  # the best quality stays reachable at any slower budget
    ids = " ".join(p.id for p in pts)
    return (f'<path class="pareto" data-front="{escape(ids)}" d="{" ".join(d)}" fill="none" '
            f'stroke="#1c7ed6" stroke-width="2" stroke-linejoin="round">'
            f"<title>Pareto front: {escape(ids)}</title></path>")


def _marker(f: Frame, p: Point) -> str:
    fill, stroke, r = ROLE_STYLE.get(p.role, ROLE_STYLE["ok"])
    x, y = f.sx(p.x), f.sy(p.y)
    tip = f"<title>{escape(p.tooltip)}</title>"
    common = f'class="pt {p.role}" data-id="{escape(p.id)}" fill="{fill}" stroke="{stroke}"'
    if p.role == "baseline":
        return (f'<rect {common} x="{x - r:.1f}" y="{y - r:.1f}" width="{2 * r:.1f}" '
                f'height="{2 * r:.1f}" transform="rotate(45 {x:.1f} {y:.1f})">{tip}</rect>')
    return f'<circle {common} stroke-width="1.5" cx="{x:.1f}" cy="{y:.1f}" r="{r}">{tip}</circle>'


def _labels(f: Frame, points: Sequence[Point]) -> list[str]:
    """Point labels, most important first; a label that would overlap one already placed is
    nudged up or down in 12 px steps (close candidates are common: knob variants of one plan)."""
    placed: list[tuple[float, float, float, float]] = []
    out = []
    for p in points:
        r = ROLE_STYLE.get(p.role, ROLE_STYLE["ok"])[2]
        text = p.label + (" (chosen)" if p.role == "chosen" else "")
        w, h = 6.4 * len(text) + (8 if p.role == "chosen" else 0), 12.0
        if p.role == "baseline":  # below the marker: candidates often sit level with it
            x0, y0, anchor = f.sx(p.x) - w / 2, f.sy(p.y) + r + 3, "middle"
        else:
            x0, y0, anchor = f.sx(p.x) + r + 3, f.sy(p.y) - r - 10, "start"
        y0 = _free_y(x0, y0, w, h, placed)
        placed.append((x0, y0, w, h))
        tx = x0 + w / 2 if anchor == "middle" else x0
        bold = ' font-weight="700"' if p.role in ("chosen", "baseline") else ""
        out.append(f'<text x="{tx:.1f}" y="{y0 + 10:.1f}" text-anchor="{anchor}" font-size="11" '
                   f'fill="#343a40" class="pt-label"{bold}>{escape(text)}</text>')
    return out


def _free_y(x: float, y: float, w: float, h: float,
            placed: Sequence[tuple[float, float, float, float]]) -> float:
    for dy in (0, 12, -12, 24, -24, 36, -36, 48, -48):
        if not any(x < px + pw and px < x + w and y + dy < py + ph and py < y + dy + h
                   for px, py, pw, ph in placed):
            return y + dy
    return y


def _guide_h(f: Frame, y: float, label: str) -> str:
    sy = f.sy(y)
    return (f'<line class="guide" x1="{f.left}" y1="{sy:.1f}" x2="{f.width - f.right}" '
            f'y2="{sy:.1f}" stroke="#c92a2a" stroke-dasharray="5 4"/>' +
            _text(f.left + 6, sy - 5, label, size=11, fill="#c92a2a"))


def _guide_v(f: Frame, x: float, label: str) -> str:
    sx = f.sx(x)
    return (f'<line class="guide" x1="{sx:.1f}" y1="{f.top}" x2="{sx:.1f}" '
            f'y2="{f.height - f.bottom}" stroke="#c92a2a" stroke-dasharray="5 4"/>' +
            _text(sx + 4, f.top + 12, label, size=11, fill="#c92a2a"))


def _scatter_legend(f: Frame, roles: set[str], with_front: bool) -> str:
    items = [(role, label) for role, label in (
        ("baseline", "baseline"), ("chosen", "chosen"), ("ok", "meets constraints"),
        ("violates", "violates a constraint")) if role in roles]
    x, y = f.left + 8, 16
    out = ['<g class="legend">']
    for role, label in items:
        fill, stroke, _ = ROLE_STYLE[role]
        out.append(f'<circle cx="{x + 5}" cy="{y - 4}" r="4.5" fill="{fill}" stroke="{stroke}" '
                   f'stroke-width="1.5"/>')
        out.append(_text(x + 14, y, label, size=11))
        x += 24 + 6.6 * len(label)
    if with_front:
        out.append(f'<path d="M{x},{y - 1} h8 v-8 h10" fill="none" stroke="#1c7ed6" '
                   f'stroke-width="2"/>')
        out.append(_text(x + 22, y, "Pareto front", size=11))
    out.append("</g>")
    return "".join(out)


def _empty(title: str, width: int, standalone: bool) -> str:
    return (_open(width, 60, title, standalone, "plot empty") +
            _text(width / 2, 34, "nothing measured to plot", anchor="middle", size=13) + "</svg>")


# ---- bars --------------------------------------------------------------------------------------

def svg_bars(rows: Sequence[tuple[str, Sequence[float | None]]], series: Sequence[str], *,
             title: str, x_label: str, width: int = 760, bar: int = 11, label_width: int = 210,
             value_suffix: str = "%", colors: Sequence[str] = SERIES_FILL,
             standalone: bool = False) -> str:
    """Horizontal grouped bars: one group per row label, one bar per series (None = no bar,
    drawn as a dash so 'absent after' reads differently from 'zero').

    Long labels are shortened with an ellipsis; the full text is in the bar's tooltip.
    `colors` gives each series its fill, in order.
    """
    if not rows:
        return _empty(title, width, standalone)
    values = [v for _, vs in rows for v in vs if v is not None] or [0.0]
    ticks = nice_ticks(0.0, max(values) or 1.0, 4)
    group = bar * len(series) + 8
    top = 30
    height = top + group * len(rows) + 44
    f = Frame(width, height, label_width, 60, top, 44, 0.0, ticks[-1], 0.0, 1.0)
    out = [_open(width, height, title, standalone, "plot bars")]
    out += _bar_grid(f, ticks, x_label)
    for i, (label, vs) in enumerate(rows):
        y = top + i * group + 4
        out.append(_text(f.left - 8, y + bar * len(series) / 2 + 4, _ellipsis(label, label_width),
                         anchor="end", size=11))
        out += [_bar(f, y + j * bar, v, series[j], j, label, value_suffix, bar, colors)
                for j, v in enumerate(vs)]
    out.append(_bars_legend(f, series, colors))
    out.append("</svg>")
    return "".join(out)


def _bar_grid(f: Frame, ticks: Sequence[float], x_label: str) -> list[str]:
    out = []
    for t in ticks:
        x = f.sx(t)
        out.append(f'<line class="grid" x1="{x:.1f}" y1="{f.top}" x2="{x:.1f}" '
                   f'y2="{f.height - f.bottom}" stroke="#e9ecef"/>')
        out.append(_text(x, f.height - f.bottom + 16, fmt_tick(t), anchor="middle", size=11))
    out.append(f'<path class="axis" d="M{f.left},{f.top} V{f.height - f.bottom}" '
               f'stroke="#495057"/>')
    out.append(_text((f.left + f.width - f.right) / 2, f.height - 8, x_label, anchor="middle",
                     size=12))
    return out


def _bar(f: Frame, y: float, v: float | None, name: str, j: int, label: str,
         suffix: str, height: int, colors: Sequence[str]) -> str:
    if v is None:
        return (f'<text x="{f.left + 4}" y="{y + height - 2:.1f}" font-size="10" '
                f'fill="#868e96">— {escape(name)}: not present</text>')
    w = max(0.5, f.sx(v) - f.left)
    tip = f"<title>{escape(label)} — {escape(name)}: {v:.1f}{suffix}</title>"
    return (f'<rect class="bar s{j}" data-series="{escape(name)}" x="{f.left}" y="{y:.1f}" '
            f'width="{w:.1f}" height="{height - 1}" fill="{colors[j % len(colors)]}">'
            f"{tip}</rect>" + _text(f.left + w + 4, y + height - 2, f"{v:.1f}{suffix}", size=10))


def _bars_legend(f: Frame, series: Sequence[str], colors: Sequence[str]) -> str:
    x, out = f.left, ['<g class="legend">']
    for j, name in enumerate(series):
        out.append(f'<rect x="{x}" y="10" width="12" height="10" '
                   f'fill="{colors[j % len(colors)]}"/>')
        out.append(_text(x + 16, 19, name, size=11))
        x += 30 + 6.6 * len(name)
    out.append("</g>")
    return "".join(out)


def _ellipsis(s: str, px: int) -> str:
    limit = max(8, int(px / 6.3))
    return s if len(s) <= limit else "…" + s[-(limit - 1):]
