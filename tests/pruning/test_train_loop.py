"""The shared training loop used by pruning, rewinding, factorization and distillation."""
from __future__ import annotations

import copy

import pytest
import torch

from advisor.train import TrainConfig, evaluate, train


def test_onecycle_schedule_and_history(mlp_copy, digits_loaders):
    report = train(mlp_copy, digits_loaders["train"], TrainConfig(epochs=2, lr=1e-3),
                   val_loader=digits_loaders["val"], progress=False)
    assert report.epochs_run == 2 and report.stopped_by == "epochs"
    assert [h["epoch"] for h in report.history] == [1, 2]
    assert report.history[-1]["lr"] < 1e-5  # OneCycle anneals to ~0 at the end


def test_wall_time_budget_stops_training(mlp_copy, digits_loaders):
    report = train(mlp_copy, digits_loaders["train"], TrainConfig(epochs=50, max_seconds=0.01),
                   progress=False)
    assert report.stopped_by == "time" and report.epochs_run == 1


def test_early_stop_and_best_weights_restored(digits_mlp, digits_loaders):
    model = copy.deepcopy(digits_mlp[0])
    # a huge constant learning rate makes validation worse after the first epoch
    report = train(model, digits_loaders["train"],
                   TrainConfig(epochs=6, lr=0.5, schedule="constant", early_stop_patience=1),
                   val_loader=digits_loaders["val"], progress=False)
    assert report.stopped_by == "early_stop" and report.epochs_run < 6
    assert evaluate(model, digits_loaders["val"]) == pytest.approx(report.best_val_accuracy)


def test_same_seed_same_result(digits_mlp, digits_loaders):
    outs = []
    for _ in range(2):
        model = copy.deepcopy(digits_mlp[0])
        train(model, digits_loaders["train"], TrainConfig(epochs=1, seed=7), progress=False)
        outs.append(model(torch.ones(1, 3, 32, 32)).detach())
    assert torch.equal(outs[0], outs[1])


def test_pass_budget_caps_epochs_and_seconds(make_ctx):
    from advisor.passes.torch_common import budget_train_config

    ctx = make_ctx("finetune", epochs=2)
    ctx.budget.seconds = 30.0
    tc = budget_train_config(ctx, epochs=10, lr=1e-3, max_seconds=60.0)
    assert tc.epochs == 2 and tc.max_seconds == 30.0
