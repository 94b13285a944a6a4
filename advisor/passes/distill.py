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

Feature pairs are matched automatically by *position and shape*: a network's feature points are
its blocks (the leaves of its tree of Sequential/ModuleList containers); a *stage* is a run of
consecutive blocks at one spatial resolution, and its last output is the stage's feature. Teacher
and student stages are paired in order where their resolutions agree — after structured pruning
this pairs identical module names (channels differ → adapter); across architectures it pairs the
stages at the same depth and resolution. Vector-only models (MLPs) pair their penultimate
features. ``feature_pairs`` overrides the matching with explicit (teacher, student) module names.

Budget: ``ctx.budget.kind == "none"`` is refused (PassError); epochs and seconds are capped by the
budget as well as by the config. The teacher runs in eval mode under ``no_grad`` (on a private
copy); the caller's model is never modified.
"""
from __future__ import annotations

import copy
import importlib
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from advisor.errors import PassError
from advisor.passes.base import PassContext, PassResult, check_config, register_pass
from advisor.passes import kd_losses
from advisor.passes.torch_common import (budget_train_config, count_flops, example_input,
                                         reinitialise, require_module)
from advisor.train import evaluate, resolve_device, seed_everything, train

Kind = Literal["response", "feature", "relation", "combined"]


@dataclass(frozen=True)
class DistillConfig:
    """Recovery distillation from the original model (the teacher) into the given model."""

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

    t_taps = _Taps(teacher, [p.teacher for p in pairs], t_emb)
    s_taps = _Taps(student, [p.student for p in pairs], s_emb)

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
                                 max_seconds=config.max_seconds)
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


class _Taps:
    """Forward hooks keeping the latest outputs of named modules and the classifier's input."""

    def __init__(self, model: nn.Module, names: list[str], classifier: str | None):
        modules = dict(model.named_modules())
        self.outputs: dict[str, torch.Tensor] = {}
        self.embedding: torch.Tensor | None = None
        self._handles = [modules[n].register_forward_hook(self._keep_output(n)) for n in names]
        if classifier is not None:
            self._handles.append(modules[classifier].register_forward_pre_hook(self._keep_input))

    def _keep_output(self, name: str):
        def hook(module, args, output):
            self.outputs[name] = output
        return hook

    def _keep_input(self, module, args):
        self.embedding = args[0]

    def clear(self) -> None:
        self.outputs.clear()
        self.embedding = None

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


# ---- automatic feature pairing -------------------------------------------------------------

@dataclass(frozen=True)
class FeaturePair:
    teacher: str
    student: str
    teacher_shape: tuple[int, ...]  # per sample: (C, H, W) or (C,)
    student_shape: tuple[int, ...]

    @property
    def needs_adapter(self) -> bool:
        return self.teacher_shape[0] != self.student_shape[0]

    def as_dict(self) -> dict[str, Any]:
        adapter = None
        if self.needs_adapter:
            kind = "conv1x1" if len(self.student_shape) == 3 else "linear"
            adapter = f"{kind} {self.student_shape[0]}->{self.teacher_shape[0]}"
        return {"teacher": self.teacher, "student": self.student,
                "teacher_shape": list(self.teacher_shape),
                "student_shape": list(self.student_shape), "adapter": adapter}


_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
_NOT_FEATURES = (nn.Identity, nn.Dropout, nn.Flatten)


def block_names(model: nn.Module) -> list[str]:
    """The leaves of the model's tree of Sequential/ModuleList/ModuleDict containers."""
    names: list[str] = []

    def walk(prefix: str, module: nn.Module) -> None:
        for name, child in module.named_children():
            full = f"{prefix}.{name}" if prefix else name
            if isinstance(child, _CONTAINERS):
                walk(full, child)
            elif not isinstance(child, _NOT_FEATURES):
                names.append(full)
    walk("", model)
    return names


@torch.no_grad()
def _trace_outputs(model: nn.Module, names: list[str], example: torch.Tensor
                   ) -> list[tuple[str, tuple[int, ...]]]:
    """(name, per-sample output shape) of distinct output tensors, in completion order.

    Modules returning the same tensor (in-place activations, a container and its last child)
    count once: under the innermost, last-finishing name.
    """
    modules = dict(model.named_modules())
    records: list[tuple[str, torch.Tensor]] = []
    handles = [modules[n].register_forward_hook(
        lambda m, a, out, n=n: records.append((n, out)) if isinstance(out, torch.Tensor) else None)
        for n in names]
    was = model.training
    model.eval()
    try:
        output = model(example)
    finally:
        model.train(was)
        for h in handles:
            h.remove()
    groups: dict[int, list[int]] = {}
    for i, (_, t) in enumerate(records):
        groups.setdefault(id(t), []).append(i)
    kept = []
    for key, idx in groups.items():
        if key == id(output):
            continue  # the logits are not a hint
        group_names = [records[i][0] for i in idx]
        inner = [i for i in idx if not any(o.startswith(records[i][0] + ".") for o in group_names)]
        kept.append(inner[-1])
    return [(records[i][0], tuple(records[i][1].shape[1:])) for i in sorted(kept)]


def feature_stages(model: nn.Module, example: torch.Tensor
                   ) -> list[tuple[str, tuple[int, ...]]]:
    """The model's automatic hint points: each spatial stage's last block output.

    Falls back to every submodule when the container tree yields no feature maps (a model
    written as one monolithic module), and to the penultimate vector for vector-only models.
    """
    points = _trace_outputs(model, block_names(model), example)
    if not any(_is_map(s) for _, s in points):
        every = [n for n, m in model.named_modules() if n and not isinstance(m, _NOT_FEATURES)]
        points = _trace_outputs(model, every, example)
    maps = [(n, s) for n, s in points if _is_map(s)]
    if not maps:
        vectors = [(n, s) for n, s in points if len(s) == 1]
        return vectors[-1:]
    stages: list[tuple[str, tuple[int, ...]]] = []
    for name, shape in maps:
        if stages and stages[-1][1][1:] == shape[1:]:
            stages[-1] = (name, shape)
        else:
            stages.append((name, shape))
    return stages


def _is_map(shape: tuple[int, ...]) -> bool:
    return len(shape) == 3 and shape[1] * shape[2] > 1


def resolve_feature_pairs(teacher: nn.Module, student: nn.Module, example: torch.Tensor,
                          explicit: tuple[tuple[str, str], ...] = ()) -> list[FeaturePair]:
    """Explicit (teacher, student) module-name pairs, or automatic pairs by position and shape."""
    if explicit:
        return _explicit_pairs(teacher, student, example, explicit)
    t_stages, s_stages = feature_stages(teacher, example), feature_stages(student, example)
    pairs, j = [], 0
    for t_name, t_shape in t_stages:
        for k in range(j, len(s_stages)):
            s_name, s_shape = s_stages[k]
            if s_shape[1:] == t_shape[1:] and len(s_shape) == len(t_shape):
                pairs.append(FeaturePair(t_name, s_name, t_shape, s_shape))
                j = k + 1
                break
    if not pairs:
        raise PassError("no teacher/student feature maps of matching size to pair",
                        f"name them in feature_pairs; teacher stages: "
                        f"{[n for n, _ in t_stages]}, student stages: {[n for n, _ in s_stages]}")
    return pairs


def _explicit_pairs(teacher: nn.Module, student: nn.Module, example: torch.Tensor,
                    explicit: tuple[tuple[str, str], ...]) -> list[FeaturePair]:
    t_mods, s_mods = dict(teacher.named_modules()), dict(student.named_modules())
    for t_name, s_name in explicit:
        for name, model, mods, who in ((t_name, teacher, t_mods, "teacher"),
                                       (s_name, student, s_mods, "student")):
            if not name or name not in mods:
                raise PassError(f"feature pair names no {who} module {name!r}",
                                f"{who} blocks: {block_names(model)}")
    t_shapes = _output_shapes(teacher, [t for t, _ in explicit], example)
    s_shapes = _output_shapes(student, [s for _, s in explicit], example)
    pairs = []
    for t_name, s_name in explicit:
        ts, ss = t_shapes[t_name], s_shapes[s_name]
        if len(ts) != len(ss) or len(ts) not in (1, 3):
            raise PassError(f"feature pair ({t_name}, {s_name}): shapes {ts} and {ss} cannot be "
                            "compared", "pair feature maps with feature maps, vectors with vectors")
        pairs.append(FeaturePair(t_name, s_name, ts, ss))
    return pairs


@torch.no_grad()
def _output_shapes(model: nn.Module, names: list[str], example: torch.Tensor
                   ) -> dict[str, tuple[int, ...]]:
    modules = dict(model.named_modules())
    shapes: dict[str, tuple[int, ...]] = {}

    def keep(name: str):
        def hook(module, args, output):
            if isinstance(output, torch.Tensor) and name not in shapes:
                shapes[name] = tuple(output.shape[1:])
        return hook
    handles = [modules[n].register_forward_hook(keep(n)) for n in names]
    was = model.training
    model.eval()
    try:
        model(example)
    finally:
        model.train(was)
        for h in handles:
            h.remove()
    missing = [n for n in names if n not in shapes]
    if missing:
        raise PassError(f"feature layers never ran in the forward pass: {missing}")
    return shapes


@torch.no_grad()
def classifier_name(model: nn.Module, example: torch.Tensor) -> str:
    """Name of the last nn.Linear to run: its input is the embedding used by RKD."""
    order: list[str] = []
    handles = [m.register_forward_pre_hook(lambda mod, a, n=n: order.append(n))
               for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    was = model.training
    model.eval()
    try:
        model(example)
    finally:
        model.train(was)
        for h in handles:
            h.remove()
    if not order:
        raise PassError("relation-based KD needs a final Linear classifier (its input is the "
                        "embedding)", "use kind 'response' or 'feature' for this model")
    return order[-1]


# ---- students ------------------------------------------------------------------------------

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
    from advisor.passes.base import get_pass

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
