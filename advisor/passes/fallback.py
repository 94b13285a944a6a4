"""Accuracy-aware fallback: keep the most sensitive layers in fp32 until int8 fits the budget.

When plain int8 loses more accuracy than `max_drop` (points, against the original model, so the
budget holds for the whole plan and not only for this step):

1. rank: quantize *only* one candidate layer at a time (all others fp32) and measure how far its
   logits move from fp32 on a few validation samples (mean squared error relative to the fp32
   logits' energy, plus the accuracy drop). Quantizing a layer alone also quantizes the tensors
   it reads and writes, so every layer touching a badly-quantizable tensor ranks high; the
   converse ranking ("all but one") misses exactly that case, because the tensor stays quantized
   by its other users;
2. revert greedily in rank order, re-quantizing (calibration ranges are cached) and measuring
   the accuracy on the full validation data after each revert, until the drop fits;
3. refine: re-quantize each reverted layer again (least sensitive first) if the budget still
   holds without it, so no layer stays fp32 that is not needed;
4. cost: for every layer left in fp32, measure the final model against the same model with that
   one layer quantized (paired, interleaved runs), which is the latency that layer's fp32
   fallback costs.

NNCF (`quantize_with_accuracy_control`) and Intel Neural Compressor do this for a
quantization-only flow; here it runs on whatever ONNX model the plan produced (pruned,
factorized, distilled ...). As NNCF writes its accuracy control over a backend interface, the
algorithm here is pure: it knows no runtime and reads no file, only three injected callables
(`advisor.passes.fallback_ort` is the ONNX Runtime backend; the tests use a fake one):

- `quantize(excluded) -> model`: the int8 model with the nodes `excluded` kept in fp32 (any
  hashable handle: a path for ONNX Runtime);
- `evaluate(model, samples) -> Evaluation`: accuracy in points on the validation data
  (`samples=None`), or accuracy and logits on its first `samples` samples (the ranking);
- `time(a, b, seconds) -> (ms_a, ms_b)`: the two models timed against each other (paired,
  interleaved), in about `seconds`.

Reference: Nagel et al., "A White Paper on Neural Network Quantization" (arXiv:2106.08295),
section 3.7 (debugging: per-layer sensitivity and mixed precision fallback).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

import numpy as np

# seconds of paired timing: the fp32/int8 comparisons, and each fp32 layer's cost
TIME_MODELS_S = 3.0
TIME_LAYER_S = 2.0


@dataclass(frozen=True)
class Evaluation:
    """What `evaluate` returns: accuracy in points (percent) and, for the ranking, the logits."""

    accuracy: float
    logits: np.ndarray | None = None


@dataclass
class FallbackOutcome:
    model: Hashable  # the chosen model, as `quantize` returned it
    excluded: tuple[str, ...]
    reference: dict[str, Any]
    max_drop: float
    fp32: dict[str, Any]
    plain: dict[str, Any]  # int8 before any fallback
    final: dict[str, Any]
    budget_met: bool
    reverted: list[dict] = field(default_factory=list)  # the layers left in fp32, with costs
    sensitivity: list[dict] = field(default_factory=list)  # every candidate, ranked
    steps: list[dict] = field(default_factory=list)  # the greedy + refine trace
    quantizations: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"max_drop": self.max_drop, "reference": self.reference, "fp32": self.fp32,
                "plain_int8": self.plain, "final": self.final, "budget_met": self.budget_met,
                "reverted": self.reverted, "sensitivity": self.sensitivity, "steps": self.steps,
                "quantizations": self.quantizations}


def run_fallback(*, candidates: list[str], quantize: Callable[[tuple[str, ...]], Hashable],
                 evaluate: Callable[[Hashable, int | None], Evaluation],
                 time: Callable[[Hashable, Hashable, float], tuple[float, float]],
                 fp32: Hashable, reference_accuracy: dict[str, Any], max_drop: float,
                 base_excluded: tuple[str, ...] = (), sensitivity_samples: int = 128,
                 max_reverted: int | None = None, labels: dict[str, str] | None = None,
                 op_types: dict[str, str] | None = None) -> FallbackOutcome:
    """Quantize with as few fp32 layers as keep the accuracy drop within `max_drop` points.

    `fp32`: the model before quantization; `reference_accuracy["accuracy"]`: the accuracy the
    drop is measured from; `labels`/`op_types`: node -> layer name / op type, for the record.
    """
    labels, op_types = labels or {}, op_types or {}
    made: set[tuple[str, ...]] = set()

    def quantize_counted(excluded: tuple[str, ...]) -> Hashable:
        made.add(tuple(sorted(excluded)))
        return quantize_fn(excluded)

    quantize_fn, quantize = quantize, quantize_counted
    ref_acc = float(reference_accuracy["accuracy"])
    cache: dict[Hashable, float] = {}

    def acc(model: Hashable) -> float:
        if model not in cache:
            cache[model] = float(evaluate(model, None).accuracy)
        return cache[model]

    def drop(model: Hashable) -> float:
        return ref_acc - acc(model)

    def fits(model: Hashable) -> bool:
        return drop(model) <= max_drop + 1e-9

    def entry(model: Hashable, **extra) -> dict[str, Any]:
        return {"accuracy": round(acc(model), 3), "drop": round(drop(model), 3), **extra}

    base = tuple(base_excluded)
    plain = quantize(base)
    fp32_ms, plain_ms = time(fp32, plain, TIME_MODELS_S)
    out = FallbackOutcome(plain, base, reference_accuracy, max_drop,
                          {"accuracy": round(acc(fp32), 3), "latency_ms": round(fp32_ms, 4)},
                          entry(plain, latency_ms=round(plain_ms, 4),
                                speedup_vs_fp32=round(fp32_ms / plain_ms, 3)),
                          {}, fits(plain))
    if out.budget_met or not candidates:
        out.final = dict(out.plain)
        out.quantizations = len(made)
        return out

    # 1. rank by the damage each layer does when it is the only one quantized
    n = max(1, sensitivity_samples)
    ref_sub = evaluate(fp32, n)
    ref_logits = np.asarray(ref_sub.logits)
    energy = float(np.mean(ref_logits ** 2)) or 1.0
    ranked = []
    for c in candidates:
        others = tuple(sorted(set(candidates) - {c} | set(base)))
        got = evaluate(quantize(others), n)
        drop_alone = ref_sub.accuracy - got.accuracy
        ranked.append({"node": c, "layer": labels.get(c, c),
                       "output_error": float(np.mean((np.asarray(got.logits) - ref_logits) ** 2)
                                             / energy),
                       "accuracy_drop_alone": round(drop_alone, 3)})
    ranked.sort(key=lambda r: (r["output_error"], r["accuracy_drop_alone"]), reverse=True)
    for r in ranked:
        r["output_error"] = round(r["output_error"], 6)
    out.sensitivity = ranked

    # 2. greedy: revert the most sensitive layers until the budget holds
    excluded = list(base)
    current = plain
    limit = len(ranked) if max_reverted is None else min(max_reverted, len(ranked))
    for r in ranked[:limit]:
        excluded.append(r["node"])
        current = quantize(tuple(excluded))
        out.steps.append({"action": "revert", "layer": r["layer"], **entry(current)})
        if fits(current):
            break
    best = current
    if not fits(current):  # budget unreachable: keep the most accurate variant tried
        tried = [plain] + [quantize(tuple(list(base) + [r["node"] for r in ranked[:i + 1]]))
                           for i in range(limit)]
        best = max(tried, key=acc)
        excluded = list(base) + [r["node"] for r in ranked[:tried.index(best)]]
    else:
        # 3. refine: put back into int8 whatever is not needed
        for node in [e for e in reversed(excluded) if e not in base]:
            trial = tuple(e for e in excluded if e != node)
            model = quantize(trial)
            ok = fits(model)
            out.steps.append({"action": "requantize" if ok else "keep fp32",
                              "layer": labels.get(node, node), **entry(model)})
            if ok:
                excluded, best = list(trial), model

    # 4. cost of each layer left in fp32, against the final model
    for node in [e for e in excluded if e not in base]:
        with_q = quantize(tuple(e for e in excluded if e != node))
        q_ms, final_ms_i = time(with_q, best, TIME_LAYER_S)
        sens = next(r for r in ranked if r["node"] == node)
        out.reverted.append({"node": node, "layer": labels.get(node, node),
                             "op_type": op_types.get(node), "output_error": sens["output_error"],
                             "accuracy_drop_alone": sens["accuracy_drop_alone"],
                             "drop_if_quantized": round(drop(with_q), 3),
                             "latency_ms_quantized": round(q_ms, 4),
                             "latency_ms_fp32": round(final_ms_i, 4),
                             "latency_cost_ms": round(final_ms_i - q_ms, 4)})
    fp32_ms2, final_ms = time(fp32, best, TIME_MODELS_S)
    out.model, out.excluded, out.budget_met = best, tuple(excluded), fits(best)
    out.final = entry(best, latency_ms=round(final_ms, 4),
                      speedup_vs_fp32=round(fp32_ms2 / final_ms, 3),
                      fp32_layers=[labels.get(e, e) for e in excluded])
    out.quantizations = len(made)
    return out
