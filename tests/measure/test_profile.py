"""profile_model: every runtime measured or its failure recorded, the JSON schema, the round trip
through from_json, memory-budget warnings, and ONNX input."""
from __future__ import annotations

import json

import pytest

from advisor.errors import TargetError
from advisor.measure.profile import profile_model
from advisor.measure.profile_record import SCHEMA_VERSION, Profile
from advisor.model_io import LoadedModel
from advisor.targets import load_target

FAST = {"warmup": 2, "repeats": 8, "max_seconds": 1.0, "progress": False, "hotspot_runs": 3}


def _loaded(model, shape, path=None):
    return LoadedModel(path=path, format="module", module=model, onnx_path=None,
                       input_shape=shape, metadata={}, editable=True)


@pytest.fixture(scope="module")
def both_runtimes(tiny_model, tiny_artifacts, one_thread_target):
    """One profile over both runtimes of a 1-thread target (the expensive part, shared)."""
    return profile_model(_loaded(tiny_model, tiny_artifacts["shape"]), one_thread_target, **FAST)


def test_profile_json_has_every_required_key(both_runtimes, tiny_model):
    d = both_runtimes.to_json()
    assert d["schema_version"] == SCHEMA_VERSION and d["kind"] == "advisor-profile"
    lat = d["latency_ms"]
    assert lat["runtime"] == "onnxruntime"  # the target's first runtime
    assert 0 < lat["p50"] <= lat["p90"] and lat["cv"] >= 0 and lat["mean"] > 0
    for rt in ("onnxruntime", "torch"):
        r = d["runtimes"][rt]
        assert r["status"] == "ok" and r["p50"] <= r["p90"] and r["threads"] == 1
        assert lat[rt]["p50"] == r["p50"]
        assert r["env"]["MALLOC_MMAP_THRESHOLD_"] and r["affinity"] and r["peak_memory_mb"] > 0
    assert d["runtimes"]["onnxruntime"]["export"]["max_abs_diff"] < 1e-4
    assert d["peak_memory_mb"] == d["runtimes"]["onnxruntime"]["peak_memory_mb"]
    assert d["flops"] > 0 and "multiply-add" in d["flops_convention"]
    assert d["params"] == sum(p.numel() for p in tiny_model.parameters())
    assert d["size_mb"] > 0 and d["size_source"] == "fp32 ONNX"
    assert d["host"]["cores_available"] >= 1 and "isa" in d["host"]
    assert d["target"]["name"] == "one-thread" and d["target"]["emulated"] is False
    assert d["target"]["limits"] == {"threads": 1, "memory_budget_mb": None}
    m = d["measurement"]
    assert m["threads"] == 1 and m["warmup"] == 2 and m["repeats"] == 8 and m["batch_size"] == 1
    assert m["env"]["OMP_NUM_THREADS"] == "1" and len(m["affinity"]) == 1
    hs = d["hotspots"]  # measured like a candidate: on the primary runtime, named by module
    assert hs["method"] == "onnxruntime-modules"
    assert {"conv1", "conv2", "fc"} <= {r["name"] for r in hs["layers"]}
    assert sum(hs["kind_shares"].values()) == pytest.approx(1.0, abs=1e-3)
    assert {"name", "kind", "ms", "share"} <= set(hs["layers"][0])
    assert d["flops_by_module"]["conv2"] == 8 * 16 * 16 * 8 * 9
    json.dumps(d)  # JSON-able as is


def test_profile_round_trips_through_json(both_runtimes, tmp_path):
    from advisor.fileio import write_json_atomic

    d = both_runtimes.to_json()
    back = Profile.from_json(json.loads(json.dumps(d)))
    assert back.to_json() == d
    path = write_json_atomic(tmp_path / "p.json", d)
    assert Profile.from_json_file(path).p50 == both_runtimes.p50


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.pop("latency_ms"), "missing latency_ms"),
    (lambda d: d.update(schema_version=SCHEMA_VERSION + 1), "schema version"),
    (lambda d: d["runtimes"].pop(d["runtime"]), "no latency of its primary runtime"),
])
def test_malformed_profiles_are_target_errors(both_runtimes, mutate, message):
    d = json.loads(json.dumps(both_runtimes.to_json()))
    mutate(d)
    with pytest.raises(TargetError, match=message):
        Profile.from_json(d)


def test_profile_file_errors(tmp_path):
    with pytest.raises(TargetError, match="does not exist"):
        Profile.from_json_file(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(TargetError, match="cannot read it as JSON"):
        Profile.from_json_file(tmp_path / "bad.json")


def test_memory_budget_exceeded_is_a_warning(tiny_model, tiny_artifacts, write_toml):
    t = load_target(write_toml('name = "small"\ndevice = "cpu"\nthreads = 1\n'
                               'memory_budget_mb = 10\nprecisions = ["fp32"]\n'
                               '[[runtimes]]\nname = "onnxruntime"\n'))
    p = profile_model(_loaded(tiny_model, tiny_artifacts["shape"]), t, **FAST)
    assert p.peak_memory_mb > 10  # the ONNX Runtime process alone needs more
    assert p.memory["within_budget"] is False and p.memory["budget_mb"] == 10
    assert any("exceeds the 10 MB budget of small" in w for w in p.warnings)


def test_export_failure_is_recorded_per_runtime(tiny_model, tiny_artifacts, one_thread_target,
                                                monkeypatch):
    import advisor.export

    def no_onnx(*args, **kwargs):
        raise RuntimeError("exporter says no\nsecond line")

    monkeypatch.setattr(advisor.export, "export_onnx", no_onnx)
    p = profile_model(_loaded(tiny_model, tiny_artifacts["shape"]), one_thread_target, **FAST)
    ort = p.runtimes["onnxruntime"]
    assert ort["status"] == "error" and ort["stage"] == "export"
    assert ort["error"] == "RuntimeError: exporter says no"
    assert p.primary_runtime == "torch" and p.runtimes["torch"]["status"] == "ok"
    assert any("primary runtime onnxruntime failed" in w for w in p.warnings)
    assert p.size_mb is not None and p.size_source == ".pt2 export"


def test_onnx_input_runs_on_onnxruntime_only(tiny_artifacts, one_thread_target):
    loaded = LoadedModel(path=tiny_artifacts["onnx"], format="onnx", module=None,
                         onnx_path=tiny_artifacts["onnx"], input_shape=tiny_artifacts["shape"],
                         metadata={}, editable=False)
    p = profile_model(loaded, one_thread_target, **FAST)
    assert p.runtimes["torch"]["status"] == "skipped"
    assert p.runtimes["onnxruntime"]["status"] == "ok" and p.primary_runtime == "onnxruntime"
    assert p.flops == 8 * 16 * 16 * 3 * 9 + 8 * 16 * 16 * 8 * 9 + 8 * 10
    assert p.hotspots.method == "onnxruntime-modules" and p.size_source == "input ONNX file"


def test_unknown_runtime_and_unavailable_target(tiny_model, tiny_artifacts, one_thread_target):
    import torch

    loaded = _loaded(tiny_model, tiny_artifacts["shape"])
    with pytest.raises(TargetError, match="has no runtime 'tvm'"):
        profile_model(loaded, one_thread_target, runtimes=["tvm"], **FAST)
    if not torch.cuda.is_available():
        with pytest.raises(TargetError, match="no CUDA GPU"):
            profile_model(loaded, load_target("gpu"), **FAST)


@pytest.mark.parametrize("entry, expected", [
    ({"threads": 2, "preemptions_per_s": 260.0, "cpu_share": 0.5, "cv": 0.1}, "competed"),
    ({"threads": 1, "preemptions_per_s": 10.0, "cpu_share": 0.5, "cv": 0.1}, "competed"),
    ({"threads": 1, "preemptions_per_s": 10.0, "cpu_share": 0.99, "cv": 0.6}, "noisy latency"),
    ({"threads": 2, "preemptions_per_s": 40.0, "cpu_share": 0.5, "cv": 0.05}, None),
])
def test_disturbed_timings_are_flagged(entry, expected):
    from advisor.measure.profile_checks import noise_warnings

    warnings: list[str] = []
    noise_warnings({"torch": {"status": "ok", "load_average": [3.0], **entry}}, warnings)
    if expected is None:
        assert warnings == []
    else:
        assert len(warnings) == 1 and expected in warnings[0] and warnings[0].startswith("torch")


def test_torch_only_profile_keeps_module_hooks(tiny_model, tiny_artifacts, one_thread_target):
    """A torch-only target is measured with hooks on the eager module (the names its .pt2
    artefact's `program-hooks` give too)."""
    p = profile_model(_loaded(tiny_model, tiny_artifacts["shape"]), one_thread_target,
                      runtimes=["torch"], **FAST)
    assert p.primary_runtime == "torch" and p.hotspots.method == "module-hooks"
    assert {"conv1", "conv2", "fc"} <= {r.name for r in p.hotspots.layers}
