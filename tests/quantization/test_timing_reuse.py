"""A calibration variant runs the same kernels: the trial takes the first variant's timing."""
from __future__ import annotations

import torch
from torch import nn


def test_a_trial_given_timing_is_not_timed_again(tmp_path, digits_loaders, monkeypatch):
    import advisor.measure.latency as latency
    from advisor.decide.plan import Plan, Step
    from advisor.targets import load_target
    from advisor.trial import TrialPayload, run_trial

    def no_timing(*a, **k):
        raise AssertionError("timed again")

    monkeypatch.setattr(latency, "measure_latency", no_timing)
    monkeypatch.setattr(latency, "measure_speedup", no_timing)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 10)).eval()
    timing = {"from": "c1", "runtime": "onnxruntime",
              "latency_ms": {"p50": 0.2, "p90": 0.25, "cv": 0.05}, "peak_memory_mb": 50.0,
              "paired": {"speedup": 1.8, "speedup_low": 1.7, "speedup_high": 1.9}}
    plan = Plan("q", [Step("int8_static", {"calibration": "entropy"})], factors={}, target="cpu")
    out = run_trial(TrialPayload(model=model, onnx_path=None, input_shape=(1, 3, 32, 32),
                                 plan=plan.to_json(), target=load_target("cpu"),
                                 workdir=str(tmp_path), val_loader=digits_loaders["val"],
                                 calib_loader=digits_loaders["train"], timing=timing))
    m = out["measured"]
    assert m["timed_with"] == "c1" and m["paired"]["speedup"] == 1.8
    assert m["latency_ms"]["p50"] == 0.2 and m["accuracy"] is not None  # evaluated, not timed


def test_an_int8_trial_starts_from_the_baseline_export(tmp_path, digits_loaders, monkeypatch):
    import advisor.export as export
    from advisor.decide.plan import Plan, Step
    from advisor.targets import load_target
    from advisor.trial import TrialPayload, run_trial

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 10)).eval()
    base = tmp_path / "baseline.onnx"
    export.export_onnx(model, base, (1, 3, 32, 32))
    before = base.read_bytes()

    def no_export(*a, **k):
        raise AssertionError("exported again")

    monkeypatch.setattr(export, "export_onnx", no_export)
    plan = Plan("q", [Step("int8_static", {})], factors={}, target="cpu")
    out = run_trial(TrialPayload(model=model, onnx_path=None, input_shape=(1, 3, 32, 32),
                                 plan=plan.to_json(), target=load_target("cpu"),
                                 workdir=str(tmp_path / "w"), val_loader=digits_loaders["val"],
                                 calib_loader=digits_loaders["train"],
                                 baseline_artifacts={"onnxruntime": str(base)},
                                 reuse_baseline_onnx=True,
                                 measure={"warmup": 2, "repeats": 10, "max_seconds": 0.3}))
    assert out["status"] == "ok" and out["runtime"] == "onnxruntime"
    assert out["measured"]["paired"]["speedup"] > 0
    assert base.read_bytes() == before  # the baseline's file is read, never written
