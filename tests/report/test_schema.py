"""schema.json and plan_schema.json: accept what analyze writes, reject what is missing or wrong."""
from __future__ import annotations

import copy
import json
import math

import pytest

from advisor.report import PLAN_SCHEMA, REPORT_SCHEMA, validate_plan, validate_report
from advisor.report.schema import to_json_data

pytest.importorskip("jsonschema")


def test_schema_files_are_valid_json_schemas():
    from jsonschema import Draft202012Validator

    for path in (REPORT_SCHEMA, PLAN_SCHEMA):
        Draft202012Validator.check_schema(json.loads(path.read_text()))


def test_accepts_the_report_and_its_variants(report, unverified_report, nothing_report):
    for r in (report, unverified_report, nothing_report):
        validate_report(r)


def test_allows_additional_properties(report):
    report["device_baseline"] = {"latency_ms": {"p50": 3.0}}
    report["candidates"][0]["extra"] = [1, 2]
    report["target"]["notes"] = ["anything"]
    validate_report(report)


def _delete(path):
    def edit(r):
        *parents, last = path
        node = r
        for p in parents:
            node = node[p]
        del node[last]
    return edit


def _set(path, value):
    def edit(r):
        *parents, last = path
        node = r
        for p in parents:
            node = node[p]
        node[last] = value
    return edit


@pytest.mark.parametrize("edit, where", [
    (_delete(["baseline"]), "baseline"),
    (_delete(["factors", "goal"]), "goal"),
    (_delete(["candidates", 0, "status"]), "status"),
    (_delete(["candidates", 0, "plan", "steps"]), "steps"),
    (_delete(["chosen", "accuracy_test"]), "accuracy_test"),
    (_set(["schema_version"], 2), "schema_version"),
    (_set(["factors", "goal"], "speed"), "goal"),
    (_set(["reasons", 0, "verdict"], "maybe"), "verdict"),
    (_set(["baseline", "accuracy"], 98.1), "accuracy"),  # a percentage, not a fraction
    (_set(["model", "input_shape"], [1, 3, "32", 32]), "input_shape"),
    (_set(["candidates", 0, "measured"], None), "measured"),  # status ok needs measurements
    (_set(["target", "emulated"], "yes"), "emulated"),
])
def test_rejects_missing_keys_and_wrong_types(report, edit, where):
    edit(report)
    with pytest.raises(ValueError, match="does not match its schema") as info:
        validate_report(report)
    assert where in str(info.value)


def test_the_plan_written_by_decide_matches_plan_schema():
    from advisor.decide.plan import Plan, Step

    plan = Plan("prune + int8", [Step("structured_prune", {"ratio": 0.3}),
                                 Step("int8_static", {"per_channel": True})],
                factors={"goal": "latency"}, target="cpu", seed=3)
    validate_plan(plan.to_json())


@pytest.mark.parametrize("key", ["kind", "steps", "seed", "created"])
def test_plan_schema_rejects_missing_keys(report, key):
    plan = copy.deepcopy(report["candidates"][0]["plan"])
    del plan[key]
    with pytest.raises(ValueError, match=key):
        validate_plan(plan)


def test_plan_schema_rejects_empty_steps(report):
    plan = copy.deepcopy(report["candidates"][0]["plan"])
    plan["steps"] = []
    with pytest.raises(ValueError, match="steps"):
        validate_plan(plan)


def test_json_data_turns_tuples_into_lists_and_nan_into_null(report):
    report["model"]["input_shape"] = (1, 3, 32, 32)
    report["baseline"]["latency_ms"]["cv"] = math.nan
    data = to_json_data(report)
    assert data["model"]["input_shape"] == [1, 3, 32, 32]
    assert data["baseline"]["latency_ms"]["cv"] is None
    validate_report(data)
