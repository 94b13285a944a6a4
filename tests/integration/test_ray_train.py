"""Data-parallel training on Ray Train (`--executor ray --train-workers N`,
advisor.train_workers_ray), on a real `ray start --head` with 2 CPUs: called from inside a Ray
task as the executor's prepare task calls it, two Ray Train workers fine-tune the pruned ResNet
example to the weights two local gloo workers reach with the same seed; a dead worker and a
cluster too small for the workers fail the step in one line, without waiting."""
from __future__ import annotations

import copy
import sys
import time

import pytest
import torch
from torch import nn

from advisor.errors import PassError
from advisor.passes.base import get_pass
from advisor.passes.config import config_from_dict
from advisor.train import evaluate, seed_everything
from advisor.train_workers import apply_data_parallel

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'advisor[ray]')")
pytest.importorskip("ray.train.torch", reason="Ray Train is not installed (ray[train])")

# the same cluster (2 CPUs, target:cpu) and pruned model as the Ray and data-parallel tests
from tests.integration.test_ray import cluster  # noqa: E402,F401
# a model whose forward ends worker 1's process after a few steps (as the OOM killer would);
# the Ray Train workers unpickle it by module path, as they would a user's model class
from tests.training.test_data_parallel import (  # noqa: E402,F401
    DiesOnRankOne, _ctx, pruned_resnet)


@pytest.fixture(scope="module")
def connected(cluster):  # noqa: F811
    """This process as a driver of the cluster; this module's functions travel by value (the
    workers cannot import a test module)."""
    ray.init(address=cluster, logging_level="ERROR", log_to_driver=False)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield cluster
    ray.shutdown()


def _finetune(model, loaders, workdir, workers: int, engine: str = "local", epochs: int = 2):
    """The fine-tuning step as `advisor.runner` runs it with `--train-workers workers`."""
    spec = get_pass("finetune")
    config = config_from_dict(spec.config_cls, {"epochs": epochs})
    ctx = _ctx(loaders, workdir, workers)
    ctx.train_engine = engine
    seed_everything(0)
    if workers == 1:
        return spec.apply(copy.deepcopy(model), config, ctx)
    return apply_data_parallel(spec, copy.deepcopy(model), config, ctx, seed=0)


def _in_a_task(*args, num_cpus: float = 0, **kwargs):
    """`_finetune` inside a Ray task, as the executor's prepare task runs a trial's steps (it
    asks for no CPU when its plan trains with several workers: `advisor.executor_ray`)."""
    task = ray.remote(_finetune).options(num_cpus=num_cpus, max_retries=0)
    try:
        return ray.get(task.remote(*args, **kwargs), timeout=300)
    except ray.exceptions.RayTaskError as e:  # the task's own error, as the executor reports it
        raise e.cause from None


def test_ray_train_workers_train_as_the_local_workers_do(connected, pruned_resnet,
                                                         digits_loaders, tmp_path):
    t0 = time.perf_counter()
    on_ray = _in_a_task(pruned_resnet, digits_loaders, tmp_path / "ray", 2, "ray")
    ray_s = time.perf_counter() - t0
    local = _finetune(pruned_resnet, digits_loaders, tmp_path / "local", 2)
    one = _finetune(pruned_resnet, digits_loaders, tmp_path / "one", 1)
    record = on_ray.info["train_workers"]
    assert record["engine"] == "ray-train" and record["workers"] == 2, record
    assert record["backend"] == "gloo" and record["devices"] == ["cpu", "cpu"]
    assert len(record["nodes"]) == 2 and record["weights_agree"] is True
    # the same recipe, seed and worker count on either engine: the same weights, bit for bit
    for (name, a), b in zip(on_ray.model.state_dict().items(), local.model.state_dict().values()):
        assert torch.equal(a, b), name
    acc_ray = evaluate(on_ray.model, digits_loaders["test"])
    acc_one = evaluate(one.model, digits_loaders["test"])
    assert abs(acc_ray - acc_one) <= 0.005, (acc_ray, acc_one)
    assert acc_ray > evaluate(pruned_resnet, digits_loaders["test"]) + 0.3
    # nothing left behind in the work directory: the result file, Ray Train's run directory
    assert not [p.name for p in (tmp_path / "ray").iterdir()], "files left in the workdir"
    print(f"2 Ray Train workers: {ray_s:.1f} s (with the task's start)")


def test_a_dead_ray_train_worker_fails_the_step_in_one_line(connected, digits_loaders,
                                                           tmp_path):
    t0 = time.perf_counter()
    with pytest.raises(PassError, match="Ray Train failed: worker 1 died: ActorDiedError") as err:
        _finetune(DiesOnRankOne(), digits_loaders, tmp_path, 2, "ray", epochs=1)
    assert "\n" not in str(err.value)
    assert time.perf_counter() - t0 < 120
    assert not list(tmp_path.iterdir()), "Ray Train's run directory is removed"


@pytest.mark.parametrize("workers, task_cpus, missing", [
    (3, None, r"needs 3 CPUs \(one per worker\), the Ray cluster has 2 \(hint"),
    # the deadlock the executor avoids: a prepare task that holds one of the two CPUs
    (2, 1, "needs 2 CPUs .* has 2, 1 of them held by this trial's task")],
    ids=["more-than-the-cluster", "the-task-holds-one"])
def test_more_workers_than_the_cluster_can_start_fail_at_once(connected, digits_loaders,
                                                             tmp_path, workers, task_cpus,
                                                             missing):
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    t0 = time.perf_counter()
    with pytest.raises(PassError, match=missing):
        if task_cpus is None:  # this driver holds nothing
            _finetune(model, digits_loaders, tmp_path, workers, "ray", epochs=1)
        else:
            _in_a_task(model, digits_loaders, tmp_path, workers, "ray", epochs=1,
                       num_cpus=task_cpus)
    assert time.perf_counter() - t0 < 30
