"""Data-parallel recovery training (`--train-workers N`, advisor.train_workers): gloo workers on
this CPU train as one process would, reproducibly, and a dead worker fails the step."""
from __future__ import annotations

import copy
import json
import os
import time

import pytest
import torch
from torch import nn

from advisor.decide.plan import Plan, Step, plan_from_json
from advisor.errors import PassError, PlanError
from advisor.passes.base import PassContext, get_pass, load_builtin_passes
from advisor.passes.config import config_from_dict
from advisor.train import evaluate, seed_everything
from advisor.train_workers import apply_data_parallel

load_builtin_passes()
SHAPE = (1, 3, 32, 32)


@pytest.fixture(scope="module")
def pruned_resnet(trained_example, digits_loaders, tmp_path_factory):
    """The ResNet example trained briefly, then half its channels pruned (accuracy lost)."""
    model, _ = trained_example("resnet", epochs=4)
    ctx = _ctx(digits_loaders, tmp_path_factory.mktemp("prune"), 1)
    spec = get_pass("prune_structured")
    seed_everything(0)
    return spec.apply(model, config_from_dict(spec.config_cls, {"ratio": 0.5}), ctx).model


def _ctx(loaders, workdir, workers: int) -> PassContext:
    return PassContext.for_shape(SHAPE, budget="finetune", train_loader=loaders["train"],
                                 val_loader=loaders["val"], workdir=workdir, progress=False,
                                 train_workers=workers)


def _finetune(model, loaders, workdir, workers: int, epochs: int = 3):
    spec = get_pass("finetune")
    config = config_from_dict(spec.config_cls, {"epochs": epochs})
    ctx = _ctx(loaders, workdir, workers)
    seed_everything(0)
    if workers == 1:
        return spec.apply(copy.deepcopy(model), config, ctx)
    return apply_data_parallel(spec, copy.deepcopy(model), config, ctx, seed=0)


def test_two_gloo_workers_finetune_the_pruned_resnet_as_one_process_does(
        pruned_resnet, digits_loaders, tmp_path):
    before = evaluate(pruned_resnet, digits_loaders["test"])
    one = _finetune(pruned_resnet, digits_loaders, tmp_path / "one", 1)
    two = _finetune(pruned_resnet, digits_loaders, tmp_path / "two", 2)
    acc1 = evaluate(one.model, digits_loaders["test"])
    acc2 = evaluate(two.model, digits_loaders["test"])
    assert acc1 > before + 0.3, "fine-tuning recovers the pruned model"
    assert abs(acc2 - acc1) <= 0.005, (acc1, acc2)
    assert two.info["train_workers"] == {"workers": 2, "backend": "gloo",
                                         "devices": ["cpu", "cpu"], "weights_agree": True}
    assert "train_workers" not in one.info
    # the same number of optimizer steps and epochs as one process: the batch is split, not
    # multiplied (the recipe does not change with the worker count)
    assert [h["epoch"] for h in two.info["history"]] == [1, 2, 3]
    assert two.info["history"][-1]["lr"] == pytest.approx(one.info["history"][-1]["lr"])
    # the model is trained data-parallel, not copied: its weights moved from the start
    moved = [not torch.equal(a, b) for a, b in zip(pruned_resnet.parameters(),
                                                  two.model.parameters())]
    assert all(moved)


def test_the_same_seed_and_worker_count_give_the_same_weights(pruned_resnet, digits_loaders,
                                                             tmp_path):
    a = _finetune(pruned_resnet, digits_loaders, tmp_path / "a", 2, epochs=1)
    b = _finetune(pruned_resnet, digits_loaders, tmp_path / "b", 2, epochs=1)
    for (name, pa), pb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert not list((tmp_path / "a").glob("ddp-*")), "the rendezvous file is removed"


def test_distillation_with_feature_hints_trains_data_parallel(pruned_resnet, trained_example,
                                                              digits_loaders, tmp_path):
    """Distillation's closures (teacher, feature taps) and adapters work in every worker: the
    adapters' gradients are averaged too, so the workers stay in step."""
    teacher, _ = trained_example("resnet", epochs=4)
    spec = get_pass("distill")
    config = config_from_dict(spec.config_cls, {"kind": "combined", "epochs": 1})
    ctx = _ctx(digits_loaders, tmp_path, 2)
    ctx.teacher = teacher
    seed_everything(0)
    out = apply_data_parallel(spec, copy.deepcopy(pruned_resnet), config, ctx, seed=0)
    assert out.info["train_workers"]["workers"] == 2
    assert out.info["adapter_params"] > 0
    assert evaluate(out.model, digits_loaders["test"]) > evaluate(pruned_resnet,
                                                                   digits_loaders["test"])


class DriftsOnRankOne(nn.Module):
    """A model that worker 1 changes outside the gradient (a frozen parameter, which DDP
    neither averages nor broadcasts after the start): the workers end out of step."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
        self.offset = nn.Parameter(torch.zeros(10), requires_grad=False)

    def forward(self, x):
        import torch.distributed as dist

        if self.training and dist.is_initialized() and dist.get_rank() == 1:
            with torch.no_grad():
                self.offset.add_(1.0)
        return self.net(x) + self.offset


def test_workers_that_end_out_of_step_are_recorded(digits_loaders, tmp_path):
    out = _finetune(DriftsOnRankOne(), digits_loaders, tmp_path, 2, epochs=1)
    assert out.info["train_workers"]["weights_agree"] is False
    assert torch.equal(out.model.offset, torch.zeros(10)), "rank 0's model is the one kept"


def test_the_weights_digest_sees_one_changed_value():
    from advisor.model_common import weights_digest

    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    before = weights_digest(model)
    assert weights_digest(copy.deepcopy(model)) == before
    with torch.no_grad():
        model[0].weight[1, 2] += 1e-6
    assert weights_digest(model) != before
    model = copy.deepcopy(model)
    same = weights_digest(model)
    model[1].num_batches_tracked += 1  # a buffer counts too
    assert weights_digest(model) != same


class DiesOnRankOne(nn.Module):
    """A model whose forward ends the process of worker 1 after a few steps (as the OOM killer
    would); pickled to the spawned worker by module path."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
        self.calls = 0

    def forward(self, x):
        import torch.distributed as dist

        self.calls += 1
        if self.training and dist.is_initialized() and dist.get_rank() == 1 and self.calls > 4:
            os._exit(3)
        return self.net(x)


def test_a_dead_worker_fails_the_step_with_its_exit_code_without_hanging(digits_loaders,
                                                                        tmp_path):
    t0 = time.perf_counter()
    from advisor import train_workers

    retired = len(train_workers._RETIRED)
    with pytest.raises(PassError, match="worker 1 exited with 3"):
        _finetune(DiesOnRankOne(), digits_loaders, tmp_path, 2, epochs=1)
    assert time.perf_counter() - t0 < 120
    # the failed run's process group is kept until exit: freed with the traceback (through DDP's
    # Reducer, GIL held) it could deadlock on gloo's queued work, as it once hung CI
    assert len(train_workers._RETIRED) == retired + 1


def test_plans_that_train_record_the_worker_count_and_it_is_checked():
    from advisor.decide.candidate import Candidate
    from advisor.decide.factors import make_factors
    from advisor.search import make_plan

    factors = make_factors(hardware="cpu", goal="latency", max_drop="1%", retrain="finetune",
                           has_train_data=True)
    trains = Candidate("prune + recover", [Step("prune_structured", {}), Step("finetune", {})],
                       "pruning", "r")
    post = Candidate("int8", [Step("int8_static", {})], "quantization", "r")
    plan = make_plan(trains, factors, "cpu", 0, {}, train_workers=2)
    assert plan.to_json()["training"] == {"workers": 2}
    assert plan_from_json(json.loads(json.dumps(plan.to_json())),
                          load_builtin_passes()).train_workers == 2
    # nothing trains, or one worker: the plan is as before (and so is its trial-cache key)
    assert "training" not in make_plan(post, factors, "cpu", 0, {}, train_workers=2).to_json()
    assert "training" not in make_plan(trains, factors, "cpu", 0, {}).to_json()
    for bad in (0, 65, "2", True, 1.5):
        with pytest.raises(PlanError, match="training.workers"):
            plan_from_json({**plan.to_json(), "training": {"workers": bad}},
                           load_builtin_passes())
    with pytest.raises(PlanError, match="unknown fields"):
        plan_from_json({**plan.to_json(), "training": {"workers": 2, "gpus": 4}},
                       load_builtin_passes())


def test_apply_trains_with_the_plans_worker_count(example_dir, tmp_path):
    from advisor.api import apply_plan

    plan = Plan(name="recover", steps=[Step("finetune", {"epochs": 1})], target="cpu",
                factors={"retrain": "finetune"}, training={"workers": 2})
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan.to_json()))
    res = apply_plan(str(example_dir / "resnet.pt2"), str(path), out=tmp_path / "out",
                     train_data=str(example_dir / "digits-train.pt"), progress=False,
                     measure={"repeats": 5, "warmup": 2, "max_seconds": 1.0})
    assert res.steps[0]["info"]["train_workers"]["workers"] == 2


@pytest.mark.parametrize("bad", ["0", "65", "two"])
def test_cli_refuses_a_bad_worker_count_in_one_line(example_dir, capsys, bad):
    from advisor.cli import main

    rc = main(["analyze", str(example_dir / "resnet.pt2"), "--target", "cpu",
               "--train-workers", bad])
    err = capsys.readouterr().err
    assert rc != 0
    assert "train-workers" in err and "Traceback" not in err
