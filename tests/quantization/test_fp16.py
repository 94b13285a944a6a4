"""fp16/bf16: the conversion is checked on the CPU (graph structure, values through ONNX's
reference evaluator); running needs a CUDA GPU and is skipped without one, with the reason."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto
from onnx.reference import ReferenceEvaluator

from advisor.errors import PassError
from advisor.export import onnx_session
from advisor.passes.fp16 import (bf16_bits_to_float, convert_float_model, cuda_available,
                                 float_to_bf16_bits)
from advisor.passes.quantize import Bf16Config, Fp16Config, bf16, fp16


def _run_reference(model, x):
    return ReferenceEvaluator(model).run(None, {"input": x})[0]


@pytest.mark.parametrize("precision,dtype", [("float16", TensorProto.FLOAT16),
                                             ("bfloat16", TensorProto.BFLOAT16)])
def test_conversion_structure_and_values(small_onnx, precision, dtype):
    src = onnx.load(small_onnx.path)
    half = convert_float_model(src, precision)
    weights = [i for i in half.graph.initializer if i.name.endswith(".weight")]
    assert weights and all(w.data_type == dtype for w in weights)
    # float32 interface, a Cast at each end
    assert half.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert half.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert half.graph.node[0].op_type == "Cast" and half.graph.node[-1].op_type == "Cast"
    assert half.ByteSize() < 0.55 * src.ByteSize()
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    ref = onnx_session(small_onnx.path).run(None, {"input": x})[0]
    got = np.asarray(_run_reference(half, x), np.float32)
    tol = 0.01 if precision == "float16" else 0.06
    assert np.abs(got - ref).max() <= tol * np.abs(ref).max()
    assert (got.argmax(1) == ref.argmax(1)).all()


def test_io_types_can_be_half_and_ops_blocked(small_onnx):
    src = onnx.load(small_onnx.path)
    half = convert_float_model(src, "float16", keep_io_types=False, op_block_list=("Gemm",))
    assert half.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    gemm = next(n for n in half.graph.node if n.op_type == "Gemm")
    inits = {i.name: i.data_type for i in half.graph.initializer}
    assert inits["classifier.weight"] == TensorProto.FLOAT  # blocked op keeps fp32 weights
    assert any("_to_float32_" in i for i in gemm.input)
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float16)
    assert _run_reference(half, x).dtype == np.float16


def test_bf16_bits_round_to_nearest_even():
    x = np.array([1.0, -2.5, 3.14159, 1e-3, 65504.0, np.inf], np.float32)
    back = bf16_bits_to_float(float_to_bf16_bits(x))
    assert np.allclose(back, x, rtol=2 ** -8)
    assert back[0] == 1.0 and back[-1] == np.inf
    assert np.isnan(bf16_bits_to_float(float_to_bf16_bits(np.array([np.nan], np.float32))))[0]


def test_fp16_runs_where_onnxruntime_cpu_has_kernels(small_onnx, tmp_path):
    """ONNX Runtime's CPU provider has fp16 kernels for these ops on some builds only."""
    half = convert_float_model(onnx.load(small_onnx.path), "float16")
    onnx.save(half, tmp_path / "h.onnx")
    try:
        sess = onnx_session(tmp_path / "h.onnx")
    except Exception as e:  # NOT_IMPLEMENTED on CPU builds without fp16 kernels
        pytest.skip(f"ONNX Runtime CPU has no fp16 kernel for this graph: {str(e)[:120]}")
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    ref = onnx_session(small_onnx.path).run(None, {"input": x})[0]
    assert np.abs(sess.run(None, {"input": x})[0] - ref).max() <= 0.01 * np.abs(ref).max()


@pytest.mark.parametrize("name,fn,cfg", [("fp16", fp16, Fp16Config()), ("bf16", bf16, Bf16Config())])
def test_gpu_pass_skips_without_cuda(small_onnx, make_ctx, name, fn, cfg):
    ok, why = cuda_available()
    if ok:
        pytest.skip("a CUDA GPU is present: covered by test_gpu_pass_runs_on_cuda")
    with pytest.raises(PassError, match=f"{name} skipped: no CUDA GPU on this host"):
        fn(small_onnx, cfg, make_ctx())


@pytest.mark.gpu
@pytest.mark.parametrize("fn,cfg", [(fp16, Fp16Config()), (bf16, Bf16Config())])
def test_gpu_pass_runs_on_cuda(small_onnx, make_ctx, fn, cfg):
    ok, why = cuda_available()
    if not ok:
        pytest.skip(f"skipped: no CUDA GPU on this host ({why})")
    res = fn(small_onnx, cfg, make_ctx())
    assert res.info["provider"] == "CUDAExecutionProvider"
    assert res.info["size_ratio"] < 0.55 and res.info["max_abs_diff"] < 0.1
