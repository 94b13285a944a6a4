"""The passes that need layers, on a model given only as a plain torch.export program (lifted
by advisor.lift): factorization, fine-tuning and feature distillation run as on the eager model."""
from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from torch import nn

from .conftest import INPUT_SHAPE, build, run_pass


@pytest.fixture
def lifted():
    from advisor.lift import lift_program

    model = build("resnet")
    x = torch.randn(INPUT_SHAPE, generator=torch.Generator().manual_seed(0))
    module = lift_program(torch.export.export(model, (x,)), x).module
    assert module is not None
    return model, module


def test_factorize_replaces_the_lifted_convolutions(lifted, make_ctx):
    model, module = lifted
    res = run_pass("factorize", module, make_ctx(), method="energy", energy=1.0,
                   require_cheaper=False, check_latency=False)
    assert res.info["replaced"] > 0
    x = torch.randn(2, *INPUT_SHAPE[1:])
    with torch.no_grad():  # at full energy the factorized model computes the same
        torch.testing.assert_close(res.model(x), model(x), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("name,config", [("finetune", {"epochs": 1}),
                                         ("distill", {"epochs": 1, "kind": "feature"})])
def test_training_passes_train_the_lifted_module(name, config, lifted, make_ctx):
    _, module = lifted
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    # as in analyze: the teacher is the loaded (lifted) model itself
    ctx = dataclasses.replace(make_ctx(budget="finetune", epochs=1), teacher=copy.deepcopy(module))
    res = run_pass(name, module, ctx, **config)
    changed = [n for n, p in res.model.named_parameters() if not torch.equal(p, before[n])]
    assert changed, "no weight changed"
    assert any(isinstance(m, nn.BatchNorm2d) for m in res.model.modules())
