"""Data-parallel training (`--train-workers N`) on the Ray cluster a trial runs on
(`--executor ray`), through Ray Train's TorchTrainer.

Why Ray Train and not N local processes: the trial's prepare task runs on whichever node Ray
chose, which may lack N free cores (or N GPUs); Ray Train places N workers where the cluster
has them (one CPU, or one GPU, each), starts torch's process group among them (gloo on CPU,
NCCL on GPUs) and tears the group down when a worker dies. The workers do what the local
engine's do (`advisor.train_workers`): each runs the whole pass with the same seed and the
shared training loop splits every batch (`advisor.data_parallel`), so the same seed and worker
count give the same weights on either engine.

The job (pass, model, config, context, seed) is pickled here and put in the object store once;
rank 0 writes its PassResult to a file in the trial's work directory, which every node sees at
the same path (`advisor.executor_ray`), and this process reads it back. A failed run fails the
step with a one-line PassError, never a hang: a worker that raised or died is not retried (a
retry would start the pass over; the search isolates a failed trial anyway); a cluster with
fewer CPUs or GPUs than workers is refused before anything is scheduled (its workers would wait
forever); a worker group that cannot start because other trials hold the CPUs for now is tried
again a few times, each try bounded by Ray Train's start time-out, then given up.
"""
from __future__ import annotations

import dataclasses
import pickle
import re
import shutil
import signal
import threading
import uuid
from pathlib import Path

from advisor.errors import PassError
from advisor.data_parallel import COLLECTIVE_TIMEOUT_S, pack_job, unpack_job, workers_agree

ENGINE = "ray-train"
# tries after the first to start the worker group (each waits Ray Train's start time-out, 60 s
# by default, RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S): other trials' tasks may hold the CPUs
START_RETRIES = 4


def apply_on_ray_train(spec, model, config, ctx, seed: int):
    """`spec.apply(model, config, ctx)` run by `ctx.train_workers` Ray Train workers; rank 0's
    PassResult, its info saying how many workers trained, and where."""
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig, TrainingFailedError
    from ray.train.torch import TorchConfig, TorchTrainer

    workers = int(ctx.train_workers)
    gpu = str(ctx.device).startswith("cuda")
    if not ray.is_initialized():  # under --executor ray this is a task, already connected
        ray.init(logging_level="ERROR", log_to_driver=False)
    check_cluster(spec.name, workers, gpu, ray.cluster_resources(), _held_resources(ray))
    workdir = Path(ctx.workdir or ".").resolve()  # Ray Train changes the workers' directory
    run = f"{spec.name}-{uuid.uuid4().hex[:12]}"
    storage = workdir / "ray-train"
    out = workdir / f"ray-train-{run}.pkl"
    quiet = dataclasses.replace(ctx, progress=False, workdir=workdir)
    job = ray.put(pack_job(spec, model, config, quiet, seed))  # one copy for all the workers
    trainer = TorchTrainer(
        _train_loop,
        train_loop_config={"job": job, "result": str(out), "gpu": gpu},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpu,
                                     resources_per_worker=None if gpu else {"CPU": 1}),
        torch_config=TorchConfig(backend="nccl" if gpu else "gloo",
                                 timeout_s=int(COLLECTIVE_TIMEOUT_S)),
        run_config=RunConfig(name=run, storage_path=str(storage),
                             failure_config=FailureConfig(
                                 max_failures=0, max_preemption_failures=0,
                                 controller_failure_limit=START_RETRIES)))
    sigint = signal.getsignal(signal.SIGINT)
    try:
        trainer.fit()
        result = pickle.loads(out.read_bytes())
    except TrainingFailedError as e:
        raise PassError(f"{spec.name}: data-parallel training on Ray Train failed: "
                        f"{failure_reason(e)}") from e
    except ray.exceptions.RayError as e:
        raise PassError(f"{spec.name}: data-parallel training on Ray Train failed: "
                        f"{_one_line(e)}") from e
    finally:
        if sigint is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, sigint)  # fit() leaves its own handler installed
        out.unlink(missing_ok=True)
        shutil.rmtree(storage / run, ignore_errors=True)
        if storage.is_dir() and not any(storage.iterdir()):
            storage.rmdir()
    if gpu and hasattr(result.model, "to"):
        result.model = result.model.to(ctx.device)
    return result


def check_cluster(pass_name: str, workers: int, gpu: bool, total: dict, held: dict) -> None:
    """A PassError when the cluster cannot start `workers` workers even when idle (one GPU or
    one CPU each, besides what this task holds): Ray Train would wait for them forever."""
    kind = "GPU" if gpu else "CPU"
    free = float(total.get(kind, 0)) - float(held.get(kind, 0))
    if free < workers:
        held_note = f", {held[kind]:g} of them held by this trial's task" if held.get(kind) \
            else ""
        raise PassError(f"{pass_name}: --train-workers {workers} on Ray Train needs {workers} "
                        f"{kind}s (one per worker), the Ray cluster has "
                        f"{float(total.get(kind, 0)):g}{held_note}",
                        f"use --train-workers {max(1, int(free))} or add {kind}s to the cluster")


def _held_resources(ray) -> dict:
    """What this process holds of the cluster: a task's resources (the trial's prepare task);
    nothing for a driver (a notebook, a test)."""
    try:
        return ray.get_runtime_context().get_assigned_resources()
    except AssertionError:  # Ray's way of saying "not a worker"
        return {}


def failure_reason(error) -> str:
    """One line for Ray Train's TrainingFailedError: the worker that died, else the first that
    raised (when one dies, the others' collectives fail after it: that is not the reason)."""
    failures = getattr(error, "worker_failures", None)
    if not failures:
        return _one_line(getattr(error, "controller_failure", None) or error)
    died = {r: d for r, e in failures.items() if (d := _death(e)) is not None}
    if died:
        rank, death = min(died.items())
        exit_type = re.search(r"Worker exit type: (\w+)", str(death))
        return f"worker {rank} died: {_one_line(death)}" + \
            (f" (exit type {exit_type.group(1)})" if exit_type else "")
    rank, exc = min(failures.items())
    return f"worker {rank} raised {_one_line(exc)}"


def _death(error):
    """The actor's death behind a worker's failure (Ray Train reports it as a failed health
    check), or None when the worker raised."""
    import ray

    error = getattr(error, "health_check_failure", error)
    return error if isinstance(error, ray.exceptions.RayActorError) else None


def _one_line(error: BaseException) -> str:
    first = next((ln.strip() for ln in str(error).splitlines() if ln.strip()), "")
    return f"{type(error).__name__}: {first[:300]}" if first else type(error).__name__


def _train_loop(loop_config: dict) -> None:
    """One Ray Train worker: the pass, as every other worker runs it, in the process group Ray
    Train started; rank 0 writes its result for the caller."""
    import ray
    import ray.train
    import torch
    from torch import distributed as dist

    from advisor.train import seed_everything

    spec, model, config, ctx, seed = unpack_job(ray.get(loop_config["job"]))
    if loop_config["gpu"]:
        import ray.train.torch

        device, name = str(ray.train.torch.get_device()), f"cuda:{ray.get_gpu_ids()[0]}"
    else:
        device = name = "cpu"
    where = [None] * dist.get_world_size()
    dist.all_gather_object(where, (name, ray.util.get_node_ip_address()))
    torch.set_num_threads(1)  # the one CPU Ray reserved for this worker (none beside a GPU)
    seed_everything(seed)
    result = spec.apply(model, config, dataclasses.replace(ctx, device=device))
    agree = workers_agree(result.model, device)
    if ray.train.get_context().get_world_rank() != 0:
        return
    if hasattr(result.model, "to"):
        result.model = result.model.to("cpu")
    result.info = {**result.info, "train_workers": {
        "workers": len(where), "backend": dist.get_backend(), "devices": [d for d, _ in where],
        "nodes": [n for _, n in where], "engine": ENGINE, "weights_agree": agree}}
    from advisor.fileio import atomic_path

    with atomic_path(loop_config["result"]) as tmp:
        tmp.write_bytes(pickle.dumps(result))
