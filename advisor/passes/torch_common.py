"""torch helpers shared by the torch-stage passes (pruning, sparsity, factorization,
distillation, fine-tuning), so that no technique module imports another.

- refusals: `require_module`, `require_training`; the budget: `budget_train_config`;
- the model: `example_input`, `output_layer`, `resolve_layers` (names or ``re:`` patterns),
  `prunable_within`, `modules_within`, `set_module`, `reinitialise`, `count_flops`;
- data: `take_batches`, `val_accuracy`;
- sparsity: `target_layers`, `sparsity_info`, `NO_SPEEDUP`.
"""
from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

from advisor.errors import PassError
from advisor.passes.base import PassContext
from advisor.sparse import (PRUNABLE, CSRLinear, layer_sparsity, overall_sparsity,
                            prunable_layers, set_module, storage_report)
from advisor.train import TrainConfig, evaluate, seed_everything

__all__ = ["NO_SPEEDUP", "budget_train_config", "count_flops", "example_input", "modules_within",
           "output_layer", "prunable_within", "reinitialise", "require_module",
           "require_training", "resolve_layers", "set_module", "sparsity_info", "take_batches",
           "target_layers", "val_accuracy"]


# ---- refusals and the budget ------------------------------------------------------------


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
    """A TrainConfig whose epochs and seconds respect both the pass config and ctx.budget.

    `stop_after_epochs` (in kwargs) pins a replay to the epochs a time-limited run reached;
    `size_to_time` (in kwargs) sizes the run to the time cap (`advisor.train.size_to_seconds`)."""
    budget = ctx.budget
    if budget is not None and budget.epochs is not None:
        epochs = min(epochs, budget.epochs)
    caps = [s for s in (max_seconds, budget.seconds if budget else None) if s is not None]
    if kwargs.get("size_to_time") and not caps:
        kwargs["size_to_time"] = False  # nothing to size to (e.g. a pinned replay)
    return TrainConfig(epochs=max(1, epochs), max_seconds=min(caps) if caps else None, lr=lr,
                       seed=ctx.seed, **kwargs)


def pinned_replay(config, tc: TrainConfig, report) -> dict | None:
    """The config that replays a training run exactly when its budget shaped it: the epochs and
    batches per epoch the time-based sizing chose (`report.sizing`) and, when the time limit
    still stopped it, the epochs it reached (`stop_after_epochs`, the schedule's length kept);
    the time limit dropped. None when the budget did not shape the run.

    The search writes this into the plan it records (`replay_config` in the step's info), so
    `advisor apply` trains as the measured trial did, whatever the replaying machine's speed."""
    import dataclasses

    from advisor.passes.config import config_to_dict

    sizing = report.sizing
    resized = sizing is not None and (sizing["epochs"], sizing["batches_per_epoch"]) != \
        (sizing["asked_epochs"], sizing["batches"])
    if report.stopped_by != "time" and not resized:
        return None
    changes: dict = {"max_seconds": None}
    if resized:
        changes.update(epochs=sizing["epochs"], max_batches_per_epoch=sizing["batches_per_epoch"])
    else:
        changes["epochs"] = tc.epochs
    if report.stopped_by == "time":
        changes["stop_after_epochs"] = report.epochs_run
    return config_to_dict(dataclasses.replace(config, **changes))


def val_accuracy(model: nn.Module, ctx: PassContext) -> float | None:
    """Accuracy on ctx.val_loader (None without validation data)."""
    if ctx.val_loader is None:
        return None
    return evaluate(model, ctx.val_loader, ctx.device)


# ---- the model ---------------------------------------------------------------------------


def example_input(ctx: PassContext, *, max_rows: int | None = None,
                  min_rows: int | None = None) -> torch.Tensor:
    """The context's example input (zeros of `ctx.input_shape` without one), cut to at most
    `max_rows` rows or repeated to at least `min_rows` (e.g. 2 for batch statistics)."""
    if ctx.example_inputs and isinstance(ctx.example_inputs[0], torch.Tensor):
        x = ctx.example_inputs[0]
    else:
        x = torch.zeros(ctx.input_shape)
    if max_rows is not None and x.shape[0] > max_rows:
        x = x[:max_rows]
    if min_rows is not None and x.shape[0] < min_rows:
        x = x.expand(min_rows, *x.shape[1:]).contiguous()
    return x


@torch.no_grad()
def output_layer(model: nn.Module, example: torch.Tensor) -> str | None:
    """Name of the last Conv/Linear layer run in the forward pass (the classifier)."""
    order: list[str] = []
    handles = [m.register_forward_hook(lambda mod, i, o, n=n: order.append(n))
               for n, m in model.named_modules() if isinstance(m, PRUNABLE)]
    was = model.training
    model.eval()
    try:
        model(example)
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    return order[-1] if order else None


def resolve_layers(model: nn.Module, patterns: tuple[str, ...]) -> list[str]:
    """Module names matching exact names or ``re:`` patterns; an unmatched entry is an error."""
    names = [n for n, _ in model.named_modules() if n]
    out: list[str] = []
    for p in patterns:
        if p.startswith("re:"):
            rx = re.compile(p[3:])
            hits = [n for n in names if rx.fullmatch(n)]
        else:
            hits = [p] if p in names else []
        if not hits:
            raise PassError(f"ignore_layers entry {p!r} matches no module",
                            f"module names look like: {', '.join(names[:6])} ...")
        out += [h for h in hits if h not in out]
    return out


def prunable_within(model: nn.Module, names: list[str]) -> list[str]:
    """The Conv/Linear layers at or under the named modules."""
    out = []
    for name in names:
        for sub, m in model.get_submodule(name).named_modules():
            full = f"{name}.{sub}" if sub else name
            if isinstance(m, PRUNABLE) and full not in out:
                out.append(full)
    return out


def modules_within(model: nn.Module, names: list[str]) -> set[str]:
    """The named modules and every module inside them."""
    all_names = [n for n, _ in model.named_modules() if n]
    return {n for n in all_names if any(n == h or n.startswith(h + ".") for h in names)}


def reinitialise(model: nn.Module, seed: int | None = None, *, include_root: bool = True,
                 required: bool = True) -> int:
    """Fresh weights from every module's own `reset_parameters` (seeded when `seed` is given);
    returns how many. `include_root`: the model itself too; `required`: no such module is an
    error (an editable model built in code is needed)."""
    if seed is not None:
        seed_everything(seed)
    count = 0
    for m in model.modules():
        if m is model and not include_root:
            continue
        if hasattr(m, "reset_parameters") and callable(m.reset_parameters):
            m.reset_parameters()
            count += 1
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            m.reset_running_stats()
    if count == 0 and required:
        raise PassError("no layer of this model can be re-initialised (no reset_parameters)",
                        "pruning at initialization needs an editable model built in code")
    return count


def count_flops(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[int, int]:
    """(FLOPs, params) at `input_shape`; one multiply-add = one flop (fvcore convention)."""
    from advisor.measure.flops import count_flops as measure_flops

    params = sum(p.numel() for p in model.parameters())
    return int(measure_flops(model, tuple(input_shape)).total), int(params)


# ---- data ----------------------------------------------------------------------------------


def take_batches(loader, n: int, labelled: bool) -> list:
    """Batches from `loader` holding `n` inputs in all (the last one cut to size)."""
    out, seen = [], 0
    for batch in loader:
        if isinstance(batch, (list, tuple)):
            x = batch[0]
            y = batch[1] if len(batch) > 1 else None
        else:
            x, y = batch, None
        x = x[:n - seen]
        if labelled:
            if y is None or not bool((torch.as_tensor(y) >= 0).all()):
                continue
            out.append((x, torch.as_tensor(y)[:len(x)]))
        else:
            out.append(x)
        seen += len(x)
        if seen >= n:
            break
    return out


# ---- sparsity ------------------------------------------------------------------------------


NO_SPEEDUP = ("none: dense CPU kernels skip no zeros, so masked weights cost the same time; "
              "the gain is the compressed storage")


def target_layers(model: nn.Module, example: torch.Tensor, ignore_layers: tuple[str, ...],
                  prune_output_layer: bool) -> list[str]:
    """Conv/Linear layers to sparsify: all but the user's and (unless asked) the output layer."""
    skip = set(prunable_within(model, resolve_layers(model, ignore_layers)))
    if not prune_output_layer:
        out = output_layer(model, example)
        if out:
            skip.add(out)
    names = [n for n, m in prunable_layers(model).items()
             if n not in skip and not isinstance(m, CSRLinear)]
    if not names:
        raise PassError("no Conv/Linear layer is left to sparsify",
                        "check ignore_layers (the output layer is kept unless "
                        "prune_output_layer is set)")
    return names


def sparsity_info(model: nn.Module, names: list[str], scope: str) -> dict[str, Any]:
    per_layer = layer_sparsity(model)
    storage = storage_report(model)
    return {"scope": scope, "sparsity": round(overall_sparsity(model, names), 6),
            "layer_sparsity": {n: per_layer[n] for n in names},
            "dense_bytes": storage["dense_bytes"],
            "compressed_bytes": storage["compressed_bytes"],
            "zlib_bytes": storage["zlib_bytes"],
            "compression_ratio": storage["compression_ratio"],
            "storage_formats": {n: storage["layers"][n]["format"] for n in names}}
