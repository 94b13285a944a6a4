"""Whether a factorized layer pays on the target: fewer FLOPs and, when checked, measured faster.

`decide` replaces a layer at its chosen ranks only where that is cheaper; `LayerTimer` times the
dense and the factorized layer alone, interleaved, on an input of the layer's real shape with the
target's thread count (torch eager), and fits a per-layer latency line ms ≈ a + b·FLOPs for the
``latency_target`` allocation.
"""
from __future__ import annotations

import contextlib
import statistics
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from advisor.measure.timer import probe_seconds, time_inprocess, time_interleaved
from advisor.passes.lowrank.decompose import build
from advisor.passes.lowrank.layers import Layer

if TYPE_CHECKING:
    from advisor.passes.factorize import FactorizeConfig


def decide(layer: Layer, config: FactorizeConfig, enforce: bool,
           timer: LayerTimer | None) -> None:
    """Replace the layer at its ranks only where it is cheaper (when `enforce`)."""
    rec = layer.record
    if layer.ranks is None:
        rec["reason"] = rec["reason"] or "kept dense"
        return
    flops = layer.flops(layer.ranks)
    rec.update({"ranks": list(layer.ranks), "rel_error": round(layer.basis.rel_error(layer.ranks), 6),
                "flops_factorized": flops})
    if enforce:
        if flops >= layer.dense_flops:
            rec["reason"] = f"factorized form needs more FLOPs ({flops} vs {layer.dense_flops})"
            return
        if timer is not None and not fast_enough(layer, config, timer):
            rec["reason"] = slower_reason(layer)
            return
    how = ("cheaper in FLOPs" + (" and measured faster" if timer is not None else "")
           if enforce else "replaced as asked (layer_ranks)" if config.layer_ranks
           else "replaced unconditionally (require_cheaper=False)")
    rec.update({"replaced": True, "flops_after": flops, "reason": how})


def fast_enough(layer: Layer, config: FactorizeConfig, timer: LayerTimer) -> bool:
    """Time the layer at its current ranks (unless already timed at them) against the dense one."""
    rec = layer.record
    if rec.get("measured_ranks") != list(layer.ranks):
        fact = build(layer.module, layer.basis, layer.ranks).eval()
        t = timer.time_pair(layer.module, fact, layer.in_shape)
        rec.update({"latency_ms_before": round(t["dense_ms"], 4),
                    "latency_ms_after": round(t["factorized_ms"], 4),
                    "latency_median_ms_before": round(t["dense_median_ms"], 4),
                    "latency_median_ms_after": round(t["factorized_median_ms"], 4),
                    "measured_ranks": list(layer.ranks)})
    return rec["latency_ms_before"] >= config.min_layer_speedup * rec["latency_ms_after"]


def slower_reason(layer: Layer) -> str:
    rec = layer.record
    return (f"not faster on the target: {rec['latency_ms_after']:.3f} ms factorized vs "
            f"{rec['latency_ms_before']:.3f} ms dense")


class LayerTimer:
    """Micro-benchmarks on the target: its thread count, its device when this host has it."""

    def __init__(self, target: Any, budget_s: float = 0.6, rounds: int = 3):
        self.threads = getattr(target, "threads", None)
        self.device = getattr(target, "device", "cpu") or "cpu"
        self.budget_s, self.rounds = budget_s, rounds
        self.available, self.why = True, ""
        if self.device == "cuda" and not torch.cuda.is_available():
            self.available, self.why = False, "the target is a CUDA device and this host has none"

    def describe(self) -> dict[str, Any] | str:
        if not self.available:
            return f"skipped: {self.why} (FLOPs decide alone)"
        return {"runtime": "torch eager (layer alone, interleaved with the dense layer)",
                "threads": self.threads or torch.get_num_threads(), "device": self.device,
                "statistic": "min of interleaved runs (median recorded too)"}

    @contextlib.contextmanager
    def _threads(self):
        old = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(int(self.threads))
        try:
            yield
        finally:
            torch.set_num_threads(old)

    def _timed(self, fn):
        if self.device == "cuda":
            def run():
                fn()
                torch.cuda.synchronize()
            return run
        return fn

    def time_pair(self, dense: nn.Module, fact: nn.Module, in_shape: tuple[int, ...]
                  ) -> dict[str, float]:
        """Dense and factorized layer timed in alternating rounds on the same input.

        Returns median and minimum ms of each. Decisions use the minimum: both layers see the
        same machine in alternation, and on a shared host the median carries other processes'
        load (seen here as 16 ms scheduler quanta) while the minimum does not.
        """
        x = torch.randn(in_shape, generator=torch.Generator().manual_seed(0))
        dense, fact = dense.to(self.device), fact.to(self.device)
        x = x.to(dtype=next(dense.parameters()).dtype, device=self.device)
        fns = [self._timed(lambda: dense(x)), self._timed(lambda: fact(x))]
        with self._threads():
            per_pair = max(probe_seconds(fns), 1e-6)  # one call each, also the first warm-up
            repeats = int(min(50, max(5, self.budget_s / self.rounds / per_pair)))
            times = time_interleaved(fns, self.rounds, repeats, block_warmup=1,
                                     block_seconds=self.budget_s / self.rounds)
        (dense_ms, fact_ms), (dense_med, fact_med) = times.mins, times.medians
        return {"dense_ms": dense_ms, "factorized_ms": fact_ms,
                "dense_median_ms": dense_med, "factorized_median_ms": fact_med}

    def time_model(self, model: nn.Module, shape: tuple[int, ...]) -> float:
        x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(self.device)
        was = model.training
        model.eval()
        try:
            with self._threads():
                stats = time_inprocess(self._timed(lambda: model(x)), warmup=3, repeats=30,
                                       max_seconds=3.0)
        finally:
            model.train(was)
        return stats.min

    def fit_layer(self, layer: Layer):
        """Latency model of one layer: dense ms measured; factorized ms ≈ a + b·FLOPs fitted to
        probes at 1/8, 1/4, 1/2 and 3/4 of the full ranks."""
        probes, dense_ms = [], []
        for frac in (0.125, 0.25, 0.5, 0.75):
            ranks = layer.basis.clamp(tuple(max(1, int(round(frac * m)))
                                            for m in layer.basis.max_ranks))
            fact = build(layer.module, layer.basis, ranks).eval()
            t = self.time_pair(layer.module, fact, layer.in_shape)
            dense_ms.append(t["dense_ms"])
            probes.append((layer.flops(ranks), t["factorized_ms"]))
        flops = np.array([p[0] for p in probes], dtype=np.float64)
        ms = np.array([p[1] for p in probes], dtype=np.float64)
        b, a = np.polyfit(flops, ms, 1) if len(set(flops)) > 1 else (0.0, float(ms.mean()))
        if b <= 0 or a < 0:  # noise: fall back to proportional
            a, b = 0.0, float((ms / np.maximum(flops, 1)).mean())
        dense = float(statistics.median(dense_ms))
        layer.record["latency_model"] = {"dense_ms": round(dense, 4), "ms_intercept": float(a),
                                         "ms_per_mflop": float(b * 1e6),
                                         "probes": [[int(f), round(float(m), 4)]
                                                    for f, m in probes]}
        return lambda fl: dense if fl is None else float(a + b * fl)
