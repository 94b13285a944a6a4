"""`advisor profile` and `advisor targets` end to end (in-process through advisor.cli.main)."""
from __future__ import annotations

import json

import pytest

from advisor.cli import main
from advisor.measure.profile_record import Profile


def test_profile_command_writes_json(tmp_path, tiny_artifacts, one_thread_target, capsys):
    out = tmp_path / "profile.json"
    rc = main(["profile", str(tiny_artifacts["pt2"]), "--target",
               str(one_thread_target.source_path), "--json", str(out), "--repeats", "5",
               "--warmup", "1", "--max-seconds", "0.5", "--runtime", "onnxruntime",
               "--batch-size", "2"])
    text = capsys.readouterr().out
    assert rc == 0, text
    d = json.loads(out.read_text())
    assert d["batch_size"] == 2 and list(d["runtimes"]) == ["onnxruntime"]
    assert d["latency_ms"]["p50"] > 0 and d["hotspots"]["layers"]
    assert Profile.from_json(d).primary_runtime == "onnxruntime"
    for expected in ("latency per call", "onnxruntime", "FLOPs (MACs)", "hot spots", "host:",
                     f"wrote {out}"):
        assert expected in text
    assert not list(tmp_path.glob(".profile.tmp-*"))  # written atomically, nothing left over


def test_profile_command_labels_emulated_targets(tmp_path, tiny_artifacts, capsys):
    rc = main(["profile", str(tiny_artifacts["onnx"]), "--target", "edge-arm", "--repeats", "3",
               "--warmup", "1", "--max-seconds", "0.3"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "(emulated)" in text and "budget 512 MB" in text and "1 thread(s)" in text


def test_profile_command_refuses_gpu_without_cuda(tiny_artifacts, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this host has a CUDA GPU")
    rc = main(["profile", str(tiny_artifacts["onnx"]), "--target", "gpu"])
    err = capsys.readouterr().err
    assert rc == 2 and "target 'gpu' cannot be measured on this host" in err
    assert "no CUDA GPU" in err and "--from-profile" in err


def test_profile_command_bad_target_file(tmp_path, tiny_artifacts, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n')
    rc = main(["profile", str(tiny_artifacts["onnx"]), "--target", str(bad)])
    err = capsys.readouterr().err
    assert rc == 2 and str(bad) in err and "'device' is missing" in err


def test_targets_command_lists_and_marks_availability(capsys):
    import torch

    assert main(["targets"]) == 0
    text = capsys.readouterr().out
    for name in ("cpu", "edge-arm", "gpu", "csr-linear", "2:4", "512 MB", "emulated", "sparse"):
        assert name in text
    if not torch.cuda.is_available():
        assert "gpu: unavailable" in text and "no CUDA GPU" in text
    assert "edge-arm: available" in text and "emulated" in text


def test_piped_output_gets_room_for_tables_unless_columns_is_set(monkeypatch, capsys):
    """Redirected output has no terminal width: rich would assume 80 columns and wrap the
    targets table; the CLI widens it, and an explicit COLUMNS still wins."""
    from advisor.cli.render import PIPED_WIDTH

    monkeypatch.delenv("COLUMNS", raising=False)
    assert main(["targets"]) == 0
    wide = capsys.readouterr().out
    header = next(line for line in wide.splitlines() if line.startswith("name"))
    assert "runtimes" in header and len(header.rstrip()) <= PIPED_WIDTH  # not folded at 80
    monkeypatch.setenv("COLUMNS", "70")
    assert main(["targets"]) == 0
    narrow = capsys.readouterr().out
    assert "runtimes" not in narrow  # the column was folded to fit 70 columns, as asked
    assert len(narrow.splitlines()) > len(wide.splitlines())


def test_profile_command_goes_through_the_api(tiny_artifacts, one_thread_target, monkeypatch,
                                              capsys):
    """The CLI only parses, checks its own options and prints: `advisor.api.profile` measures."""
    import advisor.api
    from advisor.measure.profile import profile_model

    calls = []

    def spy(model, **kw):
        calls.append((model, kw))
        loaded = advisor.api._load(model, kw.get("arch"), kw.get("input_shape"))
        return profile_model(loaded, kw["target"], batch_size=kw["batch_size"],
                             runtimes=kw["runtimes"], warmup=1, repeats=3, max_seconds=0.3,
                             progress=False, hotspot_runs=2)
    monkeypatch.setattr(advisor.api, "profile", spy)
    rc = main(["profile", str(tiny_artifacts["onnx"]), "--target",
               str(one_thread_target.source_path), "--runtime", "onnxruntime"])
    assert rc == 0, capsys.readouterr().out
    assert len(calls) == 1 and calls[0][1]["runtimes"] == ["onnxruntime"]
    assert calls[0][1]["target"].name == "one-thread" and calls[0][1]["progress"] is True
