"""FLOPs and parameters, per model and per module.

Convention (fvcore's): **one multiply-add = one flop**, i.e. the numbers are MACs. Convolutions,
linear layers and matmuls dominate; fvcore also counts normalisation layers (one per element, two
with an affine transform) and adaptive pooling, and skips element-wise ops (add, ReLU) and max
pooling — it logs those as unsupported; we silence that, they are cheap and not multiply-adds.

For an ONNX model (no torch module) the count comes from the graph itself: Conv, ConvTranspose,
Gemm and MatMul multiply-adds after shape inference at the given input shape.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from advisor.quiet import quiet

__all__ = ["FlopsReport", "count_flops", "count_onnx_flops", "FLOPS_CONVENTION"]

FLOPS_CONVENTION = ("1 multiply-add = 1 flop (MACs), per forward at the stated input shape; "
                    "conv/linear/matmul plus normalisation and adaptive pooling, element-wise "
                    "ops not counted (fvcore)")


@dataclass
class FlopsReport:
    """`total` multiply-adds; `by_module` per submodule name (containers include their children)."""

    total: int
    by_module: dict[str, int] = field(default_factory=dict)
    params: int = 0
    by_module_params: dict[str, int] = field(default_factory=dict)
    by_operator: dict[str, int] = field(default_factory=dict)
    input_shape: tuple[int, ...] = ()
    convention: str = FLOPS_CONVENTION


def count_flops(module, input_shape: tuple[int, ...]) -> FlopsReport:
    """Multiply-adds of one forward of `module` (eval mode, no grad) on zeros of `input_shape`."""
    import torch

    with quiet(stdout=False):
        from fvcore.nn import FlopCountAnalysis, parameter_count

        from advisor.measure.layers import _eval_mode

        with _eval_mode(module), torch.no_grad():
            x = torch.zeros(tuple(int(d) for d in input_shape))
            analysis = FlopCountAnalysis(module, (x,))
            analysis.unsupported_ops_warnings(False)
            analysis.uncalled_modules_warnings(False)
            analysis.tracer_warnings("none")
            total = int(analysis.total())
            by_module = {k: int(v) for k, v in analysis.by_module().items() if k and v}
            by_operator = {k: int(v) for k, v in analysis.by_operator().items()}
        params = parameter_count(module)
    module_names = {n for n, _ in module.named_modules()}
    by_params = {k: int(v) for k, v in params.items() if k in module_names and k and v}
    return FlopsReport(total=total, by_module=by_module, params=int(params.get("", 0)),
                       by_module_params=by_params, by_operator=by_operator,
                       input_shape=tuple(int(d) for d in input_shape))


def count_onnx_flops(path: str | Path, input_shape: tuple[int, ...]) -> FlopsReport:
    """Multiply-adds of Conv/ConvTranspose/Gemm/MatMul nodes of an ONNX model at `input_shape`;
    parameters = elements of the float initializers."""
    import numpy as np
    import onnx
    from onnx import shape_inference

    float_types = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16,
                   onnx.TensorProto.DOUBLE}
    model = onnx.load(str(path))
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    first = next(i for i in graph.input if i.name not in inits)
    dims = first.type.tensor_type.shape.dim
    for d, size in zip(dims, input_shape):
        d.ClearField("dim_param")
        d.dim_value = int(size)
    inferred = shape_inference.infer_shapes(model)
    shapes: dict[str, tuple[int, ...]] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + \
            list(inferred.graph.output):
        s = tuple(d.dim_value if d.HasField("dim_value") else -1
                  for d in vi.type.tensor_type.shape.dim)
        shapes[vi.name] = s
    for name, t in inits.items():
        shapes[name] = tuple(t.dims)

    def numel(name: str) -> int:
        s = shapes.get(name)
        return int(np.prod(s)) if s and all(d > 0 for d in s) else 0

    by_node: dict[str, int] = {}
    by_op: dict[str, int] = {}
    by_params: dict[str, int] = {}
    for i, node in enumerate(graph.node):
        name = node.name or f"{node.op_type}_{i}"
        macs = 0
        w = shapes.get(node.input[1]) if len(node.input) > 1 else None
        if node.op_type == "Conv" and w:
            macs = numel(node.output[0]) * int(np.prod(w[1:]))
        elif node.op_type == "ConvTranspose" and w:
            macs = numel(node.input[0]) * int(np.prod(w[1:]))
        elif node.op_type in ("Gemm", "MatMul") and w:
            a = shapes.get(node.input[0]) or ()
            trans_a = any(at.name == "transA" and at.i for at in node.attribute)
            k = a[-2] if (node.op_type == "Gemm" and trans_a and len(a) >= 2) else \
                (a[-1] if a else -1)
            macs = numel(node.output[0]) * k if k > 0 else 0
        if macs:
            by_node[name] = macs
            by_op[node.op_type] = by_op.get(node.op_type, 0) + macs
        weights = sum(int(np.prod(inits[n].dims)) for n in node.input
                      if n in inits and inits[n].data_type in float_types)
        if weights:
            by_params[name] = weights
    params = sum(int(np.prod(t.dims)) for t in graph.initializer if t.data_type in float_types)
    return FlopsReport(total=sum(by_node.values()), by_module=by_node, params=params,
                       by_module_params=by_params, by_operator=by_op,
                       input_shape=tuple(int(d) for d in input_shape),
                       convention="1 multiply-add = 1 flop (MACs) of Conv/ConvTranspose/Gemm/"
                                  "MatMul nodes of the ONNX graph")
