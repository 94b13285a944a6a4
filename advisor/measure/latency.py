"""Latency on a target: one fresh subprocess per artefact and runtime, settings made explicit.

`measure_latency` runs `python -m advisor.measure._worker` with
- `OMP_NUM_THREADS` / `MKL_NUM_THREADS` / `OPENBLAS_NUM_THREADS` = the thread count, which the
  worker also sets as `torch.set_num_threads` or ONNX Runtime's `intra_op_num_threads`;
- CPU affinity to that many cores (`os.sched_setaffinity`, set before the runtime starts);
- glibc's `MALLOC_MMAP_THRESHOLD_` and `MALLOC_TRIM_THRESHOLD_` set large: with glibc's dynamic
  defaults large activation buffers are mmap'ed and unmapped on every call, and the same CNN
  measured 28 ms or 19.5 ms on this kind of machine depending on these two variables;
- on an emulated target with a memory budget, an address-space cap (see `measure.memory`).
Everything that was set is recorded in the returned `LatencyStats`, with the host.

The in-process micro-benchmark for single layers and in-pass decisions (is a factorized layer
faster than the dense one?), where a subprocess per candidate would cost more than it tells, is
`advisor.measure.timer` (`time_inprocess`, `time_interleaved`).
"""
from __future__ import annotations

import math
import os
import shutil
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from advisor.errors import AdvisorError, TargetError

__all__ = ["LatencyStats", "LatencyError", "measure_latency", "measurement_settings",
           "summarise", "ALLOCATOR_ENV"]

from advisor.measure.memory import ALLOCATOR_ENV  # noqa: E402 - re-exported here
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


class LatencyError(AdvisorError):
    """The worker could not measure the artefact; `kind` is "memory" (budget exceeded),
    "timeout" or "error"."""

    def __init__(self, message: str, hint: str | None = None, kind: str = "error"):
        super().__init__(message, hint)
        self.kind = kind


@dataclass
class LatencyStats:
    """Summary of one latency measurement (milliseconds per call of `batch_size` inputs)."""

    p50: float
    p90: float
    mean: float
    std: float
    cv: float
    min: float
    runs: int
    warmup: int
    batch_size: int
    runtime: str
    provider: str | None = None
    threads: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    affinity: list[int] | None = None
    peak_rss_mb: float | None = None
    emulated: bool = False
    samples_ms: list[float] = field(default_factory=list)
    device: str = "cpu"
    runtime_threads: int | None = None  # as the runtime itself reports it
    baseline_rss_mb: float | None = None  # after importing the runtime, before the model
    model_peak_mb: float | None = None  # peak RSS minus the runtime's own footprint
    cuda_peak_mb: float | None = None
    memory_cap_mb: float | None = None
    timer: str = "perf_counter"
    pid: int | None = None
    load_seconds: float | None = None
    cpu_share: float | None = None  # CPU time / (wall time x threads) while timing
    preemptions_per_s: float | None = None  # involuntary context switches while timing
    load_average: list[float] | None = None  # host load when the timing ended
    host: dict[str, Any] = field(default_factory=dict)
    process_p50s: list[float] = field(default_factory=list)  # one per worker process
    pooled_p50: float | None = None  # p50 of all workers' samples (p50 = median of process_p50s)

    @property
    def per_item_ms(self) -> float:
        return self.p50 / max(1, self.batch_size)

    def to_json(self, samples: bool = False) -> dict[str, Any]:
        d = asdict(self)
        if not samples:
            d.pop("samples_ms")
        return d


def summarise(samples_ms: list[float], **fields: Any) -> LatencyStats:
    """Percentiles, mean, std and coefficient of variation of `samples_ms`."""
    if not samples_ms:
        raise ValueError("no latency samples")
    xs = sorted(float(x) for x in samples_ms)
    mean = statistics.fmean(xs)
    std = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return LatencyStats(p50=_percentile(xs, 50), p90=_percentile(xs, 90), mean=mean, std=std,
                        cv=std / mean if mean > 0 else 0.0, min=xs[0], runs=len(xs),
                        samples_ms=[float(x) for x in samples_ms], **fields)


def _percentile(sorted_xs: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    pos = (len(sorted_xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(sorted_xs) - 1)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (pos - lo)


def measurement_settings(target=None, threads: int | None = None) -> dict[str, Any]:
    """Threads, cores to pin to, and environment for a measurement on `target`.

    Threads: explicit > the target's > every core this process may use. The worker is pinned to
    the first `threads` of those cores (all of them when more threads than cores are asked).
    """
    if getattr(target, "link", None) is not None:
        # on a device the agent pins to the device's cores; None = every core it may use
        n = threads or target.threads
        return {"threads": int(n) if n else None, "cores": None, "env": dict(ALLOCATOR_ENV)}
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
        list(range(os.cpu_count() or 1))
    n = int(threads or getattr(target, "threads", None) or len(allowed))
    if n < 1:
        raise TargetError(f"threads must be >= 1 (got {n})")
    cores = allowed[:n] if n <= len(allowed) else allowed
    env = {"OMP_NUM_THREADS": str(n), "MKL_NUM_THREADS": str(n), "OPENBLAS_NUM_THREADS": str(n),
           **ALLOCATOR_ENV}
    return {"threads": n, "cores": cores, "env": env}


def measure_latency(artifact_path: str | os.PathLike, runtime: str, input_shape, *,
                    target=None, threads: int | None = None, batch_size: int | None = None,
                    warmup: int = 10, repeats: int = 100, max_seconds: float = 10.0,
                    timeout: float | None = None, processes: int = 1) -> LatencyStats:
    """Time `artifact_path` (.pt2 or TorchScript for "torch", .onnx for "onnxruntime") in a
    fresh subprocess on `target` (None = this host's CPU, all cores).

    `processes` > 1 repeats the whole measurement in that many fresh workers, one after the
    other, and pools their samples (`repeats` and `max_seconds` are per worker). Measured here:
    at sub-millisecond latencies two fresh processes differ by up to ~8% in p50 (memory layout,
    thread placement) while one process's median is stable to <1%, so more processes, not more
    repeats, make a profile repeatable. Each worker's p50 is kept in `process_p50s`, and the
    reported p50 is their median: now and then one fresh worker runs ~35% slower throughout
    (measured here on the 2-thread cpu target: process p50s 0.119 / 0.120 / 0.161 ms), which
    shifts a pooled p50 but not the median of three. p90, mean and cv stay pooled, so that
    slow worker still shows in the spread."""
    from advisor.measure.host import detect_host

    path = Path(artifact_path)
    if not path.is_file():
        raise LatencyError(f"no model file to measure at {path}")
    if runtime not in ("torch", "onnxruntime"):
        raise TargetError(f"unknown runtime {runtime!r}", "use torch or onnxruntime")
    check_measurable(runtime, target)
    device = getattr(target, "device", "cpu")
    provider = None
    if target is not None:
        from advisor.targets import target_available
        ok, why = target_available(target)
        if not ok:
            raise TargetError(f"target {target.name!r} cannot be measured on this host: {why}",
                              "measure on the device with `advisor profile --json` and pass "
                              "--from-profile")
        provider = target.runtime(runtime).provider
    if warmup < 0 or repeats < 1 or max_seconds <= 0 or processes < 1:
        raise LatencyError(f"invalid measurement settings: warmup={warmup}, repeats={repeats}, "
                           f"max_seconds={max_seconds}, processes={processes}")
    shape = [int(d) for d in input_shape]
    batch = int(batch_size or shape[0])
    settings = measurement_settings(target, threads)
    budget = getattr(target, "memory_budget_mb", None) if getattr(target, "emulated", False) \
        else None
    request = {"artifact": str(path.resolve()), "runtime": runtime, "provider": provider,
               "device": device, "input_shape": shape, "batch_size": batch,
               "threads": settings["threads"], "cores": settings["cores"], "warmup": int(warmup),
               "repeats": int(repeats), "max_seconds": float(max_seconds),
               "memory_budget_mb": budget, "seed": 0}
    results = []
    for _ in range(int(processes)):
        result = _run_worker(request, settings["env"], timeout or max(300.0, 10 * max_seconds),
                             target)
        if not result.get("ok"):
            break
        results.append(result)
    if not result.get("ok"):
        kind = result.get("kind", "error")
        where = f"{path.name} on {runtime}"
        if kind == "memory":
            what = f"{where} ran out of memory" + (
                f" under the {budget:g} MB budget of target {getattr(target, 'name', '?')!r}"
                if budget else "")
            raise LatencyError(f"{what} ({result.get('error')})", kind="memory",
                               hint="a smaller model, int8 weights or a smaller batch might fit")
        raise LatencyError(f"measuring {where} failed: {result.get('error')}", kind=kind)
    samples = [x for r in results for x in r["samples_ms"]]
    raw_p50s = [_percentile(sorted(r["samples_ms"]), 50) for r in results]
    process_p50s = [round(x, 4) for x in raw_p50s]
    peak = max((r.get("peak_rss_mb") or 0.0 for r in results), default=None) or None
    stats = summarise(
        samples, process_p50s=process_p50s if len(results) > 1 else [],
        warmup=int(result.get("warmup_runs", warmup)), batch_size=batch,
        runtime=runtime, provider=result.get("provider"),
        threads=result.get("threads") or settings["threads"],
        env=result.get("env", {}), affinity=result.get("affinity"),
        peak_rss_mb=peak, emulated=bool(getattr(target, "emulated", False)),
        device=device, runtime_threads=result.get("runtime_threads"),
        baseline_rss_mb=result.get("baseline_rss_mb"), model_peak_mb=result.get("model_peak_mb"),
        cuda_peak_mb=result.get("cuda_peak_mb"), memory_cap_mb=result.get("address_cap_mb"),
        timer=result.get("timer", "perf_counter"), pid=result.get("pid"),
        load_seconds=result.get("load_seconds"), cpu_share=result.get("cpu_share"),
        preemptions_per_s=result.get("preemptions_per_s"),
        load_average=result.get("load_average"), host=result.get("device_host") or detect_host())
    if len(results) > 1:
        stats.pooled_p50, stats.p50 = stats.p50, statistics.median(raw_p50s)
    return stats


@dataclass
class PairedStats:
    """An artefact timed against a reference in one process (alternating blocks of calls)."""

    p50: float
    reference_p50: float
    speedup: float  # reference min / min (see measure_speedup)
    speedup_p50: float  # reference p50 / p50, for comparison
    min: float
    reference_min: float
    runs: int
    block: int
    runtime: str
    load_average: list[float] | None = None
    # the speed-up's interval from consecutive stretches of the run (`speedup_interval`)
    speedup_low: float | None = None
    speedup_high: float | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# a paired run is cut into this many consecutive stretches to see how much its ratio moves
SEGMENTS = 5


def segment_speedups(samples: list[float], reference: list[float], segments: int = SEGMENTS
                     ) -> list[float]:
    """The ratio of fastest calls within each of `segments` consecutive stretches of a paired
    run (samples in time order, the two lists interleaved block by block): how much the
    speed-up moves with the machine's state. Fewer stretches when the run is short."""
    n = min(len(samples), len(reference))
    k = max(1, min(segments, n // 3))
    out = []
    for i in range(k):
        lo, hi = i * n // k, (i + 1) * n // k
        xs, rs = samples[lo:hi], reference[lo:hi]
        if xs and rs and min(xs) > 0:
            out.append(min(rs) / min(xs))
    return out


def speedup_interval(parts: list[float], estimate: float) -> tuple[float, float] | None:
    """An interval for the speed-up from its stretches' speed-ups (`segment_speedups`): the
    median ± 1.58·IQR/√k (a box plot's notch: two whose notches do not overlap differ, at
    roughly 95%; McGill, Tukey & Larsen 1978), widened to hold `estimate` (the whole run's
    ratio).

    Why not the stretches' min–max: that is how far one stretch alone may land, and one slow
    stretch on a noisy host stretched it over nearly every candidate (1.8–4.5x), so every plan
    "tied"; the notch rests on all stretches, is not moved by one outlier, and shrinks with
    their number."""
    values = sorted(x for x in parts if x > 0)
    if len(values) < 2 or estimate <= 0:
        return None
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    half = 1.58 * (q3 - q1) / math.sqrt(len(values))
    return min(median - half, estimate), max(median + half, estimate)


def measure_speedup(artifact_path: str | os.PathLike, reference_path: str | os.PathLike,
                    runtime: str, input_shape, *, target=None, threads: int | None = None,
                    warmup: int = 10, repeats: int = 200, max_seconds: float = 4.0,
                    block: int = 5, timeout: float | None = None) -> PairedStats:
    """Speed-up of `artifact_path` over `reference_path` (same runtime), timed in ONE fresh
    process in alternating blocks of `block` calls.

    Why: two separate worker processes differ by up to ~8% at sub-millisecond latencies, and on
    a shared host the load changes between them (measured here: three int8 models that differ
    only in their calibration scales timed 1.2x-2.3x faster than the baseline in separate
    processes). Interleaving exposes both models to the same conditions, so the ratio, which
    is what the search ranks by, stays stable.

    The speed-up is the ratio of the two *fastest* calls: other processes only ever add time,
    so the minimum is the cost of the model itself (the reasoning of Python's `timeit`).
    Measured here on the 2-thread cpu target with a neighbour busy, four paired runs of the same
    int8 model gave min ratios 2.28-2.35x but p50 ratios 1.54-3.57x (a 2-thread pool stalls
    whenever the other core is taken); on a 1-thread target both agree (1.57x every time).
    `speedup_p50` is kept for comparison."""
    for p in (artifact_path, reference_path):
        if not Path(p).is_file():
            raise LatencyError(f"no model file to measure at {p}")
    if runtime not in ("torch", "onnxruntime"):
        raise TargetError(f"unknown runtime {runtime!r}", "use torch or onnxruntime")
    if warmup < 0 or repeats < 1 or max_seconds <= 0 or block < 1:
        raise LatencyError(f"invalid measurement settings: warmup={warmup}, repeats={repeats}, "
                           f"max_seconds={max_seconds}, block={block}")
    check_measurable(runtime, target)
    provider = target.runtime(runtime).provider if target is not None else None
    settings = measurement_settings(target, threads)
    shape = [int(d) for d in input_shape]
    request = {"artifact": str(Path(artifact_path).resolve()),
               "reference": str(Path(reference_path).resolve()), "runtime": runtime,
               "provider": provider, "device": getattr(target, "device", "cpu"),
               "input_shape": shape, "batch_size": shape[0], "threads": settings["threads"],
               "cores": settings["cores"], "warmup": int(warmup), "repeats": int(repeats),
               "max_seconds": float(max_seconds), "block": int(block), "seed": 0}
    result = _run_worker(request, settings["env"], timeout or max(300.0, 10 * max_seconds),
                         target)
    if not result.get("ok"):
        raise LatencyError(f"timing {Path(artifact_path).name} against "
                           f"{Path(reference_path).name} on {runtime} failed: "
                           f"{result.get('error')}", kind=result.get("kind", "error"))
    parts = segment_speedups(result["samples_ms"], result["reference_samples_ms"])
    xs, rs = sorted(result["samples_ms"]), sorted(result["reference_samples_ms"])
    cand, ref = _percentile(xs, 50), _percentile(rs, 50)
    speedup = rs[0] / xs[0] if xs[0] > 0 else 0.0
    interval = speedup_interval(parts, speedup)
    return PairedStats(p50=cand, reference_p50=ref, speedup=speedup,
                       speedup_p50=ref / cand if cand > 0 else 0.0, min=xs[0],
                       reference_min=rs[0],
                       runs=len(result["samples_ms"]), block=int(result.get("block", block)),
                       runtime=runtime, load_average=result.get("load_average"),
                       speedup_low=interval[0] if interval else None,
                       speedup_high=interval[1] if interval else None)


def check_measurable(runtime: str, target) -> None:
    """A device reached over its agent runs ONNX models only: a torch-only artefact (CSR sparse
    layers, a model that did not export) is not measurable there, and is never measured on this
    host in its place."""
    if getattr(target, "link", None) is not None and runtime != "onnxruntime":
        raise LatencyError(f"not measurable on the device {target.link.label}: its agent runs "
                           f"ONNX models only, and this artefact runs on {runtime}",
                           kind="unmeasurable")


def _run_worker(request: dict[str, Any], env_vars: dict[str, str], timeout: float,
                target=None) -> dict:
    """Run one worker: on the target's device when it has one (`advisor.device.remote`), else
    here. It dies with this process (see `advisor.procs.die_with_parent`); an
    exception here (KeyboardInterrupt, SIGTERM as `procs.Interrupted`, a timeout) kills it,
    and its request directory (`advisor-latency-PID-*`) is removed on every exit path."""
    if getattr(target, "link", None) is not None:
        from advisor.device.remote import run_worker_remote
        return run_worker_remote(target.link, request, timeout)
    from advisor.measure._worker import run_worker_process
    from advisor.procs import child_env, scratch_dir

    env = {**os.environ, **env_vars, **child_env()}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
    tmp = scratch_dir("latency")
    try:
        return run_worker_process(request, env, tmp, timeout)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
