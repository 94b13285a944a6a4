"""`--arch-kwargs`: a factory's keyword arguments as JSON literals, for every format that takes an
architecture, recorded where `apply` finds them again (report, plan.json, the .pt2 advisor writes)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from advisor.errors import ModelLoadError
from advisor.model_io import load_model

ARCH = "advisor.examples.models:resnet"
KW = {"width": 8, "num_classes": 7}
SHAPE = (1, 3, 32, 32)


def _model():
    from advisor.examples.models import resnet

    torch.manual_seed(5)
    return resnet(**KW).eval()


def test_factory_spec_with_kwargs_builds_that_model():
    loaded = load_model(ARCH, arch_kwargs=json.dumps(KW), input_shape=SHAPE)
    assert loaded.metadata["arch_kwargs"] == KW
    with torch.inference_mode():
        assert loaded.module(torch.zeros(SHAPE)).shape == (1, 7)


def test_state_dict_needs_the_same_kwargs(tmp_path):
    model = _model()
    torch.save(model.state_dict(), tmp_path / "w.pt")
    loaded = load_model(str(tmp_path / "w.pt"), arch=ARCH, arch_kwargs=KW, input_shape=SHAPE)
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        assert torch.allclose(loaded.module(x), model(x))
    with pytest.raises(ModelLoadError, match="does not fit --arch .* with --arch-kwargs"):
        load_model(str(tmp_path / "w.pt"), arch=ARCH, arch_kwargs={"width": 16, "num_classes": 7},
                   input_shape=SHAPE)


def test_pt2_uses_recorded_kwargs_and_explicit_ones_win(tmp_path):
    from advisor.export import save_pt2

    model = _model()
    path = save_pt2(model, tmp_path / "m.pt2", SHAPE, {"arch": ARCH, "arch_kwargs": KW})
    loaded = load_model(str(path))  # allowlisted example: rebuilt with the recorded kwargs
    assert loaded.editable and loaded.metadata["arch_kwargs"] == KW
    plain = tmp_path / "plain.pt2"  # as a user writes it: no advisor metadata
    torch.export.save(torch.export.export(model, (torch.zeros(SHAPE),)), str(plain))
    loaded = load_model(str(plain), arch=ARCH, arch_kwargs=KW)
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        assert loaded.editable and torch.allclose(loaded.module(x), model(x), atol=1e-5)


@pytest.mark.parametrize("text,match", [
    ("{num_classes: 10}", "not valid JSON"),
    ("[10]", "must be a JSON object"),
    ('{"num_classes": 10', "not valid JSON"),
])
def test_bad_kwargs_are_one_line_errors(text, match):
    with pytest.raises(ModelLoadError, match=match) as e:
        load_model(ARCH, arch_kwargs=text, input_shape=SHAPE)
    assert "\n" not in str(e.value)


def test_kwargs_the_factory_rejects_name_the_call():
    with pytest.raises(ModelLoadError, match=r"calling advisor\.examples\.models:resnet\(depth=3\)"):
        load_model(ARCH, arch_kwargs={"depth": 3}, input_shape=SHAPE)


def test_kwargs_without_arch_for_a_state_dict(tmp_path):
    torch.save(_model().state_dict(), tmp_path / "w.pt")
    with pytest.raises(ModelLoadError, match="--arch-kwargs needs --arch"):
        load_model(str(tmp_path / "w.pt"), arch_kwargs=KW, input_shape=SHAPE)


def test_cli_records_kwargs_in_plan_and_apply_replays_them(tmp_path, digits_splits):
    """analyze a state_dict given with --arch/--arch-kwargs; plan.json carries the model
    section; apply with the same --arch (and no --arch-kwargs) rebuilds the same model."""
    model = _model()
    torch.save(model.state_dict(), tmp_path / "w.pt")
    val = digits_splits["val"]
    torch.save({"inputs": val.inputs[:64], "labels": val.labels[:64] % 7}, tmp_path / "val.pt")
    out = tmp_path / "out"
    base = [sys.executable, "-m", "advisor"]
    r = subprocess.run(base + ["analyze", str(tmp_path / "w.pt"), "--arch", ARCH,
                               "--arch-kwargs", json.dumps(KW), "--input-shape", "1,3,32,32",
                               "--data", str(tmp_path / "val.pt"), "--max-drop", "100%",
                               "--retrain", "none", "--max-trials", "1", "--repeats", "5",
                               "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["arch"] == ARCH and report["model"]["arch_kwargs"] == KW
    plan_file = out / "plan.json" if (out / "plan.json").exists() else out / "plan-closest.json"
    plan = json.loads(plan_file.read_text())
    assert plan["model"] == {"arch": ARCH, "arch_kwargs": KW}
    r = subprocess.run(base + ["apply", str(tmp_path / "w.pt"), "--arch", ARCH, "--input-shape",
                               "1,3,32,32", "--plan", str(plan_file), "--out",
                               str(tmp_path / "applied")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "applied" / "model.onnx").is_file()
