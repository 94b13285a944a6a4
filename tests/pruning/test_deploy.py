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


def test_sparse_model_ships_gzip_compressed_and_its_size_is_that_files(tmp_path):
    import gzip
    from pathlib import Path

    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv2d(3, 64, 3), nn.ReLU(), nn.Conv2d(64, 64, 3), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)).eval()
    out = _trial(conv, [("prune_unstructured", {"sparsity": 0.9})], tmp_path / "sparse",
                 (1, 3, 32, 32))
    artifact = Path(out["artifact"])
    shipped = artifact.with_name(artifact.name + ".gz")
    m = out["measured"]
    assert m["size_stored_as"] == "gzip" and "gzip" in out["note"]
    assert m["size_mb"] == shipped.stat().st_size / 2 ** 20
    assert gzip.decompress(shipped.read_bytes()) == artifact.read_bytes()  # loadable after gunzip
    assert shipped.stat().st_size < 0.3 * artifact.stat().st_size  # the zeros shrink there

    out = _trial(conv, [("prune_structured", {"ratio": 0.25})], tmp_path / "dense",
                 (1, 3, 32, 32))
    assert out["measured"]["size_stored_as"] == "file"
    assert out["measured"]["size_mb"] == Path(out["artifact"]).stat().st_size / 2 ** 20
    assert not list((tmp_path / "dense").rglob("*.gz"))


def test_write_artifacts_adds_gzip_copies_only_for_sparse_weights(tmp_path):
    import gzip

    from advisor.runner import RunResult, write_artifacts

    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8 * 6 * 6, 4)).eval()
    sparse_steps = [{"pass": "prune_unstructured", "info": {"compressed_bytes": 100}}]
    files = write_artifacts(RunResult(model, model, sparse_steps), tmp_path / "s", (1, 3, 8, 8))
    for kind in ("onnx", "pt2"):
        assert gzip.decompress(files[kind + "_gz"].read_bytes()) == files[kind].read_bytes()
    files = write_artifacts(RunResult(model, model, [{"pass": "finetune", "info": {}}]),
                            tmp_path / "d", (1, 3, 8, 8))
    assert "onnx_gz" not in files and not list((tmp_path / "d").glob("*.gz"))


def test_gzip_copy_never_overwrites_its_source(tmp_path):
    import pytest

    from advisor.errors import AdvisorError
    from advisor.fileio import gzip_copy

    src = tmp_path / "m.onnx"
    src.write_bytes(b"\0" * 4096 + b"model")
    assert gzip_copy(src).name == "m.onnx.gz"
    with pytest.raises(AdvisorError, match="refusing to overwrite"):
        gzip_copy(src, src)
    assert src.read_bytes() == b"\0" * 4096 + b"model"
