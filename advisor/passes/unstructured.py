"""Unstructured sparsity: individual weights zeroed by magnitude, one-shot or iteratively.

The lecture's choices as config: *unit* = single weight; *criterion* = |w|; *scope* = global
(one ranking over all Conv/Linear weights) or local (every layer loses the same share);
*phase* = on a trained model (pruning at initialization is `advisor.passes.at_init`).

Deployment truth. Dense CPU kernels skip no zeros: a sparse conv runs exactly as fast as the
dense one. So this pass never claims speed from masks. It records what really changes:
the compressed storage of the weights (`advisor.sparse.storage_report`: CSR or bitmap per layer,
zlib measured) and, with ``csr_linear``, the Linear layers it turned into CSR sparse matmuls —
each one only after timing dense against CSR on this machine with the layer's real input shape,
and only where CSR won. CSR layers run in the eager torch runtime only (saved as TorchScript;
there is no ONNX form).

Passes:
- ``prune_unstructured`` — one-shot magnitude pruning to ``sparsity``; masks made permanent
  (weights multiplied, no reparametrisation left behind). No training.
- ``prune_unstructured_iterative`` — iterative magnitude pruning (IMP): ``rounds`` rounds, each
  removing the same share of the remaining weights (geometric schedule) and retraining
  ``epochs_per_round`` epochs through the shared loop. Between rounds (the lottery-ticket line of
  work):
  - ``rewind="lr"`` — learning-rate rewinding (Renda et al., 2020, *Comparing Rewinding and
    Fine-tuning in Neural Network Pruning*, arXiv:2003.02389): keep the trained weights and
    replay the whole learning-rate schedule from its start.
  - ``rewind="weight"`` — weight rewinding (Frankle et al., 2019, *Stabilizing the Lottery
    Ticket Hypothesis*, arXiv:1903.01611): surviving weights go back to their values at epoch
    ``rewind_epoch`` and retrain from there. The user's original training run is not available,
    so the reference trajectory is the first retraining round: epoch 0 (the default) is the
    given trained model, epoch k its weights after k epochs of round 1. Later rounds train
    ``epochs_per_round - rewind_epoch`` epochs (at least one), as the rewound run would.
    Measured on digits (2 rounds x 2 epochs, 90%): rewinding to epoch 1 of a OneCycle round
    lands on peak-learning-rate weights and ended at 36% accuracy, hence epoch 0.
  - ``rewind="none"`` — classic fine-tuning (Han et al., 2015): trained weights kept, a small
    constant learning rate (``lr / 10``).
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
                                         require_module, require_training, sparsity_info,
                                         target_layers, val_accuracy)
from advisor.sparse import (CSRLinear, MaskKeeper, apply_masks, layer_sparsity, magnitude_masks,
                            overall_sparsity, prunable_layers, time_ms, to_csr)
from advisor.train import train


@dataclass(frozen=True)
class UnstructuredPruneConfig:
    """One-shot magnitude pruning of single weights; optional CSR execution of Linear layers."""

    # share of the (prunable) weights set to zero (the knob: larger prunes harder)
    sparsity: float = field(default=0.8, metadata={"knob": "increasing", "ge": 0.0, "lt": 1.0})
    scope: Literal["global", "local"] = "global"
    ignore_layers: tuple[str, ...] = ()  # module names or "re:<pattern>"; never pruned
    prune_output_layer: bool = False  # the classifier is kept dense unless asked
    csr_linear: bool = False  # run sparse Linear layers as CSR matmuls where measured faster
    # below this, CSR is not even tried
    csr_min_sparsity: float = field(default=0.7, metadata={"ge": 0.0, "lt": 1.0})

    def __post_init__(self):
        check_config(self)


@dataclass(frozen=True)
class IterativePruneConfig:
    """Iterative magnitude pruning with retraining rounds and rewinding."""

    # final sparsity (the knob: larger prunes harder)
    sparsity: float = field(default=0.9, metadata={"knob": "increasing", "ge": 0.0, "lt": 1.0})
    rounds: int = field(default=4, metadata={"ge": 1})
    epochs_per_round: int = field(default=3, metadata={"ge": 1})
    rewind: Literal["lr", "weight", "none"] = "lr"
    # weight rewinding: epoch of round 1 the weights go back to
    rewind_epoch: int = field(default=0, metadata={"ge": 0})
    lr: float = field(default=1e-3, metadata={"gt": 0.0})
    schedule: Literal["onecycle", "cosine"] = "onecycle"
    weight_decay: float = field(default=1e-4, metadata={"ge": 0.0})
    scope: Literal["global", "local"] = "global"
    ignore_layers: tuple[str, ...] = ()
    prune_output_layer: bool = False

    def __post_init__(self):
        check_config(self)


@register_pass("prune_unstructured", UnstructuredPruneConfig, family="sparsity",
               summary="Zero single weights by magnitude (global/local); compressed storage, "
                       "CSR Linear where faster")
def apply_unstructured(model: nn.Module, config: UnstructuredPruneConfig,
                       ctx: PassContext) -> PassResult:
    """Magnitude-prune a copy of `model` to `config.sparsity`; report storage and real speed."""
    require_module("prune_unstructured", model)
    _check_sparsity(config.sparsity)
    if not 0.0 <= config.csr_min_sparsity < 1.0:
        raise PassError(f"csr_min_sparsity must be in [0, 1), got {config.csr_min_sparsity}")
    model = copy.deepcopy(model).eval()
    example = example_input(ctx)
    names = target_layers(model, example, config.ignore_layers, config.prune_output_layer)
    layers = prunable_layers(model)
    masks = magnitude_masks({n: layers[n] for n in names}, config.sparsity, config.scope)
    apply_masks(model, masks)

    info = sparsity_info(model, names, config.scope)
    info["latency_effect"] = NO_SPEEDUP
    info["csr_layers"] = {}
    if config.csr_linear:
        info["csr_layers"] = convert_faster_linears(model, example, names,
                                                    config.csr_min_sparsity)
        if info["csr_layers"]:
            info["latency_effect"] = (
                "CSR sparse matmul in " + ", ".join(
                    f"{n} ({v['dense_ms']:.3f} → {v['csr_ms']:.3f} ms)"
                    for n, v in info["csr_layers"].items())
                + "; eager torch runtime only (no ONNX form); convolutions unchanged: "
                  "dense kernels skip no zeros")
    info["deploy"] = ("zeros stored compressed (CSR/bitmap per layer); "
                      + ("CSR layers run in torch only" if info["csr_layers"] else
                         "the dense model exports to ONNX/.pt2 unchanged in speed"))
    return PassResult(model.eval(), info)


@register_pass("prune_unstructured_iterative", IterativePruneConfig, family="sparsity",
               trains=True, needs_labels=True,
               summary="Iterative magnitude pruning with retraining rounds and "
                       "learning-rate/weight rewinding")
def apply_iterative(model: nn.Module, config: IterativePruneConfig,
                    ctx: PassContext) -> PassResult:
    """Prune-retrain rounds to `config.sparsity` with the configured rewinding."""
    require_module("prune_unstructured_iterative", model)
    require_training("prune_unstructured_iterative", ctx)
    _check_sparsity(config.sparsity)
    if config.rounds < 1 or config.epochs_per_round < 1:
        raise PassError("rounds and epochs_per_round must be at least 1")
    if config.rewind == "weight" and not 0 <= config.rewind_epoch < config.epochs_per_round:
        raise PassError(f"rewind_epoch must be in [0, epochs_per_round), got "
                        f"{config.rewind_epoch}")
    model = copy.deepcopy(model).eval()
    example = example_input(ctx)
    names = target_layers(model, example, config.ignore_layers, config.prune_output_layer)
    epochs = config.epochs_per_round
    if ctx.budget is not None and ctx.budget.epochs is not None:  # the budget covers all rounds
        epochs = max(1, min(epochs, ctx.budget.epochs // config.rounds))
    seconds = (ctx.budget.seconds / config.rounds
               if ctx.budget is not None and ctx.budget.seconds else None)

    rewind_state: dict[str, torch.Tensor] | None = None
    if config.rewind == "weight" and config.rewind_epoch == 0:
        rewind_state = copy.deepcopy(model.state_dict())
    rounds: list[dict[str, Any]] = []
    for r, level in enumerate(_geometric_levels(config.sparsity, config.rounds), start=1):
        layers = prunable_layers(model)
        masks = magnitude_masks({n: layers[n] for n in names}, level, config.scope,
                                scores=_scores_keeping_zeros(layers, names))
        if config.rewind == "weight" and rewind_state is not None:
            model.load_state_dict(rewind_state)
        apply_masks(model, masks)
        keeper = MaskKeeper(model, masks)
        pruned_acc = val_accuracy(model, ctx)
        n_epochs, lr, schedule = epochs, config.lr, config.schedule
        if config.rewind == "none":
            lr, schedule = config.lr / 10, "constant"
        if config.rewind == "weight" and r > 1:
            n_epochs = max(1, epochs - config.rewind_epoch)
        tc = budget_train_config(ctx, epochs=n_epochs, lr=lr, schedule=schedule,
                                 weight_decay=config.weight_decay, max_seconds=seconds)
        capture = _EpochCapture(config.rewind_epoch, len(ctx.train_loader)) if (
            config.rewind == "weight" and rewind_state is None) else None
        report = train(model, ctx.train_loader, tc, val_loader=ctx.val_loader,
                       after_step=_chain(keeper, capture), device=ctx.device,
                       progress=ctx.progress,
                       description=f"IMP round {r}/{config.rounds} ({level:.0%} sparse)")
        if capture is not None:
            rewind_state = capture.state or copy.deepcopy(model.state_dict())
        rounds.append({"round": r, "sparsity": round(overall_sparsity(model, names), 6),
                       "val_accuracy_pruned": pruned_acc, "val_accuracy": val_accuracy(model, ctx),
                       "epochs_run": report.epochs_run, "stopped_by": report.stopped_by,
                       "seconds": round(report.seconds, 2)})

    info = sparsity_info(model, names, config.scope)
    info.update({"rewind": config.rewind, "rounds": rounds, "latency_effect": NO_SPEEDUP,
                 "csr_layers": {}})
    if config.rewind == "weight":
        info["rewind_epoch"] = config.rewind_epoch
    return PassResult(model.eval(), info)


# ---- shared pieces ------------------------------------------------------------------------


@torch.no_grad()
def convert_faster_linears(model: nn.Module, example: torch.Tensor, names: list[str],
                           min_sparsity: float, repeats: int = 30) -> dict[str, dict]:
    """Turn sparse Linear layers into CSRLinear where a timing on this machine says it is faster.

    Each layer is timed dense and as CSR on its real input (captured with a forward hook).
    """
    modules = dict(model.named_modules())
    sparsity = layer_sparsity(model)
    candidates = [n for n in names if isinstance(modules[n], nn.Linear)
                  and sparsity[n] >= min_sparsity]
    inputs: dict[str, torch.Tensor] = {}

    def keep_input(name: str):
        def hook(module, args, output) -> None:  # returns None: the output stays as it is
            inputs.setdefault(name, args[0].detach().clone())
        return hook
    hooks = [modules[n].register_forward_hook(keep_input(n)) for n in candidates]
    try:
        model(example)
    finally:
        for h in hooks:
            h.remove()
    chosen: dict[str, dict] = {}
    for n in candidates:
        if n not in inputs:
            continue
        dense, x = modules[n], inputs[n]
        csr = CSRLinear(dense)
        dense_ms = time_ms(lambda: dense(x), repeats=repeats)
        csr_ms = time_ms(lambda: csr(x), repeats=repeats)
        if csr_ms < dense_ms:
            chosen[n] = {"sparsity": sparsity[n], "dense_ms": round(dense_ms, 4),
                         "csr_ms": round(csr_ms, 4), "speedup": round(dense_ms / csr_ms, 3),
                         "input_shape": list(x.shape)}
    to_csr(model, chosen)
    return chosen


def _scores_keeping_zeros(layers: dict[str, nn.Module], names: list[str]
                          ) -> dict[str, torch.Tensor]:
    """|w|, with already pruned weights ranked below every live one (they stay pruned)."""
    scores = {}
    for n in names:
        w = layers[n].weight.detach().abs()
        scores[n] = torch.where(w == 0, torch.full_like(w, -1.0), w)
    return scores


class _EpochCapture:
    """after_step hook keeping the weights once `epoch` epochs of training have passed."""

    def __init__(self, epoch: int, steps_per_epoch: int):
        self.at_step = epoch * max(1, steps_per_epoch)
        self.steps = 0
        self.state: dict[str, torch.Tensor] | None = None

    def __call__(self, model: nn.Module) -> None:
        self.steps += 1
        if self.state is None and self.steps == self.at_step:
            self.state = copy.deepcopy(model.state_dict())


def _chain(keeper: MaskKeeper, capture: _EpochCapture | None):
    if capture is None:
        return keeper

    def after_step(model: nn.Module) -> None:
        keeper(model)  # masks first: the captured weights are the pruned ones
        capture(model)
    return after_step


def _check_sparsity(sparsity: float) -> None:
    if not 0.0 <= sparsity < 1.0:
        raise PassError(f"sparsity must be in [0, 1), got {sparsity}",
                        "e.g. 0.8 removes 80% of the weights")


def _geometric_levels(sparsity: float, rounds: int) -> list[float]:
    """Sparsity after each round when every round removes the same share of what is left."""
    return [1.0 - (1.0 - sparsity) ** (r / rounds) for r in range(1, rounds + 1)]

