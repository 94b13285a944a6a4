"""int8_static: real QDQ int8 that is smaller and keeps accuracy; types per target; exclusions;
the accuracy-aware fallback meets a budget that plain int8 misses."""
from __future__ import annotations

import hashlib
from types import SimpleNamespace

import onnx
import pytest

from advisor.errors import DataError, PassError
from advisor.passes.base import get_pass
from advisor.passes.config import config_from_dict, config_to_dict
from advisor.passes.quantize import Int8StaticConfig, choose_int8_types, int8_static
from advisor.passes.onnx_common import layer_names
from advisor.passes.qdq import fp32_nodes_after_quantization

ALL_CONFIGS = [
    ("int8_static", {}), ("int8_static", {"calibration": "percentile", "num_samples": 64,
                                          "exclude_nodes": ("features.0",), "max_drop": 0.5,
                                          "reduce_range": True}),
    ("int8_dynamic", {}), ("int8_dynamic", {"op_types": ("MatMul", "Gemm"), "reduce_range": False}),
    ("weight_only_int8", {}), ("weight_only_int8", {"op_types": ("Gemm",), "min_elements": 16,
                                                          "expand": "run"}),
    ("torch_dynamic_int8", {}), ("torch_dynamic_int8", {"exclude": ("fc",), "engine": "qnnpack"}),
    ("fp16", {}), ("bf16", {"keep_io_types": False, "op_block_list": ("Resize",)}),
]


@pytest.mark.parametrize("name,fields", ALL_CONFIGS)
def test_config_round_trips_through_json(name, fields):
    import json

    spec = get_pass(name)
    cfg = spec.config_cls(**fields)
    data = json.loads(json.dumps(config_to_dict(cfg)))
    assert config_from_dict(spec.config_cls, data) == cfg
    assert spec.family == "quantization"


def test_registry_declares_needs_and_devices():
    assert get_pass("int8_static").needs_calibration and get_pass("int8_static").stage == "onnx"
    assert get_pass("int8_static").devices == ("cpu",)
    assert get_pass("torch_dynamic_int8").stage == "torch"
    assert get_pass("fp16").devices == ("cuda",) and get_pass("bf16").devices == ("cuda",)


def test_types_follow_the_target():
    host = choose_int8_types(SimpleNamespace(name="cpu", description="This host (x86-64 or Arm)"))
    assert host["cpu_source"] == "host"
    arm = choose_int8_types(SimpleNamespace(name="edge-arm", description="Cortex-A72"))
    assert (arm["activation"], arm["weight"], arm["reduce_range"]) == ("int8", "int8", False)
    emulated = choose_int8_types(SimpleNamespace(name="edge-arm", emulated=True))
    if emulated["arch"] != "arm":  # measured on an x86 host: types for the host that measures
        assert emulated["activation"] == "uint8" and "emulated" in emulated["reason"]
    no_vnni = choose_int8_types(SimpleNamespace(name="old-x86", arch="x86", isa=("avx2",)))
    assert (no_vnni["activation"], no_vnni["weight"], no_vnni["reduce_range"]) == \
        ("uint8", "int8", True)
    vnni = choose_int8_types(SimpleNamespace(name="x", arch="x86", isa=("avx2", "avx512_vnni")))
    assert vnni["reduce_range"] is False and vnni["activation"] == "uint8"
    forced = choose_int8_types(None, activation="int8", reduce_range=False)
    assert forced["activation"] == "int8" and "set in the config" in forced["reason"]


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("calibration", ["minmax", "entropy", "percentile"])
def test_static_int8_is_real_int8_smaller_and_accurate(calibration, small_cnn, small_onnx,
                                                       make_ctx):
    before = _digest(small_onnx.path)
    cfg = Int8StaticConfig(calibration=calibration, num_samples=128,
                           measure_speedup=calibration == "minmax")
    res = int8_static(small_onnx, cfg, make_ctx(teacher=small_cnn[0]))
    info = res.info
    assert _digest(small_onnx.path) == before  # the input is never modified
    assert res.model.path != small_onnx.path and res.model.path.exists()
    assert info["size_bytes_after"] <= 0.35 * info["size_bytes_before"]
    types = info["node_types"]
    assert types.get("QuantizeLinear", 0) >= 3 and types.get("DequantizeLinear", 0) >= 6
    graph = onnx.load(res.model.path)
    weights = {i.name: i.data_type for i in graph.graph.initializer}
    assert any(n.endswith("_quantized") and t == onnx.TensorProto.INT8 for n, t in weights.items())
    assert not fp32_nodes_after_quantization(graph, [n.name for n in graph.graph.node
                                                     if n.op_type in ("Conv", "Gemm")])
    assert info["calibration"] == calibration and info["samples"] == 128
    assert info["accuracy_fp32"] - info["accuracy"] <= 1.5
    assert info["top1_agreement"] >= 0.97
    if calibration == "minmax":
        assert info["speedup_vs_fp32"] > 0 and set(info["latency_ms"]) == {"fp32", "quantized"}


def test_excluded_layers_stay_fp32(small_onnx, make_ctx):
    res = int8_static(small_onnx, Int8StaticConfig(num_samples=64, exclude_nodes=("features.4",),
                                                   measure_speedup=False), make_ctx())
    graph = onnx.load(res.model.path)
    labels = layer_names(graph)
    conv4 = [n for n, label in labels.items() if label == "features.4"]
    assert len(conv4) == 1
    assert fp32_nodes_after_quantization(graph, conv4) == conv4
    inits = {i.name: i for i in graph.graph.initializer}
    assert inits["features.4.weight"].data_type == onnx.TensorProto.FLOAT
    assert [e["layer"] for e in res.info["excluded_nodes"]] == ["features.4"]
    others = [n for n, label in labels.items() if label in ("features.0", "features.8")]
    assert fp32_nodes_after_quantization(graph, others) == []


def test_needs_calibration_data_of_the_right_shape(small_onnx, make_ctx):
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    with pytest.raises(PassError, match="calibration"):
        int8_static(small_onnx, Int8StaticConfig(), make_ctx(calib=False))
    ctx = make_ctx()
    ctx.calib_loader = DataLoader(TensorDataset(torch.randn(8, 3, 16, 16)), batch_size=4)
    with pytest.raises(DataError, match="do not fit"):
        int8_static(small_onnx, Int8StaticConfig(), ctx)
    with pytest.raises(PassError, match="no node or layer"):
        int8_static(small_onnx, Int8StaticConfig(exclude_nodes=("nope",)), make_ctx())


def test_fallback_meets_a_budget_plain_int8_misses(small_cnn, sabotaged_onnx, make_ctx):
    model, _ = small_cnn
    assert sabotaged_onnx.info["export"]["max_abs_diff"] < 1e-2  # fp32 function unchanged
    ctx = make_ctx(teacher=model)
    plain = int8_static(sabotaged_onnx, Int8StaticConfig(measure_speedup=False), ctx).info
    drop = plain["accuracy_fp32"] - plain["accuracy"]
    assert drop > 5.0, "the outlier channel must break per-tensor activation quantization"

    res = int8_static(sabotaged_onnx, Int8StaticConfig(max_drop=1.0), ctx)
    fb = res.info["fallback"]
    assert fb["plain_int8"]["drop"] > 1.0
    assert fb["budget_met"] and fb["final"]["drop"] <= 1.0
    assert fb["reference"]["source"] == "original model"
    reverted = {r["layer"] for r in fb["reverted"]}
    assert {"features.4", "features.8"} <= reverted  # both layers touching the outlier tensor
    assert len(reverted) < len(fb["sensitivity"])  # not everything went back to fp32
    for r in fb["reverted"]:
        assert r["latency_ms_fp32"] > 0 and r["latency_ms_quantized"] > 0
        assert r["latency_cost_ms"] == pytest.approx(r["latency_ms_fp32"] - r["latency_ms_quantized"],
                                                     abs=1e-3)
        assert r["drop_if_quantized"] > 1.0  # each one is needed
    ranks = [s["layer"] for s in fb["sensitivity"]]
    assert set(ranks[:2]) == {"features.4", "features.8"}
    graph = onnx.load(res.model.path)
    excluded = [e["node"] for e in res.info["excluded_nodes"]]
    assert fp32_nodes_after_quantization(graph, excluded) == excluded
    assert res.info["accuracy_fp32"] - res.info["accuracy"] <= 1.0
    assert res.info["size_bytes_after"] < res.info["size_bytes_before"]


def test_fallback_is_not_run_when_int8_already_fits(small_cnn, small_onnx, make_ctx):
    res = int8_static(small_onnx, Int8StaticConfig(max_drop=5.0, num_samples=64),
                      make_ctx(teacher=small_cnn[0]))
    fb = res.info["fallback"]
    assert fb["budget_met"] and fb["reverted"] == [] and fb["quantizations"] == 1


def test_fallback_needs_labelled_validation_data(small_onnx, make_ctx):
    with pytest.raises(PassError, match="labelled validation"):
        int8_static(small_onnx, Int8StaticConfig(max_drop=1.0), make_ctx(val=False))



def test_fallback_reports_an_unreachable_budget(small_cnn, sabotaged_onnx, make_ctx):
    """A budget no variant meets: the most accurate variant tried is returned, marked unmet."""
    res = int8_static(sabotaged_onnx, Int8StaticConfig(max_drop=-50.0, max_reverted=2),
                      make_ctx(teacher=small_cnn[0]))
    fb = res.info["fallback"]
    assert fb["budget_met"] is False
    assert fb["final"]["accuracy"] >= fb["plain_int8"]["accuracy"]
    assert len([s for s in fb["steps"] if s["action"] == "revert"]) == 2


def test_arm_target_gets_signed_symmetric_activations(small_onnx, make_ctx):
    arm = SimpleNamespace(name="edge-arm", description="Edge Arm board", threads=1)
    res = int8_static(small_onnx, Int8StaticConfig(num_samples=64, measure_speedup=False),
                      make_ctx(target=arm))
    assert (res.info["activation_type"], res.info["weight_type"]) == ("int8", "int8")
    graph = onnx.load(res.model.path)
    zero_points = [i for i in graph.graph.initializer
                   if i.name.endswith("_zero_point") and not i.name.endswith("weight_zero_point")
                   and i.data_type == onnx.TensorProto.INT8]
    assert zero_points and all(not any(onnx.numpy_helper.to_array(z).ravel()) for z in zero_points)
    assert res.info["accuracy_fp32"] - res.info["accuracy"] <= 1.5


def test_static_batch_model_gets_calibration_in_its_batch(tmp_path, make_ctx):
    import torch

    from advisor.examples.models import mlp
    from advisor.export import export_onnx
    from advisor.passes.base import OnnxArtifact

    torch.manual_seed(0)
    path = tmp_path / "static.onnx"
    info = export_onnx(mlp(hidden=(32,)).eval(), path, (2, 3, 32, 32), dynamic_batch=False)
    assert info["dynamic_batch"] is False
    res = int8_static(OnnxArtifact(path, (2, 3, 32, 32)),
                      Int8StaticConfig(num_samples=33, measure_speedup=False), make_ctx())
    assert res.info["samples"] == 32  # whole batches of 2 only
    assert res.info["top1_agreement"] >= 0.9


def test_types_follow_a_loaded_target_profile(tmp_path):
    """`Target.arch`/`isa` reach `target_cpu`: a profile's declared CPU decides the types."""
    from advisor.measure.host import arch_family
    from advisor.targets import load_target

    def target(extra: str):
        path = tmp_path / "t.toml"
        path.write_text(f'name = "board"\ndevice = "cpu"\nprecisions = ["fp32", "int8"]\n'
                        f'{extra}\n[[runtimes]]\nname = "onnxruntime"\n')
        return load_target(path)

    old = choose_int8_types(target('arch = "x86"\nisa = ["avx2"]'))
    assert (old["cpu_source"], old["vnni"], old["reduce_range"]) == ("target", False, True)
    new = choose_int8_types(target('arch = "x86"\nisa = ["avx2", "avx512_vnni"]'))
    assert (new["cpu_source"], new["vnni"], new["reduce_range"]) == ("target", True, False)
    arm = choose_int8_types(target('arch = "arm"\nisa = ["neon", "asimddp"]'))
    assert (arm["arch"], arm["activation"], arm["cpu_source"]) == ("arm", "int8", "target")
    host = choose_int8_types(load_target("cpu"))
    assert host["cpu_source"] == "host" and host["arch"] == arch_family()
    edge = choose_int8_types(load_target("edge-arm"))  # emulated: measured on this host
    if arch_family() != "arm":
        assert edge["activation"] == "uint8" and "emulated" in edge["reason"]
