"""Versioned step configs: plan steps record their config class's version, a step written for a
newer version than the registered class is refused, a step without one reads as version 1."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import ClassVar

import pytest

from advisor.decide.plan import Plan, Step, load_plan, plan_from_json
from advisor.errors import PlanError
from advisor.passes.base import PassSpec, load_builtin_passes
from advisor.passes.config import (DEFAULT_CONFIG_VERSION, ConfigError, check_config,
                                   check_field_metadata, check_plan_configs, config_version,
                                   stamp_config_versions)


@dataclass(frozen=True)
class V3Config:
    CONFIG_VERSION: ClassVar[int] = 3
    level: float = 0.5

    def __post_init__(self):
        check_config(self)


def _passes():
    passes = dict(load_builtin_passes())
    passes["zz_v3"] = PassSpec("zz_v3", V3Config, lambda m, c, x: None, family="test")
    return passes


def _write(tmp_path, plan_json: dict):
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan_json))
    return path


# configs whose fields changed since version 1 (each says why beside its CONFIG_VERSION)
# 2: stop_after_epochs; 3: max_batches_per_epoch
BUMPED = {"finetune": 3, "distill": 3, "distill_student": 3}


def test_builtin_config_versions_and_a_class_may_set_its_own():
    assert DEFAULT_CONFIG_VERSION == 1
    assert {n: config_version(s.config_cls) for n, s in load_builtin_passes().items()} == \
        {n: BUMPED.get(n, 1) for n in load_builtin_passes()}
    assert config_version(V3Config) == 3
    check_field_metadata(V3Config)  # a ClassVar is not a field


def test_round_trip_writes_and_reads_the_version(tmp_path):
    passes = _passes()
    steps = [Step("prune_structured", {"ratio": 0.3}), Step("zz_v3", {"level": 0.7})]
    stamp_config_versions(steps, passes)
    data = Plan("x", steps).to_json()
    assert [s["config_version"] for s in data["steps"]] == [1, 3]
    plan = load_plan(_write(tmp_path, data), passes)
    assert [s.config_version for s in plan.steps] == [1, 3]
    check_plan_configs(plan.steps, passes, source="plan.json")


def test_a_newer_config_version_is_refused_naming_the_pass_and_both_versions(tmp_path):
    passes = _passes()
    data = Plan("x", [Step("int8_static", {}), Step("zz_v3", {}, config_version=4)]).to_json()
    plan = load_plan(_write(tmp_path, data), passes)
    with pytest.raises(ConfigError) as err:
        check_plan_configs(plan.steps, passes, source="plan.json")
    message = err.value.message
    assert "\n" not in message and isinstance(err.value, PlanError)
    assert message.startswith("plan.json: step 2 (zz_v3): ")
    assert "'zz_v3'" in message and "version 4" in message and "version 3" in message
    data["steps"][1]["config_version"] = 2  # older than the class: read as it is
    check_plan_configs(plan_from_json(data, passes).steps, passes)


def test_a_step_without_a_version_reads_as_version_1(tmp_path):
    data = Plan("old", [Step("prune_structured", {"ratio": 0.5})]).to_json()
    del data["steps"][0]["config_version"]  # as plans written before versions were
    passes = _passes()
    plan = load_plan(_write(tmp_path, data), passes)
    assert plan.steps[0].config_version == 1
    check_plan_configs(plan.steps, passes)
    data["steps"][0]["config_version"] = None  # null, as for the plan's other fields
    assert plan_from_json(data, passes).steps[0].config_version == 1


@pytest.mark.parametrize("bad", [0, -1, "2", 1.5, True])
def test_a_malformed_version_is_a_plan_error(bad):
    data = Plan("x", [Step("int8_static", {})]).to_json()
    data["steps"][0]["config_version"] = bad
    with pytest.raises(PlanError, match=r"step 1 \(int8_static\): 'config_version' must be"):
        plan_from_json(data, {"int8_static"})


def test_a_config_class_with_a_bad_version_cannot_register():
    @dataclass(frozen=True)
    class BadConfig:
        CONFIG_VERSION: ClassVar[int] = 0

    with pytest.raises(TypeError, match="CONFIG_VERSION"):
        check_field_metadata(BadConfig)
