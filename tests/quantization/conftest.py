"""Quantization fixtures: one small trained CNN (VGG-style), its fp32 ONNX file, pass contexts.

The CNN trains single-threaded: on a shared 2-core machine two torch threads stalled at every
parallel barrier (37 s vs 8 s for the same 3 epochs).
"""
from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

INPUT_SHAPE = (1, 3, 32, 32)
CFG = (32, "M", 64, "M", 64, "M")  # ~57k weights: int8 overheads (scales, zero points) stay small


@pytest.fixture(scope="session")
def small_cnn(digits_splits):
    """(model, val accuracy) of a VGG-style CNN trained briefly on digits."""
    from advisor.examples.digits import loader
    from advisor.examples.models import vgg
    from advisor.train import TrainConfig, evaluate, train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = vgg(cfg=CFG)
        train(model, loader(digits_splits["train"], 64, shuffle=True),
              TrainConfig(epochs=4, lr=5e-3, seed=0), progress=False)
    finally:
        torch.set_num_threads(threads)
    model.eval()
    return model, evaluate(model, loader(digits_splits["val"], 256))


@pytest.fixture(scope="session")
def small_onnx(small_cnn, tmp_path_factory):
    """The small CNN exported to fp32 ONNX (export info attached)."""
    from advisor.export import export_onnx
    from advisor.passes.base import OnnxArtifact

    path = tmp_path_factory.mktemp("fp32") / "cnn.onnx"
    info = export_onnx(small_cnn[0], path, INPUT_SHAPE)
    return OnnxArtifact(path, INPUT_SHAPE, {"export": info})


@pytest.fixture
def make_ctx(digits_loaders, tmp_path):
    """`make_ctx(teacher=None, val=True, calib=True, target=None)` → a PassContext."""
    from advisor.passes.base import PassContext

    def make(teacher=None, val=True, calib=True, target=None, workdir: Path | None = None):
        return PassContext.for_shape(INPUT_SHAPE, teacher=teacher, target=target,
                                     val_loader=digits_loaders["val"] if val else None,
                                     calib_loader=digits_loaders["train"] if calib else None,
                                     workdir=workdir or tmp_path / "work")
    return make


def sabotage(model: torch.nn.Module, alpha: float = 1000.0, channel: int = 3) -> torch.nn.Module:
    """A copy computing the same function in fp32 whose second block output has one channel
    `alpha` times larger (BN scale up, next conv's input weights down): per-tensor activation
    quantization of that tensor then wipes out every other channel."""
    m = copy.deepcopy(model)
    bn, nxt = m.features[5], m.features[8]
    with torch.no_grad():
        bn.weight[channel] *= alpha
        bn.bias[channel] *= alpha
        nxt.weight[:, channel] /= alpha
    return m.eval()


@pytest.fixture(scope="session")
def sabotaged_onnx(small_cnn, tmp_path_factory):
    """The small CNN with one outlier channel (same fp32 function), exported to ONNX."""
    from advisor.export import export_onnx
    from advisor.passes.base import OnnxArtifact

    path = tmp_path_factory.mktemp("sabotaged") / "cnn-outlier.onnx"
    info = export_onnx(sabotage(small_cnn[0]), path, INPUT_SHAPE)
    return OnnxArtifact(path, INPUT_SHAPE, {"export": info})


PLAIN_LOAD = r"""
import json, sys
import numpy as np
import onnxruntime as ort
results = {}
for path in sys.argv[1:]:
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shapes = []
    for batch in (1, 3):
        x = np.random.default_rng(0).standard_normal((batch,) + tuple(inp.shape[1:])).astype(np.float32)
        shapes.append(list(sess.run(None, {inp.name: x})[0].shape))
    results[path] = shapes
assert not any(m == "advisor" or m.startswith("advisor.") for m in sys.modules)
print(json.dumps(results))
"""


def _plain_load(paths) -> dict:
    """Load and run `paths` in a fresh interpreter that imports only numpy and onnxruntime."""
    proc = subprocess.run([sys.executable, "-c", PLAIN_LOAD, *map(str, paths)],
                          capture_output=True, text=True, timeout=120, cwd="/")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


@pytest.fixture
def plain_onnxruntime_load():
    """`plain_onnxruntime_load(paths)` → {path: [output shape at batch 1, at batch 3]}."""
    return _plain_load
