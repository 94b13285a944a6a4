"""The (label, value) lists of the report's header and settings: model, target and the four
factors; the baseline's measurements; and how the numbers were measured (host, threads, runtimes).
"""
from __future__ import annotations

from advisor.report.facts import max_drop_text, target_label, verified
from advisor.report.fmt import DASH, count, mb, ms, pct, seconds


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
    if d.get("preprocess_text"):
        items.append(("preprocessing", d["preprocess_text"]))
    m = report["model"]
    if m.get("arch"):
        kw = m.get("arch_kwargs")
        items.insert(1, ("architecture", m["arch"] + (f" {_kwargs_text(kw)}" if kw else "")))
    elif m.get("layers"):
        items.insert(1, ("layers", m["layers"]))
    return items


def _kwargs_text(kwargs: dict) -> str:
    import json
    return json.dumps(kwargs, sort_keys=True)


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
              ("python", "Python"), ("torch", "torch"), ("onnxruntime", "onnxruntime"),
              ("governor", "CPU governor"))


def settings_items(report: dict) -> list[tuple[str, str]]:
    """How the numbers were measured: where, with how many threads, emulated or not."""
    t, host, b = report["target"], report.get("host") or {}, report["baseline"]
    lat = b["latency_ms"]
    items = [("target", target_label(report))]
    if t.get("emulated"):
        items.append(("emulation", "latency measured on this host standing in for the device; "
                      "absolute numbers differ on the device, relative gains carry over best"))
    on = t.get("measured_on")
    if on:
        items.append(("measured on", f"the device {on['label']} {on['how']}, by advisor's agent "
                      f"{on.get('agent_version') or ''}: every latency, paired speed-up, peak "
                      "memory and accuracy comes from the device's ONNX Runtime"))
    if t.get("description"):
        items.append(("target description", t["description"]))
    items += [("threads", str(t.get("threads") or DASH)),
              ("runtimes", ", ".join(t.get("runtimes") or []) or DASH),
              ("baseline runtime", b.get("runtime", DASH)),
              ("latency method", (report.get("measurement") or {}).get("latency", DASH)),
              ("drop bound (≤ in the table)",
               (report.get("measurement") or {}).get("accuracy_bound", DASH)),
              ("baseline latency spread (cv)", DASH if lat.get("cv") is None
               else f"{lat['cv'] * 100:.1f}%")]
    for key, label in _HOST_KEYS:
        value = host.get(key)
        if value not in (None, "", []):
            items.append((f"{'device' if on else 'host'} {label}", ", ".join(map(str, value))
                          if isinstance(value, list) else str(value)))
    items += [("advisor", report["tool"]["version"]), ("created", report["created"]),
              ("total time", seconds(report["timing"]["total_seconds"]))]
    return items
