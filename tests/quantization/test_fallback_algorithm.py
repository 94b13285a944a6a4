"""The accuracy-aware fp32 fallback as a pure algorithm, on a fake backend: no ONNX, no timing.

The fake: four quantizable layers, each costing a known number of accuracy points when it runs
in int8 (the damages add up) and a known latency when it stays fp32. A model is the tuple of
layers kept in fp32; "fp32" is the unquantized model.
"""
from __future__ import annotations

import numpy as np
import pytest

from advisor.passes.fallback import TIME_LAYER_S, TIME_MODELS_S, Evaluation, run_fallback

NODES = ["a", "b", "c", "d"]
DAMAGE = {"a": 0.2, "b": 3.0, "c": 0.1, "d": 1.5}  # accuracy points lost when quantized
FP32_COST = {"a": 0.1, "b": 0.5, "c": 0.05, "d": 0.25}  # ms a layer adds when kept fp32
FP32_ACC, FP32_MS, INT8_MS = 90.0, 10.0, 4.0


class FakeBackend:
    """`damage`: accuracy points a layer costs in int8; `noise`: how far it moves the logits
    (the ranking's output error; by default as far as it damages)."""

    def __init__(self, damage=None, noise=None):
        self.damage = damage or DAMAGE
        self.noise = noise or self.damage
        self.quantized: list[tuple[str, ...]] = []
        self.evaluated: list[tuple[object, int | None]] = []
        self.timed: list[tuple[object, object, float]] = []

    def quantize(self, excluded):
        key = tuple(sorted(excluded))
        self.quantized.append(key)
        return key

    def _int8(self, model):
        return [] if model == "fp32" else [n for n in NODES if n not in model]

    def evaluate(self, model, samples):
        self.evaluated.append((model, samples))
        loss = sum(self.damage[n] for n in self._int8(model))
        logits = None
        if samples is not None:  # outputs move away from fp32 by the noise added
            base = np.tile(np.array([[3.0, 1.0, 0.0]]), (samples, 1))
            logits = base + np.array([[0.0, sum(self.noise[n] for n in self._int8(model)), 0.0]])
        return Evaluation(FP32_ACC - loss, logits)

    def ms(self, model):
        if model == "fp32":
            return FP32_MS
        return INT8_MS + sum(FP32_COST[n] for n in model)

    def time(self, a, b, seconds):
        self.timed.append((a, b, seconds))
        return self.ms(a), self.ms(b)


def run(backend, **kw):
    args = dict(candidates=list(NODES), quantize=backend.quantize, evaluate=backend.evaluate,
                time=backend.time, fp32="fp32", reference_accuracy={"accuracy": FP32_ACC},
                max_drop=1.0, sensitivity_samples=8,
                labels={n: f"layer.{n}" for n in NODES}, op_types={n: "Conv" for n in NODES})
    args.update(kw)
    return run_fallback(**args)


def test_plain_int8_within_budget_is_kept_without_ranking():
    fake = FakeBackend()
    out = run(fake, max_drop=5.0)
    assert out.budget_met and out.model == () and out.excluded == ()
    assert out.final == out.plain and out.plain["drop"] == pytest.approx(4.8)
    assert out.sensitivity == [] and out.reverted == [] and out.quantizations == 1
    assert all(samples is None for _, samples in fake.evaluated)  # no ranking
    assert fake.timed == [("fp32", (), TIME_MODELS_S)]
    assert out.plain["speedup_vs_fp32"] == pytest.approx(FP32_MS / INT8_MS, abs=1e-3)


def test_the_most_damaging_layers_stay_fp32_and_no_more():
    fake = FakeBackend()
    out = run(fake)
    # 1. ranked by the damage a layer does alone
    assert [r["node"] for r in out.sensitivity] == ["b", "d", "a", "c"]
    assert [r["accuracy_drop_alone"] for r in out.sensitivity] == [3.0, 1.5, 0.2, 0.1]
    assert all(n == 8 for _, n in fake.evaluated if n is not None)
    # 2. greedy reverts b, then d (drop 0.3 fits); 3. neither can go back to int8
    assert [(s["action"], s["layer"]) for s in out.steps] == [
        ("revert", "layer.b"), ("revert", "layer.d"),
        ("keep fp32", "layer.d"), ("keep fp32", "layer.b")]
    assert out.budget_met and out.excluded == ("b", "d") and out.model == ("b", "d")
    assert out.final["drop"] == pytest.approx(0.3) and out.final["fp32_layers"] == ["layer.b",
                                                                                    "layer.d"]
    # 4. each fp32 layer's latency cost, timed against the final model
    costs = {r["node"]: r["latency_cost_ms"] for r in out.reverted}
    assert costs == pytest.approx({"b": FP32_COST["b"], "d": FP32_COST["d"]})
    assert {r["op_type"] for r in out.reverted} == {"Conv"}
    assert [s for *_, s in fake.timed] == [TIME_MODELS_S, TIME_LAYER_S, TIME_LAYER_S,
                                           TIME_MODELS_S]
    final_ms = INT8_MS + FP32_COST["b"] + FP32_COST["d"]
    assert out.final["speedup_vs_fp32"] == pytest.approx(FP32_MS / final_ms, abs=1e-3)
    assert out.quantizations == len(set(fake.quantized)) == 8
    assert out.to_json()["plain_int8"] == out.plain


def test_the_greedy_stops_as_soon_as_the_budget_holds():
    out = run(FakeBackend(), max_drop=1.7)  # reverting b alone leaves 1.8: d is needed too
    assert out.excluded == ("b", "d")
    out = run(FakeBackend(), max_drop=2.0)
    assert out.excluded == ("b",) and out.budget_met
    assert [s["action"] for s in out.steps] == ["revert", "keep fp32"]


def test_refine_requantizes_a_revert_the_budget_does_not_need():
    # "a" moves the logits most (ranked first) but costs no accuracy: reverting it is useless
    fake = FakeBackend(damage={"a": 0.0, "b": 3.0, "c": 0.1, "d": 0.2},
                       noise={"a": 5.0, "b": 1.0, "c": 0.1, "d": 0.2})
    out = run(fake)
    assert [r["node"] for r in out.sensitivity][:2] == ["a", "b"]
    assert [(s["action"], s["layer"]) for s in out.steps] == [
        ("revert", "layer.a"), ("revert", "layer.b"),
        ("keep fp32", "layer.b"), ("requantize", "layer.a")]
    assert out.excluded == ("b",) and out.budget_met and out.final["drop"] == pytest.approx(0.3)
    assert [r["node"] for r in out.reverted] == ["b"]


def test_unreachable_budget_returns_the_most_accurate_variant_tried():
    fake = FakeBackend()
    out = run(fake, max_drop=-50.0, max_reverted=2)
    assert not out.budget_met
    assert len([s for s in out.steps if s["action"] == "revert"]) == 2
    assert out.excluded == ("b", "d") and out.final["accuracy"] >= out.plain["accuracy"]


def test_layers_kept_fp32_by_the_config_are_never_ranked_or_requantized():
    fake = FakeBackend()
    out = run(fake, candidates=["a", "c", "d"], base_excluded=("b",))
    assert "b" not in [r["node"] for r in out.sensitivity]
    assert out.excluded == ("b", "d") and [r["node"] for r in out.reverted] == ["d"]
    assert all("b" in key for key in fake.quantized)
