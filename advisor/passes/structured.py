"""Structured pruning: whole channels/filters physically removed, so dense kernels really speed up.

The lecture's four choices are the config: *unit* = channel (filter) group; *criterion* = L1/L2
magnitude, BN scaling factor, feature-map rank (HRank) or Taylor (`advisor.passes.importance`);
*scope* = global (one ranking over the network) or local (the same ratio in every layer);
*phase* = on a trained model (pruning at initialization is `advisor.passes.at_init`).

The coupling of layers (residual adds, concatenations, depthwise/grouped convs, BatchNorm, the
next layer's inputs) comes from torch-pruning's dependency graph — *DepGraph: Towards Any
Structural Pruning* (Fang et al., 2023; arXiv:2301.12900) — never from a hand-written graph.

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
params/FLOPs before and after, torch-pruning's pruning history (`replay` redoes it on the
original weights), the search trace. A pruned model no longer fits its class's state_dict:
save it as `.pt2` or ONNX (`advisor.export`), never by pickling the module.
"""
from __future__ import annotations

import copy
import math
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch_pruning as tp
from torch import nn

from advisor.errors import PassError
from advisor.passes.base import PassContext, PassResult, check_config, register_pass
from advisor.passes.torch_common import (budget_train_config, count_flops, example_input,
                                         output_layer, prunable_within, require_module,
                                         resolve_layers, take_batches)
from advisor.passes.importance import Criterion, make_importance
from advisor.train import evaluate, train

_ROOT_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_CHANNEL_TYPES = _ROOT_TYPES + (nn.modules.batchnorm._BatchNorm,)


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
        pruned, rec, search = _search_latency(base, prune_at, config, ctx)
        info["target"] = {"kind": "latency_ms", "value": config.target_latency_ms}
        info["search"] = search
    elif config.flops_reduction is not None:
        pruned, rec, search = _search_flops(prune_at, flops_before, shape, config)
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


# ---- pruning -----------------------------------------------------------------------------

def prune_channels(model: nn.Module, ratio: float, config: StructuredPruneConfig,
                   example: torch.Tensor, protect: dict, data: dict) -> dict[str, Any]:
    """Prune `model` in place to `ratio` of channels removed; returns what was removed."""
    model.eval()
    names = {m: n for n, m in model.named_modules()}
    before = {n: _out_channels(m) for n, m in model.named_modules() if isinstance(m, _CHANNEL_TYPES)}
    alive = {n: list(range(c)) for n, c in before.items()}
    removed: dict[str, list[int]] = {n: [] for n in before}
    importance = make_importance(config.criterion, config.scope, **data)
    record: dict[str, Any] = {"ratio": ratio, "iterative_steps": config.iterative_steps}
    if ratio > 0:
        modules = dict(model.named_modules())
        ignored = [modules[n] for n in protect["layers"]]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pruner = tp.pruner.BasePruner(
                model, example, importance=importance, global_pruning=config.scope == "global",
                pruning_ratio=ratio, iterative_steps=config.iterative_steps,
                ignored_layers=ignored, round_to=config.round_to,
                max_pruning_ratio=config.max_layer_ratio,
                root_module_types=list(_ROOT_TYPES))
        dg = pruner.DG
        check = dg.check_pruning_group
        # torch-pruning silently skips a group whose every channel falls under the global
        # threshold; we let it through and cap it at max_layer_ratio ourselves (_cap).
        dg.check_pruning_group = lambda group: True
        try:
            for _ in range(config.iterative_steps):
                importance.prepare(model)
                for group in pruner.step(interactive=True):
                    group = _cap(group, pruner, importance, config)
                    if group is None or not check(group):
                        continue
                    _track(group, names, alive, removed)
                    group.prune()
        finally:
            dg.check_pruning_group = check
        model.zero_grad(set_to_none=True)
        record["history"] = _json_history(pruner.pruning_history())
        if getattr(importance, "fallback_groups", None):
            record["fallback_groups"] = sorted(importance.fallback_groups)
    else:
        record["history"] = []
    after = {n: _out_channels(m) for n, m in model.named_modules() if n in before}
    record["channels"] = {n: {"before": before[n], "after": after[n], "removed": sorted(removed[n])}
                          for n in before if after.get(n) != before[n]}
    convs = [n for n, m in model.named_modules() if isinstance(m, _ROOT_TYPES)]
    tot_b, tot_a = sum(before[n] for n in convs), sum(after[n] for n in convs)
    record["channels_total"] = {"before": tot_b, "after": tot_a,
                                "removed_fraction": round(1 - tot_a / max(1, tot_b), 6)}
    return record


def replay(model: nn.Module, history: list, example_inputs: torch.Tensor) -> nn.Module:
    """Redo a recorded pruning history on a copy of the original model (audit / `apply`)."""
    model = copy.deepcopy(model).eval()
    dg = tp.DependencyGraph().build_dependency(model, example_inputs=example_inputs)
    dg.load_pruning_history([[n, bool(out), [int(i) for i in idxs]] for n, out, idxs in history])
    return model


def _cap(group, pruner, importance, config: StructuredPruneConfig):
    """Limit one group's removal to max_layer_ratio of its initial channels (None: skip it)."""
    dg = pruner.DG
    dep, idxs = group[0]
    module, fn = dep.target.module, dep.handler
    is_out = dg.is_out_channel_pruning_fn(fn)
    current = dg.get_out_channels(module) if is_out else dg.get_in_channels(module)
    if current is None or pruner._get_channel_groups(group) > 1:
        return group
    initial = (pruner.layer_init_out_ch if is_out else pruner.layer_init_in_ch).get(module, current)
    keep_min = max(1, math.ceil(initial * (1 - config.max_layer_ratio)))
    if config.round_to:
        keep_min = math.ceil(keep_min / config.round_to) * config.round_to
    allowed = current - keep_min
    if len(idxs) <= allowed:
        return group
    if allowed <= 0:
        return None
    scores = importance(dg.get_pruning_group(module, fn, list(range(current))))
    order = sorted(idxs, key=lambda i: float(scores[i])) if scores is not None else sorted(idxs)
    return dg.get_pruning_group(module, fn, sorted(order[:allowed]))


def _track(group, names, alive, removed) -> None:
    """Map a group's pruned indices back to original channel numbers, per module."""
    seen = set()
    for dep, idxs in group:
        module = dep.target.module
        name = names.get(module)
        if name not in alive or name in seen or not group._DG.is_out_channel_pruning_fn(dep.handler):
            continue
        seen.add(name)
        gone = set(int(i) for i in idxs)
        removed[name] += [alive[name][i] for i in sorted(gone)]
        alive[name] = [c for j, c in enumerate(alive[name]) if j not in gone]


def _json_history(history) -> list:
    return [[str(n), bool(out), [int(i) for i in idxs]] for n, out, idxs in history]


def _out_channels(m: nn.Module) -> int:
    if isinstance(m, nn.Linear):
        return m.out_features
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        return m.num_features
    return m.out_channels


# ---- what is never pruned ------------------------------------------------------------------

def protected_layers(model: nn.Module, example: torch.Tensor,
                     ignore_layers: tuple[str, ...]) -> dict[str, Any]:
    """The output layer and the user's layers (with the producers of their inputs)."""
    out_layer = output_layer(model, example)
    user = prunable_within(model, resolve_layers(model, ignore_layers))
    producers = _input_producers(model, example, user)
    layers = sorted(set([out_layer] if out_layer else []) | set(user) | set(producers))
    return {"output_layer": out_layer, "ignore_layers": sorted(user),
            "input_producers": sorted(set(producers) - set(user)), "layers": layers}


def _input_producers(model: nn.Module, example: torch.Tensor, layers: list[str]) -> list[str]:
    """Layers whose output channels feed the inputs of `layers` (so those inputs stay whole)."""
    if not layers:
        return []
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dg = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    modules = dict(model.named_modules())
    names = {m: n for n, m in modules.items()}
    out = []
    for n in layers:
        m = modules[n]
        pruner = dg.get_pruner_of_module(m)
        cin = dg.get_in_channels(m)
        if pruner is None or not cin:
            continue
        group = dg.get_pruning_group(m, pruner.prune_in_channels, list(range(cin)))
        for dep, _ in group:
            t = dep.target.module
            if isinstance(t, _ROOT_TYPES) and dg.is_out_channel_pruning_fn(dep.handler) \
                    and names.get(t) not in out:
                out.append(names[t])
    return out


# ---- targets -------------------------------------------------------------------------------

def _search_flops(prune_at, flops_before: int, shape, config: StructuredPruneConfig):
    """Smallest channel ratio removing at least `flops_reduction` of the FLOPs (bisection)."""
    goal = config.flops_reduction
    lo, hi = 0.0, config.max_search_ratio
    trace = []
    best = None
    for _ in range(10):
        mid = round((lo + hi) / 2, 4)
        cand, rec = prune_at(mid)
        red = 1 - count_flops(cand, shape)[0] / max(1, flops_before)
        trace.append({"ratio": mid, "flops_reduction": round(red, 6)})
        if red >= goal - 1e-4:
            best, hi = (cand, rec), mid
        else:
            lo = mid
        if hi - lo < 0.01:
            break
    if best is None:
        cand, rec = prune_at(config.max_search_ratio)
        red = 1 - count_flops(cand, shape)[0] / max(1, flops_before)
        trace.append({"ratio": config.max_search_ratio, "flops_reduction": round(red, 6)})
        best = (cand, rec)
        reached = red >= goal - 1e-4
    else:
        reached = True
    return best[0], {**best[1], "target_reached": reached}, trace


def _search_latency(base: nn.Module, prune_at, config: StructuredPruneConfig, ctx: PassContext):
    """Prune a step, measure on the target, repeat until the p50 meets the target."""
    runtime = config.latency_runtime or _first_runtime(ctx.target)
    workdir = Path(ctx.workdir) if ctx.workdir else Path(tempfile.mkdtemp(prefix="prune-lat-"))
    workdir.mkdir(parents=True, exist_ok=True)
    p50 = measure_on_target(base, ctx, runtime, workdir / "prune-search-0")
    trace = [{"ratio": 0.0, "p50_ms": p50}]
    chosen = (copy.deepcopy(base), {"ratio": 0.0, "history": [], "channels": {},
                                    "channels_total": None})
    if p50 <= config.target_latency_ms:
        return chosen[0], {**chosen[1], "target_reached": True, "runtime": runtime}, trace
    steps = int(math.floor(config.max_search_ratio / config.latency_step + 1e-9))
    for k in range(1, steps + 1):
        ratio = round(k * config.latency_step, 6)
        cand, rec = prune_at(ratio)
        p50 = measure_on_target(cand, ctx, runtime, workdir / f"prune-search-{k}")
        trace.append({"ratio": ratio, "p50_ms": p50})
        chosen = (cand, rec)
        if p50 <= config.target_latency_ms:
            return cand, {**rec, "target_reached": True, "runtime": runtime}, trace
    return chosen[0], {**chosen[1], "target_reached": False, "runtime": runtime}, trace


def measure_on_target(model: nn.Module, ctx: PassContext, runtime: str, stem: Path) -> float:
    """p50 latency (ms) of `model` exported for `runtime`, measured in a fresh process."""
    try:
        from advisor.measure.latency import measure_latency
    except ImportError as e:
        raise PassError("a latency target needs advisor.measure.latency, which is missing",
                        "use ratio or flops_reduction") from e
    from advisor.export import export_onnx, save_pt2

    shape = tuple(ctx.input_shape)
    if runtime == "onnxruntime":
        path = stem.with_suffix(".onnx")
        export_onnx(model, path, shape, check=False)
    else:
        path = stem.with_suffix(".pt2")
        save_pt2(model, path, shape)
    return float(measure_latency(path, runtime, shape, target=ctx.target).p50)


def _first_runtime(target) -> str:
    runtimes = [r.name for r in getattr(target, "runtimes", ()) or ()]
    return runtimes[0] if runtimes else "onnxruntime"


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
