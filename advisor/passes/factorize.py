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

import contextlib
import copy
import statistics
import time
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from advisor.errors import PassError
from advisor.measure.timer import probe_seconds, time_inprocess, time_interleaved
from advisor.passes.base import (PassContext, PassResult, check_config, config_to_dict,
                                 register_pass)
from advisor.passes.lowrank.allocate import Option, allocate, energy_rank, rank_grid, round_rank
from advisor.passes.lowrank.decompose import (LayerBasis, build, decompose, factorizable,
                                              layer_flops, layer_kind)
from advisor.passes.lowrank.vbmf import evbmf_rank
from advisor.passes.torch_common import (budget_train_config, count_flops, modules_within,
                                         require_training, resolve_layers, set_module)

__all__ = ["FactorizeConfig", "factorize"]

Method = Literal["energy", "vbmf", "flops_target", "latency_target"]
_MAX_REALLOCATIONS = 4


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


@dataclass
class _Layer:
    """One Conv2d/Linear of the model as seen in a forward pass at the input shape."""

    name: str
    module: nn.Module
    in_shape: tuple[int, ...] = ()
    out_shape: tuple[int, ...] = ()
    calls: int = 0
    basis: LayerBasis | None = None
    ranks: tuple[int, ...] | None = None
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def dense_flops(self) -> int:
        return layer_flops(self.module, self.in_shape, self.out_shape)

    def flops(self, ranks: tuple[int, ...]) -> int:
        return layer_flops(self.module, self.in_shape, self.out_shape, ranks)


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
    layers = _discover(model, shape)
    candidates = _eligible(model, layers, config)
    timer = _LayerTimer(ctx.target)
    info: dict[str, Any] = {"method": _method_label(config), "input_shape": list(shape),
                            "latency_check": timer.describe() if config.check_latency else
                            "off"}
    flops_before, params_before = count_flops(model, shape)[0], _params(model)

    if config.layer_ranks:
        _replay_ranks(candidates, dict(config.layer_ranks))
    elif config.rank is not None:
        for layer in candidates:
            layer.ranks = layer.basis.clamp((config.rank,) * len(layer.basis.max_ranks))
    elif config.method in ("energy", "vbmf"):
        for layer in candidates:
            layer.ranks = _per_layer_ranks(layer, config)
    else:
        info["allocation"] = _allocate_globally(model, candidates, config, timer, shape,
                                                flops_before)

    enforce = config.require_cheaper and not config.layer_ranks  # a replay is exact
    check = enforce and config.check_latency and timer.available
    for layer in candidates:
        _decide(layer, config, enforce, timer if check else None)
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
    info["replay_config"] = config_to_dict(replace(
        config, layer_ranks=tuple((lay.name, tuple(lay.ranks)) for lay in replaced),
        finetune_epochs=0))
    info["finetune"] = _maybe_finetune(model, config, ctx) if replaced else {
        "skipped": "no layer was replaced"}
    info["seconds"] = round(time.perf_counter() - started, 2)
    return PassResult(model.eval(), info)


# ---- which layers, at what shape ---------------------------------------------------------------

@torch.no_grad()
def _discover(model: nn.Module, shape: tuple[int, ...]) -> list[_Layer]:
    """Every Conv2d-like and Linear layer with its input/output shape at `shape` (batch as given)."""
    layers = [_Layer(n, m) for n, m in model.named_modules()
              if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]

    def hook(layer: _Layer):
        def fn(mod, inputs, output):
            layer.calls += 1
            if layer.calls == 1:
                layer.in_shape, layer.out_shape = tuple(inputs[0].shape), tuple(output.shape)
        return fn

    handles = [lay.module.register_forward_hook(hook(lay)) for lay in layers]
    was = model.training
    model.eval()
    try:
        param = next(model.parameters(), None)
        x = torch.zeros(shape, dtype=param.dtype if param is not None else torch.float32,
                        device=param.device if param is not None else "cpu")
        model(x)
    except Exception as e:
        raise PassError(f"factorize could not run the model at input shape {list(shape)}: {e}",
                        "check the input shape") from None
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    return layers


def _eligible(model: nn.Module, layers: list[_Layer], config: FactorizeConfig) -> list[_Layer]:
    """The layers that may be factorized (with their bases); the others get a skip record."""
    ignored = modules_within(model, resolve_layers(model, config.ignore_layers))
    out = []
    for layer in layers:
        ok, why = factorizable(layer.module)
        if ok and layer.name in ignored:
            ok, why = False, "listed in ignore_layers"
        if ok and layer.calls == 0:
            ok, why = False, "not called in the forward pass"
        if ok and layer.calls > 1:
            ok, why = False, f"called {layer.calls} times per forward (shared weights)"
        if ok and layer.dense_flops < config.min_layer_flops:
            ok, why = False, f"{layer.dense_flops} FLOPs < min_layer_flops"
        layer.record = {"name": layer.name, "kind": "skipped", "replaced": False, "reason": why}
        if layer.calls:
            layer.record["flops_before"] = layer.record["flops_after"] = layer.dense_flops
        if ok:
            layer.basis = decompose(layer.module)
            layer.record.update({"kind": layer.basis.kind, "reason": "",
                                 "max_ranks": list(layer.basis.max_ranks)})
            out.append(layer)
    return out


# ---- rank choice ------------------------------------------------------------------------------

def _per_layer_ranks(layer: _Layer, config: FactorizeConfig) -> tuple[int, ...]:
    basis, w = layer.basis, layer.module.weight.detach()
    if config.method == "energy":
        ranks = tuple(energy_rank(s, config.energy) for s in basis.spectra)
    elif basis.kind == "tucker2":  # Kim et al.: VBMF on the input- and output-mode unfoldings
        c_out, c_in = w.shape[:2]
        ranks = (evbmf_rank(w.transpose(0, 1).reshape(c_in, -1)), evbmf_rank(w.reshape(c_out, -1)))
    else:
        ranks = (evbmf_rank(w.reshape(w.shape[0], -1)),)
    layer.record["ranks_selected"] = list(ranks)
    return tuple(round_rank(r, config.rank_multiple, m) for r, m in zip(ranks, basis.max_ranks))


def _replay_ranks(candidates: list[_Layer], wanted: dict[str, tuple[int, ...]]) -> None:
    known = {lay.name: lay for lay in candidates}
    missing = sorted(set(wanted) - set(known))
    if missing:
        raise PassError(f"layer_ranks names layers that cannot be factorized here: {missing}",
                        "replay a plan on the model it was made for")
    for layer in candidates:
        if layer.name in wanted:
            layer.ranks = layer.basis.clamp(tuple(wanted[layer.name]))
        else:
            layer.record["reason"] = "not in layer_ranks"


def _options(layer: _Layer, config: FactorizeConfig, cost) -> list[Option]:
    """Dense plus every rank choice on the layer's grid, with cost and lost energy."""
    basis = layer.basis
    grids = [rank_grid(m, config.rank_multiple) for m in basis.max_ranks]
    opts = [Option(None, cost(layer, None), 0.0)]
    if basis.kind == "tucker2":
        for r_in in grids[0]:
            for r_out in grids[1]:
                opts.append(Option((r_in, r_out), cost(layer, (r_in, r_out)),
                                   basis.energy_lost((r_in, r_out))))
    else:
        opts += [Option((r,), cost(layer, (r,)), basis.energy_lost((r,))) for r in grids[0]]
    return opts


def _allocate_globally(model: nn.Module, candidates: list[_Layer], config: FactorizeConfig,
                       timer: "_LayerTimer", shape: tuple[int, ...], model_flops: int
                       ) -> dict[str, Any]:
    """Spread a FLOPs or latency saving over the layers (greedy on convex hulls); layers whose
    allocated form is not faster when measured are taken out and the rest re-allocated."""
    if config.method == "flops_target":
        unit, goal = "flops", config.flops_reduction * model_flops
        cost = lambda lay, r: float(lay.dense_flops if r is None else lay.flops(r))  # noqa: E731
    else:
        if not timer.available:
            raise PassError(f"latency_target needs to measure on the target: {timer.why}",
                            "use method flops_target")
        model_ms = timer.time_model(model, shape)
        unit, goal = "ms", config.latency_reduction * model_ms
        models = {lay.name: timer.fit_layer(lay) for lay in candidates}
        cost = lambda lay, r: models[lay.name](None if r is None else lay.flops(r))  # noqa: E731
    pool = [lay for lay in candidates if not config.require_cheaper or
            lay.flops((1,) * len(lay.basis.max_ranks)) < lay.dense_flops]
    for lay in candidates:
        if lay not in pool:
            lay.record["reason"] = "no rank makes it cheaper in FLOPs"
    rounds = []
    for _ in range(_MAX_REALLOCATIONS):
        chosen, saved = allocate({lay.name: _options(lay, config, cost) for lay in pool}, goal)
        for lay in pool:
            lay.ranks = chosen[lay.name].ranks
        slower = []
        if config.check_latency and config.require_cheaper and timer.available:
            for lay in pool:
                if lay.ranks is not None and lay.flops(lay.ranks) < lay.dense_flops:
                    if not _fast_enough(lay, config, timer):
                        slower.append(lay)
        rounds.append({"saving_goal": goal, "saving_allocated": saved,
                       "taken_out_as_slower": [lay.name for lay in slower]})
        if not slower:
            break
        for lay in slower:
            lay.record["reason"] = _slower_reason(lay)
            lay.ranks = None
        pool = [lay for lay in pool if lay not in slower]
    for lay in candidates:
        if lay.ranks is None and not lay.record["reason"]:
            lay.record["reason"] = "the allocation kept it dense"
    result = {"unit": unit, "goal": goal, "rounds": rounds,
              "reached": bool(rounds and rounds[-1]["saving_allocated"] >= goal * (1 - 1e-9))}
    if unit == "ms":
        result["model_ms_inprocess"] = model_ms
    return result


# ---- is it cheaper? ---------------------------------------------------------------------------

def _decide(layer: _Layer, config: FactorizeConfig, enforce: bool,
            timer: "_LayerTimer | None") -> None:
    """Replace the layer at its ranks only where it is cheaper (when `enforce`)."""
    rec = layer.record
    if layer.ranks is None:
        rec["reason"] = rec["reason"] or "kept dense"
        return
    flops = layer.flops(layer.ranks)
    rec.update({"ranks": list(layer.ranks), "rel_error": round(layer.basis.rel_error(layer.ranks), 6),
                "flops_factorized": flops})
    if enforce:
        if flops >= layer.dense_flops:
            rec["reason"] = f"factorized form needs more FLOPs ({flops} vs {layer.dense_flops})"
            return
        if timer is not None and not _fast_enough(layer, config, timer):
            rec["reason"] = _slower_reason(layer)
            return
    how = ("cheaper in FLOPs" + (" and measured faster" if timer is not None else "")
           if enforce else "replaced as asked (layer_ranks)" if config.layer_ranks
           else "replaced unconditionally (require_cheaper=False)")
    rec.update({"replaced": True, "flops_after": flops, "reason": how})


def _fast_enough(layer: _Layer, config: FactorizeConfig, timer: "_LayerTimer") -> bool:
    """Time the layer at its current ranks (unless already timed at them) against the dense one."""
    rec = layer.record
    if rec.get("measured_ranks") != list(layer.ranks):
        fact = build(layer.module, layer.basis, layer.ranks).eval()
        t = timer.time_pair(layer.module, fact, layer.in_shape)
        rec.update({"latency_ms_before": round(t["dense_ms"], 4),
                    "latency_ms_after": round(t["factorized_ms"], 4),
                    "latency_median_ms_before": round(t["dense_median_ms"], 4),
                    "latency_median_ms_after": round(t["factorized_median_ms"], 4),
                    "measured_ranks": list(layer.ranks)})
    return rec["latency_ms_before"] >= config.min_layer_speedup * rec["latency_ms_after"]


def _slower_reason(layer: _Layer) -> str:
    rec = layer.record
    return (f"not faster on the target: {rec['latency_ms_after']:.3f} ms factorized vs "
            f"{rec['latency_ms_before']:.3f} ms dense")


class _LayerTimer:
    """Micro-benchmarks on the target: its thread count, its device when this host has it."""

    def __init__(self, target: Any, budget_s: float = 0.6, rounds: int = 3):
        self.threads = getattr(target, "threads", None)
        self.device = getattr(target, "device", "cpu") or "cpu"
        self.budget_s, self.rounds = budget_s, rounds
        self.available, self.why = True, ""
        if self.device == "cuda" and not torch.cuda.is_available():
            self.available, self.why = False, "the target is a CUDA device and this host has none"

    def describe(self) -> dict[str, Any] | str:
        if not self.available:
            return f"skipped: {self.why} (FLOPs decide alone)"
        return {"runtime": "torch eager (layer alone, interleaved with the dense layer)",
                "threads": self.threads or torch.get_num_threads(), "device": self.device,
                "statistic": "min of interleaved runs (median recorded too)"}

    @contextlib.contextmanager
    def _threads(self):
        old = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(int(self.threads))
        try:
            yield
        finally:
            torch.set_num_threads(old)

    def _timed(self, fn):
        if self.device == "cuda":
            def run():
                fn()
                torch.cuda.synchronize()
            return run
        return fn

    def time_pair(self, dense: nn.Module, fact: nn.Module, in_shape: tuple[int, ...]
                  ) -> dict[str, float]:
        """Dense and factorized layer timed in alternating rounds on the same input.

        Returns median and minimum ms of each. Decisions use the minimum: both layers see the
        same machine in alternation, and on a shared host the median carries other processes'
        load (seen here as 16 ms scheduler quanta) while the minimum does not.
        """
        x = torch.randn(in_shape, generator=torch.Generator().manual_seed(0))
        dense, fact = dense.to(self.device), fact.to(self.device)
        x = x.to(dtype=next(dense.parameters()).dtype, device=self.device)
        fns = [self._timed(lambda: dense(x)), self._timed(lambda: fact(x))]
        with self._threads():
            per_pair = max(probe_seconds(fns), 1e-6)  # one call each, also the first warm-up
            repeats = int(min(50, max(5, self.budget_s / self.rounds / per_pair)))
            times = time_interleaved(fns, self.rounds, repeats, block_warmup=1,
                                     block_seconds=self.budget_s / self.rounds)
        (dense_ms, fact_ms), (dense_med, fact_med) = times.mins, times.medians
        return {"dense_ms": dense_ms, "factorized_ms": fact_ms,
                "dense_median_ms": dense_med, "factorized_median_ms": fact_med}

    def time_model(self, model: nn.Module, shape: tuple[int, ...]) -> float:
        x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(self.device)
        was = model.training
        model.eval()
        try:
            with self._threads():
                stats = time_inprocess(self._timed(lambda: model(x)), warmup=3, repeats=30,
                                       max_seconds=3.0)
        finally:
            model.train(was)
        return stats.min

    def fit_layer(self, layer: _Layer):
        """Latency model of one layer: dense ms measured; factorized ms ≈ a + b·FLOPs fitted to
        probes at 1/8, 1/4, 1/2 and 3/4 of the full ranks."""
        probes, dense_ms = [], []
        for frac in (0.125, 0.25, 0.5, 0.75):
            ranks = layer.basis.clamp(tuple(max(1, int(round(frac * m)))
                                            for m in layer.basis.max_ranks))
            fact = build(layer.module, layer.basis, ranks).eval()
            t = self.time_pair(layer.module, fact, layer.in_shape)
            dense_ms.append(t["dense_ms"])
            probes.append((layer.flops(ranks), t["factorized_ms"]))
        flops = np.array([p[0] for p in probes], dtype=np.float64)
        ms = np.array([p[1] for p in probes], dtype=np.float64)
        b, a = np.polyfit(flops, ms, 1) if len(set(flops)) > 1 else (0.0, float(ms.mean()))
        if b <= 0 or a < 0:  # noise: fall back to proportional
            a, b = 0.0, float((ms / np.maximum(flops, 1)).mean())
        dense = float(statistics.median(dense_ms))
        layer.record["latency_model"] = {"dense_ms": round(dense, 4), "ms_intercept": float(a),
                                         "ms_per_mflop": float(b * 1e6),
                                         "probes": [[int(f), round(float(m), 4)]
                                                    for f, m in probes]}
        return lambda fl: dense if fl is None else float(a + b * fl)


# ---- model edits, counts, fine-tune -----------------------------------------------------------


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
