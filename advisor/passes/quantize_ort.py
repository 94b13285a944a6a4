"""ONNX Runtime int8: static (calibrated QDQ), dynamic, and weight-only storage.

- `int8_static`: `quant_pre_process` (symbolic shape inference + graph optimisation), then
  `quantize_static` in QDQ format with per-channel weights, calibrated on the user's data
  (MinMax, Entropy or Percentile; sample count configurable). The activation/weight types follow
  ONNX Runtime's CPU guidance per target: x86 uint8 activations with int8 weights, 7-bit weights
  (`reduce_range`) only without VNNI (the u8s8 VPMADDUBSW path can saturate); Arm int8/int8 with
  symmetric activations. A target emulated on a host of another architecture gets the host's
  types, because that is where it is measured (s8 activations ran 2.5x slower than u8 on x86). With `max_drop` set, the accuracy-aware fallback
  (`advisor.passes.fallback`) keeps the most sensitive layers in fp32 until the drop fits.
  Measured here: a residual CNN at 224 px went 9.5 -> 3.9 ms.
- `int8_dynamic`: `quantize_dynamic` (weights int8 offline, activations quantized at run time).
  Meant for Linear/LSTM-heavy models; on a CNN here it ran 7x *slower* than fp32 (ConvInteger
  has no fast kernel), so the pass measures and reports the speed against fp32, never assumes it.
- `weight_only_int8`: weights stored as int8 + per-channel scale, compute stays fp32: for size
  goals (about 4x smaller files). `expand="load"` writes `Cast(int8->float) * scale`, which ONNX
  Runtime constant-folds when the session loads, so it runs at fp32 speed (measured: MLP 0.092 vs
  0.093 ms); `expand="run"` writes `DequantizeLinear`, which ONNX Runtime keeps in the graph (to
  preserve QDQ patterns) and runs on every call: weights stay int8 in memory, for RAM budgets,
  at a cost (MLP 0.29 vs 0.093 ms).

Paper: Jacob et al., "Quantization and Training of Neural Networks for Efficient
Integer-Arithmetic-Only Inference" (arXiv:1712.05877); calibration methods as in Migacz,
"8-bit Inference with TensorRT" (GTC 2017) and Wu et al., "Integer Quantization for Deep
Learning Inference" (arXiv:2004.09602).

Latency inside these passes is measured in-process with paired, interleaved runs of the two
models being compared (`onnx_common.paired_latency`, through `advisor.measure.timer`): the trial
re-measures the final artefact on the target in a fresh subprocess anyway, and interleaving
cancels the load drift of a shared machine, which matters for the sub-millisecond per-layer
costs the fallback reports.

This module holds the three passes and their configs; the pieces they share live apart:
`int8_types` (types per target CPU), `qdq` (pre-processing, calibration readers, the cached
quantizer, which nodes run as int8), `weight_only` (the int8 weight rewrite), `onnx_common`
(ONNX helpers every ONNX-stage pass uses), `fallback` (the pure accuracy-aware algorithm) and
`fallback_ort` (its ONNX Runtime backend).
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from advisor.errors import PassError
from advisor.passes.base import OnnxArtifact, PassContext, PassResult, register_pass
from advisor.passes.config import check_config
from advisor.passes.fallback_ort import run_ort_fallback
from advisor.passes.int8_types import choose_int8_types, quant_type
from advisor.passes.onnx_common import (collect_batches, describe, eval_batches, input_spec,
                                        latency_shape, layer_names, load_onnx, optional_eval,
                                        output_path, quiet, resolve_nodes, scratch_dir,
                                        threads_of)
from advisor.passes.qdq import StaticQuantizer, preprocess
from advisor.passes.weight_only import weight_only_int8_model
from advisor.progress import stage

# ---- configs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Int8StaticConfig:
    """Static int8 (QDQ). `activation_type`/`weight_type`/`reduce_range`: "auto"/None = per target.

    `exclude_nodes`: ONNX node names or layer names (`layers.0.conv1`, `layers.0:Add`) kept fp32.
    `max_drop`: accuracy budget in points for the accuracy-aware fallback (None = plain int8).
    """

    # the knob: calibration methods, tried in the order the rule gives; they change only the
    # scales, so every method runs the same int8 kernels (timed once by the search)
    calibration: Literal["minmax", "entropy", "percentile"] = field(
        default="minmax", metadata={"knob": "unordered", "same_kernels": True})
    num_samples: int = field(default=256, metadata={"ge": 1})
    per_channel: bool = True
    activation_type: Literal["auto", "uint8", "int8"] = "auto"
    weight_type: Literal["auto", "int8", "uint8"] = "auto"
    reduce_range: bool | None = None
    percentile: float = field(default=99.999, metadata={"gt": 0.0, "le": 100.0})
    exclude_nodes: tuple[str, ...] = ()
    # the accuracy-aware fallback's budget; the search sets it when plain int8 misses the budget
    # (no lower bound: a negative budget asks for the most accurate variant tried)
    max_drop: float | None = field(default=None, metadata={"fallback": True})
    sensitivity_samples: int = field(default=128, metadata={"ge": 0})
    max_reverted: int | None = field(default=None, metadata={"ge": 0})
    measure_speedup: bool = True

    def __post_init__(self):
        check_config(self)


@dataclass(frozen=True)
class Int8DynamicConfig:
    """Dynamic int8: `op_types` empty = ONNX Runtime's default set (Conv, MatMul, Gemm, LSTM ...)."""

    per_channel: bool = False
    weight_type: Literal["auto", "int8", "uint8"] = "auto"
    reduce_range: bool | None = None
    op_types: tuple[str, ...] = ()
    exclude_nodes: tuple[str, ...] = ()
    measure_speedup: bool = True

    def __post_init__(self):
        check_config(self)


@dataclass(frozen=True)
class WeightOnlyInt8Config:
    """int8 weight storage: symmetric, per output channel; tensors under `min_elements` stay fp32.

    `expand`: "load" (Cast+Mul, folded once when the session loads: fp32 speed) or "run"
    (DequantizeLinear on every call: int8 weights in memory, slower).
    """

    per_channel: bool = True
    min_elements: int = field(default=256, metadata={"ge": 0})
    op_types: tuple[str, ...] = ("Conv", "ConvTranspose", "Gemm", "MatMul")
    exclude_nodes: tuple[str, ...] = ()
    expand: Literal["load", "run"] = "load"  # fp32 weights built at session load / every call
    measure_speedup: bool = True

    def __post_init__(self):
        check_config(self)


# ---- int8 static ---------------------------------------------------------------------------


@register_pass("int8_static", Int8StaticConfig, family="quantization", stage="onnx",
               needs_calibration=True, devices=("cpu",))
def int8_static(model: OnnxArtifact, config: Int8StaticConfig, ctx: PassContext) -> PassResult:
    """Static int8 in ONNX Runtime (QDQ, per-channel, calibrated), with accuracy-aware fallback."""
    if config.num_samples < 1:
        raise PassError("int8_static: num_samples must be >= 1")
    if ctx.calib_loader is None:
        raise PassError("int8_static needs calibration data",
                        "pass --data (a few hundred unlabelled inputs are enough)")
    src = Path(model.path)
    input_name, dims = input_spec(src)
    types = choose_int8_types(ctx.target, config.activation_type, config.weight_type,
                              config.reduce_range)
    calib = collect_batches(ctx.calib_loader, config.num_samples, dims, labelled=False,
                            equal_batches=True)
    work = scratch_dir(ctx, "int8_static")
    stage(f"calibrate int8 ({config.calibration}, {calib.count} samples)")
    try:
        quantize = StaticQuantizer(src, work, config, types, calib, input_name)
        fp32_graph = load_onnx(quantize.model)
        labels = layer_names(fp32_graph)
        excluded = resolve_nodes(fp32_graph, config.exclude_nodes)
        info: dict[str, Any] = {
            "format": "QDQ", "calibration": config.calibration, "samples": calib.count,
            "per_channel": config.per_channel, "activation_type": types["activation"],
            "weight_type": types["weight"], "reduce_range": types["reduce_range"],
            "activation_symmetric": types["activation_symmetric"], "types_reason": types["reason"],
            "arch": types["arch"], "vnni": types["vnni"], **quantize.pre_info}
        if config.calibration == "percentile":
            info["percentile"] = config.percentile
        shape = latency_shape(model, dims)
        threads = threads_of(ctx)
        evalb = eval_batches(ctx, dims, None, calib)
        if config.max_drop is not None:
            if evalb is None or evalb.labels is None:
                raise PassError("int8_static: the accuracy-aware fallback (max_drop) needs "
                                "labelled validation data", "pass --val-data with labels")
            outcome = run_ort_fallback(quantize, fp32_graph, excluded=excluded, labels=labels,
                                       batches=evalb, ctx=ctx, config=config, threads=threads,
                                       latency_shape=shape)
            qpath = outcome.model
            excluded = list(outcome.excluded)
            info["fallback"] = outcome.to_json()
        else:
            qpath = quantize(tuple(excluded))
        out = output_path(ctx, src, "int8")
        shutil.copyfile(qpath, out)
        info.update(describe(src, out, excluded, labels, evalb, threads, shape,
                             config.measure_speedup and config.max_drop is None, ctx.target))
        if config.max_drop is not None:
            fb = info["fallback"]
            info["speedup_vs_fp32"] = fb["final"]["speedup_vs_fp32"]
            info["latency_ms"] = {"fp32": fb["fp32"]["latency_ms"],
                                  "int8": fb["final"]["latency_ms"]}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return PassResult(OnnxArtifact(out, model.input_shape, {**model.info, "int8_static": info}), info)


# ---- int8 dynamic --------------------------------------------------------------------------


@register_pass("int8_dynamic", Int8DynamicConfig, family="quantization", stage="onnx",
               devices=("cpu",))
def int8_dynamic(model: OnnxArtifact, config: Int8DynamicConfig, ctx: PassContext) -> PassResult:
    """Dynamic int8 in ONNX Runtime (for Linear/LSTM-heavy models); reports its measured speed."""
    from onnxruntime.quantization import quantize_dynamic

    src = Path(model.path)
    _, dims = input_spec(src)
    types = choose_int8_types(ctx.target, "auto", config.weight_type, config.reduce_range)
    work = scratch_dir(ctx, "int8_dynamic")
    try:
        pre = work / "preprocessed.onnx"
        pre_info = preprocess(src, pre)
        graph = load_onnx(pre)
        labels = layer_names(graph)
        excluded = resolve_nodes(graph, config.exclude_nodes)
        q = work / "int8-dynamic.onnx"
        with quiet():
            quantize_dynamic(str(pre), str(q), weight_type=quant_type(types["weight"]),
                             per_channel=config.per_channel, reduce_range=types["reduce_range"],
                             op_types_to_quantize=list(config.op_types) or None,
                             nodes_to_exclude=excluded or None)
        out = output_path(ctx, src, "int8dyn")
        shutil.copyfile(q, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    evalb = optional_eval(ctx, dims)
    info: dict[str, Any] = {"weight_type": types["weight"], "activation_type": "uint8 (at run time)",
                            "reduce_range": types["reduce_range"], "per_channel": config.per_channel,
                            **pre_info,
                            **describe(src, out, excluded, labels, evalb, threads_of(ctx),
                                       latency_shape(model, dims), config.measure_speedup,
                                       ctx.target)}
    counts = info["node_types"]
    info["conv_integer_nodes"] = counts.get("ConvInteger", 0)
    info["matmul_integer_nodes"] = counts.get("MatMulInteger", 0) + counts.get(
        "DynamicQuantizeMatMul", 0)
    speed = info.get("speedup_vs_fp32")
    if speed is not None and speed < 1.0:
        info["warning"] = (f"measured {1 / speed:.1f}x slower than fp32 on this host"
                           + (" (dynamic int8 convolutions have no fast kernel: use int8_static "
                              "for CNNs)" if info["conv_integer_nodes"] else ""))
    return PassResult(OnnxArtifact(out, model.input_shape, {**model.info, "int8_dynamic": info}), info)


# ---- weight-only int8 ----------------------------------------------------------------------


@register_pass("weight_only_int8", WeightOnlyInt8Config, family="quantization", stage="onnx",
               devices=("cpu", "cuda"))
def weight_only_int8(model: OnnxArtifact, config: WeightOnlyInt8Config,
                     ctx: PassContext) -> PassResult:
    """int8 weight storage (about 4x smaller file), fp32 compute: for size goals."""
    import onnx

    src = Path(model.path)
    _, dims = input_spec(src)
    proto = load_onnx(src)
    labels = layer_names(proto)
    exclude = set(resolve_nodes(proto, config.exclude_nodes))
    changed = weight_only_int8_model(proto, config, exclude)
    if not changed:
        raise PassError("weight_only_int8: no weight tensor large enough to store as int8",
                        f"min_elements is {config.min_elements}")
    out = output_path(ctx, src, "w8")
    onnx.save_model(proto, str(out))
    evalb = optional_eval(ctx, dims)
    info = {"quantized_weights": len({c["weight"] for c in changed}),
            "layers": [labels.get(c["node"], c["node"]) for c in changed],
            "max_weight_error": max(c["max_abs_error"] for c in changed),
            "expand": config.expand,
            "compute": "fp32; int8 weights expanded once at session load (constant folding)"
                       if config.expand == "load" else
                       "fp32; int8 weights dequantized on every call (int8 in memory)",
            **describe(src, out, sorted(exclude), labels, evalb, threads_of(ctx),
                       latency_shape(model, dims), config.measure_speedup, ctx.target)}
    return PassResult(OnnxArtifact(out, model.input_shape, {**model.info, "weight_only_int8": info}),
                      info)
