"""Bad model inputs give one ModelLoadError/InputShapeError naming the file and the fix, and
untrusted files never get to run code."""
from __future__ import annotations

import contextlib
import pickle
import sys

import pytest
import torch

from advisor.errors import InputShapeError, ModelLoadError
from advisor.model_io import load_model, parse_input_shape, pt2_hazards

ARCH = "advisor.examples.models:resnet"


def _one_line(e) -> None:
    assert "\n" not in e.message and e.hint and "\n" not in e.hint


def test_missing_file(tmp_path):
    with pytest.raises(ModelLoadError, match="not found") as ei:
        load_model(str(tmp_path / "nope.pt2"))
    assert "nope.pt2" in ei.value.message
    _one_line(ei.value)


def test_empty_file(tmp_path):
    f = tmp_path / "empty.pt2"
    f.write_bytes(b"")
    with pytest.raises(ModelLoadError, match="empty") as ei:
        load_model(str(f))
    assert str(f) in ei.value.message and "again" in ei.value.hint


def test_directory(tmp_path):
    with pytest.raises(ModelLoadError, match="directory"):
        load_model(str(tmp_path))


@pytest.mark.parametrize("kind", ["pt2", "state_dict", "torchscript"])
def test_truncated_archive(artefacts, tmp_path, kind):
    data = artefacts[kind].read_bytes()
    f = tmp_path / f"cut-{kind}"
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="truncated or corrupt") as ei:
        load_model(str(f), arch=ARCH, input_shape="1,3,32,32")
    assert str(f) in ei.value.message
    _one_line(ei.value)


@pytest.mark.parametrize("content,what", [
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "PNG image"),
    (b"hello, I am a text file\n" * 10, "text file"),
    (b"\x00\x13\xfe\x99" * 64, "unrecognised"),
])
def test_wrong_format(tmp_path, content, what):
    f = tmp_path / "model.pt2"
    f.write_bytes(content)
    with pytest.raises(ModelLoadError, match=what) as ei:
        load_model(str(f))
    assert str(f) in ei.value.message and ".pt2" in ei.value.hint


def test_zip_that_is_not_a_model(tmp_path):
    import zipfile

    f = tmp_path / "bundle.zip"
    with zipfile.ZipFile(f, "w") as z:
        z.writestr("readme.txt", "hi")
    with pytest.raises(ModelLoadError, match="not a PyTorch model"):
        load_model(str(f))


def test_invalid_onnx(artefacts, tmp_path):
    data = artefacts["onnx"].read_bytes()
    f = tmp_path / "cut.onnx"
    f.write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelLoadError) as ei:
        load_model(str(f))
    assert str(f) in ei.value.message


def test_pickled_module_is_refused_without_trust(artefacts):
    with pytest.raises(ModelLoadError, match="arbitrary code") as ei:
        load_model(str(artefacts["pickle"]), input_shape="1,3,32,32")
    assert "--trust-pickle" in ei.value.hint and "torch.export.save" in ei.value.hint
    _one_line(ei.value)


def test_malicious_pickle_payload_does_not_run(tmp_path, helpers):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save(helpers.MarkerPayload(marker), evil)
    with pytest.raises(ModelLoadError, match="refused"):
        load_model(str(evil), input_shape="1,3,32,32")
    assert not marker.exists()
    # the payload is live: trusting the file runs it (so the assertion above can fail)
    with pytest.raises(ModelLoadError):
        load_model(str(evil), input_shape="1,3,32,32", trust_pickle=True)
    assert marker.exists()


def test_malicious_legacy_pickle_does_not_run(tmp_path, helpers):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps(helpers.MarkerPayload(marker), protocol=2))
    with pytest.raises(ModelLoadError):
        load_model(str(evil), input_shape="1,3,32,32")
    assert not marker.exists()


def test_state_dict_without_arch(artefacts):
    with pytest.raises(ModelLoadError, match="state_dict") as ei:
        load_model(str(artefacts["state_dict"]), input_shape="1,3,32,32")
    assert "--arch" in ei.value.hint
    _one_line(ei.value)


def test_state_dict_with_the_wrong_arch(artefacts):
    with pytest.raises(ModelLoadError, match="does not fit") as ei:
        load_model(str(artefacts["state_dict"]), arch="advisor.examples.models:vgg",
                   input_shape="1,3,32,32")
    _one_line(ei.value)


@pytest.mark.parametrize("arch,match", [("no_such_module_xyz:f", "cannot import"),
                                        ("advisor.examples.models:nope", "no attribute"),
                                        ("advisor.examples.models:FACTORIES", "not a callable"),
                                        ("not a spec", "pkg.module:attr")])
def test_bad_arch(artefacts, arch, match):
    with pytest.raises(ModelLoadError, match=match):
        load_model(str(artefacts["state_dict"]), arch=arch, input_shape="1,3,32,32")


def test_no_input_shape_known(artefacts):
    with pytest.raises(InputShapeError, match="input shape") as ei:
        load_model(str(artefacts["torchscript"]))
    assert "--input-shape 1,3,224,224" in ei.value.hint


def test_shape_rejected_names_file_shape_and_model_message(artefacts):
    with pytest.raises(InputShapeError) as ei:
        load_model(str(artefacts["torchscript"]), input_shape="1,1,32,32")
    msg = ei.value.message
    assert str(artefacts["torchscript"]) in msg and "1,1,32,32" in msg
    assert "channels" in msg  # the model's own complaint, first line only
    _one_line(ei.value)


def test_shape_rejected_by_onnx(artefacts):
    with pytest.raises(InputShapeError, match="1,3,48,48"):
        load_model(str(artefacts["onnx"]), input_shape="1,3,48,48")


@pytest.mark.parametrize("text", ["", "a,b", "1,0,3", "-1,3"])
def test_invalid_shape_text(text):
    with pytest.raises(InputShapeError, match="invalid input shape"):
        parse_input_shape(text)


# ---- .pt2: allowlist and code-execution routes ------------------------------------------------

EVIL_MODULE = """
import pathlib
pathlib.Path({imported!r}).touch()
def factory(**kwargs):
    pathlib.Path({called!r}).touch()
    from advisor.examples.models import resnet
    return resnet()
"""


@pytest.fixture
def evil_factory(tmp_path, monkeypatch):
    """A module that leaves marker files when imported or called."""
    imported, called = tmp_path / "imported", tmp_path / "called"
    (tmp_path / "evil_factory_io.py").write_text(
        EVIL_MODULE.format(imported=str(imported), called=str(called)))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "evil_factory_io:factory", imported, called
    sys.modules.pop("evil_factory_io", None)


def test_pt2_naming_a_non_allowlisted_factory_does_not_import_it(tmp_path, reference,
                                                                 evil_factory):
    from advisor.export import save_pt2

    spec, imported, called = evil_factory
    f = save_pt2(reference, tmp_path / "m.pt2", (1, 3, 32, 32), {"arch": spec})
    loaded = load_model(str(f))
    assert not imported.exists() and not called.exists()
    # its layers come from lifting the graph, not from the factory it names
    assert loaded.metadata.get("lifted") and type(loaded.module).__name__ == "LiftedProgram"
    assert any("not on the allowlist" in n for n in loaded.metadata["notes"])
    # the same factory, named by the user, is trusted and used
    loaded = load_model(str(f), arch=spec)
    assert called.exists() and loaded.editable


def test_pt2_naming_os_system_is_not_called(tmp_path, reference):
    from advisor.export import save_pt2

    marker = tmp_path / "pwned"
    f = save_pt2(reference, tmp_path / "m.pt2", (1, 3, 32, 32),
                 {"arch": "os:system", "arch_kwargs": {"command": f"touch {marker}"}})
    loaded = load_model(str(f))
    assert not marker.exists() and type(loaded.module).__name__ == "LiftedProgram"


def test_allowlisted_arch_that_does_not_fit_falls_back_to_the_graph(tmp_path, reference):
    from advisor.export import save_pt2

    f = save_pt2(reference, tmp_path / "m.pt2", (1, 3, 32, 32),
                 {"arch": "advisor.examples.models:vgg"})
    loaded = load_model(str(f))
    assert loaded.format == "pt2" and loaded.metadata.get("lifted")
    assert type(loaded.module).__name__ == "LiftedProgram"
    assert any("not rebuilt" in n for n in loaded.metadata["notes"])


def _pickled_weight_pt2(src, dst, payload, helpers):
    """A .pt2 whose first weight is declared pickled and holds `payload`."""
    state = {}

    def edit(rel, data):
        if rel is None:
            return None
        if rel == "data/weights/model_weights_config.json":
            def mark(cfg):
                fqn = next(iter(cfg["config"]))
                cfg["config"][fqn]["use_pickle"] = True
                state["file"] = cfg["config"][fqn]["path_name"]
            return helpers.edit_json(data, mark)
        return data
    helpers.rewrite_zip(src, dst, edit)
    # second pass: replace that weight file with the payload
    target = f"data/weights/{state['file']}"
    return helpers.rewrite_zip(dst, dst.with_name("evil.pt2"),
                               lambda rel, data: None if rel is None else
                               (pickle.dumps(payload, protocol=2) if rel == target else data))


def test_pt2_with_a_pickled_payload_is_refused_and_does_not_run(artefacts, tmp_path, helpers):
    marker = tmp_path / "pwned"
    evil = _pickled_weight_pt2(artefacts["pt2"], tmp_path / "step.pt2",
                               helpers.MarkerPayload(marker), helpers)
    assert any("pickled weights" in h for h in pt2_hazards(evil))
    with pytest.raises(ModelLoadError, match="may run code") as ei:
        load_model(str(evil))
    assert "--trust-pickle" in ei.value.hint
    assert not marker.exists()
    # torch.export.load itself would run it: trusting the file does (the test can fail)
    with pytest.raises(ModelLoadError):
        load_model(str(evil), trust_pickle=True)
    assert marker.exists()


def _edit_program(src, dst, fn, helpers):
    return helpers.rewrite_zip(src, dst, lambda rel, data: None if rel is None else (
        helpers.edit_json(data, fn) if rel == "models/model.json" else data))


def _first_symbolic_size(program):
    """The first `as_expr` of a tensor size: the dynamic batch dimension of the input."""
    for value in program["graph_module"]["graph"]["tensor_values"].values():
        for size in value["sizes"]:
            if "as_expr" in size:
                return size["as_expr"]
    raise AssertionError("the export has no symbolic dimension")


def _first_node(program):
    return program["graph_module"]["graph"]["nodes"][0]


def _touch(marker) -> str:
    return f"__import__('pathlib').Path({str(marker)!r}).touch()"


@pytest.mark.parametrize("name,mutate,reason", [
    ("target", lambda p, m: _first_node(p).update(target="torch.os.system"),
     "not a torch operator"),
    ("dunder", lambda p, m: _first_node(p).update(target="torch.ops.aten.__class__"),
     "not a torch operator"),
    ("guard", lambda p, m: p.update(guards_code=[_touch(m) + " is None"]), "guard code"),
    ("sympy", lambda p, m: _first_symbolic_size(p).update(expr_str=_touch(m)),
     "symbolic expression"),
])
def test_pt2_code_routes_are_detected(artefacts, tmp_path, helpers, name, mutate, reason):
    marker = tmp_path / "pwned"
    evil = _edit_program(artefacts["pt2"], tmp_path / f"{name}.pt2",
                         lambda p: mutate(p, marker), helpers)
    hazards = pt2_hazards(evil)
    assert any(reason in h for h in hazards), hazards
    with pytest.raises(ModelLoadError, match="may run code"):
        load_model(str(evil))
    assert not marker.exists()
    if name in ("guard", "sympy"):  # live routes in torch.export.load / .module(): trust runs them
        with contextlib.suppress(Exception):
            load_model(str(evil), trust_pickle=True, input_shape="1,3,32,32")
        assert marker.exists()


def test_pt2_legacy_layout_is_refused(artefacts, tmp_path):
    import zipfile

    f = tmp_path / "legacy.pt2"
    with zipfile.ZipFile(f, "w") as z:
        z.writestr("serialized_exported_program.json", "{}")
        z.writestr("version", "1.0")
    assert pt2_hazards(f)
    with pytest.raises(ModelLoadError, match="may run code"):
        load_model(str(f))


def test_clean_exports_have_no_hazards(artefacts):
    assert pt2_hazards(artefacts["pt2"]) == []
    assert pt2_hazards(artefacts["pt2_plain"]) == []


def test_bad_metadata_json(artefacts, tmp_path, helpers):
    f = helpers.rewrite_zip(artefacts["pt2"], tmp_path / "m.pt2", lambda rel, data: None
                            if rel is None else (b"{not json" if rel == "extra/advisor.json"
                                                 else data))
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        load_model(str(f))


def test_model_returning_a_tuple_is_rejected(tmp_path, monkeypatch):
    (tmp_path / "tuple_model_io.py").write_text(
        "import torch\n"
        "class M(torch.nn.Module):\n"
        "    def forward(self, x):\n"
        "        return x, x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModelLoadError, match="one tensor"):
        load_model("tuple_model_io:M", input_shape="1,3,4,4")
