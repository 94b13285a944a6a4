"""Hot spots: where the forward pass spends its time, per layer and per kind (conv/linear/other).

The rule engine reads the kind shares (a conv-dominated network gains from pruning channels and
static int8; a linear-dominated one from dynamic int8 and CSR sparsity), and the report shows the
top layers. The methods, best first:

- `module-hooks`: an eager module with real layers gets a `torch.profiler.record_function` range
  around every leaf module (forward pre/post hooks); a layer's time is its range's inclusive CPU
  time, and time outside every leaf (functional adds, flatten, ...) is one "(outside layers)" row.
- `program-hooks`: a torch.export program (`.pt2`) is unflattened back into its module
  hierarchy (`torch.export.unflatten`) and timed like an eager module, with each layer's class
  and kind read from the graph's `nn_module_stack`: the same names as the eager module.
- `op-types`: a graph without layer modules (TorchScript, a flat graph module) or a CUDA run is
  broken down by operator type (`aten::mkldnn_convolution`, `aten::addmm`, ...), self times.
- `onnxruntime-modules` / `-nodes`: an ONNX model is run with ONNX Runtime's profiler; kernel
  times per module the nodes came from (`advisor.measure.onnx_layers`), per node when the file
  records no modules, session overhead as a "(runtime overhead)" row.

`artifact_hotspots` picks the method for a deployable file, so that the baseline and the chosen
artefact are measured, and their layers named, alike.

Shares always sum to 1. Times are per forward pass, the median over `runs` passes after warm-up,
measured in this process with the target's thread count (the absolute numbers include profiler
overhead; the shares are what matters).
"""
from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path
from typing import Any

from advisor.measure.hotspot_types import (KINDS, Hotspots, LayerTime, _finish, _median,
                                           class_kind, layer_kind, op_kind)
from advisor.measure.onnx_layers import onnx_hotspots

__all__ = ["LayerTime", "Hotspots", "hotspots", "onnx_hotspots", "artifact_hotspots",
           "program_hotspots", "layer_kind", "op_kind", "KINDS"]

_TOTAL = "advisor::forward"
_LAYER = "advisor::layer::"


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


def _hooked(module, leaves, x, runs: int, warmup: int, describe=None,
            method: str = "module-hooks") -> Hotspots | None:
    """Per-leaf inclusive times; `describe(name, module) -> (kind, type)` (default: from the
    module's class)."""
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
            kind, typ = describe(name, m) if describe else (layer_kind(m), type(m).__name__)
            rows.append(LayerTime(name, kind, typ, ms, 0.0))
    outside = _median([max(0.0, r[_TOTAL][0] - sum(v[0] for k, v in r.items()
                                                   if k.startswith(_LAYER)))
                       for r in per_run]) / 1e3
    if outside > 0:
        rows.append(LayerTime("(outside layers)", "other", "functional ops", outside, 0.0))
    return _finish(method, rows, sum(r.ms for r in rows), len(per_run))


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


# ---- torch.export programs and deployable files --------------------------------------------

def program_hotspots(program, input_shape: tuple[int, ...], *, threads: int | None = None,
                     runs: int = 7, warmup: int = 2) -> Hotspots:
    """Per-layer times of a torch.export `ExportedProgram`, named like the eager module it was
    exported from (`layers.0.conv1`); operator types when it cannot be unflattened."""
    import torch

    classes = _program_classes(program)
    x = torch.randn(tuple(int(d) for d in input_shape), generator=torch.Generator().manual_seed(0))
    from advisor.quiet import quiet

    try:
        with quiet(stdout=False):
            module = torch.export.unflatten(program)
    except Exception as e:  # noqa: BLE001 - an unusual program: fall back to operator types
        h = hotspots(program.module(), input_shape, threads=threads, runs=runs, warmup=warmup)
        h.notes.append(f"the program could not be unflattened into layers ({type(e).__name__})")
        return h
    leaves = [(n, m) for n, m in module.named_modules()
              if n and not any(True for _ in m.children())]

    def describe(name, m):
        cls = classes.get(name, "")
        typ = cls.rsplit(".", 1)[-1] or type(m).__name__
        kind = class_kind(typ) if cls else _graph_kind(m)
        return kind, typ

    with _threads(threads):
        result = _hooked(module, leaves, x, runs, warmup, describe, "program-hooks")             if leaves else None
        if result is None:
            result = _by_op_type(module, x, runs, warmup, "cpu")
        result.threads, result.batch_size = torch.get_num_threads(), int(x.shape[0])
    return result


def _program_classes(program) -> dict[str, str]:
    """module path -> class (`torch.nn.modules.conv.Conv2d`) from the graph's nn_module_stack."""
    out: dict[str, str] = {}
    for node in program.graph.nodes:
        for path, cls in (node.meta.get("nn_module_stack") or {}).values():
            out.setdefault(str(path), str(cls))
    return out


def _graph_kind(module) -> str:
    """conv / linear / other of an unflattened submodule from the operators in its graph."""
    graph = getattr(module, "graph", None)
    kinds = {op_kind(str(n.target)) for n in getattr(graph, "nodes", ()) if n.op == "call_function"}
    return "conv" if "conv" in kinds else "linear" if "linear" in kinds else "other"


def artifact_hotspots(path: str | Path, runtime: str, input_shape: tuple[int, ...], *,
                      threads: int | None = None, runs: int = 7,
                      provider: str = "CPUExecutionProvider",
                      reference: str | Path | None = None, target=None) -> Hotspots:
    """Hot spots of a deployable file on `runtime` (on the device when `target` has a link), layers named by module where the file allows:
    ONNX -> ONNX Runtime's profiler (`onnx_hotspots`; `reference` = the fp32 ONNX a quantized
    file came from), `.pt2` -> hooks on the unflattened program (`program_hotspots`),
    TorchScript -> operator types, with a note saying why layer names are not available."""
    path = Path(path)
    if runtime == "onnxruntime" or path.suffix == ".onnx":
        return onnx_hotspots(path, input_shape, threads=threads, runs=runs, provider=provider,
                             reference=reference, target=target)
    if getattr(target, "link", None) is not None:
        raise RuntimeError("the device agent profiles ONNX models only")
    import torch

    from advisor.model_formats import detect_format

    fmt = detect_format(path)
    if fmt == "pt2":
        return program_hotspots(_load_program(path), input_shape, threads=threads, runs=runs)
    if fmt == "torchscript":
        h = hotspots(torch.jit.load(str(path), map_location="cpu"), input_shape, threads=threads,
                     runs=runs)
        h.notes.append("TorchScript artefact: per-layer names are not available (the TorchScript "
                       "interpreter calls its submodules without Python hooks, and its profile "
                       "records classes, not module paths); time by operator type")
        return h
    raise ValueError(f"{path}: not a deployable artefact (format {fmt})")


def _load_program(path: Path):
    import torch

    from advisor.quiet import quiet

    with quiet():
        return torch.export.load(str(path))

