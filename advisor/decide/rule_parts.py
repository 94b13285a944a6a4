"""The pieces the rules build their candidates from, read off a `Situation`: recovery steps after a
lossy change, the int8 tail, the channel multiple the target's kernels like, the tunable knob of a
pass, and two questions (may the candidate train? is peak memory over budget?).

Pure functions of the situation; no torch import.
"""
from __future__ import annotations

from typing import Any

from advisor.decide.plan import Step
from advisor.decide.situation import Situation

LECTURE = "model compression 101 (lecture)"


def knob_for(s: Situation, pass_name: str, step: int, values: list[Any]) -> dict[str, Any] | None:
    """Tune `pass_name`'s declared knob (its `PassFlags.knob`) over `values`, mild → aggressive;
    None when the pass declares no knob."""
    flags = s.passes.get(pass_name)
    if flags is None or flags.knob is None:
        return None
    return {"step": step, "field": flags.knob, "values": list(values)}


def may_train(s: Situation) -> bool:
    return s.factors.retrain in ("finetune", "full") and s.has_train_data


RECOVERY = ("finetune", "distill")  # what recovery_steps may add
INT8_TAIL = ("int8_static",)  # what int8_tail may add


def recovery_steps(s: Situation) -> list[Step]:
    """Recovery after a lossy structural change: fine-tuning, else distillation from the original.

    Measured on the digits ResNet after 50% pruning, 5 epochs (benchmarks/results/distillation.md):
    fine-tune 99.30%, feature/relation KD 98.75%, response KD 97.91% at default settings — with
    all labels available, KD did not beat plain fine-tuning, so fine-tuning comes first.
    """
    if s.has("finetune"):
        return [Step("finetune", {})]
    if s.has("distill"):
        return [Step("distill", {"kind": "feature"})]
    return []


def channel_multiple(s: Situation) -> int:
    """Channel counts that the target's conv kernels run at full speed.

    ONNX Runtime's x86 conv kernels work on channel blocks (16 floats with AVX-512, 8 with
    AVX2); other counts take a slower path. Measured on this AVX-512 host (ResNet example, 50%
    of channels pruned, ONNX Runtime): free counts 1.97x faster than the original, counts
    rounded to 16: 3.76x; MobileNet: 0.53x (slower than unpruned!) vs 1.67x.
    """
    return 16 if any(f.startswith("avx512") for f in s.isa) else 8


def int8_tail(s: Situation) -> list[Step]:
    """Quantize last ("compress first, then quantize") where the target runs int8."""
    if "int8" in s.precisions and s.has("int8_static") and s.device == "cpu":
        return [Step("int8_static", {"calibration": "minmax"})]
    return []


def over_memory(s: Situation) -> bool:
    return bool(s.memory_budget_mb and s.peak_memory_mb and s.peak_memory_mb > s.memory_budget_mb)
