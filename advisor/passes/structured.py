"""Structured pruning: whole channels/filters physically removed, so dense kernels really speed up.

The lecture's four choices are the config: *unit* = channel (filter) group; *criterion* = L1/L2
magnitude, BN scaling factor, feature-map rank (HRank) or Taylor (`advisor.passes.importance`);
*scope* = global (one ranking over the network) or local (the same ratio in every layer);
*phase* = on a trained model (pruning at initialization is `advisor.passes.at_init`).

The coupling of layers (residual adds, concatenations, depthwise/grouped convs, BatchNorm, the
next layer's inputs) comes from torch-pruning's dependency graph — *DepGraph: Towards Any
Structural Pruning* (Fang et al., 2023; arXiv:2301.12900) — never from a hand-written graph.
Where no graph of the whole model can be built (a channel shuffle, as in ShuffleNet), the
channels inside each block are pruned and every block's interface kept (`passes.blockwise`).

Criteria and the papers behind them:
- ``l1``/``l2``: *Pruning Filters for Efficient ConvNets* (Li et al., 2017; arXiv:1608.08710).
- ``bn_scale``: *Learning Efficient Convolutional Networks through Network Slimming* (Liu et al.,
  2017; arXiv:1708.06519). With a retraining budget, a short sparsity-training run with an L1
  penalty on every BatchNorm γ (``slimming_epochs``, ``slimming_penalty``) precedes pruning.
- ``hrank``: *HRank: Filter Pruning using High-Rank Feature Maps* (Lin et al., 2020;
  arXiv:2002.10179), on ``calibration_samples`` calibration inputs.
- ``taylor``: *Importance Estimation for Neural Network Pruning* (Molchanov et al., 2019;
  arXiv:1906.10771), on ``calibration_samples`` labelled inputs.

Targets (first given wins): ``target_latency_ms`` — prune a step (``latency_step`` more of the
channels), export, measure on the target in a fresh process, repeat until the p50 is reached;
``flops_reduction`` — the smallest channel ratio that removes that share of FLOPs (bisection);
else ``ratio`` — the share of channels removed.

Never pruned: the output layer (its out_features = the classes) and ``ignore_layers`` (module
names or ``re:`` patterns; a container protects everything inside). A listed layer keeps its
input channels too, so the layers feeding it keep their outputs. Global pruning never takes more
than ``max_layer_ratio`` of one layer's channels (no layer collapse).

Records (info): kept/removed channels per module with the removed *original* indices,
params/FLOPs before and after, torch-pruning's pruning history (`depgraph.replay` redoes it on
the original weights), the search trace. A pruned model no longer fits its class's state_dict:
save it as `.pt2` or ONNX (`advisor.export`), never by pickling the module.
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
from advisor.passes.depgraph import prune_channels, protected_layers, refuse_unsupported
from advisor.passes.importance import Criterion
from advisor.passes.prune_targets import search_flops, search_latency
from advisor.passes.torch_common import (budget_train_config, count_flops, example_input,
                                         require_module, take_batches)
from advisor.train import evaluate, train


@dataclass(frozen=True)
class StructuredPruneConfig:
    """Channel pruning with torch-pruning's DepGraph. Target: latency > FLOPs > channel ratio."""

    criterion: Criterion = "l1"
    scope: Literal["global", "local"] = "global"
    # share of channels removed (the knob: larger prunes harder)
    ratio: float = field(default=0.5, metadata={"knob": "increasing", "ge": 0.0, "lt": 1.0})
    # share of FLOPs removed (overrides ratio)
    flops_reduction: float | None = field(default=None, metadata={"gt": 0.0, "lt": 1.0})
    # p50 on the target (overrides both)
    target_latency_ms: float | None = field(default=None, metadata={"gt": 0.0})
    ignore_layers: tuple[str, ...] = ()  # module names or "re:<pattern>"
    round_to: int | None = field(default=None, metadata={"ge": 1})  # channel counts' multiple
    # reach the ratio in this many steps (scores recomputed each step)
    iterative_steps: int = field(default=1, metadata={"ge": 1})
    # no layer loses more than this share of its channels
    max_layer_ratio: float = field(default=0.9, metadata={"gt": 0.0, "lt": 1.0})
    # L1-on-γ sparsity training before bn_scale pruning (budget allowing)
    slimming_epochs: int = field(default=3, metadata={"ge": 0})
    slimming_penalty: float = field(default=1e-3, metadata={"ge": 0.0})  # λ of the L1 on γ
    slimming_lr: float = field(default=1e-3, metadata={"gt": 0.0})
    # inputs for HRank ranks / Taylor gradients
    calibration_samples: int = field(default=128, metadata={"ge": 1})
    # ratio added per step of the latency search
    latency_step: float = field(default=0.1, metadata={"gt": 0.0})
    # the latency/FLOPs search never removes more channels
    max_search_ratio: float = field(default=0.9, metadata={"gt": 0.0, "lt": 1.0})
    latency_runtime: Literal["torch", "onnxruntime"] | None = None  # None: the target's first

    def __post_init__(self):
        check_config(self)


@register_pass("prune_structured", StructuredPruneConfig, family="pruning",
               summary="Remove whole channels (DepGraph-consistent) by L1/L2/BN-γ/HRank/Taylor")
def apply_structured(model: nn.Module, config: StructuredPruneConfig,
                     ctx: PassContext) -> PassResult:
    """Prune channels of a copy of `model` to the configured ratio, FLOPs or latency target."""
    require_module("prune_structured", model)
    _validate(config)
    refuse_unsupported(model)  # before any work: the attention blocks DepGraph cannot follow
    base = copy.deepcopy(model).eval()
    example = example_input(ctx, max_rows=1)
    shape = tuple(ctx.input_shape)
    flops_before, params_before = count_flops(base, shape)

    info: dict[str, Any] = {"criterion": config.criterion, "scope": config.scope,
                            "input_shape": list(shape)}
    if config.criterion == "bn_scale":
        if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in base.modules()):
            raise PassError("criterion bn_scale needs BatchNorm layers; this model has none",
                            "use criterion l1, l2, hrank or taylor")
        info["sparsity_training"] = network_slimming(base, config, ctx)

    protect = protected_layers(base, example, config.ignore_layers)
    info["protected"] = protect
    data = _criterion_data(config, ctx)

    def prune_at(ratio: float) -> tuple[nn.Module, dict]:
        cand = copy.deepcopy(base)
        rec = prune_channels(cand, ratio, config, example, protect, data)
        return cand, rec

    if config.target_latency_ms is not None:
        pruned, rec, search = search_latency(base, prune_at, config, ctx)
        info["target"] = {"kind": "latency_ms", "value": config.target_latency_ms}
        info["search"] = search
    elif config.flops_reduction is not None:
        pruned, rec, search = search_flops(prune_at, flops_before, shape, config)
        info["target"] = {"kind": "flops_reduction", "value": config.flops_reduction}
        info["search"] = search
    else:
        pruned, rec = prune_at(config.ratio)
        info["target"] = {"kind": "ratio", "value": config.ratio}

    flops_after, params_after = count_flops(pruned, shape)
    info.update(rec)
    info["params"] = {"before": params_before, "after": params_after,
                      "ratio": round(params_after / max(1, params_before), 6)}
    info["flops"] = {"before": flops_before, "after": flops_after,
                     "reduction": round(1 - flops_after / max(1, flops_before), 6)}
    info["latency_effect"] = ("measured on the target (see search)"
                              if config.target_latency_ms is not None else
                              "not measured by this pass: fewer channels cut FLOPs on dense "
                              "kernels; the trial measures the speed-up on the target")
    info["deploy"] = ("channels physically removed; the model no longer fits its class's "
                      "state_dict: save as .pt2 or ONNX")
    return PassResult(pruned.eval(), info)


# ---- Network Slimming sparsity training ------------------------------------------------------

def network_slimming(model: nn.Module, config: StructuredPruneConfig,
                     ctx: PassContext) -> dict[str, Any]:
    """Train with an L1 penalty on every BatchNorm γ (in place), if the budget allows."""
    if config.slimming_epochs <= 0:
        return {"skipped": "slimming_epochs = 0"}
    if ctx.budget is None or not ctx.budget.allows_training:
        return {"skipped": "no retraining budget: γ ranked as trained"}
    if ctx.train_loader is None:
        return {"skipped": "no labelled training data"}
    bns = [m for m in model.modules()
           if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine]
    lam = config.slimming_penalty
    ce = nn.CrossEntropyLoss()

    def loss_fn(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ce(m(x), y) + lam * sum(bn.weight.abs().sum() for bn in bns)

    gamma_before = _gamma_stats(bns)
    tc = budget_train_config(ctx, epochs=config.slimming_epochs, lr=config.slimming_lr)
    report = train(model, ctx.train_loader, tc, val_loader=ctx.val_loader, loss_fn=loss_fn,
                   device=ctx.device, progress=ctx.progress,
                   description="sparsity training (L1 on BN γ)")
    model.eval()
    out = {"epochs_run": report.epochs_run, "penalty": lam, "lr": config.slimming_lr,
           "seconds": round(report.seconds, 2), "gamma_before": gamma_before,
           "gamma_after": _gamma_stats(bns)}
    if ctx.val_loader is not None:
        out["val_accuracy_after"] = evaluate(model, ctx.val_loader, ctx.device)
    return out


def _gamma_stats(bns: list[nn.Module]) -> dict[str, float]:
    g = torch.cat([bn.weight.detach().abs().flatten() for bn in bns])
    return {"mean_abs": round(float(g.mean()), 6),
            "share_below_1e-2": round(float((g < 1e-2).float().mean()), 6)}


# ---- helpers -------------------------------------------------------------------------------


def _criterion_data(config: StructuredPruneConfig, ctx: PassContext) -> dict[str, Any]:
    n = max(1, config.calibration_samples)
    if config.criterion == "hrank":
        loader = ctx.calib_loader or ctx.train_loader or ctx.val_loader
        if loader is None:
            raise PassError("criterion hrank needs calibration inputs (a few batches)",
                            "pass --calib-data or --data, or use criterion l1")
        return {"calib_batches": take_batches(loader, n, labelled=False)}
    if config.criterion == "taylor":
        loader = ctx.train_loader or ctx.val_loader
        batches = take_batches(loader, n, labelled=True) if loader is not None else []
        if not batches:
            raise PassError("criterion taylor needs labelled data for its gradients",
                            "pass --train-data, or use criterion l1 / hrank")
        return {"labelled_batches": batches}
    return {}


def _validate(config: StructuredPruneConfig) -> None:
    if not 0.0 <= config.ratio < 1.0:
        raise PassError(f"ratio must be in [0, 1), got {config.ratio}")
    if config.flops_reduction is not None and not 0.0 < config.flops_reduction < 1.0:
        raise PassError(f"flops_reduction must be in (0, 1), got {config.flops_reduction}")
    if config.target_latency_ms is not None and config.target_latency_ms <= 0:
        raise PassError(f"target_latency_ms must be > 0, got {config.target_latency_ms}")
    if not 0.0 < config.max_layer_ratio < 1.0:
        raise PassError(f"max_layer_ratio must be in (0, 1), got {config.max_layer_ratio}")
    if config.iterative_steps < 1:
        raise PassError("iterative_steps must be >= 1")
    if config.latency_step <= 0 or not 0 < config.max_search_ratio < 1:
        raise PassError("latency_step must be > 0 and max_search_ratio in (0, 1)")
