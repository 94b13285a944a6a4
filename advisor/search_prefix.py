"""Shared prefixes: a training chain is trained once for itself and its `+ int8` sibling.

"prune → fine-tune" and "prune → fine-tune → int8" (at the same ratio) share their torch steps:
same passes, same configs, same per-step seeds (`runner.run_plan`), so the same fp32 model. The
first of the two to run leaves that model's fp32 ONNX in its trial directory (`trial.
prefix_onnx`); the other starts from it and runs only its own remaining steps — none for the
plain sibling, the int8 step for the other. The reused steps' records (their infos, including
the replay configs that pin a time-shaped training run) are copied into the new trial, so its
plan replays exactly what was measured.
"""
from __future__ import annotations

import json
from typing import Any

from advisor.decide.plan import Step


def key(steps: list[Step]) -> str:
    return json.dumps([[s.pass_name, s.config] for s in steps], sort_keys=True, default=str)


class PrefixStore:
    def __init__(self):
        self._by_key: dict[str, dict[str, Any]] = {}

    def remember(self, trial_id: str, steps: list[Step], result: dict) -> None:
        """Keep a finished trial's prefix export (see `trial.prefix_onnx`)."""
        prefix = result.get("prefix_onnx")
        ran = result.get("steps") or []
        if not prefix or result.get("status") != "ok":
            return
        k = int(prefix["steps"])
        if len(ran) < k or any(s.get("reused_from") for s in ran[:k]):
            return
        self._by_key.setdefault(key(steps[:k]), {"trial": trial_id, "steps": k,
                                                  "path": prefix["path"], "ran": ran[:k]})

    def find(self, steps: list[Step]) -> dict[str, Any] | None:
        """The longest remembered prefix of `steps` (torch steps only), or None."""
        for k in range(len(steps), 0, -1):
            hit = self._by_key.get(key(steps[:k]))
            if hit is not None:
                return hit
        return None
