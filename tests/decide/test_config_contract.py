"""The step-config contract, for every registered pass and every config the rules emit.

- every config round-trips through JSON (config_to_dict → json → config_from_dict → equal);
- every config validates itself when built (types and the bounds in its field metadata), so a
  bad value is refused at once, not inside a worker;
- knob and fallback fields are declared in field metadata and reach the rule engine as PassFlags;
- every step config the rules emit (and every knob value they tune) builds;
- passes are discovered from the package, with no list of modules.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import typing

import pytest

from advisor.api import _registry_flags
from advisor.decide.engine import evaluate_rules, rank_candidates
from advisor.decide.factors import Factors
from advisor.decide.rules import RULES, offered_by_rules
from advisor.decide.situation import Situation
from advisor.errors import PlanError
from advisor.passes.base import PASSES, load_builtin_passes
from advisor.passes.config import ConfigError, check_config, config_from_dict, config_to_dict

REGISTRY = load_builtin_passes()
NAMES = sorted(REGISTRY)


def json_round_trip(spec, config):
    data = json.loads(json.dumps(config_to_dict(config)))
    return config_from_dict(spec.config_cls, data, where=f"test ({spec.name})")


# ---- every registered config --------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_default_config_round_trips_through_json(name):
    spec = REGISTRY[name]
    config = spec.config_cls()
    assert json_round_trip(spec, config) == config


@pytest.mark.parametrize("name", NAMES)
def test_every_field_refuses_a_value_of_the_wrong_type(name):
    """Proves each config calls check_config: an object() fits no JSON-able annotation."""
    cls = REGISTRY[name].config_cls
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if hints[f.name] is typing.Any:
            continue
        with pytest.raises(ConfigError, match=f"field {f.name!r}"):
            cls(**{f.name: object()})


@pytest.mark.parametrize("name", NAMES)
def test_numbers_given_as_strings_are_refused(name):
    cls = REGISTRY[name].config_cls
    for f in dataclasses.fields(cls):
        if isinstance(f.default, (int, float)) and not isinstance(f.default, bool):
            with pytest.raises(ConfigError, match=f"{f.name!r} must be"):
                cls(**{f.name: str(f.default)})


def _outside(key, bound, is_int):
    step = 1 if is_int else 1e-6 * max(1.0, abs(bound))
    return {"ge": bound - step, "gt": bound, "le": bound + step, "lt": bound}[key]


@pytest.mark.parametrize("name", NAMES)
def test_bounds_in_field_metadata_are_enforced_both_ways(name):
    cls = REGISTRY[name].config_cls
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        is_int = int in typing.get_args(hints[f.name]) or hints[f.name] is int
        for key in ("ge", "gt", "le", "lt"):
            if key not in f.metadata:
                continue
            bad = _outside(key, f.metadata[key], is_int)
            with pytest.raises(ConfigError, match=f"{f.name!r} must be"):
                cls(**{f.name: bad})
            if key in ("ge", "le"):  # the bound itself is allowed
                cls(**{f.name: int(f.metadata[key]) if is_int else f.metadata[key]})


@pytest.mark.parametrize("name", NAMES)
def test_knob_and_fallback_reach_the_rule_engine_as_flags(name):
    spec, flags = REGISTRY[name], _registry_flags()[name]
    knobs = [(f.name, f.metadata["knob"]) for f in dataclasses.fields(spec.config_cls)
             if "knob" in f.metadata]
    assert knobs == ([spec.knob] if spec.knob else [])
    assert (flags.knob, flags.knob_direction) == (spec.knob or (None, None))
    assert flags.fallback_field == spec.fallback_field
    assert flags.trains == spec.trains and flags.family == spec.family


def test_declared_knobs_and_fallbacks():
    """What the search used to keep in MONOTONIC_KNOBS / FALLBACK_FIELD, now in the configs."""
    assert REGISTRY["prune_structured"].knob == ("ratio", "increasing")
    assert REGISTRY["prune_unstructured"].knob == ("sparsity", "increasing")
    assert REGISTRY["factorize"].knob == ("energy", "decreasing")
    assert REGISTRY["int8_static"].knob == ("calibration", "unordered")
    assert REGISTRY["int8_static"].fallback_field == "max_drop"
    assert [n for n in NAMES if REGISTRY[n].fallback_field] == ["int8_static"]


# ---- construction refuses bad values at once ------------------------------------------------

def _cls(name):
    return REGISTRY[name].config_cls


@pytest.mark.parametrize("name,kwargs,match", [
    ("prune_unstructured", {"sparsity": "0.5"}, "'sparsity' must be a number"),
    ("prune_unstructured", {"sparsity": 1.0}, "'sparsity' must be < 1.0"),
    ("prune_unstructured", {"sparsity": -0.1}, "'sparsity' must be >= 0.0"),
    ("prune_structured", {"ratio": True}, "'ratio' must be a number"),
    ("prune_structured", {"criterion": "l3"}, "'criterion' must be one of"),
    ("prune_structured", {"round_to": 0}, "'round_to' must be >= 1"),
    ("prune_structured", {"iterative_steps": 1.5}, "'iterative_steps' must be an integer"),
    ("prune_structured", {"ignore_layers": "conv1"}, "'ignore_layers' must be a list"),
    ("factorize", {"energy": 0.0}, "'energy' must be > 0.0"),
    ("factorize", {"energy": float("nan")}, "'energy' must be a finite number"),
    ("factorize", {"layer_ranks": (("conv", (1, "x")),)}, "'layer_ranks'"),
    ("int8_static", {"calibration": "nope"}, "'calibration' must be one of"),
    ("int8_static", {"per_channel": 1}, "'per_channel' must be true or false"),
    ("int8_static", {"max_drop": "1"}, "'max_drop' must be a number or null"),
    ("finetune", {"epochs": "5"}, "'epochs' must be an integer"),
    ("finetune", {"early_stop_patience": "x"}, "'early_stop_patience'"),
    ("distill", {"temperature": 0}, "'temperature' must be > 0.0"),
    ("distill_student", {"student_kwargs": []}, "'student_kwargs' must be an object"),
])
def test_bad_values_are_refused_when_the_config_is_built(name, kwargs, match):
    with pytest.raises(ConfigError, match=match) as err:
        _cls(name)(**kwargs)
    assert isinstance(err.value, PlanError) and isinstance(err.value, ValueError)
    assert _cls(name).__name__ in str(err.value)


def test_construction_normalises_like_json():
    import numpy as np

    c = _cls("prune_structured")(ratio=1 // 2, ignore_layers=["fc"], round_to=np.int64(8),
                                 iterative_steps=2.0)
    assert c.ratio == 0.0 and isinstance(c.ratio, float)
    assert c.ignore_layers == ("fc",) and type(c.round_to) is int and c.iterative_steps == 2
    assert hash(c) == hash(_cls("prune_structured")(ratio=0.0, ignore_layers=("fc",), round_to=8,
                                                    iterative_steps=2))
    f = _cls("factorize")(layer_ranks=[["conv", [4, 4]]])
    assert f.layer_ranks == (("conv", (4, 4)),)
    assert _cls("prune_unstructured")(sparsity=np.float32(0.5)).sparsity == 0.5
    assert _cls("int8_static")(max_drop=None).max_drop is None  # None where the default is None


def test_replace_validates_too():
    c = _cls("prune_structured")()
    with pytest.raises(ConfigError, match="ratio"):
        dataclasses.replace(c, ratio=2.0)


def test_config_from_dict_relies_on_construction_and_names_where():
    with pytest.raises(PlanError, match=r"plan.json: step 1 \(prune_unstructured\): "
                                        r"UnstructuredPruneConfig: field 'sparsity' must be a"):
        config_from_dict(_cls("prune_unstructured"), {"sparsity": "0.5"},
                         where="plan.json: step 1 (prune_unstructured)")
    with pytest.raises(PlanError, match="unknown field"):
        config_from_dict(_cls("prune_unstructured"), {"sparsty": 0.5})
    assert config_from_dict(_cls("finetune"), {"max_seconds": None}).max_seconds is None


def test_field_metadata_is_checked_when_a_pass_registers():
    from advisor.passes.base import register_pass

    @dataclasses.dataclass(frozen=True)
    class Typo:
        x: float = dataclasses.field(default=0.5, metadata={"knobb": "increasing"})

    @dataclasses.dataclass(frozen=True)
    class TwoKnobs:
        x: float = dataclasses.field(default=0.5, metadata={"knob": "increasing"})
        y: float = dataclasses.field(default=0.5, metadata={"knob": "decreasing"})

    @dataclasses.dataclass(frozen=True)
    class BadDirection:
        x: float = dataclasses.field(default=0.5, metadata={"knob": "up"})

    for cls in (Typo, TwoKnobs, BadDirection):
        with pytest.raises(TypeError):
            register_pass("never_registered", cls, family="test")
    assert "never_registered" not in PASSES


@dataclasses.dataclass(frozen=True)
class Nested:
    k: int = 1

    def __post_init__(self):
        check_config(self)


@dataclasses.dataclass(frozen=True)
class Outer:
    inner: Nested = dataclasses.field(default_factory=Nested)
    limit: int | None = None

    def __post_init__(self):
        check_config(self)


def test_check_config_on_nested_dataclasses():
    assert Outer(inner={"k": 2}).inner == Nested(2)
    with pytest.raises(ConfigError, match="'inner'"):
        Outer(inner={"k": "two"})
    with pytest.raises(ConfigError, match="'limit'"):
        Outer(limit="many")


# ---- every config the rules emit ----------------------------------------------------------

def _situation(**kw) -> Situation:
    base = dict(factors=Factors(), device="cpu", precisions=("fp32", "int8"), conv_share=0.85,
                linear_share=0.05, latency_ms=10.0, has_batchnorm=True, spatial_convs=6,
                isa=("avx2", "avx512f", "avx512_vnni"), has_val_data=True, has_train_data=False,
                passes=_registry_flags())
    base.update(kw)
    return Situation(**base)


SITUATIONS = {
    "cpu cnn, no retraining": {},
    "cpu cnn, finetune": dict(factors=Factors(retrain="finetune"), has_train_data=True),
    "cpu cnn, finetune, no BN, avx2": dict(factors=Factors(retrain="finetune"),
                                           has_train_data=True, has_batchnorm=False,
                                           isa=("avx2",)),
    "size goal, finetune": dict(factors=Factors(goal="size", retrain="finetune"),
                                has_train_data=True),
    "size goal, no retraining": dict(factors=Factors(goal="size")),
    "balanced, full retraining": dict(factors=Factors(goal="balanced", retrain="full"),
                                      has_train_data=True),
    "linear-heavy with CSR kernels": dict(factors=Factors(retrain="finetune"),
                                          has_train_data=True, conv_share=0.05,
                                          linear_share=0.9, spatial_convs=0,
                                          sparse_kernels=("csr-linear",)),
    "cuda": dict(device="cuda", precisions=("fp32", "fp16", "bf16", "int8")),
    "onnx input": dict(is_onnx=True, factors=Factors(goal="balanced")),
    "no val data, over memory": dict(has_val_data=False, memory_budget_mb=1.0,
                                     peak_memory_mb=10.0),
}


def _emitted(s: Situation):
    """(rule, candidate) for every candidate any rule (or the registry fallback) proposes."""
    for r in evaluate_rules(s):
        for c in r.candidates:
            yield r.rule, c


@pytest.mark.parametrize("label", sorted(SITUATIONS))
def test_every_step_config_the_rules_emit_builds_and_round_trips(label):
    s = _situation(**SITUATIONS[label])
    seen = 0
    for rule_name, c in _emitted(s):
        for i, st in enumerate(c.steps):
            spec = REGISTRY[st.pass_name]
            where = f"{label}: {c.name} step {i + 1} ({st.pass_name})"
            config = config_from_dict(spec.config_cls, st.config, where=where)
            assert json_round_trip(spec, config) == config, where
            seen += 1
        if c.knob:
            st = c.steps[c.knob["step"]]
            spec = REGISTRY[st.pass_name]
            assert c.knob["field"] == spec.knob[0]
            for v in c.knob["values"]:
                config_from_dict(spec.config_cls, {**st.config, c.knob["field"]: v},
                                 where=f"{label}: {c.name} knob {v!r}")
            values, direction = c.knob["values"], spec.knob[1]
            if direction != "unordered":  # the search goes mild → aggressive and stops early
                assert values == sorted(values, reverse=direction == "decreasing"), c.name
    assert seen


@pytest.mark.parametrize("label", sorted(SITUATIONS))
def test_rules_offer_only_the_passes_they_declare(label):
    s = _situation(**SITUATIONS[label])
    by_name = {fn.__name__: fn.offers for fn in RULES}
    for rule_name, c in _emitted(s):
        used = {st.pass_name for st in c.steps}
        if rule_name == "registry_defaults":
            assert not used & offered_by_rules(), c.name
        else:
            assert used <= by_name[rule_name], (rule_name, used - by_name[rule_name])


@pytest.mark.parametrize("label", sorted(SITUATIONS))
def test_candidates_know_whether_they_train_from_the_flags(label):
    s = _situation(**SITUATIONS[label])
    for _, c in _emitted(s):
        assert c.trains == any(REGISTRY[st.pass_name].trains for st in c.steps), c.name
    ranked, _ = rank_candidates(s)
    if s.factors.retrain == "none":
        assert not any(c.trains for c in ranked)


# ---- discovery ----------------------------------------------------------------------------

def test_every_module_of_the_package_is_imported():
    import pkgutil

    import advisor.passes as package

    names = [m.name for m in pkgutil.walk_packages(package.__path__, prefix="advisor.passes.")]
    assert names and all(n in sys.modules for n in names)
    # passes registered by modules that no list names (fp16, quantize_torch ...)
    assert {"fp16", "bf16", "torch_dynamic_int8", "int8_static"} <= set(REGISTRY)


def test_a_new_module_registers_itself_and_helpers_are_harmless(tmp_path, monkeypatch):
    """Dropping a module into the package is all it takes; a helper without passes adds none."""
    import advisor.passes as package
    from advisor.passes import base

    (tmp_path / "zz_contract_helper.py").write_text("HELPER = 1\n")
    (tmp_path / "zz_contract_pass.py").write_text(
        "from dataclasses import dataclass, field\n"
        "from advisor.passes.base import PassResult, register_pass\n"
        "from advisor.passes.config import check_config\n\n"
        "@dataclass(frozen=True)\n"
        "class ZzConfig:\n"
        "    level: float = field(default=0.5, metadata={'knob': 'increasing', 'ge': 0.0})\n\n"
        "    def __post_init__(self):\n"
        "        check_config(self)\n\n"
        "@register_pass('zz_contract', ZzConfig, family='test')\n"
        "def zz(model, config, ctx):\n"
        "    return PassResult(model)\n")
    monkeypatch.setattr(package, "__path__", [*package.__path__, str(tmp_path)])
    before = dict(PASSES)
    try:
        base._import_pass_modules.cache_clear()
        passes = load_builtin_passes()
        assert set(passes) - set(before) == {"zz_contract"}
        assert passes["zz_contract"].knob == ("level", "increasing")
        assert "advisor.passes.zz_contract_helper" in sys.modules
    finally:
        PASSES.pop("zz_contract", None)
        for mod in ("advisor.passes.zz_contract_helper", "advisor.passes.zz_contract_pass"):
            sys.modules.pop(mod, None)
        base._import_pass_modules.cache_clear()
    assert PASSES == before


def test_rule_engine_stays_torch_free_with_the_new_flags():
    import subprocess

    code = ("import sys; from advisor.decide.situation import PassFlags; "
            "import advisor.decide.engine as r; "
            "assert 'torch' not in sys.modules and 'advisor.passes' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)

