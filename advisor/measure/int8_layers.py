"""Why int8 pays less on some models: depthwise convolutions, from the measured per-layer cost.

On a depthwise-heavy net (MobileNet, EfficientNet, MNASNet) int8 gains much less than on a
ResNet (measured here at 224 px: about 1.6x against 2.8x). The reason is in the per-layer times
of the fp32 baseline and the int8 artefact, both measured on the deploy runtime and named by
the module each node came from: a depthwise convolution does only k² multiply-adds per
activation it reads, so it is bound by memory traffic rather than by arithmetic, and int8
dot-product units (VNNI, AMX, ARM dot-product) have little to accelerate. This module pairs the
two hot-spot lists by layer and says how large the depthwise share is and how much faster those
layers ran in int8 against the other convolutions; the report prints that line.
"""
from __future__ import annotations

from typing import Any, Iterable

from torch import nn

# below this share of the baseline's time the depthwise layers cannot explain a small gain
MIN_DEPTHWISE_SHARE = 0.15


def depthwise_convs(module: nn.Module | None) -> set[str]:
    """Names of the module's depthwise convolutions (one group per input channel)."""
    if module is None:
        return set()
    return {n for n, m in module.named_modules()
            if isinstance(m, nn.modules.conv._ConvNd) and m.groups > 1
            and m.groups == m.in_channels}


def plan_is_int8(steps: Iterable[dict]) -> bool:
    return any(s.get("pass") in ("int8_static", "int8_dynamic") for s in steps)


def depthwise_cost(before: list[dict], after: list[dict], depthwise: set[str]
                   ) -> dict[str, Any] | None:
    """The depthwise layers' share and int8 speed-up against the other convolutions, from the
    baseline's and the int8 artefact's per-layer times (None when it explains nothing)."""
    after_ms = {r["name"]: r["ms"] for r in after if r.get("ms")}
    total = sum(r["ms"] for r in before if r.get("ms"))
    dw = [r for r in before if r["name"] in depthwise and r["name"] in after_ms]
    dense = [r for r in before if r.get("kind") == "conv" and r["name"] not in depthwise
             and r["name"] in after_ms]
    if not dw or not dense or total <= 0:
        return None

    def speedup(rows):
        return sum(r["ms"] for r in rows) / max(1e-12, sum(after_ms[r["name"]] for r in rows))

    share = sum(r["ms"] for r in dw) / total
    dw_x, dense_x = speedup(dw), speedup(dense)
    if share < MIN_DEPTHWISE_SHARE or dw_x >= dense_x:
        return None
    text = (f"int8 pays less on this model: its {len(dw)} depthwise convolutions take "
            f"{share * 100:.0f}% of the fp32 time and ran {dw_x:.2f}x faster in int8, against "
            f"{dense_x:.2f}x for its other convolutions (per-layer times on the deploy runtime). "
            "A depthwise convolution does only k² multiply-adds per activation it reads: it is "
            "bound by memory traffic, and int8 dot-product units have little to speed up there.")
    return {"depthwise_layers": len(dw), "depthwise_share": round(share, 4),
            "depthwise_speedup": round(dw_x, 3), "other_conv_speedup": round(dense_x, 3),
            "text": text}
