"""Latency worker: `python -m advisor.measure._worker REQUEST.json` times one artefact on one
runtime in a fresh process and writes the raw samples to the request's `result_path`.

A fresh process per model and runtime means no candidate inherits another's allocator state,
thread pools or caches. The parent (`advisor.measure.latency`) sets the environment (thread
counts, glibc allocator thresholds); this process pins itself to the requested cores *before*
importing the runtime (so the runtime's thread pool is created on them), sets the runtime's
thread count, loads the model, checks an emulated memory budget and caps its address space to
it (see `_enforce_budget`), then warms up with the batch being measured and times repeats until
the count or the time budget is reached: `perf_counter` under `torch.inference_mode()` on CPU,
CUDA events + synchronize on GPU.

Only the runtime being measured is imported: an ONNX Runtime measurement never loads torch.
Started by `advisor.measure.latency` (ADVISOR_PARENT_PID set), it first arranges to die with
its parent (`advisor.procs.die_with_parent`).
"""
from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from advisor.measure import memory

# environment variables the parent sets and the result reports back as seen here
RECORDED_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


WARMUP_MIN_SECONDS = 0.3  # warm-up lasts at least this long (capped by 30% of max_seconds)
TIMED_MIN_SECONDS = 0.5  # timed calls span at least this long (capped by max_seconds)


class WorkerError(Exception):
    """A failure with a one-line message meant for the user."""


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m advisor.measure._worker REQUEST.json", file=sys.stderr)
        return 2
    req = json.loads(Path(argv[0]).read_text())
    result: dict[str, Any] = {"pid": os.getpid()}
    try:
        result.update(measure(req))
        result["ok"] = True
    except BaseException as e:  # noqa: BLE001 - every failure is reported to the parent
        oom = memory.is_out_of_memory(e)
        result.update(ok=False, kind="memory" if oom else "error", error=_one_line(e),
                      traceback=traceback.format_exc(limit=8))
    # the device agent's promise (and its test): an ONNX Runtime measurement never loads torch
    result["torch_imported"] = "torch" in sys.modules
    Path(req["result_path"]).write_text(json.dumps(result))
    return 0


def run_worker_process(request: dict[str, Any], env: dict[str, str], work: Path,
                       timeout: float, who: str = "the worker") -> dict[str, Any]:
    """Run this module on `request` in a fresh process (its files in `work`, which the caller
    owns) and return its result, or `{"ok": False, "kind", "error"}` saying how it ended. The
    one launcher of the worker: `advisor.measure.latency` here, the device agent there.
    `procs.run_child` kills the worker on any exception, KeyboardInterrupt included, even one
    that arrives while the worker is starting."""
    import subprocess

    from advisor import procs

    req_path, res_path = work / "request.json", work / "result.json"
    req_path.write_text(json.dumps({**request, "result_path": str(res_path)}))
    try:
        proc = procs.run_child([sys.executable, "-m", "advisor.measure._worker", str(req_path)],
                               env=env, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return {"ok": False, "kind": "timeout",
                "error": f"{who} did not finish within {timeout:.0f} s"}
    if res_path.is_file():
        return json.loads(res_path.read_text())
    last = next((ln for ln in reversed(proc.stderr.strip().splitlines()) if ln.strip()), "")
    killed = proc.returncode < 0
    return {"ok": False, "kind": "memory" if proc.returncode == -9 else "error",
            "error": f"{who} exited with code {proc.returncode}"
                     f"{' (killed by signal ' + str(-proc.returncode) + ')' if killed else ''}"
                     f"{': ' + last[:300] if last else ''}"}


def _setup_for(req: dict[str, Any]):
    runtime = req["runtime"]
    if runtime == "torch":
        return _torch_setup(req)
    if runtime == "onnxruntime":
        return _ort_setup(req)
    raise WorkerError(f"unknown runtime {runtime!r}")


def measure(req: dict[str, Any]) -> dict[str, Any]:
    cores = req.get("cores")
    if cores and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cores)
    if req.get("reference"):
        return measure_paired(req)
    device = req.get("device", "cpu")
    setup = _setup_for(req)
    before_load = memory.rss_mb()
    start = time.perf_counter()
    run, sync, info = setup()
    load_seconds = time.perf_counter() - start
    # the runtime's own footprint: before loading for ONNX Runtime; for torch, what is resident
    # after loading minus the weights, because torch.export.load imports ~100 MB of Python
    # modules (sympy, networkx, ...) that a deployment would not count against the model
    weights_mb = info.pop("weights_mb", None)
    baseline_rss = memory.rss_mb() - weights_mb if weights_mb is not None else before_load
    _check_batch(run)
    cap = _enforce_budget(req.get("memory_budget_mb"), baseline_rss)
    # warm-up and timing last at least a minimum time, not only a count: at 0.2 ms a call, 10
    # warm-up calls (2 ms) left the first of three profiles up to 25% slower here, and 100 timed
    # calls (20 ms) sampled one moment of a VM whose speed drifts
    min_warm = min(WARMUP_MIN_SECONDS, req["max_seconds"] * 0.3)
    warm = _loop(run, sync, req["warmup"], req["max_seconds"] * 0.3, min_runs=1,
                 min_seconds=min_warm)
    timer = info.pop("timer_fn", None)
    cpu0, switches0, wall0 = memory.cpu_seconds(), memory.preemptions(), time.perf_counter()
    samples = _loop(run, sync, req["repeats"], req["max_seconds"], min_runs=min(3, req["repeats"]),
                    timer=timer, min_seconds=min(TIMED_MIN_SECONDS, req["max_seconds"]))
    wall = max(1e-9, time.perf_counter() - wall0)
    # CPU time per requested core while timing (a runtime may leave threads idle on a small
    # model, so below 1 is not proof of contention), and how often the scheduler preempted us
    # (other runnable processes wanted our cores): together they say whether timing was disturbed
    cpu_share = (memory.cpu_seconds() - cpu0) / (wall * int(req["threads"]))
    preempted_per_s = (memory.preemptions() - switches0) / wall
    after = info.pop("after_fn", None)
    if after is not None:
        info.update(after())
    peak = memory.peak_rss_mb()
    return {"samples_ms": samples, "warmup_runs": len(warm), "load_seconds": load_seconds,
            "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else None,
            "env": {k: os.environ[k] for k in RECORDED_ENV if k in os.environ},
            "baseline_rss_mb": baseline_rss, "peak_rss_mb": peak,
            "model_peak_mb": max(0.0, peak - baseline_rss), "address_cap_mb": cap,
            "cpu_share": round(cpu_share, 3), "preemptions_per_s": round(preempted_per_s, 1),
            "load_average": _load_average(),
            "device": device, **info}


def measure_paired(req: dict[str, Any]) -> dict[str, Any]:
    """Time the artefact and a reference (the baseline) in this one process, alternating short
    blocks of calls, so both see the same machine state: their ratio stays meaningful on a
    loaded host where two separate measurements drift apart. No memory budget here (two models
    are resident); memory comes from the single-model measurement."""
    run, sync, info = _setup_for(req)()
    ref_run, ref_sync, _ = _setup_for({**req, "artifact": req["reference"]})()
    info.pop("timer_fn", None)
    info.pop("after_fn", None)
    info.pop("weights_mb", None)
    _check_batch(run)
    _check_batch(ref_run)
    half = req["max_seconds"] * 0.15
    _loop(ref_run, ref_sync, req["warmup"], half, min_runs=1, min_seconds=min(0.2, half))
    _loop(run, sync, req["warmup"], half, min_runs=1, min_seconds=min(0.2, half))
    block = max(1, int(req.get("block", 5)))
    samples: list[float] = []
    ref_samples: list[float] = []
    begin = time.perf_counter()
    while len(samples) < req["repeats"]:
        ref_samples += _loop(ref_run, ref_sync, block, 1e9, min_runs=block)
        samples += _loop(run, sync, block, 1e9, min_runs=block)
        if len(samples) >= min(3 * block, req["repeats"]) and \
                time.perf_counter() - begin >= req["max_seconds"]:
            break
    return {"samples_ms": samples, "reference_samples_ms": ref_samples, "warmup_runs": 0,
            "block": block, "load_average": _load_average(),
            "device": req.get("device", "cpu"), **info}


def _enforce_budget(budget_mb: float | None, baseline_rss: float) -> float | None:
    """Emulate a memory budget: the model (weights + the first call's activations, i.e. peak RSS
    above the runtime's own footprint) must fit it, and the address space is then capped so that
    the timed calls cannot grow beyond it. The cap comes after loading and the first call because
    lazy imports inside the runtime fail in confusing ways under a tight RLIMIT_AS."""
    if not budget_mb:
        return None
    used = memory.peak_rss_mb() - baseline_rss
    if used > budget_mb:
        raise MemoryError(f"the model needs {used:.0f} MB beyond the runtime, more than the "
                          f"{budget_mb:g} MB budget")
    return memory.cap_address_space(budget_mb - used)


def _loop(run: Callable[[], Any], sync: Callable[[], None], count: int, max_seconds: float,
          min_runs: int, timer: Callable[[Callable[[], Any]], float] | None = None,
          min_seconds: float = 0.0) -> list[float]:
    """Run `count` times and for at least `min_seconds`, but stop at `max_seconds` (after at
    least `min_runs`); samples in ms."""
    samples: list[float] = []
    begin = time.perf_counter()
    while len(samples) < count or time.perf_counter() - begin < min_seconds:
        if timer is not None:
            samples.append(timer(run))
        else:
            t0 = time.perf_counter()
            run()
            sync()
            samples.append((time.perf_counter() - t0) * 1e3)
        if len(samples) >= min_runs and time.perf_counter() - begin >= max_seconds:
            break
    return samples


def _torch_setup(req: dict[str, Any]):
    import warnings

    import torch

    threads = int(req["threads"])
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    device = req.get("device", "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise WorkerError("no CUDA device in the measuring process (torch.cuda.is_available() "
                          "is False)")

    def setup():
        path = req["artifact"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if path.endswith(".pt2"):
                module = torch.export.load(path).module()
            else:  # a TorchScript archive (the user's own file, already loaded by model_io)
                module = torch.jit.load(path, map_location="cpu")
        dtype = next((p.dtype for p in module.parameters()
                      if p.dtype in (torch.float16, torch.bfloat16)), torch.float32)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()  # the peak then includes the weights
        module = module.to(device)
        gen = torch.Generator().manual_seed(int(req.get("seed", 0)))
        x = torch.randn(_shape(req), generator=gen).to(device=device, dtype=dtype)
        tensors = list(module.parameters()) + list(module.buffers())
        info: dict[str, Any] = {"runtime_threads": torch.get_num_threads(),
                                "provider": None, "timer": "perf_counter",
                                "versions": {"torch": torch.__version__},
                                "weights_mb": sum(t.numel() * t.element_size()
                                                  for t in tensors) / 2 ** 20}

        def run():
            with torch.inference_mode():
                return module(x)

        if device == "cuda":
            def cuda_timer(fn) -> float:
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                torch.cuda.synchronize()
                return start.elapsed_time(end)

            info.update(timer="cuda_events", timer_fn=cuda_timer, after_fn=lambda: {
                "cuda_peak_mb": torch.cuda.max_memory_allocated() / 2 ** 20})
            sync = torch.cuda.synchronize
        else:
            def sync():
                return None
        return run, sync, info

    return setup


def _ort_setup(req: dict[str, Any]):
    import numpy as np
    import onnxruntime as ort

    threads = int(req["threads"])
    provider = req.get("provider") or "CPUExecutionProvider"
    available = ort.get_available_providers()
    if provider not in available:
        raise WorkerError(f"onnxruntime has no {provider} on this host (available: "
                          f"{', '.join(available)})")

    def setup():
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        sess = ort.InferenceSession(req["artifact"], so, providers=[provider])
        inp = sess.get_inputs()[0]
        dtype = {"tensor(float16)": np.float16, "tensor(double)": np.float64}.get(inp.type,
                                                                                   np.float32)
        x = np.random.default_rng(int(req.get("seed", 0))).standard_normal(
            _shape(req), dtype=np.float32).astype(dtype, copy=False)
        feeds = {inp.name: x}
        _check_static_batch(inp.shape, _shape(req))

        def run():
            return sess.run(None, feeds)

        return run, (lambda: None), {"runtime_threads": so.intra_op_num_threads,
                                     "provider": sess.get_providers()[0], "timer": "perf_counter",
                                     "versions": {"onnxruntime": ort.__version__}}

    return setup


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _shape(req: dict[str, Any]) -> tuple[int, ...]:
    shape = [int(d) for d in req["input_shape"]]
    return (int(req["batch_size"]),) + tuple(shape[1:])


def _check_static_batch(model_shape: list, shape: tuple[int, ...]) -> None:
    if model_shape and isinstance(model_shape[0], int) and model_shape[0] != shape[0]:
        raise WorkerError(f"the ONNX model has a fixed batch of {model_shape[0]}; it cannot run "
                          f"batch {shape[0]} (re-export it with a dynamic batch dimension)")


def _check_batch(run: Callable[[], Any]) -> None:
    """One call outside the timed loops, so a shape error reads as such, not as a timing."""
    try:
        run()
    except Exception as e:
        if memory.is_out_of_memory(e):
            raise
        raise WorkerError(f"the model failed on the measurement input: {_one_line(e)}") from e


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    if isinstance(e, WorkerError):
        return text
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return f"{type(e).__name__}: {first}"[:400] if first else type(e).__name__


if __name__ == "__main__":
    if os.environ.get("ADVISOR_PARENT_PID"):  # started by advisor.measure.latency
        from advisor.procs import die_with_parent

        die_with_parent()  # a worker that outlives its parent would go on measuring
    sys.exit(main(sys.argv[1:]))
