"""Plain fine-tuning: recover accuracy after any compression step, within the retraining budget.

The shared loop (`advisor.train.train`: AdamW + OneCycle by default, early stop, best-validation
weights) on the labelled training data. The model's sparsity survives: pruned weights of
unstructured/at-init sparse layers are re-zeroed after every step and CSR layers are densified
for training and restored afterwards (`advisor.sparse.trainable_sparse`). Epochs and seconds are
capped by `ctx.budget` as well as by the config.

Also the home of the small budget helpers the other pruning passes share.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal

from torch import nn

from advisor.errors import PassError
from advisor.passes.base import PassContext, PassResult, register_pass
from advisor.sparse import layer_sparsity, overall_sparsity, trainable_sparse
from advisor.train import TrainConfig, evaluate, train


@dataclass(frozen=True)
class FinetuneConfig:
    """Fine-tune with the shared loop; `keep_sparsity` keeps pruned weights at zero."""

    epochs: int = 5
    lr: float = 1e-3
    schedule: Literal["onecycle", "cosine", "constant"] = "onecycle"
    weight_decay: float = 1e-4
    max_seconds: float | None = None
    early_stop_patience: int | None = None
    label_smoothing: float = 0.0
    keep_sparsity: bool = True


@register_pass("finetune", FinetuneConfig, family="training", trains=True, needs_labels=True,
               summary="Fine-tune on the training data within the retraining budget")
def apply_finetune(model: nn.Module, config: FinetuneConfig, ctx: PassContext) -> PassResult:
    """Fine-tune a copy of `model` on ctx.train_loader (sparsity kept) within ctx.budget."""
    require_training("finetune", ctx)
    require_module("finetune", model)
    model = copy.deepcopy(model)
    before = _val_accuracy(model, ctx)
    tc = budget_train_config(ctx, epochs=config.epochs, lr=config.lr, schedule=config.schedule,
                             weight_decay=config.weight_decay, max_seconds=config.max_seconds,
                             early_stop_patience=config.early_stop_patience,
                             label_smoothing=config.label_smoothing)
    with trainable_sparse(model, keep=config.keep_sparsity) as keeper:
        report = train(model, ctx.train_loader, tc, val_loader=ctx.val_loader,
                       after_step=keeper, device=ctx.device, progress=ctx.progress,
                       description="fine-tuning")
    info: dict[str, Any] = {"epochs_run": report.epochs_run, "epochs_allowed": tc.epochs,
                            "seconds": round(report.seconds, 2), "stopped_by": report.stopped_by,
                            "val_accuracy_before": before, "val_accuracy_after":
                                _val_accuracy(model, ctx),
                            "history": report.history}
    if keeper:
        per_layer = layer_sparsity(model)
        info["sparsity_kept"] = {"overall": round(overall_sparsity(model, keeper.names), 6),
                                 "layers": {n: per_layer[n] for n in keeper.names}}
    return PassResult(model.eval(), info)


# ---- helpers shared by the pruning passes ---------------------------------------------------

def require_training(name: str, ctx: PassContext, *, full: bool = False) -> None:
    """Refuse to train without a retraining budget or labelled training data."""
    if ctx.budget is None or not ctx.budget.allows_training:
        raise PassError(f"{name} trains and needs a retraining budget",
                        "allow retraining (--retrain finetune or full)")
    if full and ctx.budget.kind != "full":
        raise PassError(f"{name} trains a network from scratch and needs a full retraining "
                        "budget", "use --retrain full")
    if ctx.train_loader is None:
        raise PassError(f"{name} needs labelled training data", "pass --train-data")


def require_module(name: str, model: Any) -> None:
    if not isinstance(model, nn.Module):
        raise PassError(f"{name} needs a PyTorch model, got {type(model).__name__}",
                        "run torch passes before any ONNX-stage pass")


def budget_train_config(ctx: PassContext, *, epochs: int, lr: float,
                        max_seconds: float | None = None, **kwargs) -> TrainConfig:
    """A TrainConfig whose epochs and seconds respect both the pass config and ctx.budget."""
    budget = ctx.budget
    if budget is not None and budget.epochs is not None:
        epochs = min(epochs, budget.epochs)
    caps = [s for s in (max_seconds, budget.seconds if budget else None) if s is not None]
    return TrainConfig(epochs=max(1, epochs), max_seconds=min(caps) if caps else None, lr=lr,
                       seed=ctx.seed, **kwargs)


def _val_accuracy(model: nn.Module, ctx: PassContext) -> float | None:
    if ctx.val_loader is None:
        return None
    return evaluate(model, ctx.val_loader, ctx.device)
