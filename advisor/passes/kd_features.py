"""Feature hooks of knowledge distillation: which layers' outputs are hints, and taps on them.

Feature pairs are matched automatically by *position and shape*: a network's feature points are
its blocks (the leaves of its tree of Sequential/ModuleList containers); a *stage* is a run of
consecutive blocks at one spatial resolution, and its last output is the stage's feature. Teacher
and student stages are paired in order where their resolutions agree — after structured pruning
this pairs identical module names (channels differ → adapter); across architectures it pairs the
stages at the same depth and resolution. Vector-only models (MLPs) pair their penultimate
features. Explicit (teacher, student) module names override the matching.

`classifier_name` finds the last Linear layer, whose input is the embedding relation-based KD
compares; `Taps` keeps the latest outputs of the paired modules (and that embedding) during
training. Used by the ``distill`` passes (`advisor.passes.distill`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from advisor.errors import PassError


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


def _run_hooked(model: nn.Module, example: torch.Tensor, handles: list) -> Any:
    """`model(example)` in eval mode (its mode restored after), then the hook `handles` removed."""
    was = model.training
    model.eval()
    try:
        return model(example)
    finally:
        model.train(was)
        for h in handles:
            h.remove()


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
    output = _run_hooked(model, example, handles)
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
    _run_hooked(model, example, handles)
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
    _run_hooked(model, example, handles)
    if not order:
        raise PassError("relation-based KD needs a final Linear classifier (its input is the "
                        "embedding)", "use kind 'response' or 'feature' for this model")
    return order[-1]


class Taps:
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
