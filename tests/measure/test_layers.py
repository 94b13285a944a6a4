"""Hot spots: per-layer shares sum to one and the dominant kind is found, for eager modules
(hooks), graph modules (operator types) and ONNX models (ONNX Runtime nodes)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from advisor.measure.layers import Hotspots, hotspots, layer_kind, onnx_hotspots, op_kind

SHAPE = (1, 3, 48, 48)


def _conv_heavy() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10)).eval()


def _linear_heavy() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 48 * 48, 512), nn.ReLU(),
                         nn.Linear(512, 10)).eval()


def _check_shares(h: Hotspots):
    assert sum(r.share for r in h.layers) == pytest.approx(1.0, abs=1e-6)
    assert sum(h.kind_shares.values()) == pytest.approx(1.0, abs=1e-6)
    assert set(h.kind_shares) == {"conv", "linear", "other"}
    assert [r.ms for r in h.layers] == sorted((r.ms for r in h.layers), reverse=True)


def test_conv_net_is_conv_dominated():
    h = hotspots(_conv_heavy(), SHAPE, threads=1, runs=5)
    _check_shares(h)
    assert h.method == "module-hooks" and h.threads == 1 and h.batch_size == 1
    assert h.kind_shares["conv"] > 0.5
    kinds = {r.name: r.kind for r in h.layers}
    assert kinds["0"] == "conv" and kinds["2"] == "conv" and kinds["6"] == "linear"
    assert h.top(1)[0].kind == "conv"
    assert Hotspots.from_json(h.to_json()).kind_shares == pytest.approx(h.kind_shares, abs=1e-4)


def test_mlp_is_linear_dominated():
    h = hotspots(_linear_heavy(), SHAPE, threads=1, runs=5)
    _check_shares(h)
    assert h.kind_shares["linear"] > 0.5


def test_graph_module_falls_back_to_operator_types():
    model = _conv_heavy()
    gm = torch.export.export(model, (torch.randn(SHAPE),)).module()
    h = hotspots(gm, SHAPE, threads=1, runs=5)
    _check_shares(h)
    assert h.method == "op-types" and h.kind_shares["conv"] > 0.5
    assert all(r.type == "operator" for r in h.layers)
    assert any(r.name.startswith("aten::") and r.kind == "conv" for r in h.top(3))


def test_onnx_nodes(tmp_path):
    from advisor.export import export_onnx

    path = export_onnx(_conv_heavy(), tmp_path / "m.onnx", SHAPE)["path"]
    h = onnx_hotspots(path, SHAPE, threads=1, runs=5)
    _check_shares(h)
    assert h.method == "onnxruntime-modules" and h.kind_shares["conv"] > 0.5
    assert {"0", "2", "6"} <= {r.name for r in h.layers}  # the Sequential's module names


def test_kinds_from_names():
    assert layer_kind(nn.Conv2d(1, 1, 1)) == "conv" and layer_kind(nn.Linear(1, 1)) == "linear"
    assert layer_kind(nn.BatchNorm2d(1)) == "other"
    assert op_kind("aten::mkldnn_convolution") == "conv" and op_kind("Conv") == "conv"
    assert op_kind("aten::addmm") == "linear" and op_kind("Gemm") == "linear"
    assert op_kind("MatMul") == "linear" and op_kind("aten::add") == "other"
    assert op_kind("aten::relu") == "other"
    assert op_kind("QLinearConv") == "conv" and op_kind("QGemm") == "linear"
    assert op_kind("MatMulInteger") == "linear" and op_kind("FusedMatMul") == "linear"
    for op in ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearAdd"):
        assert op_kind(op) == "other", op


def test_module_left_as_found():
    model = _conv_heavy().train()
    hotspots(model, SHAPE, threads=1, runs=2)
    assert model.training
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
