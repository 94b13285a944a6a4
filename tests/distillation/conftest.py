"""Fixtures for distillation tests: digits at 16x16 and a tiny trained teacher (fast on 2 cores).

The example models are fully convolutional, so 16x16 inputs (4x cheaper than the usual 32x32)
keep the training in these tests short.
"""
from __future__ import annotations

import copy

import pytest
import torch

from advisor.examples import digits, models
from advisor.passes.base import PassContext
from advisor.train import TrainConfig, train

RES = 16
SHAPE = (1, 3, RES, RES)
_CACHE: dict[str, torch.nn.Module] = {}


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run as fast on one thread; two spin-wait badly on a loaded machine
    (measured here: 9 s vs 81 s wall for the same 2-epoch run)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def small_splits():
    return digits.load_digits_splits(resolution=RES)


@pytest.fixture
def tiny_teacher(small_splits, _one_thread):
    """A width-8 ResNet trained for 2 epochs on 16x16 digits (≈ 90% val accuracy; cached)."""
    if "teacher" not in _CACHE:
        torch.manual_seed(0)
        model = models.resnet(width=8)
        train(model, digits.loader(small_splits["train"], 32, shuffle=True),
              TrainConfig(epochs=2, lr=1e-2), progress=False)
        _CACHE["teacher"] = model.eval()
    return copy.deepcopy(_CACHE["teacher"])


@pytest.fixture(scope="session")
def small_loaders(small_splits):
    """First 256 training and 128 validation samples."""
    tr, va = small_splits["train"], small_splits["val"]
    return {"train": digits.loader(digits.Split(tr.inputs[:256], tr.labels[:256]), 64,
                                   shuffle=True),
            "val": digits.loader(digits.Split(va.inputs[:128], va.labels[:128]), 128)}


@pytest.fixture
def make_ctx(small_loaders):
    def make(teacher=None, budget="finetune", **kw):
        return PassContext.for_shape(SHAPE, budget=budget, teacher=teacher, progress=False,
                                     **{"train_loader": small_loaders["train"],
                                        "val_loader": small_loaders["val"], **kw})
    return make
