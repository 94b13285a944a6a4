"""Hot spots name layers alike whatever measured them: torch hooks on the eager module, ONNX
Runtime's profiler on the fp32 ONNX export and on its int8 (QDQ) quantization, and hooks on a
`.pt2` program all report `layers.0.conv1`, never ONNX Runtime's `node_Conv_142_token_1`."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from advisor.examples.models import resnet
from advisor.measure.layers import artifact_hotspots, hotspots
from advisor.measure.onnx_layers import RUNTIME_INSERTED, node_modules

SHAPE = (1, 3, 32, 32)
FAST = {"threads": 1, "runs": 3}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The resnet example as eager module, fp32 ONNX, int8-static QDQ ONNX, .pt2 and .ts."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from advisor.export import export_onnx, save_pt2, save_torchscript
    from advisor.quiet import quiet

    torch.manual_seed(0)
    model = resnet().eval()
    d = tmp_path_factory.mktemp("names")
    fp32 = export_onnx(model, d / "fp32.onnx", SHAPE)["path"]

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.batches = iter([{"input": rng.standard_normal(SHAPE).astype(np.float32)}
                                 for _ in range(4)])

        def get_next(self):
            return next(self.batches, None)

    with quiet():  # as advisor.passes.qdq does it: pre-process, then QDQ per channel
        quant_pre_process(fp32, str(d / "pre.onnx"))
        quantize_static(str(d / "pre.onnx"), str(d / "int8.onnx"), Reader(),
                        quant_format=QuantFormat.QDQ, per_channel=True)
    return {"model": model, "fp32": d / "fp32.onnx", "int8": d / "int8.onnx",
            "pt2": save_pt2(model, d / "model.pt2", SHAPE),
            "ts": save_torchscript(model, d / "model.ts", SHAPE), "dir": d}


def _convs(h) -> set[str]:
    return {r.name for r in h.layers if r.kind == "conv"}


def _no_node_names(h):
    assert not [r.name for r in h.layers if r.name.startswith("node_")]


def test_onnx_nodes_map_to_their_modules(files):
    model = onnx.load(str(files["fp32"]))
    modules = node_modules(model)
    convs = {modules[n.name] for n in model.graph.node if n.op_type == "Conv"}
    eager = {n for n, m in files["model"].named_modules() if isinstance(m, torch.nn.Conv2d)}
    # the Conv the exporter fused with its BatchNorm carries the BatchNorm's scope (stem.1):
    # the weight's name gives the conv back (stem.0)
    assert convs == eager
    assert {modules[n.name] for n in model.graph.node if n.op_type == "Gemm"} == {"fc"}


def test_baseline_and_int8_static_name_the_same_conv_layers(files):
    eager = hotspots(files["model"], SHAPE, **FAST)
    fp32 = artifact_hotspots(files["fp32"], "onnxruntime", SHAPE, **FAST)
    int8 = artifact_hotspots(files["int8"], "onnxruntime", SHAPE, **FAST)
    assert fp32.method == int8.method == "onnxruntime-modules"
    assert _convs(fp32) == _convs(eager) and len(_convs(eager)) == 9
    assert len(_convs(int8) & _convs(eager)) >= len(_convs(eager)) - 1
    assert "QLinearConv" in {r.type for r in int8.layers}  # int8 kernels, still named by layer
    for h in (fp32, int8):
        _no_node_names(h)
        assert len({r.name for r in h.layers}) == len(h.layers)  # one row per module
        assert sum(r.share for r in h.layers) == pytest.approx(1.0, abs=1e-6)
    # quantize/dequantize nodes are charged to layers, not counted as linear layers
    assert int8.kind_shares["linear"] < 0.5


def test_lost_metadata_is_mapped_back_by_node_name(files):
    model = onnx.load(str(files["int8"]))
    for node in model.graph.node:
        del node.metadata_props[:]
    stripped = files["dir"] / "int8-stripped.onnx"
    onnx.save(model, str(stripped))
    alone = artifact_hotspots(stripped, "onnxruntime", SHAPE, **FAST)
    assert _convs(alone) >= _convs(artifact_hotspots(files["int8"], "onnxruntime", SHAPE,
                                                      **FAST)) - {RUNTIME_INSERTED}
    with_ref = artifact_hotspots(stripped, "onnxruntime", SHAPE, reference=files["fp32"],
                                 **FAST)
    _no_node_names(with_ref)
    assert {"stem.2", "layers.0"} & {r.name for r in with_ref.layers}  # a ReLU / an Add


def test_a_file_without_module_information_keeps_node_names(files):
    model = onnx.load(str(files["fp32"]))
    for node in model.graph.node:
        del node.metadata_props[:]
    renames = {i.name: f"w{k}" for k, i in enumerate(model.graph.initializer)}
    for i in model.graph.initializer:
        i.name = renames[i.name]
    for node in model.graph.node:
        node.input[:] = [renames.get(x, x) for x in node.input]
    path = files["dir"] / "anonymous.onnx"
    onnx.save(model, str(path))
    h = artifact_hotspots(path, "onnxruntime", SHAPE, **FAST)
    assert h.method == "onnxruntime-nodes" and h.notes
    assert h.kind_shares["conv"] > 0.3


def test_pt2_program_is_named_like_the_eager_module(files):
    h = artifact_hotspots(files["pt2"], "torch", SHAPE, **FAST)
    assert h.method == "program-hooks"
    assert _convs(h) == _convs(hotspots(files["model"], SHAPE, **FAST))
    assert {r.type for r in h.layers if r.kind == "conv"} == {"Conv2d"}


def test_torchscript_artifact_says_why_it_has_no_layer_names(files):
    h = artifact_hotspots(files["ts"], "torch", SHAPE, **FAST)
    assert h.layers and h.method == "op-types"
    assert any("TorchScript" in n and "not available" in n for n in h.notes)


def test_dynamic_int8_nodes_keep_their_layer_names(files):
    """quantize_dynamic rewrites Gemm into MatMulInteger + Muls without metadata, named after
    the original node (`node_linear_MatMul_quant`) and the weight (`fc.weight_Transposed_...`)."""
    from onnxruntime.quantization import quantize_dynamic

    from advisor.quiet import quiet

    out = files["dir"] / "dynamic.onnx"
    with quiet():
        quantize_dynamic(str(files["fp32"]), str(out))
    h = artifact_hotspots(out, "onnxruntime", SHAPE, **FAST)
    _no_node_names(h)
    assert {r.name: r.kind for r in h.layers}.get("fc") == "linear"
    assert _convs(h) == _convs(artifact_hotspots(files["fp32"], "onnxruntime", SHAPE, **FAST))
