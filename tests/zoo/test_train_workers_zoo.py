"""`--train-workers 2` on a real architecture at 224 px: torchvision's ResNet-18 (BatchNorm,
residual adds, 11 M parameters) fine-tuned and feature-distilled by two gloo workers. The
unit suite checks accuracy against one process on the small ResNet example; this checks that
the data-parallel path holds at the size users bring: both workers end with the same weights,
bit for bit, the weights moved, and the recipe (epochs, learning rate) is one process's."""
from __future__ import annotations

import copy
import time

import pytest
import torch

pytest.importorskip("torchvision", reason="the zoo needs torchvision: scripts/install.sh vision")

pytestmark = [pytest.mark.zoo, pytest.mark.xdist_group("train-workers")]


@pytest.fixture(scope="module")
def resnet18():
    from tests.zoo.cases import ZooCase

    return ZooCase("tv-resnet18-10", "torchvision.models:resnet18", {"num_classes": 10}).build()


@pytest.fixture(scope="module")
def pruned(resnet18, tmp_path_factory):
    """30% of its channels removed: the student that needs recovery (and adapters to the
    teacher's wider feature maps)."""
    from advisor.passes.base import PassContext, get_pass, load_builtin_passes
    from advisor.passes.config import config_from_dict
    from tests.zoo.cases import SHAPE
    from tests.zoo.cells import SMOKE_CONFIGS, loaders

    load_builtin_passes()
    data = loaders()
    spec = get_pass("prune_structured")
    ctx = PassContext.for_shape(SHAPE, budget="finetune", calib_loader=data["val"],
                                workdir=tmp_path_factory.mktemp("prune"), progress=False)
    config = config_from_dict(spec.config_cls, SMOKE_CONFIGS["prune_structured"])
    return spec.apply(copy.deepcopy(resnet18), config, ctx).model


def _run(pass_name: str, config: dict, model, teacher, workdir, workers: int):
    from advisor.passes.base import PassContext, get_pass, load_builtin_passes
    from advisor.passes.config import config_from_dict
    from advisor.train import seed_everything
    from advisor.train_workers import apply_data_parallel
    from tests.zoo.cases import SHAPE
    from tests.zoo.cells import loaders

    load_builtin_passes()
    data = loaders(n=8, batch=4)
    spec = get_pass(pass_name)
    ctx = PassContext.for_shape(SHAPE, budget="finetune", train_loader=data["train"],
                                val_loader=data["val"], teacher=teacher, workdir=workdir,
                                progress=False, train_workers=workers)
    seed_everything(0)
    started = time.perf_counter()
    out = apply_data_parallel(spec, copy.deepcopy(model), config_from_dict(spec.config_cls, config),
                              ctx, seed=0)
    return out, time.perf_counter() - started


@pytest.mark.parametrize("pass_name,config", [
    ("finetune", {"epochs": 2}),
    ("distill", {"kind": "combined", "epochs": 2}),  # feature hints: adapters synced too
])
def test_two_workers_train_resnet18_at_224px_in_step(resnet18, pruned, tmp_path, pass_name,
                                                     config):
    out, seconds = _run(pass_name, config, pruned, resnet18, tmp_path, workers=2)
    record = out.info["train_workers"]
    assert record == {"workers": 2, "backend": "gloo", "devices": ["cpu", "cpu"],
                      "weights_agree": True}, record
    history = out.info["history"] if pass_name == "finetune" else out.info["train"]["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    moved = [not torch.equal(a, b) for a, b in zip(pruned.parameters(), out.model.parameters())]
    assert all(moved), f"{moved.count(False)} parameter tensors did not move"
    if pass_name == "distill":
        assert out.info["adapter_params"] > 0
    assert not list(tmp_path.glob("ddp-*")), "the rendezvous file is removed"
    print(f"{pass_name}, 2 workers, resnet18 at 224 px: {seconds:.1f} s")
