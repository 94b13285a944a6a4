"""Channel removal with torch-pruning's dependency graph (DepGraph), and what must stay whole.

`prune_channels` drives torch-pruning's pruner to a channel ratio (global or local ranking, in
one or more steps, every group capped at `max_layer_ratio` of its initial channels) and records
the removed *original* channel indices per module and the pruning history, which `replay` redoes
on the original weights. `protected_layers` finds what is never pruned: the output layer, the
user's `ignore_layers`, and the producers of their inputs. The coupling of layers (residual adds,
concatenations, depthwise/grouped convs, BatchNorm) always comes from the DepGraph (Fang et al.,
2023; arXiv:2301.12900). Used by the ``prune_structured`` pass (`advisor.passes.structured`).
"""
from __future__ import annotations

import copy
import math
import warnings
from typing import TYPE_CHECKING, Any

import torch
import torch_pruning as tp
from torch import nn

from advisor.errors import PassError
from advisor.passes.blockwise import GRAPH_ERRORS, find_blocks, regroups_channels
from advisor.passes.importance import make_importance
from advisor.passes.torch_common import output_layer, prunable_within, resolve_layers

if TYPE_CHECKING:
    from advisor.passes.structured import StructuredPruneConfig

_ROOT_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_CHANNEL_TYPES = _ROOT_TYPES + (nn.modules.batchnorm._BatchNorm,)


def prune_channels(model: nn.Module, ratio: float, config: StructuredPruneConfig,
                   example: torch.Tensor, protect: dict, data: dict) -> dict[str, Any]:
    """Prune `model` in place to `ratio` of channels removed; returns what was removed."""
    model.eval()
    names = {m: n for n, m in model.named_modules()}
    before = {n: _out_channels(m) for n, m in model.named_modules() if isinstance(m, _CHANNEL_TYPES)}
    alive = {n: list(range(c)) for n, c in before.items()}
    removed: dict[str, list[int]] = {n: [] for n in before}
    importance = make_importance(config.criterion, config.scope, **data)
    modules = dict(model.named_modules())
    record: dict[str, Any] = {"ratio": ratio, "iterative_steps": config.iterative_steps}
    if ratio > 0:
        try:
            if regroups_channels(model, example):
                raise ZeroDivisionError  # DepGraph would map the regrouped channels wrongly
            pruners = [(model, _make_pruner(model, example, ratio, config, importance,
                                            [modules[n] for n in protect["layers"]]))]
        except GRAPH_ERRORS:  # DepGraph cannot map a channel regrouping: prune inside blocks
            pruners = _block_pruners(model, example, ratio, config, importance, protect, record)
        try:
            _prune_steps(model, pruners, config, importance, names, alive, removed)
        except GRAPH_ERRORS as e:  # DepGraph lost the channels
            raise PassError(f"prune_structured: torch-pruning cannot follow the channels through "
                            f"this model's graph ({_where(e)}); reshapes that regroup channels "
                            "are not supported",
                            "use factorization or int8 for this model, or ignore_layers the "
                            "blocks involved") from e
        model.zero_grad(set_to_none=True)
        if "blockwise" in record:
            record["history"] = []
            record["blockwise"]["blocks"] = [
                {**b, "history": _json_history(p.pruning_history())}
                for b, (_, p) in zip(record["blockwise"]["blocks"], pruners)]
        else:
            record["history"] = _json_history(pruners[0][1].pruning_history())
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


def _make_pruner(model, example, ratio, config, importance, ignored):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tp.pruner.BasePruner(
            model, example, importance=importance, global_pruning=config.scope == "global",
            pruning_ratio=ratio, iterative_steps=config.iterative_steps,
            ignored_layers=ignored, round_to=config.round_to,
            max_pruning_ratio=config.max_layer_ratio,
            root_module_types=list(_ROOT_TYPES))


def _block_pruners(model, example, ratio, config, importance, protect, record) -> list:
    """One pruner per block whose graph builds, its interface and protected layers ignored."""
    blocks = find_blocks(model, example, _ROOT_TYPES)
    if not blocks:
        raise PassError("prune_structured: torch-pruning cannot follow the channels through "
                        "this model's graph, nor through any of its blocks alone",
                        "use factorization or int8 for this model")
    modules = dict(model.named_modules())
    protected = {modules[n] for n in protect["layers"]}
    pruners, recs = [], []
    for b in blocks:
        pruner = _make_pruner(b.wrapper, torch.zeros(b.input_shape), ratio, config, importance,
                              [*b.probes, *b.interface])
        inside = [m for m in b.module.modules() if m in protected]
        feeding = [p for m in inside for p in producers_in(pruner.DG, m)]
        pruner.ignored_layers = list(pruner.ignored_layers) + inside + feeding
        pruners.append((b.wrapper, pruner))
        recs.append({"block": b.name, "input_shape": list(b.input_shape)})
    record["blockwise"] = {
        "why": "torch-pruning cannot build one dependency graph of this model (a reshape that "
               "regroups channels, e.g. a channel shuffle); each block's inner channels were "
               "pruned and every block's input and output widths kept",
        "blocks": recs}
    return pruners


def _prune_steps(model, pruners, config, importance, names, alive, removed) -> None:
    """torch-pruning's pruners, step by step, with every group capped and tracked."""
    checks = []
    for _, pruner in pruners:
        # torch-pruning silently skips a group whose every channel falls under the global
        # threshold; we let it through and cap it at max_layer_ratio ourselves (_cap).
        dg = pruner.DG
        checks.append((dg, dg.check_pruning_group))
        dg.check_pruning_group = lambda group: True
    try:
        for _ in range(config.iterative_steps):
            importance.prepare(model)  # scores keyed by module: valid inside blocks too
            for (_, pruner), (_, check) in zip(pruners, checks):
                for group in pruner.step(interactive=True):
                    group = _cap(group, pruner, importance, config)
                    if group is None or not check(group):
                        continue
                    _track(group, names, alive, removed)
                    group.prune()
    finally:
        for dg, check in checks:
            dg.check_pruning_group = check


def _where(e: BaseException) -> str:
    import traceback
    from pathlib import Path

    tb = traceback.extract_tb(e.__traceback__)[-1]
    return f"{type(e).__name__} in {Path(tb.filename).name}:{tb.lineno}"


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
    """The output layer and the user's layers (with the producers of their inputs), and in a
    transformer the layers that write its token width (see `attention_protected`)."""
    out_layer = output_layer(model, example)
    user = prunable_within(model, resolve_layers(model, ignore_layers))
    producers = _input_producers(model, example, user)
    attention = attention_protected(model)
    layers = sorted(set([out_layer] if out_layer else []) | set(user) | set(producers) |
                    set(attention))
    return {"output_layer": out_layer, "ignore_layers": sorted(user),
            "input_producers": sorted(set(producers) - set(user)),
            "attention": sorted(set(attention) - set(user)), "layers": layers}


# window attention indexes its relative-position table by head and window: torch-pruning's
# DepGraph over torchvision's swin_t did not finish within 23 GB here
_UNSUPPORTED_ATTENTION = ("ShiftedWindowAttention", "ShiftedWindowAttentionV2", "WindowAttention")


def refuse_unsupported(model: nn.Module) -> None:
    """A PassError, before any work, for blocks structured pruning cannot follow."""
    for name, m in model.named_modules():
        if type(m).__name__ in _UNSUPPORTED_ATTENTION:
            raise PassError(f"prune_structured: cannot prune through the shifted-window attention "
                            f"{name} ({type(m).__name__}): its relative-position bias is indexed "
                            "by head and window, which torch-pruning's dependency graph does not "
                            "follow", "use int8 or factorization for Swin models")


def _attention_modules(model: nn.Module) -> list[tuple[str, nn.Module, int]]:
    """(name, module, embedding width) of every attention block: nn.MultiheadAttention, or a
    module with `num_heads` and a qkv projection (timm's Attention)."""
    found = []
    for name, m in model.named_modules():
        if isinstance(m, nn.MultiheadAttention):
            found.append((name, m, m.embed_dim))
        elif isinstance(getattr(m, "num_heads", None), int) and \
                isinstance(getattr(m, "qkv", None), nn.Linear):
            found.append((name, m, m.qkv.in_features))
    return found


def attention_protected(model: nn.Module) -> list[str]:
    """In a transformer, the layers whose output is the token width or feeds attention.

    The token width (ViT-B: 768) runs through the patch embedding, every residual add,
    LayerNorm, the class token and the position embedding, and models read it back from a
    Python attribute (`hidden_dim`) to reshape; the attention's q/k/v widths are split into
    heads the same way. Pruning either breaks the forward pass (measured: torchvision's ViT
    fails in `_process_input`, timm's in `Attention.forward`). What stays prunable is each MLP's
    hidden width (ViT-B: 3072), coupled only to the next Linear — the bulk of a ViT's FLOPs."""
    attn = _attention_modules(model)
    if not attn:
        return []
    widths = {w for _, _, w in attn}  # q/k/v projections are inside the attention blocks
    inside = {n for an, _, _ in attn for n, _ in model.named_modules()
              if n == an or n.startswith(an + ".")}
    out = []
    for n, m in model.named_modules():
        if not isinstance(m, _ROOT_TYPES):
            continue
        if n in inside or _out_channels(m) in widths:
            out.append(n)
    return out


def _input_producers(model: nn.Module, example: torch.Tensor, layers: list[str]) -> list[str]:
    """Layers whose output channels feed the inputs of `layers` (so those inputs stay whole).

    Where no graph of the whole model builds, blockwise pruning (which keeps each block's
    interface) finds the producers inside each block (`producers_in`)."""
    if not layers:
        return []
    model.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dg = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    except GRAPH_ERRORS:
        return []
    modules = dict(model.named_modules())
    names = {m: n for n, m in modules.items()}
    out: list[str] = []
    for n in layers:
        for t in producers_in(dg, modules[n]):
            if names.get(t) not in out:
                out.append(names[t])
    return out


def producers_in(dg, module: nn.Module) -> list[nn.Module]:
    """The layers of `dg` whose output channels are coupled to `module`'s input channels."""
    pruner = dg.get_pruner_of_module(module)
    cin = dg.get_in_channels(module)
    if pruner is None or not cin:
        return []
    group = dg.get_pruning_group(module, pruner.prune_in_channels, list(range(cin)))
    return [dep.target.module for dep, _ in group
            if isinstance(dep.target.module, _ROOT_TYPES) and dg.is_out_channel_pruning_fn(dep.handler)]
