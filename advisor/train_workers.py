"""Run a training pass (fine-tuning, distillation, ...) as N data-parallel workers
(`--train-workers N`): on this machine as N processes (gloo on CPU, NCCL on GPUs), or on a Ray
cluster through Ray Train's TorchTrainer (`advisor.executor_ray`).

Every worker runs the whole pass — `spec.apply(model, config, ctx)` — with the same seed, the
way `torchrun` runs one script N times: the pass's own setup (a teacher's copy, feature taps,
adapters, sparsity masks) is the same everywhere and needs no pickling of closures, and the
shared training loop (`advisor.train.train`) finds the process group and trains data-parallel
(`advisor.data_parallel`). Rank 0's result is the step's result; the others are dropped.

Locally rank 0 is this process (the trial worker: its model, progress lines and result stay
here) and ranks 1..N-1 are spawned (spawn, not fork: safe after CUDA or OpenMP started), each
dying with its parent. A worker that dies fails the step with its exit code, never a hang: the
survivors' collectives fail when a peer's socket closes, and a time-out bounds the rest.
Why this and not `torch.multiprocessing.spawn`: rank 0 must stay in this process, and the
others must die with it (`advisor.procs.die_with_parent`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import multiprocessing as mp
import os
import uuid
from pathlib import Path
from typing import Any

import torch

from advisor.data_parallel import COLLECTIVE_TIMEOUT_S, pack_job, unpack_job, workers_agree
from advisor.errors import PassError



def check_workers(workers: Any) -> int:
    """`--train-workers` as an int from 1 to 64, or an AdvisorError saying why not."""
    from advisor.errors import AdvisorError

    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 64:
        raise AdvisorError(f"--train-workers must be a whole number from 1 to 64, got "
                           f"{workers!r}", "use 1 (one process) or the number of workers")
    return workers


def backend_for(device: str, workers: int) -> tuple[str, list[str]]:
    """The process group's backend and each rank's device: gloo on CPU; NCCL with one GPU per
    worker (two NCCL ranks cannot share a GPU)."""
    if not str(device).startswith("cuda"):
        return "gloo", ["cpu"] * workers
    count = torch.cuda.device_count()
    if count < workers:
        raise PassError(f"--train-workers {workers} on CUDA needs {workers} GPUs, this host "
                        f"has {count}", f"use --train-workers {max(1, count)}")
    return "nccl", [f"cuda:{r}" for r in range(workers)]


def apply_data_parallel(spec, model, config, ctx, seed: int):
    """`spec.apply(model, config, ctx)` run by `ctx.train_workers` local workers (Ray Train
    workers when `ctx.train_engine` is "ray"); rank 0's PassResult, its info saying how many
    workers trained."""
    if ctx.train_engine == "ray":
        from advisor.train_workers_ray import apply_on_ray_train

        return apply_on_ray_train(spec, model, config, ctx, seed)
    from advisor.procs import child_env, own_multiprocessing_tempdir

    workers = int(ctx.train_workers)
    backend, devices = backend_for(ctx.device, workers)
    workdir = Path(ctx.workdir or ".")
    workdir.mkdir(parents=True, exist_ok=True)
    rendezvous = workdir / f"ddp-{uuid.uuid4().hex[:12]}"
    threads = max(1, torch.get_num_threads() // workers)
    own_multiprocessing_tempdir()
    spawn = mp.get_context("spawn")
    procs = []
    quiet = dataclasses.replace(ctx, progress=False)
    env_before = {k: os.environ.get(k) for k in child_env()}
    try:
        os.environ.update(child_env())  # read by the children's die_with_parent
        for rank in range(1, workers):
            # pickled here as plain bytes: multiprocessing's own pickler would put the tensors
            # into shared memory, which a small /dev/shm (containers) cannot hold
            job = pack_job(spec, model, config, dataclasses.replace(quiet, device=devices[rank]),
                           seed)
            p = spawn.Process(target=_worker_main, name=f"advisor-train-worker-{rank}",
                              args=(rank, workers, backend, str(rendezvous), threads, job))
            p.start()
            procs.append(p)
    finally:
        for k, v in env_before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    rank0_ctx = dataclasses.replace(ctx, device=devices[0])
    try:
        with _process_group(0, workers, backend, str(rendezvous)), _threads(threads):
            try:
                from advisor.train import seed_everything

                seed_everything(seed)
                result = spec.apply(model, config, rank0_ctx)
                agree = workers_agree(result.model, devices[0])
            except Exception as e:
                died = _dead_workers(procs)
                if died:
                    raise PassError(f"{spec.name}: data-parallel training failed: {died}") from e
                raise
        for p in procs:
            p.join(COLLECTIVE_TIMEOUT_S)
        died = _dead_workers(procs)
        if died:
            raise PassError(f"{spec.name}: data-parallel training failed: {died}")
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(5.0)
        with contextlib.suppress(OSError):
            rendezvous.unlink()
    result.info = {**result.info, "train_workers": {"workers": workers, "backend": backend,
                                                    "devices": devices,
                                                    "weights_agree": agree}}
    return result


def _dead_workers(procs) -> str | None:
    """Which spawned workers ended badly, in words (None: all alive or ended cleanly)."""
    bad = [f"worker {i + 1} exited with {p.exitcode}" for i, p in enumerate(procs)
           if p.exitcode not in (None, 0)]
    return "; ".join(bad) or None


def _worker_main(rank: int, world: int, backend: str, rendezvous: str, threads: int,
                 job: bytes) -> None:
    """A spawned worker: the same pass as rank 0, in the same process group; its result is
    dropped (rank 0's is kept). `job` was pickled by its parent, this same advisor."""
    from advisor.procs import die_with_parent

    die_with_parent()
    spec, model, config, ctx, seed = unpack_job(job)
    from advisor.train import seed_everything

    with _process_group(rank, world, backend, rendezvous), _threads(threads):
        seed_everything(seed)
        workers_agree(spec.apply(model, config, ctx).model, ctx.device)


@contextlib.contextmanager
def _process_group(rank: int, world: int, backend: str, rendezvous: str):
    """torch.distributed's default group for the block, met through a file (no port to pick)."""
    import torch.distributed as dist

    if dist.is_initialized():
        raise PassError("data-parallel training was asked for inside another process group")
    if backend == "gloo":  # the workers are on this machine: loopback, whatever the hostname
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group(backend, init_method=f"file://{rendezvous}", rank=rank,
                            world_size=world,
                            timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S))
    try:
        yield
    except BaseException:
        _retire(dist.group.WORLD)
        raise
    finally:
        dist.destroy_process_group()


# Process groups of failed runs, kept until exit. After a peer died, gloo may still hold queued
# collectives, and ~ProcessGroupGloo waits for its queue to drain. The failed run's traceback
# holds DDP's Reducer, which holds the group: freed with the traceback, the Reducer would run
# that destructor with the GIL held, while the queue's last work needs the GIL to finish — a
# deadlock (seen in CI: torch 2.13, pytorch/pytorch#56297). Held here, the group is freed last
# through its Python object, whose destructor releases the GIL, at exit while the interpreter is
# still whole.
_RETIRED: list = []


def _retire(group) -> None:
    import atexit

    if group is None:
        return
    if not _RETIRED:
        atexit.register(_RETIRED.clear)
    _RETIRED.append(group)


@contextlib.contextmanager
def _threads(n: int):
    """torch's intra-op threads for the block: the cores shared out among the workers."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
