"""JSON Schemas of report.json and plan.json, and the check that a report matches its schema.

The schemas are plain files (schema.json, plan_schema.json) so other tools can validate our output
without importing advisor. report.json refers to the plan schema by its `$id`
(urn:advisor:schema:plan:1); the two are joined in a `referencing` registry here.
jsonschema is a dev dependency only: `write_reports` validates when it is importable and skips
the check otherwise, so a plain install needs nothing extra.
"""
from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Any

from advisor.fileio import _json_default

SCHEMA_DIR = Path(__file__).resolve().parent
REPORT_SCHEMA = SCHEMA_DIR / "schema.json"
PLAN_SCHEMA = SCHEMA_DIR / "plan_schema.json"


def load_schema(path: Path = REPORT_SCHEMA) -> dict:
    """One of the schema files as a dict."""
    return json.loads(path.read_text(encoding="utf-8"))


def have_jsonschema() -> bool:
    """True when jsonschema (with its `referencing` registry, jsonschema >= 4.18) is importable."""
    try:
        import jsonschema  # noqa: F401
        import referencing  # noqa: F401
    except ImportError:
        return False
    return True


def to_json_data(report: Any) -> Any:
    """The report as plain JSON data: tuples → lists, dataclasses/paths/arrays via fileio's
    encoder, and NaN/inf → null (json.dumps would write `NaN`, which is not JSON)."""
    return _finite(json.loads(json.dumps(report, default=_json_default)))


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


@functools.lru_cache(maxsize=None)
def _validator(schema_name: str):
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    plan = load_schema(PLAN_SCHEMA)
    registry = Registry().with_resource(plan["$id"], Resource.from_contents(plan))
    schema = load_schema(SCHEMA_DIR / schema_name)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, registry=registry)


def _first_error(data: Any, schema_name: str) -> str | None:
    from jsonschema.exceptions import best_match

    err = best_match(_validator(schema_name).iter_errors(data))
    if err is None:
        return None
    where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
    return f"at {where}: {err.message}"


def validate_report(report: dict) -> None:
    """Raise ValueError naming the first (most relevant) schema error of `report`.

    Needs jsonschema (the dev extra); raises ModuleNotFoundError with the fix when it is absent.
    """
    _require_jsonschema()
    problem = _first_error(to_json_data(report), "schema.json")
    if problem:
        raise ValueError(f"report.json does not match its schema {problem}")


def validate_plan(plan: dict) -> None:
    """Raise ValueError naming the first schema error of a plan.json object."""
    _require_jsonschema()
    problem = _first_error(to_json_data(plan), "plan_schema.json")
    if problem:
        raise ValueError(f"plan.json does not match its schema {problem}")


def _require_jsonschema() -> None:
    if not have_jsonschema():
        raise ModuleNotFoundError("validating reports needs jsonschema>=4.18: "
                                  "pip install 'advisor[dev]'")
