"""The FLOPs and latency targets of structured pruning: which channel ratio reaches them.

`search_flops` bisects for the smallest channel ratio removing the wanted share of FLOPs;
`search_latency` prunes in steps of `latency_step`, exporting each candidate and measuring its
p50 on the target in a fresh process (`measure_on_target`), until the target latency is met.
Both take `prune_at(ratio) -> (model, record)` from the ``prune_structured`` pass
(`advisor.passes.structured`).
"""
from __future__ import annotations

import copy
import math
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from torch import nn

from advisor.errors import PassError
from advisor.passes.base import PassContext
from advisor.passes.torch_common import count_flops

if TYPE_CHECKING:
    from advisor.passes.structured import StructuredPruneConfig


def search_flops(prune_at, flops_before: int, shape, config: StructuredPruneConfig):
    """Smallest channel ratio removing at least `flops_reduction` of the FLOPs (bisection)."""
    goal = config.flops_reduction
    lo, hi = 0.0, config.max_search_ratio
    trace = []
    best = None
    for _ in range(10):
        mid = round((lo + hi) / 2, 4)
        cand, rec = prune_at(mid)
        red = 1 - count_flops(cand, shape)[0] / max(1, flops_before)
        trace.append({"ratio": mid, "flops_reduction": round(red, 6)})
        if red >= goal - 1e-4:
            best, hi = (cand, rec), mid
        else:
            lo = mid
        if hi - lo < 0.01:
            break
    if best is None:
        cand, rec = prune_at(config.max_search_ratio)
        red = 1 - count_flops(cand, shape)[0] / max(1, flops_before)
        trace.append({"ratio": config.max_search_ratio, "flops_reduction": round(red, 6)})
        best = (cand, rec)
        reached = red >= goal - 1e-4
    else:
        reached = True
    return best[0], {**best[1], "target_reached": reached}, trace


def search_latency(base: nn.Module, prune_at, config: StructuredPruneConfig, ctx: PassContext):
    """Prune a step, measure on the target, repeat until the p50 meets the target."""
    runtime = config.latency_runtime or _first_runtime(ctx.target)
    workdir = Path(ctx.workdir) if ctx.workdir else Path(tempfile.mkdtemp(prefix="prune-lat-"))
    workdir.mkdir(parents=True, exist_ok=True)
    p50 = measure_on_target(base, ctx, runtime, workdir / "prune-search-0")
    trace = [{"ratio": 0.0, "p50_ms": p50}]
    chosen = (copy.deepcopy(base), {"ratio": 0.0, "history": [], "channels": {},
                                    "channels_total": None})
    if p50 <= config.target_latency_ms:
        return chosen[0], {**chosen[1], "target_reached": True, "runtime": runtime}, trace
    steps = int(math.floor(config.max_search_ratio / config.latency_step + 1e-9))
    for k in range(1, steps + 1):
        ratio = round(k * config.latency_step, 6)
        cand, rec = prune_at(ratio)
        p50 = measure_on_target(cand, ctx, runtime, workdir / f"prune-search-{k}")
        trace.append({"ratio": ratio, "p50_ms": p50})
        chosen = (cand, rec)
        if p50 <= config.target_latency_ms:
            return cand, {**rec, "target_reached": True, "runtime": runtime}, trace
    return chosen[0], {**chosen[1], "target_reached": False, "runtime": runtime}, trace


def measure_on_target(model: nn.Module, ctx: PassContext, runtime: str, stem: Path) -> float:
    """p50 latency (ms) of `model` exported for `runtime`, measured in a fresh process."""
    try:
        from advisor.measure.latency import measure_latency
    except ImportError as e:
        raise PassError("a latency target needs advisor.measure.latency, which is missing",
                        "use ratio or flops_reduction") from e
    from advisor.export import export_onnx, save_pt2

    shape = tuple(ctx.input_shape)
    if runtime == "onnxruntime":
        path = stem.with_suffix(".onnx")
        export_onnx(model, path, shape, check=False)
    else:
        path = stem.with_suffix(".pt2")
        save_pt2(model, path, shape)
    return float(measure_latency(path, runtime, shape, target=ctx.target).p50)


def _first_runtime(target) -> str:
    runtimes = [r.name for r in getattr(target, "runtimes", ()) or ()]
    return runtimes[0] if runtimes else "onnxruntime"
