"""Quantization passes, registered from one module (the registry imports this one).

| pass | stage | what | for |
|---|---|---|---|
| `int8_static` | onnx | ONNX Runtime QDQ int8, calibrated; `max_drop` = accuracy-aware fp32 fallback | CPU latency (CNNs) |
| `int8_dynamic` | onnx | ONNX Runtime dynamic int8 (measured: 7x slower than fp32 on a CNN here) | Linear/LSTM-heavy models |
| `torch_dynamic_int8` | torch | torch.ao dynamic int8 of Linear/LSTM/GRU | Linear-heavy models in torch |
| `weight_only_int8` | onnx | int8 weight storage + DequantizeLinear, fp32 compute | size goals |
| `fp16`, `bf16` | onnx | half-precision graph for ONNX Runtime's CUDA provider | CUDA targets |

Implementations: `quantize_ort` (int8 in ONNX Runtime), `quantize_torch`, `fp16` (the passes and
their configs); helpers they share: `int8_types`, `qdq`, `weight_only`, `onnx_common`,
`fallback` (the accuracy-aware fallback, a pure algorithm) and `fallback_ort` (its backend).
This module only gathers them (it registers nothing itself).

Left out on purpose: PT2E static int8 through torchao (X86InductorQuantizer + torch.compile).
It measured faster than ONNX Runtime on one CNN here (2.95 ms vs 3.9 ms), but only after a
~15 s `torch.compile` that must happen again in every deploying process (with a C compiler
present), it needs torchao (not a dependency; `torch.ao.quantization.quantize_pt2e` is gone from
torch 2.13), and it yields no self-contained artefact: the QDQ ONNX file runs anywhere ONNX
Runtime does, in one file, with no compile step. The ONNX Runtime path is the one measured
candidate per plan; PT2E would add a 15 s trial for a ~25 % gain on one model.
"""
from __future__ import annotations

from advisor.passes.fp16 import Bf16Config, Fp16Config, bf16, convert_float_model, fp16
from advisor.passes.int8_types import choose_int8_types
from advisor.passes.quantize_ort import (Int8DynamicConfig, Int8StaticConfig, WeightOnlyInt8Config,
                                         int8_dynamic, int8_static, weight_only_int8)
from advisor.passes.quantize_torch import TorchDynamicInt8Config, torch_dynamic_int8

__all__ = ["Int8StaticConfig", "Int8DynamicConfig", "WeightOnlyInt8Config", "TorchDynamicInt8Config",
           "Fp16Config", "Bf16Config", "int8_static", "int8_dynamic", "weight_only_int8",
           "torch_dynamic_int8", "fp16", "bf16", "convert_float_model", "choose_int8_types"]
