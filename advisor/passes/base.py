"""The pass contract shared by every technique.

A pass is `apply(model, config, ctx) -> PassResult`:
- `config` is a frozen dataclass; it round-trips through JSON (`config_to_dict`/`config_from_dict`)
  so that plan.json can replay it.
- `ctx` (`PassContext`) carries example inputs, data loaders, the retraining budget, the target,
  the original model (teacher) and a scratch directory.
- `model` is a `torch.nn.Module` for passes with `stage="torch"`, or an `OnnxArtifact` for
  passes with `stage="onnx"` (ONNX Runtime quantization). The plan runner exports between stages.
- `PassResult.info` records what changed (pruned channels per module name, ranks per layer,
  layers left in fp32, what really got smaller/faster) so the report can show it.

Passes register by name with `@register_pass(...)`; the rule engine, the search and
`advisor apply` find them only through `PASSES` (an allowlist: plan.json cannot name anything else).
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

from advisor.errors import PlanError

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


PASSES: dict[str, PassSpec] = {}


def register_pass(name: str, config: type, *, family: str, stage: Stage = "torch",
                  trains: bool = False, needs_full_retrain: bool = False,
                  needs_labels: bool = False, needs_calibration: bool = False,
                  devices: tuple[str, ...] = ("cpu", "cuda"), summary: str = ""):
    """Decorator: register `apply` under `name` with its frozen config dataclass."""
    if not dataclasses.is_dataclass(config) or not config.__dataclass_params__.frozen:
        raise TypeError(f"pass {name!r}: config must be a frozen dataclass")

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


_BUILTIN_MODULES = ("structured", "unstructured", "at_init", "factorize", "quantize", "distill",
                    "finetune")


def load_builtin_passes() -> dict[str, PassSpec]:
    """Import every technique module that exists, so its passes register themselves.

    A technique that has not been built yet is simply absent: nothing is stubbed.
    """
    import importlib
    import importlib.util

    for mod in _BUILTIN_MODULES:
        full = f"advisor.passes.{mod}"
        if importlib.util.find_spec(full) is not None:
            importlib.import_module(full)
    return PASSES


# ---- config (de)serialisation -------------------------------------------------------------

def config_to_dict(config: Any) -> dict[str, Any]:
    """A frozen config dataclass as plain JSON data (tuples become lists)."""
    def conv(v):
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {str(k): conv(x) for k, x in v.items()}
        return v
    return conv(config)


def _coerce(tp: Any, value: Any) -> Any:
    """Turn JSON data back into the annotated type (lists → tuples, nested dataclasses)."""
    if value is None:
        return None
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value)
            except (TypeError, ValueError):
                continue
        return value
    if dataclasses.is_dataclass(tp) and isinstance(value, dict):
        return config_from_dict(tp, value)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v) for v in value)
        if args:
            return tuple(_coerce(a, v) for a, v in zip(args, value))
        return tuple(value)
    if origin is dict and isinstance(value, dict):
        kt, vt = args if args else (Any, Any)
        return {k: _coerce(vt, v) for k, v in value.items()}
    if origin is typing.Literal:
        if value not in args:
            raise ValueError(f"{value!r} not one of {args}")
        return value
    if tp is float and isinstance(value, int):
        return float(value)
    return value


def config_from_dict(config_cls: type, data: dict[str, Any]) -> Any:
    """Build `config_cls` from JSON data; unknown keys are an error (catches typos in plans)."""
    hints = typing.get_type_hints(config_cls)
    names = {f.name for f in dataclasses.fields(config_cls)}
    unknown = set(data) - names
    if unknown:
        raise PlanError(f"{config_cls.__name__}: unknown field(s) {sorted(unknown)}",
                        f"valid fields: {sorted(names)}")
    kwargs = {k: _coerce(hints.get(k, Any), v) for k, v in data.items()}
    try:
        return config_cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise PlanError(f"{config_cls.__name__}: {e}") from None
