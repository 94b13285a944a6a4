"""Fixtures for measurement tests: a tiny conv net exported once (.pt2 + .onnx), and a 1-thread
target written as TOML, so latency workers stay cheap on a small shared machine."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

SHAPE = (1, 3, 16, 16)


class TinyConvNet(nn.Module):
    """Conv-dominated: two 3x3 convolutions, a pool and a small classifier."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = self.relu2(self.conv2(self.relu1(self.conv1(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


ONE_THREAD_TOML = """
name = "one-thread"
description = "test target: 1 thread on this host"
device = "cpu"
threads = 1
precisions = ["fp32", "int8"]
sparse_kernels = ["csr-linear"]
emulated = false

[[runtimes]]
name = "onnxruntime"
provider = "CPUExecutionProvider"

[[runtimes]]
name = "torch"
"""


@pytest.fixture(scope="session")
def tiny_model():
    torch.manual_seed(0)
    return TinyConvNet().eval()


@pytest.fixture(scope="session")
def tiny_artifacts(tiny_model, tmp_path_factory):
    """{"pt2": path, "onnx": path, "shape": SHAPE} of the tiny net (exported once)."""
    from advisor.export import export_onnx, save_pt2

    d = tmp_path_factory.mktemp("tiny")
    pt2 = save_pt2(tiny_model, d / "tiny.pt2", SHAPE)
    onnx = Path(export_onnx(tiny_model, d / "tiny.onnx", SHAPE)["path"])
    return {"pt2": pt2, "onnx": onnx, "shape": SHAPE}


@pytest.fixture(scope="session")
def one_thread_target(tmp_path_factory):
    from advisor.targets import load_target

    path = tmp_path_factory.mktemp("targets") / "one-thread.toml"
    path.write_text(ONE_THREAD_TOML)
    return load_target(path)


@pytest.fixture
def write_toml(tmp_path):
    """write_toml(text, name="t.toml") -> path of a TOML file in a temporary directory."""
    def write(text: str, name: str = "t.toml") -> Path:
        p = tmp_path / name
        p.write_text(text)
        return p
    return write
