"""Wrong value types in plan.json are a PlanError naming the field (and the step), never an
internal error; config fields are checked against the config dataclass's annotations."""
import math
from dataclasses import dataclass
from typing import Literal, Optional

import pytest

from advisor.decide.plan import Plan, Step, plan_from_json
from advisor.errors import PlanError
from advisor.passes.config import (check_config, check_plan_configs, config_from_dict,
                                   config_to_dict)

KNOWN = {"int8_static", "prune_structured"}


def _plan(**over):
    d = Plan("x", [Step("int8_static", {})]).to_json()
    d.update(over)
    return d


@pytest.mark.parametrize("over,match", [
    ({"seed": "abc"}, "'seed' must be an integer"),
    ({"seed": 1.5}, "'seed' must be an integer"),
    ({"seed": True}, "'seed' must be an integer"),
    ({"seed": -1}, "'seed' must be a non-negative"),
    ({"factors": "x"}, "'factors' must be an object"),
    ({"factors": [1]}, "'factors' must be an object"),
    ({"name": 12}, "'name' must be a string"),
    ({"target": ["cpu"]}, "'target' must be a string"),
    ({"created": 5}, "'created' must be a string"),
    ({"steps": "x"}, "'steps' must be a list"),
    ({"steps": {"pass": "int8_static"}}, "'steps' must be a list"),
    ({"steps": ["int8_static"]}, "step 1 must be"),
    ({"steps": [{"pass": 3, "config": {}}]}, "step 1 must be"),
    ({"steps": [{"pass": "int8_static", "config": 12}]}, r"step 1 \(int8_static\): 'config'"),
    ({"steps": [{"pass": "int8_static", "config": [1]}]}, "'config' must be an object"),
    ({"data": "val.pt"}, "'data' must be an object"),
    ({"data": {"val": 3}}, "'data.val'"),
    ({"data": {"sha256": "abc"}}, "'data.sha256'"),
])
def test_plan_value_types(over, match):
    with pytest.raises(PlanError, match=match):
        plan_from_json(_plan(**over), KNOWN)


def test_plan_defaults_and_data_section():
    d = _plan(seed=None, factors=None, data=None)  # null means the default
    p = plan_from_json(d, KNOWN)
    assert p.seed == 0 and p.factors == {} and p.data == {}
    d = _plan(data={"val": "/abs/val.pt", "test": None, "train": "pkg.mod:fn",
                    "sha256": {"val": "ab" * 32}})
    assert plan_from_json(d, KNOWN).data["sha256"] == {"val": "ab" * 32}
    old = _plan(data={"val": "val.pt", "test": None, "train": None})  # before hashes existed
    assert plan_from_json(old, KNOWN).data["val"] == "val.pt"


@dataclass(frozen=True)
class Cfg:
    mode: Literal["a", "b"] = "a"
    n: int = 3
    x: float = 0.5
    flag: bool = True
    name: Optional[str] = None
    limit: int | None = None
    names: tuple[str, ...] = ()
    pairs: tuple[tuple[str, tuple[int, ...]], ...] = ()
    extra: dict = None

    def __post_init__(self):
        check_config(self)  # types, as every pass config does
        if self.n < 0:
            raise ValueError(f"n must be >= 0, got {self.n}")


@pytest.mark.parametrize("data,match", [
    ({"mode": 12345}, "'mode' must be one of 'a', 'b'"),
    ({"mode": "c"}, "'mode'"),
    ({"n": "abc"}, "'n' must be an integer"),
    ({"n": 1.5}, "'n' must be an integer"),
    ({"n": True}, "'n' must be an integer"),
    ({"n": None}, "'n' must be an integer, got null"),
    ({"x": "0.5"}, "'x' must be a number"),
    ({"x": math.nan}, "'x' must be a finite number"),
    ({"flag": "yes"}, "'flag' must be true or false"),
    ({"flag": 1}, "'flag' must be true or false"),
    ({"name": 3}, "'name'"),
    ({"limit": "many"}, "'limit'"),
    ({"names": "abc"}, "'names' must be a list"),
    ({"names": [1, 2]}, "'names'"),
    ({"pairs": [["conv", [1, "x"]]]}, "'pairs'"),
    ({"pairs": [["conv"]]}, "'pairs'"),
    ({"typo": 1}, "unknown field"),
    ({"n": -1}, "n must be >= 0"),
])
def test_config_field_types(data, match):
    with pytest.raises(PlanError, match=match):
        config_from_dict(Cfg, data)


def test_config_good_values_round_trip():
    c = config_from_dict(Cfg, {"mode": "b", "n": 4.0, "x": 2, "flag": False, "name": None,
                               "limit": 7, "names": ["a"], "pairs": [["conv", [1, 2]]]})
    assert c == Cfg(mode="b", n=4, x=2.0, flag=False, limit=7, names=("a",),
                    pairs=(("conv", (1, 2)),))
    assert isinstance(c.x, float) and isinstance(c.n, int)
    assert config_from_dict(Cfg, config_to_dict(c)) == c


def test_registered_configs_round_trip_with_defaults():
    from advisor.passes.base import load_builtin_passes

    for name, spec in load_builtin_passes().items():
        default = spec.config_cls()
        assert config_from_dict(spec.config_cls, config_to_dict(default)) == default, name


def test_check_plan_configs_names_the_step():
    from advisor.passes.base import load_builtin_passes

    passes = load_builtin_passes()
    steps = [Step("prune_structured", {}), Step("int8_static", {"calibration": 12345})]
    with pytest.raises(PlanError, match=r"plan.json: step 2 \(int8_static\): .*'calibration'"):
        check_plan_configs(steps, passes, source="plan.json")
    check_plan_configs([Step("int8_static", {"calibration": "entropy"})], passes)
