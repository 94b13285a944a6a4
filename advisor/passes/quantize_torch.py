"""torch dynamic int8 for Linear/LSTM/GRU layers (`torch.ao.quantization.quantize_dynamic`).

Weights are stored int8 (per tensor), activations are quantized on the fly per call, and the
matrix products run in int8 (torch's "x86" engine, qnnpack on Arm). It pays off where
Linear/recurrent layers dominate; convolutions are left untouched.

Measured on this host (MLP 3072-512-256-10, batch 1): 0.10 ms vs 0.14 ms fp32 with one thread.
With two threads on an oversubscribed machine (load 7 on 2 cores) the int8 kernel's parallel
section stalled for a scheduler time slice (48 ms) where fp32 did not, so the pass measures the
speed against its input model and reports it, never assumes it.

The result holds `torch.ao` packed parameters, which torch.export (2.13) cannot serialise:
`advisor.export.save_torchscript` writes it as TorchScript instead. `torch.ao.quantization`
is deprecated in favour of torchao, which is not a dependency; it still works in torch 2.13.

Paper: Jacob et al., "Quantization and Training of Neural Networks for Efficient
Integer-Arithmetic-Only Inference" (arXiv:1712.05877).
"""
from __future__ import annotations

import copy
import functools
import io
import platform
import warnings
from dataclasses import dataclass
from typing import Any, Literal

from advisor.errors import PassError
from advisor.passes.base import PassContext, PassResult, register_pass
from advisor.passes.config import check_config

_KINDS = ("Linear", "LSTM", "GRU", "LSTMCell", "GRUCell", "RNNCell")


@dataclass(frozen=True)
class TorchDynamicInt8Config:
    """`modules`: layer kinds to quantize; `exclude`: module names kept fp32."""

    modules: tuple[str, ...] = ("Linear", "LSTM", "GRU")
    exclude: tuple[str, ...] = ()
    engine: Literal["auto", "fbgemm", "qnnpack", "x86", "onednn"] = "auto"
    measure_speedup: bool = True

    def __post_init__(self):
        check_config(self)


def choose_engine(requested: str = "auto") -> str:
    import torch

    supported = torch.backends.quantized.supported_engines
    if requested != "auto":
        if requested not in supported:
            raise PassError(f"quantized engine {requested!r} is not available in this torch build",
                            f"available: {', '.join(e for e in supported if e != 'none')}")
        return requested
    arm = platform.machine().lower().startswith(("arm", "aarch64"))
    if arm and "qnnpack" in supported:
        return "qnnpack"
    return torch.backends.quantized.engine  # x86 builds default to "x86" (fbgemm/onednn inside)


def state_bytes(model) -> int:
    import torch

    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.tell()


def paired_torch_latency(models: list, x, rounds: int = 5, per_round: int = 10) -> list[float]:
    """p50 (ms) of each model on `x`, in interleaved rounds (load drift hits all alike): three
    warm-up calls each, then `rounds` rounds of `per_round` calls per model
    (`advisor.measure.timer.time_interleaved`)."""
    from advisor.measure.timer import time_interleaved

    return time_interleaved([functools.partial(m, x) for m in models], rounds, per_round,
                            warmup=3).medians


@register_pass("torch_dynamic_int8", TorchDynamicInt8Config, family="quantization", stage="torch",
               devices=("cpu",))
def torch_dynamic_int8(model, config: TorchDynamicInt8Config, ctx: PassContext) -> PassResult:
    """torch dynamic int8 of Linear/LSTM/GRU layers (for Linear-heavy models on CPU)."""
    import torch
    from torch import nn

    kinds = [getattr(nn, k) for k in config.modules if k in _KINDS]
    if not kinds:
        raise PassError(f"torch_dynamic_int8: no supported layer kind in {config.modules}",
                        f"choose from {', '.join(_KINDS)}")
    names = {n for n, _ in model.named_modules()}
    unknown = [n for n in config.exclude if n not in names]
    if unknown:
        raise PassError(f"torch_dynamic_int8: no module named {unknown[0]!r}")
    targets = [n for n, m in model.named_modules()
               if isinstance(m, tuple(kinds)) and n not in config.exclude]
    if not targets:
        raise PassError("torch_dynamic_int8: the model has no Linear/LSTM/GRU layer to quantize",
                        "dynamic int8 leaves convolutions alone; use int8_static for CNNs")
    engine = choose_engine(config.engine)
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine  # packs the weights for this engine's kernels
    try:
        spec: dict[Any, Any] = {k: torch.ao.quantization.default_dynamic_qconfig for k in kinds}
        spec.update({n: None for n in config.exclude})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            qmodel = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model).eval(), spec,
                                                            dtype=torch.qint8)
    finally:
        torch.backends.quantized.engine = previous
    quantized = [n for n, m in qmodel.named_modules()
                 if type(m).__module__.startswith("torch.ao.nn.quantized.dynamic")]
    x = ctx.example_inputs[0] if ctx.example_inputs else torch.randn(*ctx.input_shape)
    with torch.inference_mode():
        ref = model.eval()(x)
        try:
            got = qmodel(x)
        except (TypeError, RuntimeError, AttributeError) as e:
            # a model that reads a Linear's weight itself (torchvision's Swin calls
            # F.linear(x, self.qkv.weight)) finds a method there once the layer is quantized
            import traceback
            from pathlib import Path

            tb = traceback.extract_tb(e.__traceback__)[-1]
            raise PassError(f"torch_dynamic_int8: the quantized model does not run "
                            f"({Path(tb.filename).name}:{tb.lineno} {tb.line or ''}: "
                            f"{type(e).__name__}); the model uses its Linear weights directly, "
                            "which dynamic int8 modules do not expose",
                            "use int8_dynamic or int8_static (ONNX Runtime) for this model") \
                from e
    info: dict[str, Any] = {"engine": engine, "quantized_modules": quantized,
                            "state_bytes_before": state_bytes(model),
                            "state_bytes_after": state_bytes(qmodel),
                            "max_abs_diff": float((ref - got).abs().max()),
                            "torch_export": False,
                            "artifact": "TorchScript (advisor.export.save_torchscript): torch.export "
                                        "cannot serialise torch.ao packed parameters"}
    info["size_ratio"] = round(info["state_bytes_after"] / info["state_bytes_before"], 4)
    if config.measure_speedup:
        fp32_ms, q_ms = paired_torch_latency([model.eval(), qmodel], x)
        info["latency_ms"] = {"fp32": round(fp32_ms, 4), "quantized": round(q_ms, 4)}
        info["speedup_vs_fp32"] = round(fp32_ms / q_ms, 3)
        if q_ms > fp32_ms:
            info["warning"] = f"measured {q_ms / fp32_ms:.1f}x slower than fp32 on this host"
    return PassResult(qmodel, info)
