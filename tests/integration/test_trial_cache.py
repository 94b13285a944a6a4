"""The trial cache: a rerun of the same analysis reuses its finished trials; a change of one
weight, one data sample, the target or a config value misses; an interrupted analysis continues
with --resume and ends with the same choice."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from advisor.cli import main

ROOT = Path(__file__).resolve().parents[2]
FAST = ["--target", "cpu", "--max-drop", "1%", "--retrain", "none", "--max-trials", "4",
        "--repeats", "30"]


def _data(d: Path) -> list[str]:
    return ["--data", str(d / "digits-val.pt"), "--test-data", str(d / "digits-test.pt")]


def _run(model, d, out, *extra) -> dict:
    assert main(["analyze", str(model), *FAST, *_data(d), "--out", str(out), *extra]) == 0
    return json.loads((out / "report.json").read_text())


def _ok(report) -> list[dict]:
    return [c for c in report["candidates"] if c["status"] == "ok"]


def test_a_rerun_reuses_every_finished_trial(example_dir, tmp_path):
    cache = tmp_path / "cache"
    first = _run(example_dir / "resnet.pt2", example_dir, tmp_path / "a", "--cache", str(cache))
    assert first["trial_cache"]["reused"] == 0 and first["trial_cache"]["stored"] == len(_ok(first))
    again = _run(example_dir / "resnet.pt2", example_dir, tmp_path / "b", "--cache", str(cache))
    assert again["trial_cache"]["reused"] == len(_ok(first)) and again["trial_cache"]["stored"] == 0
    assert all(c["cached"] for c in _ok(again))
    assert any("from the trial cache" in r for c in _ok(again) for r in c["reasons"])
    for a, b in zip(_ok(first), _ok(again)):  # the figures measured once, reused as they were
        assert a["name"] == b["name"]
        assert a["measured"]["speedup"] == b["measured"]["speedup"]
        assert a["measured"]["accuracy"] == b["measured"]["accuracy"]
    assert again["chosen"]["name"] == first["chosen"]["name"]
    assert Path(again["trial_cache"]["dir"]) == cache
    nothing = _run(example_dir / "resnet.pt2", example_dir, tmp_path / "c", "--no-cache")
    assert "trial_cache" not in nothing and all(not c["cached"] for c in _ok(nothing))


def _key(loaded_path, data_dir: Path, target="cpu", **over):
    from advisor.bundle import load_bundle
    from advisor.model_io import load_model
    from advisor.targets import load_target
    from advisor.trial_cache import analysis_key

    loaded = load_model(str(loaded_path))
    data = load_bundle(str(data_dir / "digits-val.pt"), str(data_dir / "digits-test.pt"), None,
                       loaded.input_shape)
    return analysis_key(loaded, data.specs, load_target(target),
                        over.get("measure", {"repeats": 30}), 0, "none")


def test_the_key_misses_when_a_weight_a_sample_the_target_or_a_config_changes(
        example_dir, tmp_path, trained_example):
    from advisor.examples.build import INPUT_SHAPE
    from advisor.export import save_pt2
    from advisor.trial_cache import trial_key

    base = _key(example_dir / "resnet.pt2", example_dir)
    assert base == _key(example_dir / "resnet.pt2", example_dir)  # stable
    model, ex = trained_example("resnet", epochs=4)
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] += 1e-3  # one weight
    save_pt2(model, tmp_path / "resnet.pt2", INPUT_SHAPE,
             {"arch": ex.arch, "arch_kwargs": ex.arch_kwargs, "num_classes": 10})
    assert _key(tmp_path / "resnet.pt2", example_dir) != base
    d = tmp_path / "data"
    d.mkdir()
    val = torch.load(example_dir / "digits-val.pt")
    val["inputs"][0, 0, 0, 0] += 0.5  # one sample
    torch.save(val, d / "digits-val.pt")
    (d / "digits-test.pt").write_bytes((example_dir / "digits-test.pt").read_bytes())
    assert _key(example_dir / "resnet.pt2", d) != base
    assert _key(example_dir / "resnet.pt2", example_dir, target="edge-arm") != base
    assert _key(example_dir / "resnet.pt2", example_dir, measure={"repeats": 31}) != base
    plan = {"steps": [{"pass": "int8_static", "config": {"calibration": "minmax"}}],
            "created": "today"}
    changed = {"steps": [{"pass": "int8_static", "config": {"calibration": "entropy"}}],
               "created": "today"}
    assert trial_key(base, plan) == trial_key(base, {**plan, "created": "tomorrow"})
    assert trial_key(base, plan) != trial_key(base, changed)


def test_a_damaged_entry_is_dropped_not_used(tmp_path):
    from advisor.trial_cache import TrialCache

    art = tmp_path / "model.onnx"
    art.write_bytes(b"onnx bytes")
    cache = TrialCache(tmp_path / "cache")
    assert cache.put("k" * 64, {"status": "ok", "artifact": str(art), "measured": {"x": 1.0}})
    hit = cache.get("k" * 64)
    assert hit["measured"] == {"x": 1.0} and Path(hit["artifact"]).read_bytes() == b"onnx bytes"
    Path(hit["artifact"]).write_bytes(b"tampered")
    assert cache.get("k" * 64) is None and not (tmp_path / "cache" / "entries" / ("k" * 64)).exists()
    assert not cache.put("f" * 64, {"status": "failed", "error": "timeout"})  # failures: retried


def test_resume_needs_an_interrupted_run(example_dir, tmp_path, capsys):
    rc = main(["analyze", str(example_dir / "resnet.pt2"), *FAST, *_data(example_dir),
               "--cache", str(tmp_path / "empty"), "--resume"])
    err = capsys.readouterr().err
    assert rc == 2 and "holds no interrupted analysis" in err and "Traceback" not in err


def test_an_interrupted_analysis_resumes_where_it_stopped(example_dir, tmp_path):
    """SIGINT once the third trial has finished; --resume reuses the three, and the choice is
    that of an uninterrupted run of the same inputs."""
    cache = tmp_path / "cache"
    args = [sys.executable, "-m", "advisor", "analyze", str(example_dir / "resnet.pt2"), *FAST,
            "--max-trials", "6", *_data(example_dir), "--cache", str(cache)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    proc = subprocess.Popen(args + ["--out", str(tmp_path / "stopped")], stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True, env=env)
    deadline = time.time() + 600
    try:
        for line in proc.stderr:  # "trial 4/N: ..." starts once three have finished
            if " trial 4/" in line or time.time() > deadline:
                break
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130
    entries = [p for p in (cache / "entries").iterdir() if not p.name.startswith(".")]
    assert len(entries) == 3
    resumed = _run(example_dir / "resnet.pt2", example_dir, tmp_path / "resumed",
                   "--max-trials", "6", "--cache", str(cache), "--resume")
    assert resumed["trial_cache"]["reused"] == 3
    whole = _run(example_dir / "resnet.pt2", example_dir, tmp_path / "whole",
                 "--max-trials", "6", "--no-cache")
    assert resumed["chosen"]["name"] == whole["chosen"]["name"]
    # finished now: nothing left to resume
    assert main(["analyze", str(example_dir / "resnet.pt2"), *FAST, "--max-trials", "6",
                 *_data(example_dir), "--cache", str(cache), "--resume"]) == 2
