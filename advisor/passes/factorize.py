"""Low-rank factorization: Tucker-2 for kxk convolutions, truncated SVD for 1x1 convolutions and
Linear layers, with principled rank selection, replacing a layer only where that pays on the
target.

*Compression of Deep Convolutional Neural Networks for Fast and Low Power Mobile Applications*
(Kim et al., 2015; arXiv:1511.06530): Tucker-2 turns a kxk convolution into 1x1 (C_in → r_in) →
kxk (r_in → r_out) → 1x1 (r_out → C_out), keeping stride, padding, dilation, padding mode and
bias; ranks from VBMF; a short fine-tune recovers accuracy (1.42–3.68× on a phone). Linear layers
and 1x1 convolutions become two thinner layers by truncated SVD (*Exploiting Linear Structure
Within Convolutional Networks for Efficient Evaluation*, Denton et al., 2014; arXiv:1404.0736).
Depthwise and grouped convolutions are skipped: they are already factorized and tiny.
The factors come from a truncated HOSVD through ``torch.linalg.svd`` — on our example models it
matched tensorly's `partial_tucker` (HOOI) reconstruction error at about half the time, is
deterministic and adds no dependency (details in `lowrank.decompose`).

Rank selection (`method`):
- ``energy``: per mode, the smallest rank keeping `energy` of the spectrum's squared norm.
- ``vbmf``: empirical variational Bayesian matrix factorization on the mode unfoldings
  (Nakajima et al., JMLR 2013, *Global Analytic Solution of Fully-observed Variational Bayesian
  Matrix Factorization*), the automatic choice Kim et al. made (`lowrank.vbmf`).
- ``flops_target``: remove `flops_reduction` of the model's FLOPs, spread over the layers by a
  greedy on the convex hulls of (cost, lost energy): least reconstruction error per FLOP saved
  (`lowrank.allocate`).
- ``latency_target``: the same greedy on *measured* cost: every layer's dense and factorized
  forms are timed on the target (threads) at their real input shape, a per-layer line
  ms ≈ a + b·FLOPs is fitted, and `latency_reduction` of the model's in-process latency is
  removed.
`rank` (when set) overrides the method with the same rank for every mode (capped per mode), and
`layer_ranks` (as recorded in ``info["layer_ranks"]``) replays exact per-layer ranks.

A layer is replaced only where the factorized form is cheaper: fewer FLOPs at the model's input
shape and, with `check_latency`, at least `min_layer_speedup` faster in a micro-benchmark of the
layer alone on an input of its actual shape (forward hooks at ``ctx.input_shape``), timed
interleaved with the dense layer (`advisor.measure.timer.time_interleaved`, the target's thread
count, torch eager). The layer timing uses torch even when the target's runtime is ONNX Runtime:
exporting every layer would cost more than it tells; the whole model is measured on the deploy
runtime by the search afterwards. With the global methods a layer found slower is taken out and
the budget re-allocated over the rest.

Fine-tuning, one clear rule: in plans the rule engine appends the shared ``finetune`` pass after
this one, so this pass is registered ``trains=False`` and leaves ``finetune_epochs`` at 0. For
stand-alone use ``finetune_epochs > 0`` fine-tunes the factorized model here, through the same
shared loop (`advisor.train.train`); asking for it without a retraining budget or without
labelled training data is refused up front (PassError, as the ``finetune`` pass does).

Records per layer: kind (tucker2/svd/skipped), ranks, FLOPs before/after, relative
reconstruction error ||W − Ŵ||/||W||, measured latency before/after when checked, replaced or
not and why; model FLOPs/params before/after; ``layer_ranks`` to replay the step exactly.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from torch import nn

from advisor.errors import PassError
from advisor.passes.base import PassContext, PassResult, register_pass
from advisor.passes.config import check_config, config_to_dict
from advisor.passes.lowrank.decompose import build
from advisor.passes.lowrank.layers import discover, eligible
from advisor.passes.lowrank.ranks import allocate_globally, per_layer_ranks, replay_ranks
from advisor.passes.lowrank.timing import LayerTimer, decide
from advisor.passes.torch_common import (budget_train_config, count_flops, require_training,
                                         set_module)

__all__ = ["FactorizeConfig", "factorize"]

Method = Literal["energy", "vbmf", "flops_target", "latency_target"]


@dataclass(frozen=True)
class FactorizeConfig:
    """Low-rank factorization settings (all JSON-able; see the module docstring)."""

    method: Method = "vbmf"
    # method "energy": share of the spectrum's squared norm kept per mode (the knob: smaller
    # values keep lower ranks, compressing harder)
    energy: float = field(default=0.95, metadata={"knob": "decreasing", "gt": 0.0, "le": 1.0})
    # method "flops_target": share of the model's FLOPs to remove
    flops_reduction: float = field(default=0.5, metadata={"ge": 0.0, "lt": 1.0})
    # method "latency_target": share of the latency to remove
    latency_reduction: float = field(default=0.33, metadata={"ge": 0.0, "lt": 1.0})
    # same rank for every mode (capped), overrides `method`
    rank: int | None = field(default=None, metadata={"ge": 1})
    # round ranks up to a multiple (e.g. 8: SIMD-friendly widths)
    rank_multiple: int = field(default=1, metadata={"ge": 1})
    min_layer_flops: int = field(default=0, metadata={"ge": 0})  # smaller layers stay dense
    ignore_layers: tuple[str, ...] = ()  # module names or "re:<pattern>"; containers protect inside
    check_latency: bool = True  # replace only layers measured faster on the target
    # dense ms / factorized ms needed (guards against noise)
    min_layer_speedup: float = field(default=1.05, metadata={"gt": 0.0})
    require_cheaper: bool = True  # False: replace every eligible layer (studies, exactness tests)
    layer_ranks: tuple[tuple[str, tuple[int, ...]], ...] = ()  # replay: exactly these layers/ranks
    # > 0: fine-tune here when the budget allows (plans use `finetune`)
    finetune_epochs: int = field(default=0, metadata={"ge": 0})
    finetune_lr: float = field(default=1e-3, metadata={"gt": 0.0})

    def __post_init__(self):
        check_config(self)


@register_pass("factorize", FactorizeConfig, family="factorization",
               summary="Low-rank factorization (Tucker-2 / SVD) where it is cheaper on the target")
def factorize(model: nn.Module, config: FactorizeConfig, ctx: PassContext) -> PassResult:
    """Factorize a copy of `model`: Tucker-2 for kxk convs, SVD for 1x1 convs and Linear layers."""
    if not isinstance(model, nn.Module):
        raise PassError(f"factorize needs a PyTorch model, got {type(model).__name__}",
                        "run torch passes before any ONNX-stage pass")
    if config.finetune_epochs > 0:  # asked to train: refuse now, not after the factorization
        require_training("factorize with finetune_epochs > 0", ctx)
    started = time.perf_counter()
    model = copy.deepcopy(model)
    shape = tuple(int(d) for d in ctx.input_shape)
    layers = discover(model, shape)
    candidates = eligible(model, layers, config)
    timer = LayerTimer(ctx.target)
    info: dict[str, Any] = {"method": _method_label(config), "input_shape": list(shape),
                            "latency_check": timer.describe() if config.check_latency else
                            "off"}
    flops_before, params_before = count_flops(model, shape)[0], _params(model)

    if config.layer_ranks:
        replay_ranks(candidates, dict(config.layer_ranks))
    elif config.rank is not None:
        for layer in candidates:
            layer.ranks = layer.basis.clamp((config.rank,) * len(layer.basis.max_ranks))
    elif config.method in ("energy", "vbmf"):
        for layer in candidates:
            layer.ranks = per_layer_ranks(layer, config)
    else:
        info["allocation"] = allocate_globally(model, candidates, config, timer, shape,
                                               flops_before)

    enforce = config.require_cheaper and not config.layer_ranks  # a replay is exact
    check = enforce and config.check_latency and timer.available
    for layer in candidates:
        decide(layer, config, enforce, timer if check else None)
    for layer in candidates:
        if layer.record.get("replaced"):
            set_module(model, layer.name, build(layer.module, layer.basis, layer.ranks))

    replaced = [lay for lay in layers if lay.record.get("replaced")]
    info.update({
        "layers": [lay.record for lay in layers],
        "replaced": len(replaced),
        "layer_ranks": {lay.name: list(lay.ranks) for lay in replaced},
        "flops_before": flops_before, "flops_after": count_flops(model, shape)[0],
        "params_before": params_before, "params_after": _params(model),
    })
    # the ranks this machine chose (by energy, VBMF or measured latency), pinned for `apply`
    info["replay_config"] = config_to_dict(replace(
        config, layer_ranks=tuple((lay.name, tuple(lay.ranks)) for lay in replaced)))
    info["finetune"] = _maybe_finetune(model, config, ctx) if replaced else {
        "skipped": "no layer was replaced"}
    if not replaced:  # the search must not rank timing noise on the same model (`search`)
        info["unchanged"] = "no layer was worth factorizing at these ranks"
    info["seconds"] = round(time.perf_counter() - started, 2)
    return PassResult(model.eval(), info)


# ---- counts, fine-tune ------------------------------------------------------------------------

def _params(model: nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def _maybe_finetune(model: nn.Module, config: FactorizeConfig, ctx: PassContext) -> dict:
    if config.finetune_epochs <= 0:
        return {"skipped": "finetune_epochs = 0 (plans recover with the finetune pass)"}
    from advisor.train import evaluate, train  # looked up here: tests replace train

    before = evaluate(model, ctx.val_loader, ctx.device) if ctx.val_loader is not None else None
    tc = budget_train_config(ctx, epochs=config.finetune_epochs, lr=config.finetune_lr)
    report = train(model, ctx.train_loader, tc, val_loader=ctx.val_loader, device=ctx.device,
                   progress=ctx.progress, description="fine-tuning factorized model")
    return {"epochs_run": report.epochs_run, "seconds": round(report.seconds, 2),
            "stopped_by": report.stopped_by, "val_accuracy_before": before,
            "val_accuracy_after": report.best_val_accuracy}


def _method_label(config: FactorizeConfig) -> str:
    if config.layer_ranks:
        return "layer_ranks (replay)"
    if config.rank is not None:
        return f"rank={config.rank}"
    return config.method
