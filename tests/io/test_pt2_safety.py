"""An untrusted .pt2 never gets to run code: the loader only acts on what the scan has seen.

Every attack below carries a live payload (a pickle whose unpickling creates a marker file, a
module whose import creates one, or Python code that does) and asserts that loading raises
ModelLoadError and the marker does not appear. Where the route is live in torch, the test
also shows that torch.export.load on the tampered file would run it (so the test can fail).
"""
from __future__ import annotations

import contextlib
import json
import pickle
import sys

import pytest
import torch

from advisor.errors import InputShapeError, ModelLoadError
from advisor.model_io import load_model, pt2_hazards

ARCH = "advisor.examples.models:resnet"
WEIGHTS_CFG = "data/weights/model_weights_config.json"


def _poisoned_config(data: bytes, payload_file: str) -> bytes:
    """The weights config with its first weight declared pickled and read from `payload_file`."""
    cfg = json.loads(data)
    fqn = next(iter(cfg["config"]))
    cfg["config"][fqn].update(use_pickle=True, path_name=payload_file)
    return json.dumps(cfg).encode()


def _torch_runs_it(path, marker) -> bool:
    """torch.export.load on the file itself runs the payload (proof that the attack is live)."""
    with contextlib.suppress(Exception), warnings_off():
        torch.export.load(str(path))
    ran = marker.exists()
    marker.unlink(missing_ok=True)
    return ran


@contextlib.contextmanager
def warnings_off():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _refused(path, marker, **kw):
    with pytest.raises(ModelLoadError) as ei:
        load_model(str(path), **kw)
    assert not marker.exists(), "the payload ran"
    assert "\n" not in ei.value.message and ei.value.hint
    return ei.value


@pytest.fixture
def payload(tmp_path, helpers):
    marker = tmp_path / "pwned"
    return marker, pickle.dumps(helpers.MarkerPayload(marker), protocol=2)


# ---- the two reported bypasses ----------------------------------------------------------------

def _second_program(artefacts, tmp_path, helpers, payload, name):
    """The clean archive plus a program `name` whose first weight is a pickled payload."""
    marker, evil = payload
    root, members = helpers.read_members(artefacts["pt2"])
    rel = dict(members)
    extra = [(f"models/{name}.json", rel["models/model.json"]),
             (f"data/weights/{name}_weights_config.json",
              _poisoned_config(rel[WEIGHTS_CFG], "weight_999")),
             ("data/weights/weight_999", evil),
             (f"data/constants/{name}_constants_config.json",
              rel["data/constants/model_constants_config.json"]),
             (f"data/sample_inputs/{name}.pt", rel["data/sample_inputs/model.pt"])]
    return helpers.write_entries(tmp_path / "two.pt2",
                                 [(f"{root}/{r}", d) for r, d in members + extra])


@pytest.mark.parametrize("name", ["evil-x", "ev.il", "évil"])
def test_second_program_with_a_non_word_name_is_scanned(artefacts, tmp_path, helpers, payload,
                                                        name):
    marker, _ = payload
    f = _second_program(artefacts, tmp_path, helpers, payload, name)
    if name != "évil":
        assert _torch_runs_it(f, marker)
    assert pt2_hazards(f)
    _refused(f, marker)


def test_duplicate_entry_whose_first_copy_is_malicious(artefacts, tmp_path, helpers, payload):
    marker, evil = payload
    root, members = helpers.read_members(artefacts["pt2"])
    rel = dict(members)
    poisoned = (f"{root}/{WEIGHTS_CFG}", _poisoned_config(rel[WEIGHTS_CFG], "weight_999"))
    # zipfile reads the last copy (the clean one); miniz's sorted lookup lands on one of the
    # equal names depending on the archive: find a file where torch reads a poisoned copy
    for copies in range(1, 9):
        entries = [poisoned] * copies + [(f"{root}/data/weights/weight_999", evil)]
        entries += [(f"{root}/{r}", d) for r, d in members]  # the clean copy comes last
        f = helpers.write_entries(tmp_path / "dup.pt2", entries)
        if b"weight_999" in torch._C.PyTorchFileReader(str(f)).get_record(WEIGHTS_CFG):
            break
    else:
        pytest.fail("torch's reader never picked the first copy")
    assert _torch_runs_it(f, marker)
    assert any("duplicate" in h for h in pt2_hazards(f))
    e = _refused(f, marker)
    assert "duplicate" in e.message


# ---- the class: anything the scan does not classify is refused --------------------------------

def _with_extra(artefacts, tmp_path, helpers, payload, name_for):
    """The clean archive plus a poisoned weights config (and payload) under odd names."""
    marker, evil = payload
    root, members = helpers.read_members(artefacts["pt2"])
    rel = dict(members)
    cfg_name, pay_name = name_for(root)
    entries = [(cfg_name, _poisoned_config(rel[WEIGHTS_CFG], "weight_999")),
               (pay_name, evil)] + [(f"{root}/{r}", d) for r, d in members]
    return helpers.write_entries(tmp_path / "odd.pt2", entries), marker


@pytest.mark.parametrize("case,name_for", [
    ("second root", lambda r: ("other/" + WEIGHTS_CFG, "other/data/weights/weight_999")),
    ("upper-case dir", lambda r: (f"{r}/Data/weights/model_weights_config.json",
                                  f"{r}/data/weights/weight_999")),
    ("upper-case name", lambda r: (f"{r}/data/weights/MODEL_weights_config.json",
                                   f"{r}/data/weights/WEIGHT_999")),
    ("outside the root", lambda r: ("model_weights_config.json", "weight_999")),
    ("dot-dot", lambda r: (f"{r}/data/x/../weights/model_weights_config.json",
                           f"{r}/data/weights/weight_999")),
    ("dot-dot root", lambda r: (f"{r}/../{r}/{WEIGHTS_CFG}", f"{r}/data/weights/weight_999")),
    ("absolute", lambda r: (f"/{r}/{WEIGHTS_CFG}", f"/{r}/data/weights/weight_999")),
    ("backslash", lambda r: (f"{r}\\data\\weights\\model_weights_config.json",
                             f"{r}/data/weights/weight_999")),
    ("backslash inside", lambda r: (f"{r}/data/weights\\model_weights_config.json",
                                    f"{r}/data/weights/weight_999")),
])
def test_odd_member_names_are_refused(artefacts, tmp_path, helpers, payload, case, name_for):
    f, marker = _with_extra(artefacts, tmp_path, helpers, payload, name_for)
    hazards = pt2_hazards(f)
    assert hazards, case
    _refused(f, marker)


def test_upper_case_program_is_refused(artefacts, tmp_path, helpers, payload):
    marker, evil = payload
    root, members = helpers.read_members(artefacts["pt2"])
    rel = dict(members)
    extra = [("MODELS/x.json", rel["models/model.json"]),
             ("data/weights/x_weights_config.json",
              _poisoned_config(rel[WEIGHTS_CFG], "weight_999")),
             ("data/weights/weight_999", evil)]
    f = helpers.write_entries(tmp_path / "upper.pt2",
                              [(f"{root}/{r}", d) for r, d in members + extra])
    assert any("MODELS/x.json" in h for h in pt2_hazards(f))
    _refused(f, marker)


def test_unreferenced_payload_file_is_refused(artefacts, tmp_path, helpers, payload):
    marker, evil = payload
    root, members = helpers.read_members(artefacts["pt2"])
    f = helpers.write_entries(tmp_path / "extra.pt2", [(f"{root}/{r}", d) for r, d in members]
                              + [(f"{root}/data/weights/weight_999", evil)])
    assert any("weight_999" in h for h in pt2_hazards(f))
    _refused(f, marker)


# ---- routes that need no pickle at all -------------------------------------------------------

def _edit_program(artefacts, tmp_path, helpers, fn, name="m.pt2"):
    return helpers.rewrite_zip(artefacts["pt2"], tmp_path / name, lambda rel, data: None
                               if rel is None else (helpers.edit_json(data, fn)
                                                    if rel == "models/model.json" else data))


def _rename_input(program, new):
    """Rename the user input `x` everywhere (FX writes node names into generated code)."""
    def walk(o):
        if isinstance(o, dict):
            for k in list(o):
                v = o.pop(k)
                o[new if k == "x" else k] = new if (k == "name" and v == "x") else walk(v)
            return o
        if isinstance(o, list):
            return [walk(v) for v in o]
        return o
    walk(program)


def test_code_in_a_node_name_is_refused(artefacts, tmp_path, helpers):
    marker = tmp_path / "pwned"
    code = f"x=__import__('pathlib').Path({str(marker)!r}).touch()"
    f = _edit_program(artefacts, tmp_path, helpers, lambda p: _rename_input(p, code))
    assert _torch_runs_it(f, marker)
    assert any("name" in h for h in pt2_hazards(f))
    _refused(f, marker)


def test_code_in_a_parameter_name_is_refused(artefacts, tmp_path, helpers):
    def edit(p):
        spec = p["graph_module"]["signature"]["input_specs"][0]["parameter"]
        spec["parameter_name"] = 'stem.0")or print("x'
    f = _edit_program(artefacts, tmp_path, helpers, edit)
    assert any("parameter_name" in h or "name" in h for h in pt2_hazards(f))
    with pytest.raises(ModelLoadError, match="may run code"):
        load_model(str(f))


def test_carriage_return_in_a_stack_trace_is_refused(artefacts, tmp_path, helpers):
    def edit(p):
        p["graph_module"]["graph"]["nodes"][0]["metadata"]["stack_trace"] = \
            'File "a.py", line 1, in f\r__import__("os")\n    x'
    f = _edit_program(artefacts, tmp_path, helpers, edit)
    assert pt2_hazards(f)


EVIL_IMPORT = "import pathlib\npathlib.Path({marker!r}).touch()\n"


@pytest.mark.parametrize("how", ["defaultdict", "enum"])
def test_treespec_that_imports_a_module_is_refused(artefacts, tmp_path, helpers, monkeypatch,
                                                   how):
    marker = tmp_path / "imported"
    (tmp_path / "evil_treespec_io.py").write_text(EVIL_IMPORT.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(tmp_path))
    if how == "defaultdict":
        ctx = json.dumps({"default_factory_module": "evil_treespec_io",
                          "default_factory_name": "x", "dict_context": []})
        leaf = {"type": "collections.defaultdict", "context": ctx, "children_spec": []}
    else:
        ctx = json.dumps({"__enum__": True, "fqn": "evil_treespec_io:E", "name": "A"})
        leaf = {"type": "builtins.dict", "context": json.dumps([ctx]), "children_spec": []}

    def edit(p):
        sig = p["graph_module"]["module_call_graph"][0]["signature"]
        sig["out_spec"] = json.dumps([1, leaf])
    f = _edit_program(artefacts, tmp_path, helpers, edit)
    try:
        assert pt2_hazards(f)
        _refused(f, marker)
    finally:
        sys.modules.pop("evil_treespec_io", None)


def test_operator_argument_outside_torch_is_refused(artefacts, tmp_path, helpers):
    def edit(p):
        node = p["graph_module"]["graph"]["nodes"][0]
        node["inputs"][-1]["arg"] = {"as_operator": "builtins.exec"}
    f = _edit_program(artefacts, tmp_path, helpers, edit)
    assert any("builtins.exec" in h for h in pt2_hazards(f))


# ---- a legitimate model still loads, from the scanned bytes ----------------------------------

def test_round_trip_loads_and_is_editable(artefacts, reference, probe):
    assert pt2_hazards(artefacts["pt2"]) == []
    loaded = load_model(str(artefacts["pt2"]))
    assert loaded.format == "pt2" and loaded.editable
    assert loaded.input_shape == (1, 3, 32, 32)
    with torch.inference_mode():
        assert torch.allclose(loaded.module(probe), reference(probe), atol=1e-5)


def test_repacked_archive_loads_identically(artefacts, probe, tmp_path, reference):
    from advisor.export import save_pt2
    from advisor.pt2_safety import scan_pt2

    f = save_pt2(reference, tmp_path / "meta.pt2", (1, 3, 32, 32),
                 {"arch": ARCH, "note": "extra metadata", "nested": {"a": [1, 2]}})
    for path in (artefacts["pt2_plain"], f):
        scan = scan_pt2(path)
        assert scan.hazards == []
        extra_a, extra_b = {"advisor.json": ""}, {"advisor.json": ""}
        with warnings_off():
            a = torch.export.load(str(path), extra_files=extra_a)
            b = torch.export.load(scan.repack(), extra_files=extra_b)
        assert extra_a == extra_b
        assert str(a.graph) == str(b.graph)
        assert a.graph_signature == b.graph_signature
        assert a.state_dict.keys() == b.state_dict.keys()
        assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
        with torch.inference_mode():
            assert torch.equal(a.module()(probe), b.module()(probe))


def test_graph_only_round_trip(artefacts, reference, probe):
    loaded = load_model(str(artefacts["pt2_plain"]))
    assert loaded.format == "pt2" and loaded.metadata.get("lifted")
    with torch.inference_mode():
        assert torch.allclose(loaded.module(probe), reference(probe), atol=1e-5)


def test_trusted_file_is_loaded_as_it_is(artefacts, tmp_path, helpers, payload):
    """--trust-pickle skips the scan: the user vouches for the file (and the payload runs)."""
    marker, _ = payload
    f = _second_program(artefacts, tmp_path, helpers, payload, "evil-x")
    with contextlib.suppress(Exception):
        load_model(str(f), trust_pickle=True)
    assert marker.exists()


# ---- bad input gives a one-line error naming the member --------------------------------------

@pytest.mark.parametrize("member", ["models/model.json", WEIGHTS_CFG,
                                    "data/constants/model_constants_config.json",
                                    "extra/advisor.json"])
@pytest.mark.parametrize("bad", [b"{not json", b"\xff\xfe\x00garbage", b"[" * 100000, b"[1, 2]"])
def test_corrupt_json_member(artefacts, tmp_path, helpers, member, bad):
    if member == "extra/advisor.json" and bad == b"[1, 2]":
        pytest.skip("a non-object advisor.json is ignored (it is only metadata)")
    f = helpers.rewrite_zip(artefacts["pt2"], tmp_path / "m.pt2", lambda rel, data: None
                            if rel is None else (bad if rel == member else data))
    with pytest.raises(ModelLoadError) as ei:
        load_model(str(f))
    assert member in ei.value.message
    assert "\n" not in ei.value.message and ei.value.hint


def test_corrupt_json_through_the_cli(artefacts, tmp_path, helpers, capsys):
    from advisor.cli import main

    f = helpers.rewrite_zip(artefacts["pt2"], tmp_path / "m.pt2", lambda rel, data: None
                            if rel is None else (b"{bad" if rel == WEIGHTS_CFG else data))
    rc = main(["profile", str(f), "--target", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "internal error" not in err and WEIGHTS_CFG in err


def _with_shape(artefacts, tmp_path, helpers, shape):
    def edit(rel, data):
        if rel is None:
            return None
        if rel == "extra/advisor.json":
            return helpers.edit_json(data, lambda m: m.update(input_shape=shape))
        return data
    return helpers.rewrite_zip(artefacts["pt2"], tmp_path / "shape.pt2", edit)


@pytest.mark.parametrize("shape", [[-1, 3, 32, 32], [1, 0, 32, 32], [1, 3, 32.5, 32], [],
                                   "1,3,32,32", 5, {"a": 1}, [1, True, 32, 32], [[1, 3]],
                                   [1, 3, 10 ** 30, 32]])
def test_bad_recorded_input_shape(artefacts, tmp_path, helpers, shape):
    f = _with_shape(artefacts, tmp_path, helpers, shape)
    with pytest.raises(InputShapeError) as ei:
        load_model(str(f))
    assert "advisor.json" in ei.value.message and "--input-shape" in ei.value.hint
    assert "\n" not in ei.value.message
    # an explicit shape makes the recorded one irrelevant: it is ignored with a note
    loaded = load_model(str(f), input_shape="1,3,32,32")
    assert loaded.input_shape == (1, 3, 32, 32)
    assert any("input_shape" in n for n in loaded.metadata.get("notes", []))


# ---- a refused pickle says why --------------------------------------------------------------

class _System:
    def __reduce__(self):
        import os
        return (os.system, ("true",))


@pytest.mark.parametrize("wrap", [lambda p: p, lambda p: {"w": torch.zeros(2), "x": p}])
def test_refused_pickle_names_the_global(tmp_path, wrap):
    f = tmp_path / "evil.pt"
    torch.save(wrap(_System()), f)
    with pytest.raises(ModelLoadError) as ei:
        load_model(str(f), input_shape="1,3,32,32")
    msg = ei.value.message
    assert "corrupt" not in msg and "truncated" not in msg
    assert "system" in msg and "refused" in msg and "weights-only" in msg
    assert "--trust-pickle" in ei.value.hint


def test_refused_legacy_pickle_names_the_global(tmp_path):
    f = tmp_path / "evil.pth"
    f.write_bytes(pickle.dumps(_System(), protocol=2))
    with pytest.raises(ModelLoadError) as ei:
        load_model(str(f), input_shape="1,3,32,32")
    assert "corrupt" not in ei.value.message and "system" in ei.value.message


def test_truncated_pickle_is_still_corrupt(tmp_path):
    f = tmp_path / "cut.pth"
    f.write_bytes(pickle.dumps({"a": 1, "b": [1, 2, 3]}, protocol=2)[:18])
    with pytest.raises(ModelLoadError, match="corrupt or truncated"):
        load_model(str(f), input_shape="1,3,32,32")


def test_module_paths_with_a_dash_load(tmp_path):
    """torchvision's RegNet names blocks "block4-5": such a path is data, not code (torch.fx
    quotes a segment that is not an identifier), so the scan accepts it."""
    import torch

    from advisor.model_io import load_model

    model = torch.nn.Sequential()
    model.add_module("block4-5", torch.nn.Linear(4, 3))
    path = tmp_path / "dash.pt2"
    torch.export.save(torch.export.export(model.eval(), (torch.zeros(1, 4),)), str(path))
    loaded = load_model(str(path))
    with torch.inference_mode():
        assert torch.allclose(loaded.module(torch.ones(1, 4)), model(torch.ones(1, 4)))
