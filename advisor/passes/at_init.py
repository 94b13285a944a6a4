"""Pruning at initialization: score the re-initialised network, prune, train sparse from scratch.

The lecture's *phase* choice "before training": the option for a full retraining budget. The
architecture of the given model is kept, its weights are thrown away (re-initialised with each
layer's own `reset_parameters`, seeded), a sparse mask is chosen before any training, and the
sparse network is trained from scratch through the shared loop with the mask held fixed.

Scores (unit = single weight, scope = global, as in both papers):
- ``snip`` — *SNIP: Single-shot Network Pruning based on Connection Sensitivity* (Lee et al.,
  2019; arXiv:1810.02340): |∂L/∂w · w| on ``snip_batches`` labelled training batches, one shot.
- ``synflow`` — *Pruning neural networks without any data by iteratively conserving synaptic
  flow* (Tanaka et al., 2020; arXiv:2006.05467): data-free. Weights replaced by their absolute
  values, an all-ones input, R = sum of the outputs, score |∂R/∂w · w|; ``iterations`` rounds with
  an exponential sparsity schedule (which is what avoids layer collapse). Run in float64 and eval
  mode (BatchNorm then is an affine map with the fresh running statistics), as the authors do.

Like unstructured pruning on a trained model, the zeros buy compressed storage, not speed on
dense kernels; the pass says so in ``latency_effect``.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from advisor.errors import PassError
from advisor.passes.base import PassContext, PassResult, register_pass
from advisor.passes.config import check_config
from advisor.passes.torch_common import (NO_SPEEDUP, budget_train_config, example_input,
                                         reinitialise, require_module, require_training,
                                         sparsity_info, target_layers, val_accuracy)
from advisor.sparse import MaskKeeper, apply_masks, magnitude_masks, prunable_layers
from advisor.train import train


@dataclass(frozen=True)
class PruneAtInitConfig:
    """SynFlow or SNIP masks on a re-initialised network, then sparse training from scratch."""

    method: Literal["synflow", "snip"] = "synflow"
    sparsity: float = field(default=0.8, metadata={"knob": "increasing", "ge": 0.0, "lt": 1.0})
    # SynFlow scoring rounds (SNIP is one-shot)
    iterations: int = field(default=100, metadata={"ge": 1})
    # labelled batches whose gradients SNIP averages
    snip_batches: int = field(default=1, metadata={"ge": 1})
    epochs: int = field(default=15, metadata={"ge": 0})  # training from scratch
    lr: float = field(default=3e-3, metadata={"gt": 0.0})
    schedule: Literal["onecycle", "cosine"] = "onecycle"
    weight_decay: float = field(default=1e-4, metadata={"ge": 0.0})
    seed: int = 0
    ignore_layers: tuple[str, ...] = ()
    prune_output_layer: bool = False

    def __post_init__(self):
        check_config(self)


@register_pass("prune_at_init", PruneAtInitConfig, family="pruning", trains=True,
               needs_full_retrain=True, needs_labels=True,
               summary="SynFlow/SNIP masks at initialization, then train the sparse network "
                       "from scratch")
def apply_at_init(model: nn.Module, config: PruneAtInitConfig, ctx: PassContext) -> PassResult:
    """Re-initialise a copy of `model`, prune it by SynFlow/SNIP scores, train it from scratch."""
    require_module("prune_at_init", model)
    require_training("prune_at_init", ctx, full=True)
    if not 0.0 <= config.sparsity < 1.0:
        raise PassError(f"sparsity must be in [0, 1), got {config.sparsity}")
    if config.iterations < 1 or config.snip_batches < 1:
        raise PassError("iterations and snip_batches must be at least 1")
    example = example_input(ctx)
    model = copy.deepcopy(model).eval()
    names = target_layers(model, example, config.ignore_layers, config.prune_output_layer)
    reset = reinitialise(model, config.seed)

    if config.method == "synflow":
        masks = synflow_masks(model, names, tuple(example.shape[1:]), config.sparsity,
                              config.iterations)
    else:
        masks = snip_masks(model, names, ctx.train_loader, config.sparsity, config.snip_batches,
                           ctx.device)
    apply_masks(model, masks)
    keeper = MaskKeeper(model, masks)
    tc = budget_train_config(ctx, epochs=config.epochs, lr=config.lr, schedule=config.schedule,
                             weight_decay=config.weight_decay)
    report = train(model, ctx.train_loader, tc, val_loader=ctx.val_loader, after_step=keeper,
                   device=ctx.device, progress=ctx.progress,
                   description=f"training {config.method}-pruned network from scratch")
    info: dict[str, Any] = sparsity_info(model, names, "global")
    info.update({"method": config.method, "reinitialised_modules": reset,
                 "training": report.as_dict(), "latency_effect": NO_SPEEDUP, "csr_layers": {},
                 "val_accuracy": val_accuracy(model, ctx)})
    if config.method == "synflow":
        info["iterations"] = config.iterations
    return PassResult(model.eval(), info)


def synflow_masks(model: nn.Module, names: list[str], input_shape: tuple[int, ...],
                  sparsity: float, iterations: int) -> dict[str, torch.Tensor]:
    """Iterative SynFlow: keep-masks after `iterations` rounds of the exponential schedule."""
    work = copy.deepcopy(model).double().eval()
    layers = prunable_layers(work)
    with torch.no_grad():
        for p in work.parameters():
            p.abs_()
    ones = torch.ones((1, *input_shape), dtype=torch.float64)
    masks = {n: torch.ones_like(layers[n].weight, dtype=torch.bool) for n in names}
    originals = {n: layers[n].weight.detach().clone() for n in names}
    for k in range(1, iterations + 1):
        with torch.no_grad():
            for n in names:
                layers[n].weight.copy_(originals[n] * masks[n])
        work.zero_grad(set_to_none=True)
        work(ones).sum().backward()
        scores = {n: (layers[n].weight.grad * layers[n].weight).detach().abs() for n in names}
        level = 1.0 - (1.0 - sparsity) ** (k / iterations)
        # already pruned weights score 0 and stay pruned (their weight is 0)
        masks = magnitude_masks({n: layers[n] for n in names}, level, "global", scores=scores)
    return masks


def snip_masks(model: nn.Module, names: list[str], loader, sparsity: float, batches: int,
               device: str = "cpu") -> dict[str, torch.Tensor]:
    """SNIP: connection sensitivity |g · w| averaged over `batches` labelled batches."""
    if loader is None:
        raise PassError("SNIP needs labelled training batches", "pass --train-data")
    work = copy.deepcopy(model).to(device).train()
    layers = prunable_layers(work)
    work.zero_grad(set_to_none=True)
    loss_fn = nn.CrossEntropyLoss()
    seen = 0
    for x, y in loader:
        loss_fn(work(x.to(device)), y.to(device)).backward()
        seen += 1
        if seen >= batches:
            break
    if seen == 0:
        raise PassError("SNIP got no training batches", "check --train-data")
    scores = {n: (layers[n].weight.grad * layers[n].weight).detach().abs().cpu() for n in names}
    return magnitude_masks({n: layers[n] for n in names}, sparsity, "global", scores=scores)

