"""Students for knowledge distillation: a width-reduced copy of the teacher, or a named factory.

The width-reduced student is the registered ``prune_structured`` pass applied to the teacher (L2
magnitude, the same channel ratio in every layer, sized to a FLOPs fraction), re-initialised
unless ``init="inherit"`` keeps the surviving teacher weights. A named architecture
``pkg.module:factory`` is imported and called (so name only code you trust, as with ``--arch``).
Used by the ``distill_student`` pass (`advisor.passes.distill`).
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from torch import nn

from advisor.errors import PassError
from advisor.passes.base import PassContext, get_pass
from advisor.passes.torch_common import count_flops, example_input, reinitialise
from advisor.train import seed_everything

if TYPE_CHECKING:
    from advisor.passes.distill import DistillStudentConfig


def build_student(teacher: nn.Module, config: DistillStudentConfig, ctx: PassContext
                  ) -> tuple[nn.Module, dict[str, Any]]:
    """The untrained student of `config` and what it is (FLOPs relative to the teacher)."""
    seed_everything(ctx.seed)
    shape = _flops_shape(ctx)
    teacher_flops, teacher_params = count_flops(teacher, shape)
    if config.student_arch:
        student = _from_factory(config.student_arch, config.student_kwargs)
        info: dict[str, Any] = {"source": config.student_arch,
                                "kwargs": dict(config.student_kwargs), "init": "scratch"}
    else:
        student, prune_info = width_reduced_copy(teacher, ctx, flops_fraction=config.flops_fraction,
                                                 channel_ratio=config.channel_ratio)
        if config.init == "scratch":
            seed_everything(ctx.seed)
            reinitialise(student, include_root=False, required=False)
        info = {"source": "width-reduced teacher (prune_structured: l2 magnitude, local scope)",
                "channel_ratio": prune_info.get("ratio"), "init": config.init}
    student_flops, student_params = count_flops(student, shape)
    info.update({"flops": student_flops, "teacher_flops": teacher_flops,
                 "flops_fraction": round(student_flops / teacher_flops, 6) if teacher_flops
                 else None, "params": student_params, "teacher_params": teacher_params})
    return student, info


def width_reduced_copy(teacher: nn.Module, ctx: PassContext, *, flops_fraction: float = 0.25,
                       channel_ratio: float | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """A copy of `teacher` with fewer channels in every layer → (model, prune_structured info).

    Uses the registered ``prune_structured`` pass (torch-pruning DepGraph; L2 magnitude, the same
    ratio in every layer, the classifier's outputs kept): `channel_ratio` = share of channels
    removed, else the smallest ratio bringing FLOPs down to `flops_fraction` of the teacher's.
    """
    spec = get_pass("prune_structured")
    if channel_ratio is not None:
        if not 0 <= channel_ratio < 1:
            raise PassError(f"channel_ratio must be in [0, 1), got {channel_ratio}")
        cfg = spec.config_cls(criterion="l2", scope="local", ratio=channel_ratio)
    else:
        if not 0 < flops_fraction <= 1:
            raise PassError(f"flops_fraction must be in (0, 1], got {flops_fraction}")
        if flops_fraction == 1:
            cfg = spec.config_cls(criterion="l2", scope="local", ratio=0.0)
        else:
            cfg = spec.config_cls(criterion="l2", scope="local",
                                  flops_reduction=1.0 - flops_fraction)
    result = spec.apply(teacher, cfg, ctx)
    return result.model, result.info


def _flops_shape(ctx: PassContext) -> tuple[int, ...]:
    shape = tuple(ctx.input_shape) if ctx.input_shape else tuple(example_input(ctx, min_rows=2).shape)
    return (1, *shape[1:])


def _from_factory(spec: str, kwargs: dict[str, Any]) -> nn.Module:
    mod_name, _, attr = spec.partition(":")
    if not mod_name or not attr:
        raise PassError(f"student_arch {spec!r} is not of the form pkg.module:factory")
    try:
        factory = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as e:
        raise PassError(f"cannot import student_arch {spec!r}: {e}") from None
    try:
        student = factory(**kwargs)
    except TypeError as e:
        raise PassError(f"student_arch {spec!r} rejected its kwargs: {e}") from None
    if not isinstance(student, nn.Module):
        raise PassError(f"student_arch {spec!r} returned {type(student).__name__}, "
                        "not a torch.nn.Module")
    return student
