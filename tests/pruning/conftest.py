"""Pruning fixtures: example architectures built in code, pass contexts, a quick MLP on digits."""
from __future__ import annotations

import copy

import pytest
import torch

INPUT_SHAPE = (1, 3, 32, 32)
ARCHS = ("resnet", "mobilenet", "vgg", "concatnet")


def build(name: str, seed: int = 0) -> torch.nn.Module:
    """An example architecture with seeded random weights and non-trivial BatchNorm statistics
    (fresh BN layers are identities; these make every channel compute something different)."""
    from advisor.examples.models import FACTORIES

    torch.manual_seed(seed)
    model = FACTORIES[name]()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.2, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture
def make_ctx(digits_loaders, tmp_path):
    """`make_ctx(budget="none", train=True, epochs=None)` → a PassContext on the digits splits."""
    from advisor.passes.base import PassContext

    def make(budget: str = "none", train: bool = True, epochs: int | None = None,
             target=None, shape=INPUT_SHAPE):
        return PassContext.for_shape(shape, budget=budget, epochs=epochs, target=target,
                                     train_loader=digits_loaders["train"] if train else None,
                                     val_loader=digits_loaders["val"],
                                     calib_loader=digits_loaders["train"],
                                     workdir=tmp_path / "work", progress=False)
    return make


@pytest.fixture(scope="session")
def digits_mlp(digits_splits):
    """(model, val accuracy) of a small MLP trained 3 epochs on digits (a few seconds)."""
    from advisor.examples.digits import loader
    from advisor.examples.models import mlp
    from advisor.train import TrainConfig, evaluate, train

    torch.manual_seed(0)
    model = mlp(hidden=(256, 128))
    train(model, loader(digits_splits["train"], 64, shuffle=True),
          TrainConfig(epochs=3, lr=3e-3, seed=0), progress=False)
    model.eval()
    return model, evaluate(model, loader(digits_splits["val"], 256))


@pytest.fixture
def mlp_copy(digits_mlp):
    return copy.deepcopy(digits_mlp[0]).eval()


def run_pass(name: str, model, ctx, **config):
    from advisor.passes.base import get_pass
    from advisor.passes.config import config_from_dict

    spec = get_pass(name)
    return spec.apply(model, config_from_dict(spec.config_cls, config), ctx)
