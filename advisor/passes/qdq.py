"""Static int8 in ONNX Runtime's QDQ format: pre-processing, calibration readers, the
quantizer with cached calibration ranges, and which nodes really run as int8 kernels.

Used by the `int8_static` pass (`advisor.passes.quantize_ort`) and its fp32 fallback backend
(`advisor.passes.fallback_ort`).
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from advisor.passes.int8_types import quant_type
from advisor.passes.onnx_common import Batches, quiet


# ops ONNX Runtime quantizes only when their input already is (data movement, clipping)
_LATENT_OPS = {"Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Slice", "Split",
               "Gather", "GatherElements", "MaxPool", "Pad", "Relu", "Clip", "Resize", "Where",
               "TopK", "CumSum", "Identity"}


def quantizable_nodes(model) -> list[str]:
    """Nodes that carry their own quantization in QDQ (compute ops, not data movement)."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    ops = (set(QDQRegistry) | set(QLinearOpsRegistry)) - _LATENT_OPS
    return [n.name for n in model.graph.node if n.op_type in ops]


def runs_in_int8(model, node) -> bool:
    """In QDQ form ONNX Runtime fuses a node into an int8 kernel when its data (and weight)
    inputs come from DequantizeLinear and its outputs go only to QuantizeLinear."""
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    consumers: dict[str, list[str]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n.op_type)
    graph_outputs = {o.name for o in model.graph.output}
    inputs = [i for i in node.input[:2] if i]
    if not inputs or not all(producers.get(i) == "DequantizeLinear" for i in inputs):
        return False
    return all(o not in graph_outputs and consumers.get(o) and
               all(c == "QuantizeLinear" for c in consumers[o]) for o in node.output)


def fp32_nodes_after_quantization(model, nodes: list[str]) -> list[str]:
    """Of `nodes`, those that do not run as int8 kernels in `model` (see `runs_in_int8`)."""
    by_name = {n.name: n for n in model.graph.node}
    return [name for name in nodes if name in by_name and not runs_in_int8(model, by_name[name])]


def preprocess(src: Path, dst: Path) -> dict[str, Any]:
    """`quant_pre_process` (shape inference + optimisation); falls back to fewer steps if one fails."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    attempts = ({}, {"skip_symbolic_shape": True}, {"skip_optimization": True,
                                                     "skip_symbolic_shape": True})
    last: Exception | None = None
    for kwargs in attempts:
        try:
            with quiet():
                quant_pre_process(str(src), str(dst), **kwargs)
            return {"preprocess": "full" if not kwargs else ",".join(sorted(kwargs))}
        except Exception as e:  # a shape-inference failure on an unusual graph is not fatal
            last = e
    shutil.copyfile(src, dst)
    return {"preprocess": f"skipped ({type(last).__name__})"}


class _Reader:
    """An ONNX Runtime CalibrationDataReader over prepared batches."""

    def __init__(self, input_name: str, arrays: list[np.ndarray]):
        self.input_name, self.arrays, self.i = input_name, arrays, 0

    def get_next(self):
        if self.i >= len(self.arrays):
            return None
        self.i += 1
        return {self.input_name: self.arrays[self.i - 1]}

    def rewind(self):
        self.i = 0

    def __len__(self):
        return len(self.arrays)

    def set_range(self, start_index: int, end_index: int):
        self.arrays = self.arrays[start_index:end_index]
        self.i = 0


def _calibration_reader(input_name: str, arrays: list[np.ndarray]):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(_Reader, CalibrationDataReader):
        pass

    return Reader(input_name, arrays)


class StaticQuantizer:
    """quantize_static on one pre-processed model with one calibration (cached ranges), so that
    variants with different fp32 exclusions cost no re-calibration.

    `config`: an `Int8StaticConfig` (calibration, percentile, per_channel are read); `types`:
    `advisor.passes.int8_types.choose_int8_types`. Calling it with the nodes to keep in fp32
    returns the path of that variant (made once, then reused)."""

    def __init__(self, src: Path, work: Path, config: Any, types: dict[str, Any],
                 calib: Batches, input_name: str):
        self.work, self.config, self.types = work, config, types
        self.model = work / "preprocessed.onnx"
        self.pre_info = preprocess(src, self.model)
        self.cache = work / "calibration.json"
        self.calib, self.input_name = calib, input_name
        self.variants: dict[tuple[str, ...], Path] = {}

    def __call__(self, exclude: tuple[str, ...] | list[str]) -> Path:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static

        key = tuple(sorted(set(exclude)))
        if key in self.variants:
            return self.variants[key]
        out = self.work / f"int8-{len(self.variants)}.onnx"
        method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                  "percentile": CalibrationMethod.Percentile}[self.config.calibration]
        extra: dict[str, Any] = {"ActivationSymmetric": bool(self.types["activation_symmetric"])}
        if self.config.calibration == "percentile":
            extra["CalibPercentile"] = float(self.config.percentile)
        # not "CalibMaxIntermediateOutputs": in onnxruntime 1.32 the MinMax calibrator drops the
        # collected outputs at that count without merging their ranges (calibrate.py)
        reader = None if self.cache.exists() else _calibration_reader(self.input_name,
                                                                      self.calib.arrays)
        with quiet():
            quantize_static(str(self.model), str(out), reader, quant_format=QuantFormat.QDQ,
                            per_channel=self.config.per_channel,
                            reduce_range=self.types["reduce_range"],
                            activation_type=quant_type(self.types["activation"]),
                            weight_type=quant_type(self.types["weight"]),
                            nodes_to_exclude=list(key) or None, calibrate_method=method,
                            extra_options=extra, calibration_cache_path=str(self.cache))
        self.variants[key] = out
        return out
