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


def test_finetune_sized_to_its_time_cap_reports_its_replay_config(digits_mlp, make_ctx):
    from advisor.passes.base import PassContext, RetrainBudget, get_pass, load_builtin_passes

    load_builtin_passes()
    model, _ = digits_mlp
    ctx = make_ctx(budget="finetune")
    ctx.budget = RetrainBudget("finetune", seconds=1e-6)  # room for one step at most
    spec = get_pass("finetune")
    res = spec.apply(model, spec.config_cls(epochs=4), ctx)
    sizing = res.info["sizing"]
    assert sizing["epochs"] == 1 and sizing["batches_per_epoch"] == 1 < sizing["batches"]
    assert res.info["epochs_run"] == 1
    pinned = res.info["replay_config"]
    assert pinned["epochs"] == 1 and pinned["max_batches_per_epoch"] == 1
    assert pinned["max_seconds"] is None
    # replayed without any time limit, the pinned config trains the same single batch
    ctx2 = make_ctx(budget="finetune")
    again = spec.apply(model, spec.config_cls(**pinned), ctx2)
    assert again.info["epochs_run"] == 1 and "replay_config" not in again.info
    assert "sizing" not in again.info
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        assert torch.allclose(res.model(x), again.model(x), atol=1e-6)
    assert isinstance(ctx, PassContext)


def test_sizing_prefers_fewer_epochs_then_a_subset_of_batches():
    from advisor.train import SIZING_HEADROOM, size_to_seconds

    room = 10.0 / SIZING_HEADROOM  # seconds whose planned share is exactly 10 s
    fits = size_to_seconds(room, step_s=0.1, eval_s=0.0, epochs=2, batches=50)
    assert (fits["epochs"], fits["batches_per_epoch"]) == (2, 50)
    fewer = size_to_seconds(room, step_s=0.1, eval_s=1.0, epochs=5, batches=30)
    assert (fewer["epochs"], fewer["batches_per_epoch"]) == (2, 30)  # 2 × (3 s + 1 s) ≤ 10 s
    subset = size_to_seconds(room, step_s=0.1, eval_s=2.0, epochs=5, batches=500)
    assert (subset["epochs"], subset["batches_per_epoch"]) == (1, 80)  # (10 - 2) / 0.1
    assert "80 of 500 batches" in subset["text"]


def test_a_sized_run_completes_its_schedule(monkeypatch):
    import advisor.train as tr

    monkeypatch.setattr(tr, "probe_step_seconds", lambda *a: 0.1)  # 4 batches: 0.4 s / epoch
    report = train(_net(), _data(), TrainConfig(epochs=6, lr=1e-2, max_seconds=1.0,
                                                size_to_time=True, restore_best=False),
                   progress=False)
    assert report.sizing["epochs"] == 2 and report.epochs_run == 2
    assert report.stopped_by == "epochs"
    # the schedule spans the 2 planned epochs, as a run asked for 2 epochs
    two = train(_net(), _data(), TrainConfig(epochs=2, lr=1e-2, restore_best=False),
                progress=False)
    assert [h["lr"] for h in report.history] == [h["lr"] for h in two.history]


def test_the_step_probe_leaves_weights_and_statistics_as_they_were():
    from advisor.train import cross_entropy_loss, probe_step_seconds

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.BatchNorm1d(16), torch.nn.ReLU(),
                              torch.nn.Linear(16, 3)).train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert probe_step_seconds(net, _data(), cross_entropy_loss(), list(net.parameters()),
                              torch.device("cpu")) > 0
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in net.parameters())


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
