"""What the report says, independent of how it is drawn: formatted numbers, table rows, the Pareto
front, the hot-spot comparison and what would be needed when no plan qualified.

Markdown and HTML both render from these functions, so the two files can never disagree.
Accuracies are fractions in [0, 1] shown as percentages with one decimal; drops are points.
Without evaluation data accuracy is "unverified" and top-1 agreement with the original model is
shown (and plotted) instead.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

DASH = "—"


# ---- numbers ---------------------------------------------------------------------------------

def pct(x: float | None) -> str:
    """A fraction as a percentage with one decimal (0.9734 → '97.3%')."""
    return DASH if x is None else f"{x * 100:.1f}%"


def points(x: float | None) -> str:
    """A drop in percentage points; a gain (negative drop) is shown with its sign."""
    return DASH if x is None else f"{x:.2f} pts"


def ms(x: float | None) -> str:
    """Milliseconds with precision that suits the magnitude (0.0421, 1.23, 45.6, 1234)."""
    if x is None:
        return DASH
    for limit, digits in ((0.1, 4), (10, 3), (100, 2), (1000, 1)):
        if abs(x) < limit:
            return f"{x:.{digits}f}"
    return f"{x:.0f}"


def times(x: float | None) -> str:
    """A ratio as '2.31×'."""
    return DASH if x is None else f"{x:.2f}×"


def mb(x: float | None) -> str:
    return DASH if x is None else f"{x:.2f}"


def count(x: float | None) -> str:
    """Large counts in engineering units (FLOPs, parameters): 1.2 G, 345.6 k."""
    if x is None:
        return DASH
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.1f} {unit}"
    return f"{x:.0f}"


def seconds(x: float | None) -> str:
    if x is None:
        return DASH
    return f"{x:.1f} s" if x < 120 else f"{x / 60:.1f} min"


# ---- report facts ----------------------------------------------------------------------------

def verified(report: dict) -> bool:
    return bool(report["data"]["verified"])


def target_label(report: dict) -> str:
    """Target name, marked '(emulated)' when latency comes from this host standing in for it."""
    t = report["target"]
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


# ---- the candidates table ----------------------------------------------------------------------

COLUMNS = ("id", "plan", "steps", "status", "runtime", "p50 ms", "own p50 ms", "speed-up",
           "size MB",
           "size ratio", "accuracy", "drop", "agreement", "predicted", "meets constraints?",
           "notes")


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
             "predicted": DASH, "meets constraints?": DASH, "notes": "baseline"}
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
             "speed-up": times(m.get("speedup")) if ok else DASH,
             "size MB": mb(m.get("size_mb")) if ok else DASH,
             "size ratio": times(m.get("size_ratio")) if ok else DASH,
             "accuracy": accuracy_text(report, m) if ok else DASH,
             "drop": points(drop_points(report, m)) if ok else DASH,
             "agreement": agreement_text(m) if ok else DASH,
             "predicted": predicted_text(cand.get("predicted")),
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


def table_rows(report: dict) -> list[Row]:
    return [baseline_row(report)] + [candidate_row(report, c) for c in report["candidates"]]


# ---- the plot data -----------------------------------------------------------------------------

@dataclass
class Point:
    """One measured configuration in the latency/quality plane (y in percent)."""
    id: str
    label: str
    x: float
    y: float
    role: str  # baseline | chosen | ok | violates
    tooltip: str


def plot_points(report: dict) -> list[Point]:
    """The baseline and every candidate that was measured (failed ones have no numbers)."""
    out = []
    b = report["baseline"]
    base_q = baseline_quality(report)
    if base_q is not None:
        out.append(Point("base", "baseline", b["latency_ms"]["p50"], base_q * 100, "baseline",
                         f"baseline: {ms(b['latency_ms']['p50'])} ms, {pct(base_q)}"))
    for c in report["candidates"]:
        m = c.get("measured") or {}
        q = quality(report, m)
        p50 = (m.get("latency_ms") or {}).get("p50")
        if c["status"] != "ok" or q is None or p50 is None:
            continue
        role = "chosen" if c["id"] == chosen_id(report) else \
            ("ok" if c.get("meets_constraints") else "violates")
        tip = f"{c['id']} {c['name']}: {ms(p50)} ms ({times(m.get('speedup'))}), {pct(q)}"
        out.append(Point(c["id"], c["id"], p50, q * 100, role, tip))
    return out


def pareto_front(pts: Iterable[Point]) -> list[Point]:
    """Non-dominated points (lower latency and higher quality are better), by latency.

    A point is dominated when another is at least as fast and at least as good and strictly
    better in one of the two. Along the returned list both latency and quality increase.
    """
    front: list[Point] = []
    for p in sorted(pts, key=lambda p: (p.x, -p.y)):
        if not front or p.y > front[-1].y:
            front.append(p)
    return front


def quality_floor(report: dict) -> float | None:
    """The lowest acceptable plotted quality (percent): baseline minus the allowed drop."""
    base = baseline_quality(report)
    return None if base is None else base * 100 - allowed_drop(report)


# ---- hot spots -----------------------------------------------------------------------------------

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


# ---- when nothing qualified ----------------------------------------------------------------------

def closest_candidates(report: dict) -> list[dict]:
    by_id = candidate_by_id(report)
    return [by_id[i] for i in report.get("closest") or [] if i in by_id]


def needed_to_qualify(report: dict, cand: dict) -> list[str]:
    """The smallest changes of the factors that would have let `cand` qualify, in CLI words."""
    m = cand.get("measured") or {}
    f = report["factors"]
    needs = []
    drop = drop_points(report, m)
    if drop is None and not verified(report):
        drop = m.get("disagreement")
    if drop is not None and drop > allowed_drop(report) + 1e-9:
        needs.append(f"--max-drop {_ceil(drop, 2):g} (now {max_drop_text(report)})")
    p50 = (m.get("latency_ms") or {}).get("p50")
    if f.get("max_latency_ms") is not None and p50 is not None and p50 > f["max_latency_ms"]:
        needs.append(f"--max-latency {_ceil(p50, 2):g}ms (now {f['max_latency_ms']:g} ms)")
    size = m.get("size_mb")
    if f.get("max_size_mb") is not None and size is not None and size > f["max_size_mb"]:
        needs.append(f"--max-size {_ceil(size, 2):g}MB (now {f['max_size_mb']:g} MB)")
    if not needs and cand.get("violations"):
        needs.append("a different goal: it does not improve on the baseline for --goal "
                     f"{f['goal']}")
    return needs


def widen_hint(report: dict) -> str:
    """What else opens more options, given the factors used."""
    f = report["factors"]
    hints = []
    if f["retrain"] == "none":
        hints.append("a retraining budget (--retrain finetune --train-data ...) lets pruning "
                     "and distillation recover accuracy")
    if not verified(report):
        hints.append("validation data (--data) replaces the agreement proxy with real accuracy")
    hints.append("a larger --budget tries more variants")
    return "; ".join(hints) + "."


def _ceil(x: float, digits: int) -> float:
    scale = 10 ** digits
    return math.ceil(x * scale - 1e-9) / scale


# ---- summary and settings (label, value) lists -------------------------------------------------

def summary_items(report: dict) -> list[tuple[str, str]]:
    """Model, target and the four factors, for the header of both formats."""
    f, t, d = report["factors"], report["target"], report["data"]
    items = [("model format", report["model"]["format"]),
             ("input shape", "×".join(str(n) for n in report["model"]["input_shape"])),
             ("target", target_label(report)), ("device", t.get("device", DASH)),
             ("goal", f["goal"]), ("max accuracy drop", max_drop_text(report)),
             ("max latency", DASH if f.get("max_latency_ms") is None
              else f"{f['max_latency_ms']:g} ms"),
             ("max size", DASH if f.get("max_size_mb") is None else f"{f['max_size_mb']:g} MB"),
             ("retraining", f["retrain"]), ("search budget", seconds(f.get("budget_seconds"))),
             ("validation data", d.get("val") or "none (accuracy unverified)"),
             ("test data", d.get("test") or DASH)]
    if d.get("train"):
        items.append(("training data", d["train"]))
    return items


def baseline_items(report: dict) -> list[tuple[str, str]]:
    b = report["baseline"]
    lat = b["latency_ms"]
    items = [("latency p50 / p90", f"{ms(lat['p50'])} / {ms(lat.get('p90'))} ms"),
             ("size", f"{mb(b.get('size_mb'))} MB"),
             ("peak memory", DASH if b.get("peak_memory_mb") is None
              else f"{b['peak_memory_mb']:.0f} MB"),
             ("FLOPs / params", f"{count(b.get('flops'))} / {count(b.get('params'))}")]
    if verified(report):
        items.append(("accuracy val / test",
                      f"{pct(b.get('accuracy'))} / {pct(b.get('accuracy_test'))}"))
    return items


_HOST_KEYS = (("cpu_model", "CPU"), ("arch", "architecture"),
              ("cores_available", "cores available"), ("cores_logical", "logical cores"),
              ("cpu_quota", "cgroup CPU quota"),
              ("memory_mb", "memory (MB)"), ("isa", "ISA extensions"), ("os", "OS"),
              ("python", "Python"), ("torch", "torch"), ("onnxruntime", "onnxruntime"))


def settings_items(report: dict) -> list[tuple[str, str]]:
    """How the numbers were measured: where, with how many threads, emulated or not."""
    t, host, b = report["target"], report.get("host") or {}, report["baseline"]
    lat = b["latency_ms"]
    items = [("target", target_label(report))]
    if t.get("emulated"):
        items.append(("emulation", "latency measured on this host standing in for the device; "
                      "absolute numbers differ on the device, relative gains carry over best"))
    if t.get("description"):
        items.append(("target description", t["description"]))
    items += [("threads", str(t.get("threads") or DASH)),
              ("runtimes", ", ".join(t.get("runtimes") or []) or DASH),
              ("baseline runtime", b.get("runtime", DASH)),
              ("latency method", (report.get("measurement") or {}).get("latency", DASH)),
              ("baseline latency spread (cv)", DASH if lat.get("cv") is None
               else f"{lat['cv'] * 100:.1f}%")]
    for key, label in _HOST_KEYS:
        value = host.get(key)
        if value not in (None, "", []):
            items.append((f"host {label}", ", ".join(map(str, value))
                          if isinstance(value, list) else str(value)))
    items += [("advisor", report["tool"]["version"]), ("created", report["created"]),
              ("total time", seconds(report["timing"]["total_seconds"]))]
    return items


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


def test_drop(report: dict) -> float | None:
    """The chosen plan's accuracy drop on the held-out split, in points."""
    return (report.get("chosen") or {}).get("accuracy_drop_test")  # computed once, in analyze
