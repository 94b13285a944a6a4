"""Plain fine-tuning: recover accuracy after any compression step, within the retraining budget.

The shared loop (`advisor.train.train`: AdamW + OneCycle by default, early stop, best-validation
weights) on the labelled training data. The model's sparsity survives: pruned weights of
unstructured/at-init sparse layers are re-zeroed after every step and CSR layers are densified
for training and restored afterwards (`advisor.sparse.trainable_sparse`). Epochs and seconds are
capped by `ctx.budget` as well as by the config.

The budget helpers the training passes share live in `advisor.passes.torch_common`.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from torch import nn

from advisor.passes.base import PassContext, PassResult, register_pass
from advisor.passes.config import check_config
from advisor.passes.torch_common import (budget_train_config, pinned_replay, require_module,
                                         require_training, val_accuracy)
from advisor.sparse import layer_sparsity, overall_sparsity, trainable_sparse
from advisor.train import train


@dataclass(frozen=True)
class FinetuneConfig:
    """Fine-tune with the shared loop; `keep_sparsity` keeps pruned weights at zero."""

    CONFIG_VERSION: ClassVar[int] = 3  # 2: stop_after_epochs; 3: max_batches_per_epoch

    epochs: int = field(default=5, metadata={"ge": 0})
    lr: float = field(default=1e-3, metadata={"gt": 0.0})
    schedule: Literal["onecycle", "cosine", "constant"] = "onecycle"
    weight_decay: float = field(default=1e-4, metadata={"ge": 0.0})
    max_seconds: float | None = field(default=None, metadata={"ge": 0.0})
    early_stop_patience: int | None = field(default=None, metadata={"ge": 0})
    # set by the search when a time limit stopped the measured run (see pinned_replay)
    stop_after_epochs: int | None = field(default=None, metadata={"ge": 1})
    # a subset of each epoch's batches: set by the search when its time cap sized the run
    max_batches_per_epoch: int | None = field(default=None, metadata={"ge": 1})
    label_smoothing: float = field(default=0.0, metadata={"ge": 0.0, "le": 1.0})
    keep_sparsity: bool = True

    def __post_init__(self):
        check_config(self)


@register_pass("finetune", FinetuneConfig, family="training", trains=True, needs_labels=True,
               summary="Fine-tune on the training data within the retraining budget")
def apply_finetune(model: nn.Module, config: FinetuneConfig, ctx: PassContext) -> PassResult:
    """Fine-tune a copy of `model` on ctx.train_loader (sparsity kept) within ctx.budget."""
    require_training("finetune", ctx)
    require_module("finetune", model)
    model = copy.deepcopy(model)
    before = val_accuracy(model, ctx)
    tc = budget_train_config(ctx, epochs=config.epochs, lr=config.lr, schedule=config.schedule,
                             weight_decay=config.weight_decay, max_seconds=config.max_seconds,
                             early_stop_patience=config.early_stop_patience,
                             label_smoothing=config.label_smoothing,
                             stop_after_epochs=config.stop_after_epochs,
                             max_batches_per_epoch=config.max_batches_per_epoch,
                             size_to_time=True)
    with trainable_sparse(model, keep=config.keep_sparsity) as keeper:
        report = train(model, ctx.train_loader, tc, val_loader=ctx.val_loader,
                       after_step=keeper, device=ctx.device, progress=ctx.progress,
                       description="fine-tuning")
    info: dict[str, Any] = {"epochs_run": report.epochs_run, "epochs_allowed": tc.epochs,
                            "seconds": round(report.seconds, 2), "stopped_by": report.stopped_by,
                            "val_accuracy_before": before, "val_accuracy_after":
                                val_accuracy(model, ctx),
                            "history": report.history}
    if report.sizing is not None:
        info["sizing"] = report.sizing
    if (pinned := pinned_replay(config, tc, report)) is not None:
        info["replay_config"] = pinned
    if keeper:
        per_layer = layer_sparsity(model)
        info["sparsity_kept"] = {"overall": round(overall_sparsity(model, keeper.names), 6),
                                 "layers": {n: per_layer[n] for n in keeper.names}}
    return PassResult(model.eval(), info)
