"""Rank choice for the layers of `factorize`: per layer (retained energy or VBMF), replayed
from recorded `layer_ranks`, or a global FLOPs/latency saving spread over the layers (the greedy
of `lowrank.allocate`), re-allocated when a layer's allocated form is measured slower.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import nn

from advisor.errors import PassError
from advisor.passes.lowrank.allocate import Option, allocate, energy_rank, rank_grid, round_rank
from advisor.passes.lowrank.layers import Layer
from advisor.passes.lowrank.timing import LayerTimer, fast_enough, slower_reason
from advisor.passes.lowrank.vbmf import evbmf_rank

if TYPE_CHECKING:
    from advisor.passes.factorize import FactorizeConfig

_MAX_REALLOCATIONS = 4


def per_layer_ranks(layer: Layer, config: FactorizeConfig) -> tuple[int, ...]:
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


def replay_ranks(candidates: list[Layer], wanted: dict[str, tuple[int, ...]]) -> None:
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


def _options(layer: Layer, config: FactorizeConfig, cost) -> list[Option]:
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


def allocate_globally(model: nn.Module, candidates: list[Layer], config: FactorizeConfig,
                      timer: LayerTimer, shape: tuple[int, ...], model_flops: int
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
                    if not fast_enough(lay, config, timer):
                        slower.append(lay)
        rounds.append({"saving_goal": goal, "saving_allocated": saved,
                       "taken_out_as_slower": [lay.name for lay in slower]})
        if not slower:
            break
        for lay in slower:
            lay.record["reason"] = slower_reason(lay)
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
