"""A trial records its time per stage (transform, train, export, measure, evaluate) and where its
training ran (`ran_on.train`): one real prune → finetune trial in this process, kept tiny."""
from __future__ import annotations

import pytest

from advisor.decide.plan import Plan, Step

STAGES = ("transform", "train", "export", "measure", "evaluate")


def _payload(steps, workdir, loaders):
    import torch

    from advisor.examples.models import resnet
    from advisor.passes.base import RetrainBudget
    from advisor.targets import load_target
    from advisor.trial import TrialPayload

    torch.manual_seed(0)
    plan = Plan("t", steps, factors={}, target="cpu", seed=0)
    return TrialPayload(model=resnet().eval(), onnx_path=None, input_shape=(1, 3, 32, 32),
                        plan=plan.to_json(), target=load_target("cpu"), workdir=str(workdir),
                        train_loader=loaders["train"], val_loader=loaders["val"],
                        calib_loader=loaders["train"], budget=RetrainBudget("finetune"),
                        measure={"warmup": 2, "repeats": 10, "max_seconds": 0.3})


def _check_sum(out):
    s = out["stage_seconds"]
    assert all(s[k] >= 0 for k in STAGES)
    assert s["measure"] > 0 and s["evaluate"] > 0
    # the stages are the trial: nothing counted twice, nothing left out
    assert sum(s[k] for k in STAGES) == pytest.approx(out["seconds"], abs=0.05)
    assert s["prepare"] == pytest.approx(s["transform"] + s["train"] + s["export"], abs=0.005)


def test_a_training_trial_times_each_stage_and_says_where_it_trained(tmp_path, digits_loaders):
    from advisor.trial import run_trial

    steps = [Step("prune_structured", {"ratio": 0.3}),
             Step("finetune", {"epochs": 1, "max_batches_per_epoch": 3})]
    out = run_trial(_payload(steps, tmp_path, digits_loaders))
    assert out["status"] == "ok"
    s = out["stage_seconds"]
    assert s["train"] > 0 and s["transform"] > 0 and s["export"] > 0
    # the training is the finetune step's own time, not the pruning's
    tune = next(st for st in out["steps"] if st["pass"] == "finetune")
    assert s["train"] == pytest.approx(tune["seconds"], abs=0.002)
    _check_sum(out)
    assert out["ran_on"] == {"train": {"device": "cpu", "workers": 1}}


def test_a_trial_without_training_has_no_train_time_nor_devices(tmp_path, digits_loaders):
    from advisor.trial import run_trial

    out = run_trial(_payload([Step("prune_structured", {"ratio": 0.3})], tmp_path,
                             digits_loaders))
    assert out["status"] == "ok" and out["stage_seconds"]["train"] == 0
    _check_sum(out)
    assert out.get("ran_on") is None
