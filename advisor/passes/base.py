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
import math
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


class _BadValue(ValueError):
    """A JSON value that does not fit the annotated config field type."""


def _type_name(tp: Any) -> str:
    if tp is Any:
        return "any value"
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        names = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(names) + (" or null" if type(None) in args else "")
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is tuple:
        return "a list"
    if origin is dict:
        return "an object"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp)))


def _coerce(tp: Any, value: Any) -> Any:
    """Turn JSON data back into the annotated type (lists → tuples, nested dataclasses).

    Values are checked against the annotation (bool, int, float, str, Optional/Union, Literal,
    tuple, dict, nested dataclasses); a mismatch raises `_BadValue` with what was expected."""
    if tp is Any or tp is object:
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            raise _BadValue(f"must be {_type_name(tp)}, got null")
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value)
            except (TypeError, ValueError):
                continue
        raise _BadValue(f"must be {_type_name(tp)}, got {value!r}")
    if value is None:
        raise _BadValue(f"must be {_type_name(tp)}, got null")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise _BadValue(f"must be an object, got {type(value).__name__}")
        return config_from_dict(tp, value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _BadValue(f"must be a list, got {type(value).__name__} {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v) for v in value)
        if args:
            if len(value) != len(args):
                raise _BadValue(f"must be a list of {len(args)} items, got {len(value)}")
            return tuple(_coerce(a, v) for a, v in zip(args, value))
        return tuple(value)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise _BadValue(f"must be an object, got {type(value).__name__} {value!r}")
        kt, vt = args if args else (Any, Any)
        return {k: _coerce(vt, v) for k, v in value.items()}
    if origin is typing.Literal:
        if isinstance(value, bool) or value not in args or \
                not any(type(value) is type(a) for a in args):
            raise _BadValue(f"must be {_type_name(tp)}, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise _BadValue(f"must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise _BadValue(f"must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _BadValue(f"must be a number, got {value!r}")
        if not math.isfinite(value):
            raise _BadValue(f"must be a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise _BadValue(f"must be a string, got {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise _BadValue(f"must be {_type_name(tp)}, got {value!r}")
    return value


def config_from_dict(config_cls: type, data: dict[str, Any], where: str | None = None) -> Any:
    """Build `config_cls` from JSON data; unknown keys, values of the wrong type and values its
    own validation (`__post_init__`) refuses are a PlanError naming the field (and `where`, e.g.
    "plan.json: step 2 (int8_static)")."""
    label = f"{where}: " if where else ""
    if not isinstance(data, dict):
        raise PlanError(f"{label}{config_cls.__name__}: the config must be an object, got "
                        f"{type(data).__name__}", "write the step as {'pass': name, "
                        "'config': {field: value, ...}}")
    hints = typing.get_type_hints(config_cls)
    names = {f.name for f in dataclasses.fields(config_cls)}
    unknown = set(data) - names
    if unknown:
        raise PlanError(f"{label}{config_cls.__name__}: unknown field(s) "
                        f"{sorted(map(str, unknown))}", f"valid fields: {sorted(names)}")
    none_default = {f.name for f in dataclasses.fields(config_cls) if f.default is None}
    kwargs = {}
    for k, v in data.items():
        if v is None and k in none_default:  # null = the default, whatever the annotation says
            kwargs[k] = None
            continue
        try:
            kwargs[k] = _coerce(hints.get(k, Any), v)
        except PlanError:
            raise
        except (TypeError, ValueError) as e:
            raise PlanError(f"{label}{config_cls.__name__}: field {k!r} {e}",
                            f"fix or remove {k!r} in the plan (removed = its default)") from None
    try:
        return config_cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise PlanError(f"{label}{config_cls.__name__}: {e}") from None


def check_plan_configs(steps, passes: dict[str, "PassSpec"], source: str = "plan") -> None:
    """Validate every step's config against its pass's config dataclass, up front (before any
    model work); `steps` are `advisor.decide.plan.Step`s. Raises PlanError naming the step."""
    for i, st in enumerate(steps):
        spec = passes.get(st.pass_name)
        if spec is not None:
            config_from_dict(spec.config_cls, st.config,
                             where=f"{source}: step {i + 1} ({st.pass_name})")
