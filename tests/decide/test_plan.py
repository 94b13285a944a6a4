import json

import pytest

from advisor.decide.plan import Plan, Step, load_plan, plan_from_json
from advisor.errors import PlanError

KNOWN = {"int8_static", "prune_structured"}


def test_round_trip(tmp_path):
    p = Plan("x", [Step("prune_structured", {"ratio": 0.5}), Step("int8_static", {})],
             factors={"goal": "latency"}, seed=3)
    f = tmp_path / "plan.json"
    f.write_text(json.dumps(p.to_json()))
    q = load_plan(f, KNOWN)
    assert q.pass_names == ["prune_structured", "int8_static"] and q.seed == 3
    assert q.steps[0].config == {"ratio": 0.5}


@pytest.mark.parametrize("mutate,match", [
    (lambda d: d.update(schema_version=99), "version"),
    (lambda d: d.update(kind="other"), "not an advisor plan"),
    (lambda d: d.update(steps=[]), "no steps"),
    (lambda d: d["steps"].append({"pass": "os.system", "config": {}}), "unknown pass"),
    (lambda d: d["steps"].append({"pass": "int8_static", "config": "rm -rf"}), "step"),
])
def test_rejects_bad_plans(mutate, match):
    d = Plan("x", [Step("int8_static", {})]).to_json()
    mutate(d)
    with pytest.raises(PlanError, match=match):
        plan_from_json(d, KNOWN)


def test_not_json(tmp_path):
    f = tmp_path / "plan.json"
    f.write_text("{nope")
    with pytest.raises(PlanError, match="not valid JSON"):
        load_plan(f, KNOWN)
