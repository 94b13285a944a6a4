"""A training run cut by a time limit replays exactly: the plan records the epochs it reached
(`stop_after_epochs`) with the schedule's length kept, and the search writes that config into the
plan it keeps for the trial."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, TensorDataset

from advisor.train import TrainConfig, TrainReport, train


def _data():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 8, generator=g), torch.randint(0, 3, (64,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True,
                      generator=torch.Generator().manual_seed(0))


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))


def test_stop_after_epochs_keeps_the_schedule_of_the_full_run():
    cut, full = _net(), _net()
    r_cut = train(cut, _data(), TrainConfig(epochs=4, lr=1e-2, stop_after_epochs=2,
                                            restore_best=False), progress=False)
    r_full = train(full, _data(), TrainConfig(epochs=4, lr=1e-2, restore_best=False),
                   progress=False)
    assert r_cut.epochs_run == 2 and r_cut.stopped_by == "pinned"
    # the learning rate after 2 of 4 epochs follows the 4-epoch curve, not a 2-epoch one
    assert r_cut.history[-1]["lr"] == r_full.history[1]["lr"]
    short = _net()
    r_short = train(short, _data(), TrainConfig(epochs=2, lr=1e-2, restore_best=False),
                    progress=False)
    assert r_short.history[-1]["lr"] != r_cut.history[-1]["lr"]


def test_pinned_replay_only_for_runs_cut_by_time():
    from advisor.passes.finetune import FinetuneConfig
    from advisor.passes.torch_common import pinned_replay

    config = FinetuneConfig(epochs=5, max_seconds=30.0)
    tc = TrainConfig(epochs=5, max_seconds=30.0)
    assert pinned_replay(config, tc, TrainReport(epochs_run=5, stopped_by="epochs")) is None
    pinned = pinned_replay(config, tc, TrainReport(epochs_run=3, stopped_by="time"))
    assert pinned["stop_after_epochs"] == 3 and pinned["epochs"] == 5
    assert pinned["max_seconds"] is None
    FinetuneConfig(**pinned)  # a valid config of its class


def test_finetune_cut_by_time_reports_its_replay_config(digits_mlp, make_ctx):
    from advisor.passes.base import PassContext, RetrainBudget, get_pass, load_builtin_passes

    load_builtin_passes()
    model, _ = digits_mlp
    ctx = make_ctx(budget="finetune")
    ctx.budget = RetrainBudget("finetune", seconds=1e-6)  # stops after the first epoch
    spec = get_pass("finetune")
    res = spec.apply(model, spec.config_cls(epochs=4), ctx)
    assert res.info["stopped_by"] == "time" and res.info["epochs_run"] == 1
    pinned = res.info["replay_config"]
    assert pinned["stop_after_epochs"] == 1 and pinned["epochs"] == 4
    # replayed without any time limit, the pinned config trains the same single epoch
    ctx2 = make_ctx(budget="finetune")
    again = spec.apply(model, spec.config_cls(**pinned), ctx2)
    assert again.info["epochs_run"] == 1 and "replay_config" not in again.info
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        assert torch.allclose(res.model(x), again.model(x), atol=1e-6)
    assert isinstance(ctx, PassContext)


def test_search_writes_the_pinned_config_into_the_trial_plan():
    from advisor.search import pin_replay_configs

    plan = {"steps": [{"pass": "prune_structured", "config": {"ratio": 0.3}},
                      {"pass": "finetune", "config": {"epochs": 4}}]}
    steps = [{"pass": "prune_structured", "info": {}},
             {"pass": "finetune", "info": {"replay_config": {"epochs": 4,
                                                             "stop_after_epochs": 2}}}]
    pin_replay_configs(plan, steps)
    assert plan["steps"][0]["config"] == {"ratio": 0.3}
    assert plan["steps"][1]["config"] == {"epochs": 4, "stop_after_epochs": 2}
