"""Every supported model format loads and computes what the original module computes."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from advisor.model_io import LoadedModel, detect_format, load_model, model_summary, \
    parse_input_shape

ARCH = "advisor.examples.models:resnet"


def _outputs(loaded: LoadedModel, x: torch.Tensor) -> torch.Tensor:
    if loaded.module is not None:
        with torch.inference_mode():
            return loaded.module.eval()(x)
    from advisor.export import onnx_session, run_onnx
    return torch.from_numpy(run_onnx(onnx_session(loaded.onnx_path), x))


def _expected(reference, x):
    with torch.inference_mode():
        return reference(x)


def test_pt2_with_allowlisted_arch_rebuilds_an_editable_eager_module(artefacts, reference, probe):
    loaded = load_model(str(artefacts["pt2"]))
    assert loaded.format == "pt2" and loaded.editable
    assert type(loaded.module) is type(reference)  # the real class, with nn.Conv2d inside
    assert any(isinstance(m, nn.Conv2d) for m in loaded.module.modules())
    assert loaded.input_shape == (1, 3, 32, 32)
    assert loaded.metadata["arch"] == ARCH
    torch.testing.assert_close(_outputs(loaded, probe), _expected(reference, probe))


def test_pt2_without_arch_is_lifted_into_layers(artefacts, reference, probe):
    loaded = load_model(str(artefacts["pt2_plain"]))
    assert loaded.format == "pt2" and loaded.editable and loaded.metadata["lifted"] == 1
    convs = [m for m in loaded.module.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == sum(isinstance(m, nn.Conv2d) for m in reference.modules())
    assert any("lifted from the exported graph" in n for n in loaded.metadata["notes"])
    torch.testing.assert_close(_outputs(loaded, probe), _expected(reference, probe))
    loaded.module.train()  # a lifted module trains (its BatchNorms are real layers)
    loaded.module(torch.randn(4, *probe.shape[1:])).sum().backward()
    assert convs[0].weight.grad is not None


def test_pt2_that_cannot_be_lifted_gives_the_graph_not_editable(artefacts, reference, probe,
                                                                monkeypatch):
    from advisor import lift

    monkeypatch.setattr(lift, "lift_program", lambda ep, x: lift.LiftResult(None, "no reason"))
    loaded = load_model(str(artefacts["pt2_plain"]))
    assert loaded.format == "pt2" and not loaded.editable
    assert loaded.metadata["lift_refused"] == "no reason"
    assert not any(isinstance(m, nn.Conv2d) for m in loaded.module.modules())
    assert loaded.module.eval() is loaded.module  # eval() is allowed (mode fixed at export)
    with pytest.raises(NotImplementedError, match="cannot be trained"):
        loaded.module.train()
    torch.testing.assert_close(_outputs(loaded, probe), _expected(reference, probe))


def test_pt2_with_user_arch_rebuilds(artefacts, reference, probe):
    loaded = load_model(str(artefacts["pt2_plain"]), arch=ARCH)
    assert loaded.editable and type(loaded.module) is type(reference)
    torch.testing.assert_close(_outputs(loaded, probe), _expected(reference, probe))


def test_pt2_input_shape_comes_from_the_graph_when_metadata_lacks_it(tmp_path, reference,
                                                                     helpers):
    import json

    src = tmp_path / "m.pt2"
    from advisor.export import save_pt2
    save_pt2(reference, src, (1, 3, 32, 32))

    def drop_shape(rel, data):
        if rel == "extra/advisor.json":
            meta = json.loads(data)
            meta.pop("input_shape")
            return json.dumps(meta).encode()
        return data
    dst = helpers.rewrite_zip(src, tmp_path / "noshape.pt2", drop_shape)
    loaded = load_model(str(dst))
    assert "input_shape" not in loaded.metadata
    assert loaded.input_shape == (1, 3, 32, 32)  # dynamic batch → 1, the rest from the graph


def test_torchscript(artefacts, reference, probe):
    loaded = load_model(str(artefacts["torchscript"]), input_shape="1,3,32,32")
    assert loaded.format == "torchscript" and not loaded.editable
    torch.testing.assert_close(_outputs(loaded, probe), _expected(reference, probe))


def test_state_dict_with_arch(artefacts, reference, probe):
    loaded = load_model(str(artefacts["state_dict"]), arch=ARCH, input_shape=(1, 3, 32, 32))
    assert loaded.format == "state_dict" and loaded.editable
    assert loaded.metadata["arch"] == ARCH
    torch.testing.assert_close(_outputs(loaded, probe), _expected(reference, probe))


def test_state_dict_inside_a_checkpoint_dict(tmp_path, reference, probe):
    path = tmp_path / "ckpt.pt"
    torch.save({"epoch": 3, "state_dict": reference.state_dict()}, path)
    loaded = load_model(str(path), arch=ARCH, input_shape="1,3,32,32")
    torch.testing.assert_close(_outputs(loaded, probe), _expected(reference, probe))


def test_factory_spec_builds_the_architecture_with_its_own_init(probe):
    from advisor.examples.models import resnet

    torch.manual_seed(5)
    loaded = load_model(ARCH)
    torch.manual_seed(5)
    expected = resnet().eval()
    assert loaded.format == "factory" and loaded.editable and loaded.path is None
    assert loaded.input_shape == (1, 3, 32, 32)  # known for the built-in examples
    torch.testing.assert_close(_outputs(loaded, probe), _expected(expected, probe))


def test_factory_spec_from_the_working_directory(tmp_path, monkeypatch, probe):
    (tmp_path / "my_models_io.py").write_text(
        "import torch\n"
        "def net():\n"
        "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 4))\n")
    monkeypatch.chdir(tmp_path)
    loaded = load_model("my_models_io:net", input_shape="1,3,2,2")
    assert loaded.editable and loaded.module(torch.zeros(2, 3, 2, 2)).shape == (2, 4)


def test_trusted_pickle(artefacts, reference, probe):
    loaded = load_model(str(artefacts["pickle"]), trust_pickle=True, input_shape="1x3x32x32")
    assert loaded.format == "pickle" and loaded.editable
    torch.testing.assert_close(_outputs(loaded, probe), _expected(reference, probe))


def test_onnx(artefacts, reference, probe):
    loaded = load_model(str(artefacts["onnx"]))
    # the file stays the model measured; its layers are lifted for the structured passes
    assert loaded.format == "onnx" and loaded.editable and loaded.metadata["lifted"] == 1
    assert any(isinstance(m, nn.Conv2d) for m in loaded.module.modules())
    assert loaded.onnx_path == artefacts["onnx"]
    assert loaded.input_shape == (1, 3, 32, 32)  # symbolic batch → 1
    np.testing.assert_allclose(_outputs(loaded, probe).numpy(),
                               _expected(reference, probe).numpy(), atol=1e-4, rtol=1e-4)


def test_detection_is_by_content_not_extension(artefacts, tmp_path):
    for kind, expected in (("pt2", "pt2"), ("torchscript", "torchscript"),
                           ("state_dict", "torch_save"), ("onnx", "onnx")):
        renamed = tmp_path / f"{kind}.bin"
        renamed.write_bytes(artefacts[kind].read_bytes())
        assert detect_format(renamed) == expected


def test_explicit_input_shape_wins_over_the_recorded_one(artefacts):
    loaded = load_model(str(artefacts["pt2"]), input_shape="1,3,64,64")
    assert loaded.input_shape == (1, 3, 64, 64)


def test_legacy_non_zip_torch_save(tmp_path, reference, probe):
    path = tmp_path / "legacy.pt"
    torch.save(reference.state_dict(), path, _use_new_zipfile_serialization=False)
    loaded = load_model(str(path), arch=ARCH, input_shape="1,3,32,32")
    torch.testing.assert_close(_outputs(loaded, probe), _expected(reference, probe))


def test_model_summary(artefacts, reference):
    s = model_summary(load_model(str(artefacts["pt2"])))
    assert s["format"] == "pt2" and s["editable"] is True
    assert s["params"] == sum(p.numel() for p in reference.parameters())
    assert s["input_shape"] == [1, 3, 32, 32] and s["size_bytes"] > 0
    onnx_summary = model_summary(load_model(str(artefacts["onnx"])))
    assert onnx_summary["params"] > 0.9 * s["params"]  # BN folded into the convs


@pytest.mark.parametrize("text,shape", [("1,3,224,224", (1, 3, 224, 224)),
                                        ("1x3x224x224", (1, 3, 224, 224)),
                                        ("(1, 3, 32, 32)", (1, 3, 32, 32)),
                                        ("8,784", (8, 784))])
def test_parse_input_shape(text, shape):
    assert parse_input_shape(text) == shape


def test_trusted_checkpoint_dict_holding_the_module(tmp_path, reference, probe):
    path = tmp_path / "ckpt.pt"
    torch.save({"model": reference, "epoch": 9}, path)
    loaded = load_model(str(path), trust_pickle=True, input_shape="1,3,32,32", arch=ARCH)
    assert loaded.format == "pickle"
    assert loaded.metadata["notes"] == ["--arch is ignored for pickle models"]
    torch.testing.assert_close(_outputs(loaded, probe), _expected(reference, probe))
