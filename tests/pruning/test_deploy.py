"""Sparse models through a real trial: measured on the runtime that can run them."""
from __future__ import annotations

import torch
from torch import nn


def _trial(model, plan_steps, tmp_path, shape):
    from advisor.decide.plan import Plan, Step
    from advisor.targets import load_target
    from advisor.trial import TrialPayload, run_trial

    plan = Plan("t", [Step(n, c) for n, c in plan_steps], factors={}, target="cpu")
    payload = TrialPayload(model=model, onnx_path=None, input_shape=shape,
                           plan=plan.to_json(), target=load_target("cpu"),
                           workdir=str(tmp_path),
                           measure={"warmup": 2, "repeats": 10, "max_seconds": 0.5})
    return run_trial(payload)


def test_csr_plan_is_measured_in_torch_and_sparse_conv_plan_in_onnxruntime(tmp_path):
    from advisor.examples.models import mlp

    torch.manual_seed(0)
    model = mlp(in_features=64, hidden=(1024, 1024)).eval()
    out = _trial(model, [("prune_unstructured", {"sparsity": 0.95, "csr_linear": True,
                                                 "csr_min_sparsity": 0.9})],
                 tmp_path / "csr", (1, 64))
    csr_layers = out["steps"][0]["info"]["csr_layers"]
    assert csr_layers  # a 1024x1024 layer at 95% is faster as CSR
    assert out["runtime"] == "torch" and out["artifact"].endswith(".ts")
    assert "no ONNX export" in out["note"]
    dense_bytes = out["steps"][0]["info"]["dense_bytes"]
    assert out["measured"]["size_mb"] * 2 ** 20 < 0.3 * dense_bytes  # compressed size counts

    conv = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Flatten(),
                         nn.Linear(16 * 30 * 30, 10)).eval()
    out = _trial(conv, [("prune_unstructured", {"sparsity": 0.8})], tmp_path / "conv",
                 (1, 3, 32, 32))
    assert out["runtime"] == "onnxruntime"
    assert out["steps"][0]["info"]["latency_effect"].startswith("none")
