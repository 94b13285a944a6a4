"""Step configs: validation and coercion, JSON (de)serialisation, field metadata and versions.

A step config is a frozen dataclass. `check_config` (called by every config's `__post_init__`)
checks each field against its annotation and the bounds in its field metadata (`ge`, `gt`, `le`,
`lt`), so `StructuredPruneConfig(ratio="0.5")` raises `ConfigError` at once, not in a worker.
Field metadata also declares what the rule engine and the search need to know about a config:
`{"knob": "increasing" | "decreasing" | "unordered"}` marks the one knob tuned by measurement
(increasing: larger values compress harder), `{"fallback": True}` the accuracy budget (points)
of an accuracy-aware fallback that the search fills in when a trial misses the budget;
`{"same_kernels": True}` beside a knob says its values change only numbers (calibration scales),
not the kernels that run, so the search times one value for all (`knob_same_kernels`).

`config_to_dict`/`config_from_dict` round-trip a config through JSON for plan.json. Each config
class has a version, `CONFIG_VERSION` (a `ClassVar[int]`; `DEFAULT_CONFIG_VERSION` unless the class
sets its own): a plan step records the version its config was written for, and a step written
for a newer version than this advisor's class is refused (`check_config_version`); a step
without one reads as version 1.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import types
import typing
from typing import TYPE_CHECKING, Any

from advisor.errors import PlanError

if TYPE_CHECKING:
    from advisor.passes.base import PassSpec

DEFAULT_CONFIG_VERSION = 1


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


class ConfigError(PlanError, ValueError):
    """A step config value of the wrong type or out of range, refused when the config is built."""


class _BadValue(ValueError):
    """A value that does not fit the annotated config field type."""


KNOB_DIRECTIONS = ("increasing", "decreasing", "unordered")
_BOUNDS = {"ge": (lambda v, b: v >= b, ">="), "gt": (lambda v, b: v > b, ">"),
           "le": (lambda v, b: v <= b, "<="), "lt": (lambda v, b: v < b, "<")}
_METADATA_KEYS = {"knob", "fallback", "same_kernels", *_BOUNDS}


def check_config(config: Any) -> None:
    """Validate and normalise a frozen config dataclass; every config's `__post_init__` calls it.

    Each field is checked against its annotation (bool, int, float, str, Optional/Union, Literal,
    tuple, dict, nested dataclasses; numbers finite) and the bounds in its field metadata (`ge`,
    `gt`, `le`, `lt`). A field whose default is None also takes None. Values are normalised as
    JSON needs (lists → tuples, integral numbers → float where a float is annotated, JSON objects
    → nested config dataclasses). Raises `ConfigError` naming the class and the field.
    """
    cls = type(config)
    hints = _type_hints(cls)
    for f in dataclasses.fields(cls):
        value = getattr(config, f.name)
        if value is None and f.default is None:
            continue
        try:
            new = _coerce(hints.get(f.name, Any), value)
            _check_bounds(f, new)
        except _BadValue as e:
            raise ConfigError(f"{cls.__name__}: field {f.name!r} {e}",
                              f"fix or remove {f.name!r} (removed = its default)") from None
        if new is not value:
            object.__setattr__(config, f.name, new)


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _check_bounds(f: dataclasses.Field, value: Any) -> None:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    for key, (ok, op) in _BOUNDS.items():
        if key in f.metadata and not ok(value, f.metadata[key]):
            raise _BadValue(f"must be {op} {f.metadata[key]}, got {value!r}")


def check_field_metadata(config_cls: type) -> None:
    """Refuse field metadata a config cannot mean: unknown keys, unknown knob directions, more
    than one knob or fallback field, a CONFIG_VERSION that is not an integer >= 1 (checked
    when the pass registers)."""
    knobs, fallbacks = [], []
    for f in dataclasses.fields(config_cls):
        unknown = set(f.metadata) - _METADATA_KEYS
        if unknown:
            raise TypeError(f"{config_cls.__name__}.{f.name}: unknown field metadata "
                            f"{sorted(unknown)} (known: {sorted(_METADATA_KEYS)})")
        if "knob" in f.metadata:
            if f.metadata["knob"] not in KNOB_DIRECTIONS:
                raise TypeError(f"{config_cls.__name__}.{f.name}: knob must be one of "
                                f"{KNOB_DIRECTIONS}, got {f.metadata['knob']!r}")
            knobs.append(f.name)
        if f.metadata.get("fallback"):
            fallbacks.append(f.name)
    for what, names in (("knob", knobs), ("fallback field", fallbacks)):
        if len(names) > 1:
            raise TypeError(f"{config_cls.__name__}: more than one {what}: {names}")
    version = config_version(config_cls)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise TypeError(f"{config_cls.__name__}: CONFIG_VERSION must be an integer >= 1, "
                        f"got {version!r}")


def config_knob(config_cls: type) -> tuple[str, str] | None:
    """(field, direction) of the config's tunable knob (field metadata "knob"), or None."""
    for f in dataclasses.fields(config_cls):
        if "knob" in f.metadata:
            return f.name, f.metadata["knob"]
    return None


def config_fallback_field(config_cls: type) -> str | None:
    """The field marked `{"fallback": True}`: the accuracy-aware fallback's budget, or None."""
    for f in dataclasses.fields(config_cls):
        if f.metadata.get("fallback"):
            return f.name
    return None


def knob_same_kernels(config_cls: type, field_name: str) -> bool:
    """Whether every value of the knob runs the same kernels (only values differ)."""
    return any(f.name == field_name and bool(f.metadata.get("same_kernels"))
               for f in dataclasses.fields(config_cls))


def knob_direction(config_cls: type, field_name: str) -> str | None:
    """The direction a config declares for `field_name` (None: not a knob)."""
    for f in dataclasses.fields(config_cls):
        if f.name == field_name:
            return f.metadata.get("knob")
    return None


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
    """`value` as the annotated type (lists → tuples, JSON objects → nested dataclasses).

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
            except (TypeError, ValueError, PlanError):
                continue
        raise _BadValue(f"must be {_type_name(tp)}, got {value!r}")
    if value is None:
        raise _BadValue(f"must be {_type_name(tp)}, got null")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise _BadValue(f"must be an object, got {type(value).__name__}")
        try:
            return config_from_dict(tp, value)
        except PlanError as e:
            raise _BadValue(f"is not a valid {tp.__name__}: {e.message}") from None
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
    if tp is int:  # numpy integers count; 2.0 (JSON) is 2
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise _BadValue(f"must be an integer, got {value!r}")
        return value if type(value) is int else int(value)
    if tp is float:  # integers and numpy floats count
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise _BadValue(f"must be a number, got {value!r}")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise _BadValue(f"must be a finite number, got {value!r}")
        return value if type(value) is float else number
    if tp is str:
        if not isinstance(value, str):
            raise _BadValue(f"must be a string, got {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise _BadValue(f"must be {_type_name(tp)}, got {value!r}")
    return value


def config_from_dict(config_cls: type, data: dict[str, Any], where: str | None = None) -> Any:
    """Build `config_cls` from JSON data. Unknown keys are refused here; types and ranges are
    checked by the config itself when built (`check_config` in its `__post_init__`). Every
    refusal is a PlanError naming the field (and `where`, e.g. "plan.json: step 2 (int8_static)");
    null for a field whose default is None means that default."""
    label = f"{where}: " if where else ""
    if not isinstance(data, dict):
        raise PlanError(f"{label}{config_cls.__name__}: the config must be an object, got "
                        f"{type(data).__name__}", "write the step as {'pass': name, "
                        "'config': {field: value, ...}}")
    names = {f.name for f in dataclasses.fields(config_cls)}
    unknown = set(data) - names
    if unknown:
        raise PlanError(f"{label}{config_cls.__name__}: unknown field(s) "
                        f"{sorted(map(str, unknown))}", f"valid fields: {sorted(names)}")
    try:
        return config_cls(**data)
    except PlanError as e:
        raise PlanError(f"{label}{e.message}", e.hint) from None
    except (TypeError, ValueError) as e:
        raise PlanError(f"{label}{config_cls.__name__}: {e}") from None


# ---- versions -------------------------------------------------------------------------------

def config_version(config_cls: type) -> int:
    """The config class's version: its `CONFIG_VERSION`, else `DEFAULT_CONFIG_VERSION`."""
    return getattr(config_cls, "CONFIG_VERSION", DEFAULT_CONFIG_VERSION)


def check_config_version(pass_name: str, config_cls: type, version: int,
                         where: str | None = None) -> None:
    """Refuse a step config written for a newer version of `config_cls` than this one."""
    current = config_version(config_cls)
    if version > current:
        label = f"{where}: " if where else ""
        raise ConfigError(f"{label}pass {pass_name!r}: config version {version} is newer than "
                          f"this advisor's version {current}",
                          "replay the plan with the advisor that wrote it, or upgrade advisor")


def stamp_config_versions(steps, passes: dict[str, "PassSpec"]) -> None:
    """Record on each step (`advisor.decide.plan.Step`) the version of its pass's config class."""
    for st in steps:
        spec = passes.get(st.pass_name)
        if spec is not None:
            st.config_version = config_version(spec.config_cls)


def check_plan_configs(steps, passes: dict[str, "PassSpec"], source: str = "plan") -> None:
    """Validate every step's config (version, then fields) against its pass's config dataclass,
    up front (before any model work); `steps` are `advisor.decide.plan.Step`s. Raises
    PlanError naming the step."""
    for i, st in enumerate(steps):
        spec = passes.get(st.pass_name)
        if spec is not None:
            where = f"{source}: step {i + 1} ({st.pass_name})"
            check_config_version(st.pass_name, spec.config_cls,
                                 getattr(st, "config_version", DEFAULT_CONFIG_VERSION), where)
            config_from_dict(spec.config_cls, st.config, where=where)
