"""fp16 and bf16 for CUDA targets: the ONNX graph converted to half precision, run by ONNX
Runtime's CUDA provider.

The conversion is written with the onnx API (onnxconverter-common is not a dependency):
float32 initializers, constants, `Cast(to=float)` and value types become float16 / bfloat16;
the model keeps float32 inputs and outputs by default (a Cast at each end), so callers feed the
same arrays. Inputs that ONNX requires to stay float32 (Resize scales) and ops listed in
`op_block_list` stay float32, with Casts around them.

Half precision halves weight storage and memory traffic and uses tensor cores on GPUs; on a CPU
ONNX Runtime has few fp16 kernels (x86 has almost none) and gains nothing, so the passes are
declared for CUDA targets only. On a host without a CUDA GPU they raise
`PassError("... skipped: no CUDA GPU on this host")`; the conversion itself is tested on the CPU
(structure, and values with ONNX's reference evaluator).

Paper: Micikevicius et al., "Mixed Precision Training" (arXiv:1710.03740) for fp16 ranges;
Kalamkar et al., "A Study of BFLOAT16 for Deep Learning Training" (arXiv:1905.12322).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from advisor.errors import PassError
from advisor.passes.base import OnnxArtifact, PassContext, PassResult, register_pass
from advisor.passes.config import check_config

# (op type -> input positions that must stay float32 whatever the model's precision)
_FLOAT32_INPUTS = {"Resize": {1, 2}, "Upsample": {1}}


@dataclass(frozen=True)
class Fp16Config:
    """`keep_io_types`: float32 model inputs/outputs; `op_block_list`: op types kept in float32."""

    keep_io_types: bool = True
    op_block_list: tuple[str, ...] = ()

    def __post_init__(self):
        check_config(self)


@dataclass(frozen=True)
class Bf16Config:
    keep_io_types: bool = True
    op_block_list: tuple[str, ...] = ()

    def __post_init__(self):
        check_config(self)


def float_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), rounding to nearest even; NaN stays NaN."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        rounded[nan] = 0x7FC0
    return rounded


def bf16_bits_to_float(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _convert_tensor(t, to: int) -> None:
    """Rewrite a float32 TensorProto in place as float16/bfloat16."""
    from onnx import TensorProto, numpy_helper

    arr = numpy_helper.to_array(t).astype(np.float32)
    name = t.name
    dims = list(t.dims)
    t.Clear()
    t.name = name
    t.dims.extend(dims)
    t.data_type = to
    if to == TensorProto.FLOAT16:
        t.raw_data = arr.astype(np.float16).tobytes()
    else:
        t.raw_data = float_to_bf16_bits(arr).tobytes()


def convert_float_model(model, precision: str = "float16", keep_io_types: bool = True,
                        op_block_list: tuple[str, ...] = ()):
    """Return a copy of the ONNX `model` in float16 or bfloat16 (see the module docstring)."""
    import onnx
    from onnx import TensorProto, helper

    to = {"float16": TensorProto.FLOAT16, "bfloat16": TensorProto.BFLOAT16}[precision]
    FLOAT = TensorProto.FLOAT
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    if any(a.HasField("g") or len(a.graphs) for n in g.node for a in n.attribute):
        raise PassError(f"{precision}: models with control flow (If/Loop/Scan) are not converted")
    blocked = {n.name for n in g.node if n.op_type in set(op_block_list)}
    keep32: set[str] = set()  # tensors that must stay float32
    for n in g.node:
        fixed = _FLOAT32_INPUTS.get(n.op_type, set())
        for i, name in enumerate(n.input):
            if i in fixed or n.name in blocked:
                keep32.add(name)
        if n.name in blocked:
            keep32.update(n.output)

    # initializers and Constant nodes
    init_names = {t.name for t in g.initializer}
    shared = {name for name in init_names if name in keep32}
    for t in g.initializer:
        if t.data_type == FLOAT and t.name not in shared:
            _convert_tensor(t, to)
    for n in g.node:
        if n.name in blocked:
            continue
        if n.op_type == "Constant" and not set(n.output) & keep32:
            for a in list(n.attribute):
                if a.name in ("value_float", "value_floats"):
                    vals = np.asarray([a.f] if a.name == "value_float" else list(a.floats),
                                      np.float32)
                    if a.name == "value_float":
                        vals = vals.reshape(())
                    n.attribute.remove(a)
                    n.attribute.append(helper.make_attribute(
                        "value", onnx.numpy_helper.from_array(vals, n.output[0])))
        for a in n.attribute:
            if a.type == onnx.AttributeProto.TENSOR and a.t.data_type == FLOAT and \
                    not set(n.output) & keep32:
                _convert_tensor(a.t, to)
            if n.op_type == "Cast" and a.name == "to" and a.i == FLOAT and \
                    not set(n.output) & keep32:
                a.i = to

    # inputs/outputs and intermediate value types
    float_inputs = [i for i in g.input if i.type.tensor_type.elem_type == FLOAT and
                    i.name not in init_names]
    float_outputs = [o for o in g.output if o.type.tensor_type.elem_type == FLOAT]
    for vi in g.value_info:
        if vi.type.tensor_type.elem_type == FLOAT and vi.name not in keep32:
            vi.type.tensor_type.elem_type = to

    new_nodes = []
    rename: dict[str, str] = {}
    if keep_io_types:
        for i in float_inputs:
            half = f"{i.name}_{precision}"
            new_nodes.append(helper.make_node("Cast", [i.name], [half], name=f"{i.name}_cast_in",
                                              to=to))
            rename[i.name] = half
    else:
        for i in float_inputs:
            i.type.tensor_type.elem_type = to

    # blocked nodes and float32-only inputs get Casts around them
    counter = 0
    body = []
    for n in g.node:
        for k, name in enumerate(n.input):
            if name in rename:
                n.input[k] = rename[name]
        if n.name in blocked or n.op_type in _FLOAT32_INPUTS:
            for k, name in enumerate(n.input):
                needs32 = n.name in blocked or k in _FLOAT32_INPUTS.get(n.op_type, set())
                if needs32 and name and name not in shared and name not in init_names:
                    counter += 1
                    cast = f"{name}_to_float32_{counter}"
                    body.append(helper.make_node("Cast", [name], [cast], name=cast, to=FLOAT))
                    n.input[k] = cast
            body.append(n)
            if n.name in blocked:
                for k, name in enumerate(n.output):
                    counter += 1
                    inner = f"{name}_float32_{counter}"
                    n.output[k] = inner
                    body.append(helper.make_node("Cast", [inner], [name], name=f"{inner}_cast",
                                                 to=to))
        else:
            body.append(n)

    if keep_io_types:
        for o in float_outputs:
            half = f"{o.name}_{precision}"
            for n in body:
                for k, name in enumerate(n.output):
                    if name == o.name:
                        n.output[k] = half
                for k, name in enumerate(n.input):
                    if name == o.name:
                        n.input[k] = half
            body.append(helper.make_node("Cast", [half], [o.name], name=f"{o.name}_cast_out",
                                         to=FLOAT))
    else:
        for o in float_outputs:
            o.type.tensor_type.elem_type = to
    del g.node[:]
    g.node.extend(new_nodes + body)
    # value_info for renamed tensors would be stale: drop it and let runtimes infer
    del g.value_info[:]
    onnx.checker.check_model(m)
    return m


def cuda_available() -> tuple[bool, str]:
    """(usable, why not): ONNX Runtime's CUDA provider and a CUDA device."""
    try:
        import onnxruntime as ort
    except ImportError:  # pragma: no cover - onnxruntime is a dependency
        return False, "onnxruntime is not installed"
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False, "this onnxruntime build has no CUDAExecutionProvider"
    try:
        import torch

        if not torch.cuda.is_available():
            return False, "no CUDA device is visible"
    except ImportError:  # pragma: no cover
        pass
    return True, ""


def _apply(model: OnnxArtifact, precision: str, config, ctx: PassContext, name: str) -> PassResult:
    import onnx

    from advisor.export import onnx_session
    from advisor.passes.onnx_common import file_size, output_path

    ok, why = cuda_available()
    if not ok:
        raise PassError(f"{name} skipped: no CUDA GPU on this host ({why})",
                        f"{name} runs through ONNX Runtime's CUDA provider; choose a CPU target "
                        "or run on a machine with an NVIDIA GPU")
    src = Path(model.path)
    converted = convert_float_model(onnx.load(str(src)), precision, config.keep_io_types,
                                    config.op_block_list)
    out = output_path(ctx, src, "fp16" if precision == "float16" else "bf16")
    onnx.save_model(converted, str(out))
    shape = tuple(int(s) for s in model.input_shape)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    ref_sess = onnx_session(src)
    ref = ref_sess.run(None, {ref_sess.get_inputs()[0].name: x})[0]
    sess = onnx_session(out, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    feed = x if config.keep_io_types else (x.astype(np.float16) if precision == "float16"
                                           else x)
    got = np.asarray(sess.run(None, {sess.get_inputs()[0].name: feed})[0], np.float32)
    info: dict[str, Any] = {"precision": precision, "provider": sess.get_providers()[0],
                            "keep_io_types": config.keep_io_types,
                            "size_bytes_before": file_size(src), "size_bytes_after": file_size(out),
                            "max_abs_diff": float(np.max(np.abs(ref - got)))}
    info["size_ratio"] = round(info["size_bytes_after"] / info["size_bytes_before"], 4)
    return PassResult(OnnxArtifact(out, model.input_shape, {**model.info, name: info}), info)


@register_pass("fp16", Fp16Config, family="quantization", stage="onnx", devices=("cuda",))
def fp16(model: OnnxArtifact, config: Fp16Config, ctx: PassContext) -> PassResult:
    """float16 ONNX model for ONNX Runtime's CUDA provider (half the size, tensor cores)."""
    return _apply(model, "float16", config, ctx, "fp16")


@register_pass("bf16", Bf16Config, family="quantization", stage="onnx", devices=("cuda",))
def bf16(model: OnnxArtifact, config: Bf16Config, ctx: PassContext) -> PassResult:
    """bfloat16 ONNX model for ONNX Runtime's CUDA provider (fp32 range, half the size)."""
    return _apply(model, "bfloat16", config, ctx, "bf16")
