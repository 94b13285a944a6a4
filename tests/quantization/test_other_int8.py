"""int8_dynamic (measured, never assumed), torch_dynamic_int8, weight_only_int8, and every ONNX
artefact loading in a plain onnxruntime process."""
from __future__ import annotations

import onnx
import pytest
import torch

from advisor.errors import PassError
from advisor.passes.base import OnnxArtifact, PassContext
from advisor.passes.quantize import (Int8DynamicConfig, Int8StaticConfig, TorchDynamicInt8Config,
                                     WeightOnlyInt8Config, int8_dynamic, int8_static,
                                     torch_dynamic_int8, weight_only_int8)

SHAPE = (1, 3, 32, 32)


@pytest.fixture(scope="module")
def mlp_onnx(tmp_path_factory):
    """A Linear-heavy model (3072-256-10, ~0.8M weights) and its fp32 ONNX file."""
    from advisor.examples.models import mlp
    from advisor.export import export_onnx

    torch.manual_seed(0)
    model = mlp(hidden=(256,)).eval()
    path = tmp_path_factory.mktemp("mlp") / "mlp.onnx"
    export_onnx(model, path, SHAPE)
    return model, OnnxArtifact(path, SHAPE)


def test_dynamic_int8_reports_measured_speed(small_onnx, make_ctx):
    res = int8_dynamic(small_onnx, Int8DynamicConfig(), make_ctx())
    info = res.info
    assert info["conv_integer_nodes"] == 3  # ORT's default set includes Conv
    assert "DynamicQuantizeLinear" in info["node_types"]
    assert info["speedup_vs_fp32"] > 0
    assert ("warning" in info) == (info["speedup_vs_fp32"] < 1.0)
    assert info["size_bytes_after"] < 0.35 * info["size_bytes_before"]
    assert info["accuracy_fp32"] - info["accuracy"] <= 2.0


def test_dynamic_int8_on_linear_layers(mlp_onnx, make_ctx):
    _, art = mlp_onnx
    res = int8_dynamic(art, Int8DynamicConfig(op_types=("MatMul", "Gemm")), make_ctx(val=False))
    assert res.info["matmul_integer_nodes"] >= 2 and res.info["conv_integer_nodes"] == 0
    assert res.info["size_ratio"] < 0.3
    assert res.info["top1_agreement"] >= 0.9


def test_torch_dynamic_int8_quantizes_linear_layers(mlp_onnx):
    model, _ = mlp_onnx
    x = torch.randn(SHAPE)
    res = torch_dynamic_int8(model, TorchDynamicInt8Config(), PassContext((x,), SHAPE))
    info = res.info
    assert info["quantized_modules"] == ["net.1", "net.3"]
    assert type(res.model.net[1]).__name__ == "Linear" and \
        type(res.model.net[1]).__module__.startswith("torch.ao.nn.quantized.dynamic")
    assert isinstance(model.net[1], torch.nn.Linear)  # the input model is untouched
    assert info["size_ratio"] < 0.3
    assert info["max_abs_diff"] < 0.05
    assert info["speedup_vs_fp32"] > 0


def test_torch_dynamic_int8_exclusions_and_errors(mlp_onnx, small_cnn):
    model, _ = mlp_onnx
    ctx = PassContext((torch.randn(SHAPE),), SHAPE)
    res = torch_dynamic_int8(model, TorchDynamicInt8Config(exclude=("net.3",),
                                                           measure_speedup=False), ctx)
    assert res.info["quantized_modules"] == ["net.1"]
    assert isinstance(res.model.net[3], torch.nn.Linear)
    convs_only = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    with pytest.raises(PassError, match="no Linear"):
        torch_dynamic_int8(convs_only, TorchDynamicInt8Config(), ctx)
    with pytest.raises(PassError, match="no module named"):
        torch_dynamic_int8(model, TorchDynamicInt8Config(exclude=("nope",)), ctx)


def test_weight_only_int8_is_four_times_smaller_and_runs(mlp_onnx, make_ctx):
    _, art = mlp_onnx
    res = weight_only_int8(art, WeightOnlyInt8Config(), make_ctx(val=False))
    info = res.info
    assert info["size_bytes_after"] <= 0.27 * info["size_bytes_before"]
    graph = onnx.load(res.model.path)
    inits = {i.name: i.data_type for i in graph.graph.initializer}
    assert inits["net.1.weight_int8"] == onnx.TensorProto.INT8
    assert "net.1.weight" not in inits  # the fp32 copy is gone
    # expanded by Cast * scale, which ONNX Runtime folds when the session loads
    assert info["node_types"]["Cast"] == 2 and info["node_types"]["Mul"] == 2
    assert "QuantizeLinear" not in info["node_types"]  # activations stay fp32
    assert info["max_abs_diff"] < 0.05 and info["top1_agreement"] >= 0.97
    assert info["speedup_vs_fp32"] > 0


def test_weight_only_int8_dequantized_per_call(mlp_onnx, make_ctx):
    _, art = mlp_onnx
    res = weight_only_int8(art, WeightOnlyInt8Config(expand="run", measure_speedup=False),
                           make_ctx(val=False))
    assert res.info["node_types"]["DequantizeLinear"] == 2
    assert "Cast" not in res.info["node_types"]
    assert res.info["size_ratio"] <= 0.27 and res.info["max_abs_diff"] < 0.05


def test_weight_only_int8_on_a_cnn(small_onnx, make_ctx):
    res = weight_only_int8(small_onnx, WeightOnlyInt8Config(measure_speedup=False), make_ctx())
    assert res.info["size_ratio"] <= 0.3
    assert set(res.info["layers"]) == {"features.0", "features.4", "features.8", "classifier"}
    assert res.info["accuracy_fp32"] - res.info["accuracy"] <= 1.0
    with pytest.raises(PassError, match="large enough"):
        weight_only_int8(small_onnx, WeightOnlyInt8Config(min_elements=10 ** 9), make_ctx())


def test_every_quantized_artifact_loads_in_plain_onnxruntime(small_onnx, mlp_onnx, make_ctx,
                                                             plain_onnxruntime_load):
    paths = [int8_static(small_onnx, Int8StaticConfig(num_samples=64, measure_speedup=False),
                         make_ctx()).model.path,
             int8_dynamic(small_onnx, Int8DynamicConfig(measure_speedup=False), make_ctx()).model.path,
             weight_only_int8(mlp_onnx[1], WeightOnlyInt8Config(measure_speedup=False),
                              make_ctx(val=False)).model.path]
    res = plain_onnxruntime_load(paths)
    assert all(res[str(p)] == [[1, 10], [3, 10]] for p in paths)
