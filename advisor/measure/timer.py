"""In-process timing: the one micro-benchmark every pass uses.

Whole models are measured on the target in a fresh subprocess (`advisor.measure.latency`); a
pass that must compare two forms of a layer or a model *while it decides* (is the factorized
layer faster? what does keeping this layer in fp32 cost?) times them here, in this process,
with `perf_counter` under `torch.inference_mode()`:

- `time_inprocess(fn)` — one callable: warm-up, then samples until `repeats` or `max_seconds`;
  returns `LatencyStats` (p50, min, ... and the raw samples).
- `time_interleaved(fns, rounds, per_round)` — two or more callables timed in alternating
  blocks (round 1: a block of `fn0`, a block of `fn1`, ...; round 2: again ...), so that load
  drift on a shared machine hits every candidate alike. Returns every call's time per callable
  (`Interleaved`); the caller picks the statistic it records: the median (the ONNX Runtime and
  torch int8 speed-ups) or the fastest call (the factorized-layer decision: other processes only
  ever add time, so the minimum is the cost of the code itself, as in Python's `timeit`).
- `probe_seconds(fns)` — the time of one call of each, to size the blocks to a time budget.
"""
from __future__ import annotations

import math
import os
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from advisor.measure.latency import LatencyStats, summarise

__all__ = ["time_inprocess", "time_interleaved", "probe_seconds", "Interleaved"]


@dataclass
class Interleaved:
    """Every call's time (ms) of each callable timed by `time_interleaved`, in call order."""

    samples_ms: list[list[float]]

    @property
    def medians(self) -> list[float]:
        return [statistics.median(s) for s in self.samples_ms]

    @property
    def mins(self) -> list[float]:
        return [min(s) for s in self.samples_ms]

    def speedup(self, reference: int = 0, candidate: int = 1) -> float:
        """Ratio of the fastest calls: reference min / candidate min."""
        best = self.mins
        return best[reference] / best[candidate] if best[candidate] > 0 else 0.0


def _samples(fn: Callable[[], Any], repeats: int, warmup: int = 0,
             max_seconds: float = math.inf) -> tuple[list[float], int]:
    """(samples in ms, warm-up calls made): `warmup` calls (stopped after 30% of
    `max_seconds`, at least one), then calls until `repeats` or `max_seconds` (at least
    min(3, repeats) samples)."""
    begin = time.perf_counter()
    done = 0
    while done < warmup and (done == 0 or time.perf_counter() - begin < max_seconds * 0.3):
        fn()
        done += 1
    samples: list[float] = []
    begin = time.perf_counter()
    while len(samples) < repeats:
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
        if len(samples) >= min(3, repeats) and time.perf_counter() - begin >= max_seconds:
            break
    return samples, done


def time_inprocess(fn: Callable[[], Any], warmup: int = 5, repeats: int = 30,
                   max_seconds: float = 2.0) -> LatencyStats:
    """Micro-benchmark `fn()` in this process (perf_counter, under torch.inference_mode).

    For single layers and in-pass decisions: whole models are measured with
    `advisor.measure.latency.measure_latency` in a subprocess.
    """
    import torch

    with torch.inference_mode():
        samples, done = _samples(fn, repeats, warmup, max_seconds)
    return summarise(samples, warmup=done, batch_size=1, runtime="inprocess",
                     threads=torch.get_num_threads(), runtime_threads=torch.get_num_threads(),
                     pid=os.getpid())


def probe_seconds(fns: Sequence[Callable[[], Any]]) -> float:
    """Seconds one call of each of `fns` takes together (one call each, in order)."""
    import torch

    with torch.inference_mode():
        t0 = time.perf_counter()
        for fn in fns:
            fn()
        return time.perf_counter() - t0


def time_interleaved(fns: Sequence[Callable[[], Any]], rounds: int, per_round: int, *,
                     warmup: int = 0, block_warmup: int = 0,
                     block_seconds: float = math.inf) -> Interleaved:
    """Time `fns` in `rounds` rounds of one block of `per_round` calls each, in turn.

    `warmup`: calls of each callable before the first round. `block_warmup`/`block_seconds`:
    warm-up calls at the start of every block and a time limit per block (see
    `time_inprocess`; a block then holds at least min(3, per_round) calls).
    """
    import torch

    times: list[list[float]] = [[] for _ in fns]
    with torch.inference_mode():
        for fn in fns:
            for _ in range(warmup):
                fn()
        for _ in range(rounds):
            for i, fn in enumerate(fns):
                times[i] += _samples(fn, per_round, block_warmup, block_seconds)[0]
    return Interleaved(times)
