"""Knowledge distillation: response-, feature- and relation-based, for recovery and for students.

Two passes:
- ``distill`` — recovery (use (a)): the model passed in (pruned, factorized, ...) is the student,
  `ctx.teacher` (the original model) the teacher.
- ``distill_student`` — a smaller student trained from scratch (use (b)): a width-reduced copy
  of the model passed in (the ``prune_structured`` pass: L2 magnitude, the same channel ratio in
  every layer, sized to a FLOPs fraction; parameters re-initialised unless ``init="inherit"``,
  which keeps the surviving teacher weights), or an architecture named as
  ``pkg.module:factory`` (imported and called, so name only code you trust, as with ``--arch``).
  The model passed in is the teacher.

Kinds of knowledge (``config.kind``; losses in `advisor.passes.kd_losses`):
- ``response`` — *Distilling the Knowledge in a Neural Network* (Hinton et al., 2015;
  arXiv:1503.02531): alpha · T²·KL on temperature-softened outputs + a hard-label term.
- ``feature`` — *FitNets: Hints for Thin Deep Nets* (Romero et al., 2015; arXiv:1412.6550): L2
  hints between teacher and student feature maps, through a 1x1 adapter where channel counts
  differ (as after structured pruning), + the hard-label term.
- ``relation`` — *Relational Knowledge Distillation* (Park et al., 2019; arXiv:1904.05068): RKD
  distance and angle losses on the batch's embeddings (the input of the last Linear layer, i.e.
  the penultimate features), + the hard-label term.
- ``combined`` — all of the above.

Loss = hard_label_weight·CE + alpha·KD [response] + feature_weight·mean(hints) [feature]
+ rkd_distance_weight·RKD-D + rkd_angle_weight·RKD-A [relation]. ``hard_label_weight=None``
means 1 − alpha when there is a response term, else 1.

Unlabelled data: with ``use_labels=False`` the labels are ignored (a loader may yield dummy -1
labels) and the teacher's soft outputs are the only target — enough for response-based (and
combined) KD. Feature- or relation-only KD without labels has no output-level signal and is
refused. Labels < 0 are treated as "unlabelled" rows even with ``use_labels=True``, so partly
labelled data works too.

Feature pairs are matched automatically by position and shape (`advisor.passes.kd_features`);
``feature_pairs`` overrides the matching with explicit (teacher, student) module names. Students
of ``distill_student`` are built by `advisor.passes.kd_students`.

Budget: ``ctx.budget.kind == "none"`` is refused (PassError); epochs and seconds are capped by the
budget as well as by the config. The teacher runs in eval mode under ``no_grad`` (on a private
copy); the caller's model is never modified.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from advisor.errors import PassError
from advisor.passes.base import PassContext, PassResult, register_pass
from advisor.passes.config import check_config
from advisor.passes import kd_losses
from advisor.passes.kd_features import Taps, classifier_name, resolve_feature_pairs
from advisor.passes.kd_students import build_student
from advisor.passes.torch_common import (budget_train_config, example_input, pinned_replay,
                                         require_module)
from advisor.train import evaluate, resolve_device, train

Kind = Literal["response", "feature", "relation", "combined"]


@dataclass(frozen=True)
class DistillConfig:
    """Recovery distillation from the original model (the teacher) into the given model."""

    CONFIG_VERSION: ClassVar[int] = 3  # 2: stop_after_epochs; 3: max_batches_per_epoch

    kind: Kind = "response"
    temperature: float = field(default=4.0, metadata={"gt": 0.0})
    # weight of the soft (teacher) term of the response loss
    alpha: float = field(default=0.9, metadata={"ge": 0.0})
    # None: 1 - alpha with a response term, else 1
    hard_label_weight: float | None = field(default=None, metadata={"ge": 0.0})
    feature_pairs: tuple[tuple[str, str], ...] = ()  # (teacher module, student module); () = auto
    feature_weight: float = field(default=1.0, metadata={"ge": 0.0})
    # the RKD paper's weights
    rkd_distance_weight: float = field(default=25.0, metadata={"ge": 0.0})
    rkd_angle_weight: float = field(default=50.0, metadata={"ge": 0.0})
    epochs: int = field(default=5, metadata={"ge": 1})
    lr: float = field(default=1e-3, metadata={"gt": 0.0})
    max_seconds: float | None = field(default=None, metadata={"ge": 0.0})
    # set by the search when a time limit stopped the measured run (see pinned_replay)
    stop_after_epochs: int | None = field(default=None, metadata={"ge": 1})
    # a subset of each epoch's batches: set by the search when its time cap sized the run
    max_batches_per_epoch: int | None = field(default=None, metadata={"ge": 1})
    use_labels: bool = True  # False: unlabelled data, the teacher labels it (response KD)

    def __post_init__(self):
        check_config(self)


@dataclass(frozen=True)
class DistillStudentConfig(DistillConfig):
    """A smaller student trained from scratch with the given model as teacher."""

    student_arch: str | None = None  # "pkg.module:factory"; None = width-reduced teacher copy
    student_kwargs: dict[str, Any] = field(default_factory=dict)
    # width-reduced student: target FLOPs / teacher FLOPs (the knob: smaller = smaller student)
    flops_fraction: float = field(default=0.25,
                                  metadata={"knob": "decreasing", "gt": 0.0, "le": 1.0})
    # fraction of channels removed per layer; overrides flops_fraction
    channel_ratio: float | None = field(default=None, metadata={"ge": 0.0, "lt": 1.0})
    init: Literal["scratch", "inherit"] = "scratch"  # re-initialise, or keep surviving weights
    epochs: int = field(default=20, metadata={"ge": 1})
    lr: float = field(default=5e-3, metadata={"gt": 0.0})


# ---- the passes ----------------------------------------------------------------------------

@register_pass("distill", DistillConfig, family="distillation", trains=True,
               summary="Recover accuracy by distilling from the original model")
def apply_distill(model: nn.Module, config: DistillConfig, ctx: PassContext) -> PassResult:
    """Recover accuracy by distilling from the original model (ctx.teacher) into `model`."""
    _check_budget("distill", ctx)
    if ctx.teacher is None:
        raise PassError("distill needs the original model as teacher",
                        "run it inside a plan on an editable PyTorch model")
    require_module("distill", model)
    require_module("distill (teacher)", ctx.teacher)
    student = copy.deepcopy(model)
    info = distill_into(student, ctx.teacher, config, ctx)
    return PassResult(student, info)


@register_pass("distill_student", DistillStudentConfig, family="distillation", trains=True,
               needs_full_retrain=True,
               summary="Train a smaller student from scratch by distillation")
def apply_distill_student(model: nn.Module, config: DistillStudentConfig,
                          ctx: PassContext) -> PassResult:
    """Train a smaller student (width-reduced copy or named architecture); `model` teaches."""
    _check_budget("distill_student", ctx)
    if ctx.budget.kind != "full":
        raise PassError("distill_student trains a new network and needs a full retraining budget",
                        "use --retrain full, or 'distill' to recover a compressed model")
    require_module("distill_student (teacher)", model)
    student, build_info = build_student(model, config, ctx)
    info = {"student": build_info, **distill_into(student, model, config, ctx)}
    return PassResult(student, info)


# ---- training ------------------------------------------------------------------------------

def distill_into(student: nn.Module, teacher: nn.Module, config: DistillConfig,
                 ctx: PassContext) -> dict[str, Any]:
    """Train `student` in place against a private eval-mode copy of `teacher`; returns info."""
    if ctx.train_loader is None:
        raise PassError("distillation needs training data (labelled, or unlabelled inputs for "
                        "response KD)", "pass --train-data")
    has_response = config.kind in ("response", "combined")
    has_feature = config.kind in ("feature", "combined")
    has_relation = config.kind in ("relation", "combined")
    if not config.use_labels and not has_response:
        raise PassError(f"{config.kind} KD without labels has no output-level target",
                        "use kind 'response' or 'combined' for unlabelled data")
    _validate(config)
    hard_w = _hard_label_weight(config, has_response)

    dev = resolve_device(ctx.device)
    teacher = copy.deepcopy(teacher).to(dev).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    example = example_input(ctx, min_rows=2).to(dev)
    _check_outputs(teacher, student.to(dev), example)

    pairs = resolve_feature_pairs(teacher, student, example, config.feature_pairs) \
        if has_feature else []
    adapters = nn.ModuleDict()
    for i, pair in enumerate(pairs):
        if pair.needs_adapter:
            adapters[str(i)] = kd_losses.make_adapter(pair.student_shape[0],
                                                      pair.teacher_shape[0],
                                                      len(pair.student_shape) + 1)
    adapters.to(dev)
    t_emb = s_emb = None
    if has_relation:
        t_emb, s_emb = classifier_name(teacher, example), classifier_name(student, example)

    t_taps = Taps(teacher, [p.teacher for p in pairs], t_emb)
    s_taps = Taps(student, [p.student for p in pairs], s_emb)

    def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        t_taps.clear()
        s_taps.clear()
        with torch.no_grad():
            t_logits = teacher(x)
        s_logits = model(x)
        loss = s_logits.new_zeros(())
        if hard_w:
            loss = loss + hard_w * kd_losses.hard_label_ce(s_logits, y)
        if has_response:
            loss = loss + config.alpha * kd_losses.soft_kl(s_logits, t_logits,
                                                           config.temperature)
        if pairs:
            hints = [kd_losses.hint_loss(s_taps.outputs[p.student], t_taps.outputs[p.teacher],
                                         adapters[str(i)] if p.needs_adapter else None)
                     for i, p in enumerate(pairs)]
            loss = loss + config.feature_weight * torch.stack(hints).mean()
        if has_relation and len(x) >= 3:  # angles need triplets
            s_e, t_e = s_taps.embedding, t_taps.embedding
            loss = loss + config.rkd_distance_weight * kd_losses.rkd_distance_loss(s_e, t_e) \
                + config.rkd_angle_weight * kd_losses.rkd_angle_loss(s_e, t_e)
        return loss

    val_loader = ctx.val_loader if ctx.val_loader is not None and _has_labels(ctx.val_loader) \
        else None
    val_before = evaluate(student, val_loader, dev) if val_loader is not None else None
    budget = budget_train_config(ctx, epochs=config.epochs, lr=config.lr,
                                 max_seconds=config.max_seconds,
                                 stop_after_epochs=config.stop_after_epochs,
                                 max_batches_per_epoch=config.max_batches_per_epoch,
                                 size_to_time=True)
    try:
        report = train(student, ctx.train_loader, budget,
                       val_loader=val_loader, loss_fn=loss_fn,
                       extra_params=list(adapters.parameters()), device=str(dev),
                       progress=ctx.progress, description=f"distilling ({config.kind})")
    finally:
        t_taps.close()
        s_taps.close()
    return {
        "kind": config.kind,
        "weights": {"hard_label": hard_w, "alpha": config.alpha if has_response else 0.0,
                    "temperature": config.temperature,
                    "feature": config.feature_weight if has_feature else 0.0,
                    "rkd_distance": config.rkd_distance_weight if has_relation else 0.0,
                    "rkd_angle": config.rkd_angle_weight if has_relation else 0.0},
        "labels": "used" if config.use_labels else "ignored (teacher-labelled)",
        "feature_pairs": [p.as_dict() for p in pairs],
        "embedding_layers": {"teacher": t_emb, "student": s_emb} if has_relation else None,
        "adapter_params": sum(p.numel() for p in adapters.parameters()),
        "val_accuracy_before": val_before,
        "val_accuracy_after": report.best_val_accuracy,
        "train": report.as_dict(),
        **({"replay_config": pinned} if (pinned := pinned_replay(config, budget, report))
           is not None else {}),
    }


def _validate(config: DistillConfig) -> None:
    if config.temperature <= 0:
        raise PassError(f"temperature must be > 0, got {config.temperature}")
    weights = {"alpha": config.alpha, "hard_label_weight": config.hard_label_weight or 0.0,
               "feature_weight": config.feature_weight,
               "rkd_distance_weight": config.rkd_distance_weight,
               "rkd_angle_weight": config.rkd_angle_weight}
    negative = [k for k, v in weights.items() if v < 0]
    if negative:
        raise PassError(f"loss weights must be >= 0: {', '.join(negative)}")
    if config.epochs < 1 or config.lr <= 0:
        raise PassError("epochs must be >= 1 and lr > 0")


def _hard_label_weight(config: DistillConfig, has_response: bool) -> float:
    if not config.use_labels:
        return 0.0
    if config.hard_label_weight is not None:
        return float(config.hard_label_weight)
    return max(0.0, 1.0 - config.alpha) if has_response else 1.0


def _check_budget(name: str, ctx: PassContext) -> None:
    if ctx.budget is None or not ctx.budget.allows_training:
        raise PassError(f"{name} needs a retraining budget",
                        "allow retraining (--retrain finetune or full)")


@torch.no_grad()
def _check_outputs(teacher: nn.Module, student: nn.Module, example: torch.Tensor) -> None:
    was = student.training
    student.eval()
    try:
        t_out, s_out = teacher(example), student(example)
    finally:
        student.train(was)
    if not (isinstance(t_out, torch.Tensor) and isinstance(s_out, torch.Tensor)) \
            or t_out.shape != s_out.shape:
        raise PassError("teacher and student outputs differ in shape: "
                        f"{tuple(getattr(t_out, 'shape', ()))} vs "
                        f"{tuple(getattr(s_out, 'shape', ()))}",
                        "the student must predict the same classes as the teacher")


def _has_labels(loader) -> bool:
    """Whether a loader's first batch carries real labels (dummy labels are -1)."""
    for batch in loader:
        if not isinstance(batch, (list, tuple)) or len(batch) < 2:
            return False
        return bool((torch.as_tensor(batch[1]) >= 0).any())
    return False
