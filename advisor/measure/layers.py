"""Hot spots: where the forward pass spends its time, per layer and per kind (conv/linear/other).

The rule engine reads the kind shares (a conv-dominated network gains from pruning channels and
static int8; a linear-dominated one from dynamic int8 and CSR sparsity), and the report shows the
top layers. Three methods, best first:

- `module-hooks`: an eager module with real layers gets a `torch.profiler.record_function` range
  around every leaf module (forward pre/post hooks); a layer's time is its range's inclusive CPU
  time, and time outside every leaf (functional adds, flatten, ...) is one "(outside layers)" row.
- `op-types`: a graph without layer modules (torch.export / TorchScript) or a CUDA run is broken
  down by operator type (`aten::mkldnn_convolution`, `aten::addmm`, ...) using self times.
- `onnxruntime-nodes`: an ONNX model is run with ONNX Runtime's profiler; per-node kernel times
  (nodes as ORT names them after fusion), session overhead as a "(runtime overhead)" row.

Shares always sum to 1. Times are per forward pass, the median over `runs` passes after warm-up,
measured in this process with the target's thread count (the absolute numbers include profiler
overhead; the shares are what matters).
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["LayerTime", "Hotspots", "hotspots", "onnx_hotspots", "layer_kind", "op_kind",
           "KINDS"]

KINDS = ("conv", "linear", "other")
_TOTAL = "advisor::forward"
_LAYER = "advisor::layer::"


@dataclass
class LayerTime:
    name: str
    kind: str  # conv | linear | other
    type: str  # module class, operator or ONNX op type
    ms: float  # per forward pass
    share: float  # of the whole forward pass


@dataclass
class Hotspots:
    method: str  # module-hooks | op-types | onnxruntime-nodes
    layers: list[LayerTime]  # sorted by time, largest first
    kind_shares: dict[str, float]
    total_ms: float
    runs: int
    threads: int | None = None
    batch_size: int = 1
    device: str = "cpu"
    notes: list[str] = field(default_factory=list)

    def top(self, n: int = 10) -> list[LayerTime]:
        return self.layers[:n]

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["layers"] = [{**asdict(r), "ms": round(r.ms, 5), "share": round(r.share, 5)}
                       for r in self.layers]
        d["kind_shares"] = {k: round(v, 5) for k, v in self.kind_shares.items()}
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Hotspots":
        layers = [LayerTime(r["name"], r.get("kind", "other"), r.get("type", ""),
                            float(r.get("ms", 0.0)), float(r.get("share", 0.0)))
                  for r in d.get("layers", [])]
        return cls(method=d.get("method", "unknown"), layers=layers,
                   kind_shares={k: float(v) for k, v in (d.get("kind_shares") or {}).items()},
                   total_ms=float(d.get("total_ms", 0.0)), runs=int(d.get("runs", 0)),
                   threads=d.get("threads"), batch_size=int(d.get("batch_size", 1)),
                   device=d.get("device", "cpu"), notes=list(d.get("notes", [])))


def layer_kind(module) -> str:
    """conv / linear / other from a module's class (Conv*d, ConvTranspose, CSRLinear, ...)."""
    name = type(module).__name__
    if "Conv" in name:
        return "conv"
    if "Linear" in name:
        return "linear"
    return "other"


def op_kind(op: str) -> str:
    """conv / linear / other from an operator name (aten::mkldnn_convolution, aten::addmm,
    ONNX Conv/Gemm/MatMul, ...)."""
    base = op.split("::")[-1].lower()
    if "conv" in base:
        return "conv"
    if "linear" in base or "gemm" in base or base.lstrip("_").endswith("mm") or \
            base.startswith("matmul") or base in ("einsum",):
        return "linear"
    return "other"


def _finish(method: str, rows: list[LayerTime], total_ms: float, runs: int, **kw) -> Hotspots:
    total = total_ms if total_ms > 0 else sum(r.ms for r in rows)
    for r in rows:
        r.share = r.ms / total if total > 0 else 0.0
    rows.sort(key=lambda r: r.ms, reverse=True)
    shares = {k: 0.0 for k in KINDS}
    for r in rows:
        shares[r.kind] += r.share
    return Hotspots(method, rows, shares, total, runs, **kw)


# ---- torch ----------------------------------------------------------------------------------

@contextlib.contextmanager
def _threads(n: int | None):
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def _silence_stderr():
    """The profiler's native backend (kineto) prints start/stop lines straight to fd 2."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _leaf_layers(module) -> list[tuple[str, Any]]:
    import torch

    if isinstance(module, torch.jit.ScriptModule):
        return []
    leaves = [(n, m) for n, m in module.named_modules() if n and not any(True for _ in m.children())]
    return leaves if any(layer_kind(m) != "other" for _, m in leaves) else []


def hotspots(module, input_shape: tuple[int, ...], *, threads: int | None = None,
             runs: int = 7, warmup: int = 2, device: str = "cpu") -> Hotspots:
    """Per-layer times of `module` on random inputs of `input_shape` (see module docstring)."""
    import torch

    leaves = _leaf_layers(module) if device == "cpu" else []
    x = torch.randn(tuple(int(d) for d in input_shape),
                    generator=torch.Generator().manual_seed(0)).to(device)
    with _eval_mode(module), _threads(threads):
        result = _hooked(module, leaves, x, runs, warmup) if leaves else None
        if result is None:
            result = _by_op_type(module, x, runs, warmup, device)
        result.threads, result.batch_size = torch.get_num_threads(), int(x.shape[0])
        return result


@contextlib.contextmanager
def _eval_mode(module):
    """eval() for the measurement, then the previous mode back. Modules loaded from a
    torch.export graph are fixed in inference form and may ignore or refuse eval()/train():
    the mode is restored only if eval() really changed it."""
    changed = False
    if getattr(module, "training", False):
        try:
            module.eval()
            changed = not module.training
        except NotImplementedError:
            pass
    try:
        yield
    finally:
        if changed:
            module.train(True)


def _profile(module, x, runs: int, warmup: int, device: str):
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function, schedule

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    # the profiler's own start-up lands in its first step: one profiled-but-discarded step
    steps = schedule(wait=0, warmup=1, active=runs, repeat=1)
    with torch.inference_mode():
        for _ in range(warmup):
            module(x)
        if device == "cuda":
            torch.cuda.synchronize()
        with _silence_stderr(), profile(activities=activities, schedule=steps) as prof:
            for _ in range(runs + 1):
                with record_function(_TOTAL):
                    module(x)
                if device == "cuda":
                    torch.cuda.synchronize()
                prof.step()
    return _per_run(prof.events())


def _per_run(events) -> list[dict[str, tuple[float, float]]]:
    """Bucket profiler events by forward pass: per run, key -> (inclusive us, self us), with the
    whole pass under `_TOTAL`. Per-run values let us take medians: on a shared machine one
    preempted pass would otherwise dominate a mean."""
    import bisect

    totals = sorted((e for e in events if e.name == _TOTAL), key=lambda e: e.time_range.start)
    starts = [e.time_range.start for e in totals]
    runs: list[dict[str, list[float]]] = [{_TOTAL: [e.cpu_time_total, e.self_cpu_time_total,
                                                    e.device_time_total,
                                                    e.self_device_time_total]}
                                          for e in totals]
    for e in events:
        if e.name == _TOTAL:
            continue
        i = bisect.bisect_right(starts, e.time_range.start) - 1
        if i < 0 or e.time_range.start > totals[i].time_range.end:
            continue
        acc = runs[i].setdefault(e.name, [0.0, 0.0, 0.0, 0.0])
        acc[0] += e.cpu_time_total
        acc[1] += e.self_cpu_time_total
        acc[2] += e.device_time_total
        acc[3] += e.self_device_time_total
    return runs


def _median(xs: list[float]) -> float:
    import statistics
    return statistics.median(xs) if xs else 0.0


def _hooked(module, leaves, x, runs: int, warmup: int) -> Hotspots | None:
    from torch.profiler import record_function

    open_ranges: dict[str, list] = {}

    def pre(_mod, _inp, name):
        rf = record_function(_LAYER + name)
        rf.__enter__()
        open_ranges.setdefault(name, []).append(rf)

    def post(_mod, _inp, _out, name):
        stack = open_ranges.get(name)
        if stack:
            stack.pop().__exit__(None, None, None)

    handles = []
    try:
        for name, m in leaves:
            handles.append(m.register_forward_pre_hook(functools.partial(pre, name=name)))
            handles.append(m.register_forward_hook(functools.partial(post, name=name)))
        per_run = _profile(module, x, runs, warmup, "cpu")
    finally:
        for h in handles:
            h.remove()
    if not per_run or not any(k.startswith(_LAYER) for k in per_run[0]):
        return None
    rows = []
    for name, m in leaves:
        key = _LAYER + name
        if key in per_run[0]:
            ms = _median([r.get(key, [0.0])[0] for r in per_run]) / 1e3
            rows.append(LayerTime(name, layer_kind(m), type(m).__name__, ms, 0.0))
    outside = _median([max(0.0, r[_TOTAL][0] - sum(v[0] for k, v in r.items()
                                                   if k.startswith(_LAYER)))
                       for r in per_run]) / 1e3
    if outside > 0:
        rows.append(LayerTime("(outside layers)", "other", "functional ops", outside, 0.0))
    return _finish("module-hooks", rows, sum(r.ms for r in rows), len(per_run))


def _by_op_type(module, x, runs: int, warmup: int, device: str) -> Hotspots:
    per_run = _profile(module, x, runs, warmup, device)
    slot = 3 if device == "cuda" else 1  # self device time on GPU, self CPU time on CPU
    keys = {k for r in per_run for k in r if k != _TOTAL and not k.startswith(_LAYER)}
    rows = []
    for key in keys:
        ms = _median([r.get(key, [0.0] * 4)[slot] for r in per_run]) / 1e3
        if ms > 0:
            rows.append(LayerTime(key, op_kind(key), "operator", ms, 0.0))
    return _finish("op-types", rows, sum(r.ms for r in rows), len(per_run), device=device,
                   notes=["no layer modules to hook (graph module or GPU): time by operator "
                          "type, self time"])


# ---- ONNX Runtime ---------------------------------------------------------------------------

def onnx_hotspots(path: str | Path, input_shape: tuple[int, ...], *, threads: int | None = None,
                  runs: int = 7, warmup: int = 2,
                  provider: str = "CPUExecutionProvider") -> Hotspots:
    """Per-node kernel times of an ONNX model from ONNX Runtime's profiler."""
    import bisect

    import numpy as np
    import onnxruntime as ort

    # advisor-ortprof-PID-*: a later run removes it if this process is killed meanwhile
    with tempfile.TemporaryDirectory(prefix=f"advisor-ortprof-{os.getpid()}-") as tmp:
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tmp) / "ort")
        if threads:
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
        sess = ort.InferenceSession(str(path), so, providers=[provider])
        inp = sess.get_inputs()[0]
        x = np.random.default_rng(0).standard_normal(tuple(int(d) for d in input_shape)) \
            .astype(np.float16 if inp.type == "tensor(float16)" else np.float32)
        for _ in range(warmup + runs):
            sess.run(None, {inp.name: x})
        events = json.loads(Path(sess.end_profiling()).read_text())
    model_runs = sorted(((e["ts"], e["ts"] + e["dur"]) for e in events
                         if e.get("cat") == "Session" and e.get("name") == "model_run"))
    if len(model_runs) < warmup + runs:
        raise RuntimeError("ONNX Runtime's profile misses model_run events")
    model_runs = model_runs[warmup:]
    starts = [a for a, _ in model_runs]
    per_run: list[dict[str, float]] = [{} for _ in model_runs]
    ops: dict[str, str] = {}
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        i = bisect.bisect_right(starts, e["ts"]) - 1
        if i < 0 or e["ts"] > model_runs[i][1]:
            continue  # a warm-up run
        name = e["name"][: -len("_kernel_time")]
        ops[name] = (e.get("args") or {}).get("op_name", "")
        per_run[i][name] = per_run[i].get(name, 0.0) + e["dur"]
    rows = [LayerTime(name, op_kind(op), op, _median([r.get(name, 0.0) for r in per_run]) / 1e3,
                      0.0) for name, op in ops.items()]
    overhead = _median([max(0.0, (b - a) - sum(r.values()))
                        for (a, b), r in zip(model_runs, per_run)]) / 1e3
    if overhead > 0:
        rows.append(LayerTime("(runtime overhead)", "other", "session", overhead, 0.0))
    return _finish("onnxruntime-nodes", rows, sum(r.ms for r in rows), len(per_run),
                   threads=threads, batch_size=int(input_shape[0]))
