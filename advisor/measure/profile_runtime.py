"""One runtime's entry of a profile: export the artefact the runtime runs, measure its latency in
a fresh subprocess (`measure.latency`), and turn the statistics into the JSON-ready entry.

An export or measurement failure is a result (an entry with its error), not a crash.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from advisor.measure.latency import LatencyError, LatencyStats


def export_artefact(loaded, runtime: str, work: Path) -> tuple[dict[str, Any], Path | None]:
    """The file `runtime` runs, exported into `work`; failures become the entry's error."""
    from advisor.export import export_onnx, save_pt2

    if loaded.module is None or loaded.format == "onnx":  # an ONNX model (lifted or not)
        if runtime == "onnxruntime":
            return {"status": "ok"}, Path(loaded.onnx_path)
        return {"status": "skipped", "reason": "the model is ONNX: it runs on onnxruntime only"}, \
            None
    try:
        if runtime == "onnxruntime":
            info = export_onnx(loaded.module, work / "model.onnx", tuple(loaded.input_shape))
            return {"status": "ok", "export": {k: info.get(k) for k in
                                               ("dynamic_batch", "max_abs_diff", "size_bytes")}}, \
                Path(info["path"])
        if loaded.format == "torchscript" and loaded.path:
            return {"status": "ok", "export": {"note": "measured the TorchScript file as given"}}, \
                Path(loaded.path)
        return {"status": "ok"}, save_pt2(loaded.module, work / "model.pt2",
                                          tuple(loaded.input_shape))
    except Exception as e:  # noqa: BLE001 - an export failure is a result, not a crash
        if runtime == "torch" and loaded.format == "pt2" and loaded.path:
            return {"status": "ok", "export": {"note": "re-export failed; measured the input "
                                                       f".pt2 ({first_line(e)})"}}, \
                Path(loaded.path)
        return {"status": "error", "stage": "export", "error": first_line(e)}, None


def measure_entry(path: Path, runtime: str, shape, target, batch_size: int, warmup: int,
                  repeats: int, max_seconds: float, processes: int = 1) -> dict[str, Any]:
    """The latency entry of one runtime's artefact; a failed measurement becomes its error."""
    try:
        s = _latency(path, runtime, shape, target, batch_size, warmup, repeats, max_seconds,
                     processes)
    except LatencyError as e:
        return {"status": "error", "stage": "measure", "error_kind": e.kind, "error": e.message}
    return {"status": "ok", **_stats_entry(s)}


def _latency(path, runtime, shape, target, batch_size, warmup, repeats,
             max_seconds, processes: int = 1) -> LatencyStats:
    from advisor.measure.latency import measure_latency

    return measure_latency(path, runtime, shape, target=target, batch_size=batch_size,
                           warmup=warmup, repeats=repeats, max_seconds=max_seconds,
                           processes=processes)


def _stats_entry(s: LatencyStats) -> dict[str, Any]:
    r4 = lambda x: None if x is None else round(float(x), 4)  # noqa: E731
    return {"provider": s.provider, "device": s.device,
            "p50": r4(s.p50), "p90": r4(s.p90), "mean": r4(s.mean), "std": r4(s.std),
            "cv": r4(s.cv), "min": r4(s.min), "per_item_ms": r4(s.per_item_ms), "runs": s.runs,
            "warmup": s.warmup, "batch_size": s.batch_size, "threads": s.threads,
            "runtime_threads": s.runtime_threads, "affinity": s.affinity, "env": s.env,
            "peak_memory_mb": r4(s.cuda_peak_mb if s.device == "cuda" else s.peak_rss_mb),
            "peak_rss_mb": r4(s.peak_rss_mb), "runtime_memory_mb": r4(s.baseline_rss_mb),
            "model_memory_mb": r4(s.model_peak_mb), "memory_cap_mb": r4(s.memory_cap_mb),
            "cpu_share": s.cpu_share, "preemptions_per_s": s.preemptions_per_s,
            "load_average": s.load_average, "timer": s.timer,
            "emulated": s.emulated, "worker_pid": s.pid, "processes": max(1, len(s.process_p50s)),
            "process_p50s": s.process_p50s, "pooled_p50": r4(s.pooled_p50)}


def first_line(e: BaseException) -> str:
    """'ExceptionType: first non-empty line of the message', at most 300 characters."""
    text = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), "")
    return f"{type(e).__name__}: {text}"[:300] if text else type(e).__name__
