"""The one training/evaluation loop used by pruning, rewinding, factorization and distillation.

Budget in epochs and/or wall-clock seconds; OneCycle (default) or cosine schedule — without a
schedule the digits CNN swung between 66% and 95% here; seeded; early stop on validation
accuracy; a rich progress bar; CPU first, CUDA when asked for and present.

Custom objectives plug in through `loss_fn(model, inputs, labels) -> loss` (distillation, L1 on
BN scales); `after_step(model)` runs after every optimizer step (re-applying sparsity masks).
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Literal

import torch
from torch import nn

from advisor.data_parallel import DataParallel
from advisor.progress import stage

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 5
    max_seconds: float | None = None
    lr: float = 3e-3
    weight_decay: float = 1e-4
    schedule: Literal["onecycle", "cosine", "constant"] = "onecycle"
    seed: int = 0
    early_stop_patience: int | None = None  # epochs without val improvement
    restore_best: bool = True  # keep the weights of the best validation epoch
    label_smoothing: float = 0.0
    # stop after this many epochs while the schedule still spans `epochs`: how a run that a time
    # limit stopped is replayed exactly (the learning rate follows the same curve)
    stop_after_epochs: int | None = None
    # train on at most this many batches per epoch (the first ones of each epoch's shuffle)
    max_batches_per_epoch: int | None = None
    # with max_seconds: time a few steps first and size epochs and batches per epoch so the
    # whole schedule fits (see `size_to_seconds`); the sizing is reported and replayed pinned
    size_to_time: bool = False


@dataclass
class TrainReport:
    epochs_run: int = 0
    seconds: float = 0.0
    stopped_by: str = "epochs"  # epochs | time | early_stop | pinned (stop_after_epochs)
    history: list[dict] = field(default_factory=list)  # per epoch: loss, val_acc, lr
    best_val_accuracy: float | None = None
    sizing: dict | None = None  # what `size_to_time` measured and chose
    workers: int = 1  # data-parallel training processes (`advisor.data_parallel`)

    @property
    def epochs_planned(self) -> int | None:
        return None if self.sizing is None else self.sizing["epochs"]

    def as_dict(self) -> dict:
        return {"epochs_run": self.epochs_run, "seconds": round(self.seconds, 3),
                "stopped_by": self.stopped_by, "best_val_accuracy": self.best_val_accuracy,
                "history": self.history, **({"sizing": self.sizing} if self.sizing else {}),
                **({"workers": self.workers} if self.workers > 1 else {})}


def resolve_device(device: str | None = None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("CUDA requested but no GPU is available on this host")
    return torch.device(device)


def seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@torch.inference_mode()
def evaluate(model: nn.Module | Callable, loader: Iterable, device: str | torch.device = "cpu",
             parallel: DataParallel | None = None) -> float:
    """Top-1 accuracy in [0, 1] of `model` over `(inputs, labels)` batches; with `parallel`
    each data-parallel worker evaluates its slice of every batch and the counts are summed."""
    was_training = getattr(model, "training", False)
    if isinstance(model, nn.Module):
        model.eval()
    correct = total = 0
    for x, y in loader:
        if parallel is not None:
            part = parallel.shard(x, y)
            x, y = part if part is not None else (x[:0], y[:0])
        if len(y):
            logits = model(x.to(device))
            correct += (logits.argmax(1).cpu() == y).sum().item()
            total += len(y)
    if parallel is not None:
        correct, total = (int(v) for v in parallel.total(correct, total))
    if isinstance(model, nn.Module) and was_training:
        model.train()
    if total == 0:
        raise ValueError("evaluation data is empty")
    return correct / total


def cross_entropy_loss(label_smoothing: float = 0.0) -> LossFn:
    ce = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    return lambda model, x, y: ce(model(x), y)


# a forward pass in evaluation costs about this share of a training step (forward + backward +
# update); used to budget each epoch's validation
EVAL_STEP_SHARE = 0.35
# the share of max_seconds the sizing plans for (the probe, the last evaluation, noise)
SIZING_HEADROOM = 0.85
PROBE_STEPS = 3


def probe_step_seconds(model: nn.Module, loader, loss_fn: LossFn, params: list, dev,
                       parallel: DataParallel | None = None) -> float:
    """Seconds of one training step, timed on the model itself with a zero learning rate (its
    weights do not move) and its buffers (BatchNorm statistics) put back afterwards. As a
    data-parallel worker (`model` is the DDP module) each step is one on this worker's slice,
    and the slowest worker's time is returned by every worker."""
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    probe = torch.optim.AdamW(params, lr=0.0, weight_decay=0.0)
    times = []
    it = iter(loader)
    for _ in range(PROBE_STEPS):
        try:
            x, y = next(it)
        except StopIteration:
            break
        if parallel is not None:
            part = parallel.shard(x, y)
            if part is None:
                continue
            x, y = part
        t0 = time.perf_counter()
        probe.zero_grad(set_to_none=True)
        loss_fn(model, x.to(dev), y.to(dev)).backward()
        probe.step()
        times.append(time.perf_counter() - t0)
    probe.zero_grad(set_to_none=True)
    with torch.no_grad():
        for n, b in model.named_buffers():
            b.copy_(buffers[n])
    # the first step pays for allocations and kernel selection
    step_s = min(times[1:] or times) if times else 0.0
    return parallel.largest(step_s) if parallel is not None else step_s


def size_to_seconds(seconds: float, step_s: float, eval_s: float, epochs: int,
                    batches: int) -> dict:
    """Epochs and batches per epoch so that the whole schedule fits in `seconds`: fewer epochs
    first (each still sees all the data), then a subset of each epoch's batches."""
    room = SIZING_HEADROOM * seconds
    per_epoch = batches * step_s + eval_s
    fit = int(room / per_epoch + 1e-9) if per_epoch > 0 else epochs
    if fit >= epochs:
        e, b, why = epochs, batches, "fits as asked"
    elif fit >= 1:
        e, b, why = fit, batches, f"{fit} of {epochs} epochs fit"
    else:
        e = 1
        b = max(1, min(batches, int((room - eval_s) / step_s + 1e-9) if step_s > 0 else batches))
        why = f"one epoch of {b} of {batches} batches fits"
    return {"step_seconds": round(step_s, 4), "eval_seconds": round(eval_s, 3),
            "seconds": seconds, "asked_epochs": epochs, "batches": batches,
            "epochs": e, "batches_per_epoch": b,
            "text": f"{why} in {seconds:.0f} s at {step_s * 1000:.0f} ms per step"}


def train(model: nn.Module, train_loader, config: TrainConfig = TrainConfig(), *,
          val_loader=None, loss_fn: LossFn | None = None,
          after_step: Callable[[nn.Module], None] | None = None,
          extra_params: Iterable[nn.Parameter] = (), device: str | None = "cpu",
          progress: bool = True, description: str = "training") -> TrainReport:
    """Train `model` in place within the budget of `config`; returns what happened.

    `extra_params` are optimised too (e.g. distillation adapters). The model ends in eval mode,
    holding the best validation weights when `restore_best` and validation data are given.
    Run by each of N data-parallel workers (`advisor.train_workers`), the same schedule trains
    on each worker's slice of every batch (`advisor.data_parallel`).
    """
    dev = resolve_device(device)
    dp = DataParallel(dev)
    seed_everything(config.seed)
    # a loader with its own shuffling generator would otherwise continue where the last run
    # left it: the same plan replayed in one process must see the same batches
    generator = getattr(train_loader, "generator", None)
    if isinstance(generator, torch.Generator):
        generator.manual_seed(config.seed)
    model.to(dev).train()
    net = dp.wrap(model)  # what the loss runs: DDP around the model, or the model
    loss_fn = loss_fn or cross_entropy_loss(config.label_smoothing)
    extra_params = list(extra_params)
    params = [p for p in model.parameters() if p.requires_grad] + extra_params
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = max(1, len(train_loader))
    if config.max_batches_per_epoch is not None:
        steps_per_epoch = min(steps_per_epoch, config.max_batches_per_epoch)
    epochs = max(1, config.epochs)
    sizing = None
    if config.size_to_time and config.max_seconds is not None:
        step_s = probe_step_seconds(net, train_loader, loss_fn, params, dev, dp)
        eval_s = 0.0 if val_loader is None else len(val_loader) * step_s * EVAL_STEP_SHARE
        sizing = size_to_seconds(config.max_seconds, step_s, eval_s, epochs, steps_per_epoch)
        epochs, steps_per_epoch = sizing["epochs"], sizing["batches_per_epoch"]
        seed_everything(config.seed)  # the probe drew batches: start as a replay starts
        if isinstance(generator, torch.Generator):
            generator.manual_seed(config.seed)
    total_steps = steps_per_epoch * epochs
    if config.schedule == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=total_steps)
    elif config.schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps)
    else:
        sched = None

    report = TrainReport(sizing=sizing, workers=dp.world)
    best_state, best_acc, bad_epochs = None, -math.inf, 0
    start = time.perf_counter()
    with _progress(progress, description, epochs) as advance:
        for epoch in range(epochs):
            stage(f"{description} epoch {epoch + 1}/{epochs}")
            model.train()
            running, n = 0.0, 0
            for step, (x, y) in enumerate(train_loader):
                if step >= steps_per_epoch:
                    break
                part = dp.shard(x, y)
                if part is None:  # fewer rows than workers: skipped by every worker
                    continue
                x, y = part[0].to(dev), part[1].to(dev)
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(net, x, y)
                loss.backward()
                dp.sync_grads(extra_params)
                opt.step()
                if sched is not None:
                    sched.step()
                if after_step is not None:
                    after_step(model)
                running += loss.item() * len(y)
                n += len(y)
            running, n = dp.total(running, n)
            dp.sync_buffers(model)
            entry = {"epoch": epoch + 1, "loss": running / max(1, n),
                     "lr": opt.param_groups[0]["lr"]}
            if val_loader is not None:
                acc = evaluate(model, val_loader, dev, dp if dp.active else None)
                entry["val_accuracy"] = acc
                if acc > best_acc:
                    best_acc, bad_epochs = acc, 0
                    if config.restore_best:
                        best_state = copy.deepcopy(model.state_dict())
                else:
                    bad_epochs += 1
            report.history.append(entry)
            report.epochs_run = epoch + 1
            advance(entry)
            if config.early_stop_patience is not None and bad_epochs >= config.early_stop_patience:
                report.stopped_by = "early_stop"
                break
            if config.stop_after_epochs is not None and epoch + 1 >= config.stop_after_epochs:
                report.stopped_by = "pinned" if epoch + 1 < epochs else "epochs"
                break
            if config.max_seconds is not None and \
                    dp.agree(time.perf_counter() - start > config.max_seconds):
                report.stopped_by = "time"
                break
    del net  # DDP's gradient hooks go with it
    if best_state is not None:
        model.load_state_dict(best_state)
    report.best_val_accuracy = None if best_acc == -math.inf else best_acc
    report.seconds = time.perf_counter() - start
    model.eval()
    return report


class _progress:
    """A rich progress bar over epochs, or nothing when disabled / not a terminal."""

    def __init__(self, enabled: bool, description: str, total: int):
        self.enabled, self.description, self.total = enabled, description, total
        self._bar = None

    def __enter__(self):
        if self.enabled:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn)
            self._bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(),
                                 TextColumn("{task.fields[status]}"), transient=True)
            self._bar.__enter__()
            self._task = self._bar.add_task(self.description, total=self.total, status="")

        def advance(entry: dict) -> None:
            if self._bar is not None:
                status = f"loss {entry['loss']:.3f}"
                if "val_accuracy" in entry:
                    status += f"  val {entry['val_accuracy']:.1%}"
                self._bar.update(self._task, advance=1, status=status)
        return advance

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.__exit__(*exc)
        return False
