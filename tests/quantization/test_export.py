"""advisor.export: one ONNX file with a dynamic batch, checked against torch; .pt2 round trip;
artefacts that load in a plain onnxruntime process which never imports advisor."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from advisor.export import export_onnx, onnx_session, run_onnx, save_torch_artifact

SHAPE = (1, 3, 32, 32)


@pytest.fixture(scope="module")
def resnet_onnx(tmp_path_factory):
    from advisor.examples.models import resnet

    torch.manual_seed(0)
    model = resnet(width=8).eval()
    out = tmp_path_factory.mktemp("export")
    info = export_onnx(model, out / "resnet.onnx", SHAPE)
    return model, out, info


def test_single_file_without_external_data(resnet_onnx):
    _, out, info = resnet_onnx
    assert [p.name for p in out.iterdir()] == ["resnet.onnx"]  # no .data, no temp leftovers
    assert info["external_data"] is False
    assert info["size_bytes"] == (out / "resnet.onnx").stat().st_size


def test_dynamic_batch_matches_torch(resnet_onnx):
    model, out, info = resnet_onnx
    assert info["dynamic_batch"] is True
    assert info["max_abs_diff"] < 1e-4
    sess = onnx_session(out / "resnet.onnx", threads=1)
    for batch in (1, 5):
        x = torch.randn(batch, 3, 32, 32)
        got = run_onnx(sess, x)
        with torch.inference_mode():
            ref = model(x).numpy()
        assert got.shape == (batch, 10)
        assert np.abs(got - ref).max() < 1e-4


def test_source_paths_are_not_embedded(resnet_onnx):
    import onnx

    _, out, _ = resnet_onnx
    keys = {p.key for n in onnx.load(out / "resnet.onnx").graph.node for p in n.metadata_props}
    assert "pkg.torch.onnx.stack_trace" not in keys
    assert "pkg.torch.onnx.name_scopes" in keys  # layer names stay available


def test_static_batch_when_asked(tmp_path):
    from advisor.examples.models import mlp

    info = export_onnx(mlp(hidden=(16,)).eval(), tmp_path / "m.onnx", (3, 3, 32, 32),
                       dynamic_batch=False)
    assert info["dynamic_batch"] is False
    assert onnx_session(tmp_path / "m.onnx").get_inputs()[0].shape[0] == 3


def test_pt2_round_trip(tmp_path, resnet_onnx):
    model = resnet_onnx[0]
    path = save_torch_artifact(model, tmp_path / "m.pt2", SHAPE,
                               {"arch": "advisor.examples.models:resnet"})
    assert path == tmp_path / "m.pt2"
    extra = {"advisor.json": ""}
    loaded = torch.export.load(str(path), extra_files=extra)
    meta = json.loads(extra["advisor.json"])
    assert meta["input_shape"] == list(SHAPE) and meta["dynamic_batch"] is True
    assert meta["arch"] == "advisor.examples.models:resnet"
    x = torch.randn(3, 3, 32, 32)
    with torch.inference_mode():
        assert torch.allclose(loaded.module()(x), model(x), atol=1e-5)


@pytest.mark.filterwarnings("ignore:.*torch.jit.load.*is deprecated:DeprecationWarning")
def test_torchscript_for_dynamic_int8(tmp_path):
    """torch.ao dynamic int8 cannot go through torch.export; TorchScript carries it."""
    from advisor.examples.models import mlp
    from advisor.passes.base import PassContext
    from advisor.passes.quantize import TorchDynamicInt8Config, torch_dynamic_int8

    model = mlp(hidden=(64,)).eval()
    q = torch_dynamic_int8(model, TorchDynamicInt8Config(measure_speedup=False),
                           PassContext((torch.randn(SHAPE),), SHAPE)).model
    path = save_torch_artifact(q, tmp_path / "q.pt2", SHAPE, {"pass": "torch_dynamic_int8"})
    assert path == tmp_path / "q.ts" and not (tmp_path / "q.pt2").exists()
    extra = {"advisor.json": ""}
    loaded = torch.jit.load(str(path), _extra_files=extra)
    assert json.loads(extra["advisor.json"])["pass"] == "torch_dynamic_int8"
    x = torch.randn(4, 3, 32, 32)
    with torch.inference_mode():
        assert torch.allclose(loaded(x), q(x), atol=1e-5)


def test_exported_model_loads_in_plain_onnxruntime(resnet_onnx, plain_onnxruntime_load):
    _, out, _ = resnet_onnx
    res = plain_onnxruntime_load([out / "resnet.onnx"])
    assert res[str(out / "resnet.onnx")] == [[1, 10], [3, 10]]
