"""The pass contract shared by every technique.

A pass is `apply(model, config, ctx) -> PassResult`:
- `config` is a frozen dataclass; it validates itself when built and round-trips through JSON
  so that plan.json can replay it (all of that is `advisor.passes.config`).
- `ctx` (`PassContext`) carries example inputs, data loaders, the retraining budget, the target,
  the original model (teacher) and a scratch directory.
- `model` is a `torch.nn.Module` for passes with `stage="torch"`, or an `OnnxArtifact` for
  passes with `stage="onnx"` (ONNX Runtime quantization). The plan runner exports between stages.
- `PassResult.info` records what changed (pruned channels per module name, ranks per layer,
  layers left in fp32, what really got smaller/faster) so the report can show it.

Passes register by name with `@register_pass(...)`; the rule engine, the search and
`advisor apply` find them only through `PASSES` (an allowlist: plan.json cannot name anything else).
`load_builtin_passes` imports every module of this package, so a new technique module registers
itself; helper modules without passes are imported too, harmlessly.
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

from advisor.errors import PlanError
from advisor.passes.config import check_field_metadata, config_fallback_field, config_knob

Stage = Literal["torch", "onnx"]


@dataclass
class OnnxArtifact:
    """An ONNX model on disk (single file) plus what is known about its input."""

    path: Path
    input_shape: tuple[int, ...]
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class RetrainBudget:
    """How much retraining a plan may spend. `kind`: none | finetune | full."""

    kind: Literal["none", "finetune", "full"] = "none"
    epochs: int | None = None
    seconds: float | None = None

    @property
    def allows_training(self) -> bool:
        return self.kind != "none"


@dataclass
class PassContext:
    """Everything a pass may need besides the model and its config.

    Data loaders yield `(inputs, labels)` batches; `calib_loader` may yield unlabeled batches
    (labels ignored). `teacher` is the original, unmodified model (for distillation/rewinding).
    """

    example_inputs: tuple[Any, ...]
    input_shape: tuple[int, ...]
    train_loader: Any = None
    val_loader: Any = None
    calib_loader: Any = None
    budget: RetrainBudget = field(default_factory=RetrainBudget)
    target: Any = None
    teacher: Any = None
    workdir: Path | None = None
    seed: int = 0
    device: str = "cpu"
    progress: bool = True
    extras: dict[str, Any] = field(default_factory=dict)
    # a training pass runs as this many data-parallel workers (`advisor.train_workers`),
    # started as local processes ("local") or by Ray Train on the trial's cluster ("ray")
    train_workers: int = 1
    train_engine: str = "local"

    @classmethod
    def for_shape(cls, input_shape, *, budget: "str | RetrainBudget" = "none",
                  epochs: int | None = None, **fields: Any) -> "PassContext":
        """A context whose example input is zeros of `input_shape` — how trials, `apply` and
        tests build one; `budget` may be a kind ("none", "finetune", "full") or a RetrainBudget."""
        import torch

        if not isinstance(budget, RetrainBudget):
            budget = RetrainBudget(budget, epochs=epochs)
        return cls(example_inputs=(torch.zeros(tuple(input_shape)),),
                   input_shape=tuple(input_shape), budget=budget, **fields)


@dataclass
class PassResult:
    model: Any
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PassSpec:
    """A registered technique and what it needs."""

    name: str
    config_cls: type
    apply: Callable[[Any, Any, PassContext], PassResult]
    family: str  # pruning | sparsity | factorization | quantization | distillation | training
    stage: Stage = "torch"
    trains: bool = False  # needs a retraining budget (never offered with --retrain none)
    needs_full_retrain: bool = False  # trains from scratch (only with --retrain full)
    needs_labels: bool = False  # needs labelled training data
    needs_calibration: bool = False  # needs (unlabelled) calibration inputs
    devices: tuple[str, ...] = ("cpu", "cuda")  # where its output can run
    summary: str = ""

    @property
    def knob(self) -> tuple[str, str] | None:
        """(field, direction) of the config's tunable knob, from its field metadata."""
        return config_knob(self.config_cls)

    @property
    def fallback_field(self) -> str | None:
        """The config field holding the accuracy-aware fallback's budget (points), if any."""
        return config_fallback_field(self.config_cls)


PASSES: dict[str, PassSpec] = {}


def register_pass(name: str, config: type, *, family: str, stage: Stage = "torch",
                  trains: bool = False, needs_full_retrain: bool = False,
                  needs_labels: bool = False, needs_calibration: bool = False,
                  devices: tuple[str, ...] = ("cpu", "cuda"), summary: str = ""):
    """Decorator: register `apply` under `name` with its frozen config dataclass."""
    if not dataclasses.is_dataclass(config) or not config.__dataclass_params__.frozen:
        raise TypeError(f"pass {name!r}: config must be a frozen dataclass")
    check_field_metadata(config)

    def deco(fn):
        if name in PASSES and PASSES[name].apply is not fn:
            raise ValueError(f"pass {name!r} registered twice")
        doc_lines = (fn.__doc__ or "").strip().splitlines()
        PASSES[name] = PassSpec(name, config, fn, family, stage, trains, needs_full_retrain,
                                needs_labels, needs_calibration, devices,
                                summary or (doc_lines[0] if doc_lines else ""))
        return fn

    return deco


def get_pass(name: str) -> PassSpec:
    load_builtin_passes()
    try:
        return PASSES[name]
    except KeyError:
        raise PlanError(f"unknown pass {name!r}",
                        f"known passes: {', '.join(sorted(PASSES)) or 'none'}") from None


def load_builtin_passes() -> dict[str, PassSpec]:
    """Import every module of this package (sub-packages too), so its passes register themselves.

    No list of modules to keep up to date: a technique that has not been built yet is simply
    absent, and helper modules without passes register nothing.
    """
    _import_pass_modules()
    return PASSES


@functools.cache
def _import_pass_modules() -> None:
    import importlib
    import pkgutil

    import advisor.passes as package

    for mod in pkgutil.walk_packages(package.__path__, prefix=f"{package.__name__}."):
        importlib.import_module(mod.name)
