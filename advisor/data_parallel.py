"""What the shared training loop (`advisor.train.train`) does differently when it runs as one of
N data-parallel workers (`--train-workers N`, launched by `advisor.train_workers`).

The recipe does not change with the worker count: every worker iterates the same seeded
batches and takes its own slice of each one (rows r, r+N, ...), the model is wrapped in torch's
DistributedDataParallel, so each optimizer step averages the slices' gradients — the gradient of
the whole batch — and the number of steps, the batch size and the learning-rate schedule are
those of one process. Hence the same seed and worker count give the same weights (gloo's
all-reduce sums in a fixed order), and N workers reach about the accuracy of one (BatchNorm
statistics are per slice: the one difference). Why not `DistributedSampler`: it multiplies the
global batch by N and divides the steps by N, which changes what a given budget trains; users
compare "1 worker vs N" and expect the same model, faster.

Every decision that ends or shapes the loop (the time limit, the probed step time, early stop on
validation accuracy) is taken identically on every worker: a worker that left the loop alone
would leave the others waiting in a collective. Validation counts are summed over the workers.
With one worker (or no process group) every method is the identity, so `train` pays nothing.
"""
from __future__ import annotations

import pickle
from typing import Iterable

import torch
from torch import nn

# a collective that waits longer than this has lost a peer (each step's work is the same on
# every worker, so they meet within seconds)
COLLECTIVE_TIMEOUT_S = 300.0


class DataParallel:
    """This process's place among the data-parallel training workers."""

    def __init__(self, device: torch.device):
        import torch.distributed as dist

        self.active = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        self.rank = dist.get_rank() if self.active else 0
        self.world = dist.get_world_size() if self.active else 1
        self.device = device

    # ---- the model -----------------------------------------------------------------------

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module the loss is computed with: DDP around `model` (its gradients averaged
        over the workers in backward), or `model` itself."""
        if not self.active:
            return model
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DDP(model, device_ids=ids)  # buffers (BatchNorm) follow rank 0 each forward

    def sync_grads(self, params: Iterable[nn.Parameter]) -> None:
        """Average the gradients of parameters outside the DDP module (distillation adapters)."""
        if not self.active:
            return
        import torch.distributed as dist

        for p in params:
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad.div_(self.world)

    def sync_buffers(self, model: nn.Module) -> None:
        """Rank 0's buffers (BatchNorm running statistics) on every worker: each worker updated
        its own from its slice, and rank 0's model is the one kept."""
        if not self.active:
            return
        import torch.distributed as dist

        for b in model.buffers():
            dist.broadcast(b, 0)

    # ---- the data ------------------------------------------------------------------------

    def shard(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """This worker's rows of a batch; None (on every worker alike) when the batch has fewer
        rows than workers."""
        if not self.active:
            return x, y
        if len(x) < self.world:
            return None
        return x[self.rank::self.world], y[self.rank::self.world]

    # ---- decisions taken alike on every worker -----------------------------------------

    def total(self, *values: float) -> list[float]:
        """`values` summed over the workers."""
        if not self.active:
            return list(values)
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=self._comm_device)
        dist.all_reduce(t)
        return t.cpu().tolist()

    def largest(self, value: float) -> float:
        """The largest of the workers' `value` (a step time: the slowest worker sets the pace)."""
        if not self.active:
            return value
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.float64, device=self._comm_device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return float(t.item())

    def agree(self, flag: bool) -> bool:
        """Rank 0's `flag` on every worker (the time limit is read on one clock)."""
        if not self.active:
            return flag
        import torch.distributed as dist

        t = torch.tensor([1.0 if flag else 0.0], device=self._comm_device)
        dist.broadcast(t, 0)
        return bool(t.item())

    @property
    def _comm_device(self) -> torch.device:
        # NCCL moves CUDA tensors only; gloo CPU tensors (it also takes CUDA ones, slower)
        import torch.distributed as dist

        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")


# ---- after the pass -----------------------------------------------------------------------

def workers_agree(model, device) -> bool:
    """Whether every worker ended the pass with the same weights, bit for bit (a collective:
    every worker calls it; `device` is this worker's). They should: each optimizer step applies
    the same averaged gradient everywhere and the buffers come from rank 0. A worker out of step
    means something in the pass depended on the worker (its data slice, its clock); rank 0's
    model, the one kept and then measured, is still valid, so this is recorded
    (`weights_agree` in the step's `train_workers`), not raised."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return True
    from advisor.model_common import weights_digest

    digest = bytes.fromhex(weights_digest(model))
    # the digest as 4 int64s, reduced by max and by min: equal everywhere iff max == min (a
    # tensor collective, which NCCL takes on this worker's own GPU)
    comm = torch.device(device) if dist.get_backend() == "nccl" else torch.device("cpu")
    words = torch.tensor([int.from_bytes(digest[i:i + 8], "little", signed=True)
                          for i in range(0, 32, 8)], dtype=torch.int64, device=comm)
    high, low = words.clone(), words.clone()
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    return bool(torch.equal(high, low))


# ---- the job every worker other than this process runs ------------------------------------

def pack_job(spec, model, config, ctx, seed: int) -> bytes:
    """What a worker other than this process needs to run the pass, as bytes (for either
    engine: a spawned process, or a Ray Train worker)."""
    return pickle.dumps((spec.name, model, config, ctx, seed))


def unpack_job(job: bytes):
    """`(spec, model, config, ctx, seed)` from `pack_job`'s bytes, in a worker process (the
    pass found by name, after the built-in passes registered)."""
    from advisor.passes.base import get_pass, load_builtin_passes

    pass_name, model, config, ctx, seed = pickle.loads(job)
    load_builtin_passes()
    return get_pass(pass_name), model, config, ctx, seed
