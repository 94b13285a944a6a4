"""The ONNX Runtime backend of the accuracy-aware fp32 fallback (`advisor.passes.fallback`).

`run_ort_fallback` drives the pure algorithm with:
- quantize: `advisor.passes.qdq.StaticQuantizer` (one calibration, cached ranges; a variant per
  set of fp32 nodes, each an ONNX file);
- evaluate: ONNX Runtime logits on the labelled validation batches (`onnx_common.logits`),
  accuracy by `advisor.measure.accuracy`;
- time: `onnx_common.paired_latency` (interleaved, in this process, `advisor.measure.timer`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from advisor.passes.base import OnnxArtifact, PassContext
from advisor.passes.fallback import Evaluation, FallbackOutcome, run_fallback
from advisor.passes.onnx_common import (Batches, accuracy_points, logits, paired_latency,
                                        take_batches)
from advisor.passes.qdq import StaticQuantizer, quantizable_nodes

__all__ = ["OrtBackend", "reference_accuracy", "run_ort_fallback"]


class OrtBackend:
    """quantize / evaluate / time for ONNX files, as `run_fallback` takes them."""

    def __init__(self, quantizer: StaticQuantizer, batches: Batches, threads: int | None,
                 latency_shape: tuple[int, ...], target=None):
        self.quantizer, self.batches = quantizer, batches
        self.threads, self.latency_shape = threads, latency_shape
        self.target = target  # a device target: accuracy and time come from its device

    def quantize(self, excluded: tuple[str, ...]) -> Path:
        return self.quantizer(excluded)

    def evaluate(self, path: Path, samples: int | None) -> Evaluation:
        """Accuracy on all validation batches, or accuracy and logits on the first `samples`."""
        batches = self.batches if samples is None else take_batches(self.batches, samples)
        out = logits(path, batches, self.threads, self.target)
        return Evaluation(accuracy_points(out, batches.labels),
                          out if samples is not None else None)

    def time(self, a: Path, b: Path, seconds: float) -> tuple[float, float]:
        a_ms, b_ms = paired_latency([a, b], self.latency_shape, self.threads, max_seconds=seconds,
                                    target=self.target)
        return a_ms, b_ms


def reference_accuracy(ctx: PassContext, fp32_path: Path, batches: Batches,
                       threads: int | None) -> dict[str, Any]:
    """Accuracy the budget is measured against: the original model (teacher) if known, so that
    the budget holds for the whole plan, else the fp32 model this pass received."""
    import torch

    teacher = ctx.teacher
    if isinstance(teacher, torch.nn.Module):
        with torch.inference_mode():
            out = np.concatenate([teacher.eval()(torch.from_numpy(a)).float().numpy()
                                  for a in batches.arrays])
        return {"accuracy": accuracy_points(out, batches.labels), "source": "original model"}
    if isinstance(teacher, OnnxArtifact):
        out = logits(teacher.path, batches, threads, ctx.target)
        return {"accuracy": accuracy_points(out, batches.labels), "source": "original model"}
    return {"accuracy": accuracy_points(logits(fp32_path, batches, threads, ctx.target),
                                        batches.labels),
            "source": "fp32 input of this pass"}


def run_ort_fallback(quantizer: StaticQuantizer, fp32_graph, *, excluded: list[str],
                     labels: dict[str, str], batches: Batches, ctx: PassContext, config: Any,
                     threads: int | None, latency_shape: tuple[int, ...]) -> FallbackOutcome:
    """The fallback on `quantizer.model` within `config.max_drop` (an `Int8StaticConfig`)."""
    backend = OrtBackend(quantizer, batches, threads, latency_shape, ctx.target)
    return run_fallback(
        candidates=[n for n in quantizable_nodes(fp32_graph) if n not in excluded],
        quantize=backend.quantize, evaluate=backend.evaluate, time=backend.time,
        fp32=quantizer.model,
        reference_accuracy=reference_accuracy(ctx, quantizer.model, batches, threads),
        max_drop=float(config.max_drop), base_excluded=tuple(excluded),
        sensitivity_samples=config.sensitivity_samples, max_reverted=config.max_reverted,
        labels=labels, op_types={n.name: n.op_type for n in fp32_graph.graph.node})
