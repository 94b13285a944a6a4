"""Fixtures for the device agent: its torch-free environment, a local-command link, and a real
OpenSSH server on 127.0.0.1 with a per-run host key and client key.

`.venv-agent` (onnxruntime, numpy, psutil; no torch, no advisor) is made by
`scripts/install.sh dev`; Debian's `openssh-server` is installed by `.ci/run`. Without either
the tests that need it skip and say why.
"""
from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
AGENT_PYTHON = ROOT / ".venv-agent" / "bin" / "python"


@pytest.fixture(scope="session")
def agent_python() -> Path:
    if not AGENT_PYTHON.is_file():
        pytest.skip(f"{AGENT_PYTHON} is missing: `scripts/install.sh dev` creates it")
    return AGENT_PYTHON


def link_table(argv: list[str], cache: Path, **extra) -> dict:
    return {"command": [str(a) for a in argv], "cache_dir": str(cache), **extra}


def target_toml(path: Path, name: str, table: dict, threads: int | None = 1,
                runtimes=("onnxruntime",), precisions=("fp32", "int8")) -> Path:
    import json
    lines = [f"name = {json.dumps(name)}", f"precisions = {json.dumps(list(precisions))}",
             "sparse_kernels = []"]
    if threads:
        lines.append(f"threads = {threads}")
    lines.append("[device]")
    lines += [f"{k} = {json.dumps(v)}" for k, v in table.items()]
    for rt in runtimes:
        lines += ["[[runtimes]]", f"name = {json.dumps(rt)}"]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def local_link(agent_python, tmp_path):
    """A DeviceLink whose "device" is the agent environment on this host (no ssh)."""
    from advisor.device.link import link_from_table

    return link_from_table(link_table([agent_python], tmp_path / "agent-cache"),
                           lambda f, why: ValueError(f"{f} {why}"))


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """A running sshd on 127.0.0.1 (`loopback_sshd`): yields the ssh argv prefix (ending with
    the destination)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "loopback_sshd", Path(__file__).with_name("loopback_sshd.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    try:
        argv, proc = mod.start_sshd(tmp_path_factory.mktemp("sshd"))
    except mod.SshdUnavailable as e:
        pytest.skip(str(e))
    yield argv
    mod.stop_sshd(proc)


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory) -> Path:
    """A small conv net as single-file ONNX with a dynamic batch (input 1x3x16x16)."""
    import torch
    from torch import nn

    from advisor.export import export_onnx

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                          nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)).eval()
    path = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    export_onnx(model, path, (1, 3, 16, 16))
    return path


@pytest.fixture
def write_target():
    """`write_target(path, name, device_table, threads=1, ...)` → a device target's TOML."""
    return target_toml
