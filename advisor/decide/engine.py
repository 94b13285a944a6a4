"""The rule engine: runs every rule of `advisor.decide.rules` on a `Situation`, adds the registry
fallback, and ranks the allowed candidates (the rejected ones keep the reason).

`registry_defaults` offers any registered pass no rule offers, with its default config, when its
flags fit the factors — so new passes are picked up without changing the engine. What the engine
knows of a pass (whether it trains, which config field is its tunable knob) comes from its
`PassFlags`, never from a list here. Scores are rough priors for ordering the search only.
Pure Python: no torch import.
"""
from __future__ import annotations

from advisor.decide.candidate import Candidate, RuleResult
from advisor.decide.plan import Step
from advisor.decide.rules import RULES, offered_by_rules
from advisor.decide.situation import Situation


def registry_defaults(s: Situation) -> RuleResult | None:
    """Offer any registered pass that no rule above knows, if its flags fit the factors."""
    cands = []
    known = offered_by_rules()
    for name, flags in sorted(s.passes.items()):
        if name in known or s.device not in flags.devices:
            continue
        if s.is_onnx and flags.stage != "onnx":
            continue
        cands.append(Candidate(name, [Step(name, {})], flags.family, "registry_defaults",
                               note="registered technique with its default settings"))
    if not cands:
        return None
    return RuleResult("registry_defaults", "consider",
                      "Further registered techniques, tried with their default settings.",
                      None, cands)


def _allowed(c: Candidate, s: Situation) -> str | None:
    """Why a candidate is not allowed by the factors (None = allowed)."""
    for step in c.steps:
        f = s.passes.get(step.pass_name)
        if f is None:
            return f"pass {step.pass_name} is not available"
        if f.trains and s.factors.retrain == "none":
            return f"{step.pass_name} trains, and --retrain none"
        if f.needs_full_retrain and s.factors.retrain != "full":
            return f"{step.pass_name} trains from scratch (needs --retrain full)"
        if (f.trains or f.needs_labels) and not s.has_train_data:
            return f"{step.pass_name} needs --train-data"
        if s.device not in f.devices:
            return f"{step.pass_name} does not run on {s.device}"
        if s.is_onnx and f.stage != "onnx":
            return f"{step.pass_name} needs a PyTorch model (the input is ONNX)"
    return None


def _score(c: Candidate, s: Situation) -> float:
    speed = c.predicted_speedup or 1.0
    size = c.predicted_size_ratio or 1.0
    goal = s.factors.goal
    gain = {"latency": speed, "size": 1.0 / size,
            "balanced": (speed * (1.0 / size)) ** 0.5}[goal]
    risk = max(0.0, c.accuracy_risk - s.factors.max_drop)
    return gain / (1.0 + risk)


def evaluate_rules(s: Situation) -> list[RuleResult]:
    """Run every rule (and the registry fallback); the reasons list of the report."""
    results = [r for r in (fn(s) for fn in RULES) if r is not None]
    extra = registry_defaults(s)
    if extra:
        results.append(extra)
    for r in results:
        for c in r.candidates:
            c.trains = any(s.passes[st.pass_name].trains for st in c.steps
                           if st.pass_name in s.passes)
    return results


def rank_candidates(s: Situation, results: list[RuleResult] | None = None
                    ) -> tuple[list[Candidate], list[tuple[Candidate, str]]]:
    """Ranked allowed candidates, and the rejected ones with the reason."""
    results = results if results is not None else evaluate_rules(s)
    allowed, rejected, seen = [], [], set()
    for r in results:
        if r.verdict == "avoid":
            continue
        for c in r.candidates:
            key = tuple((st.pass_name, tuple(sorted(st.config.items()))) for st in c.steps)
            if key in seen:
                continue
            seen.add(key)
            why = _allowed(c, s)
            if why:
                rejected.append((c, why))
                continue
            c.score = _score(c, s) * (1.0 if r.verdict == "recommend" else 0.8)
            allowed.append(c)
    allowed.sort(key=lambda c: -c.score)
    return allowed, rejected


def rule_table() -> list[dict[str, str]]:
    """Name and first docstring/summary line of every rule, for `advisor rules`."""
    rows = []
    for fn in RULES + [registry_defaults]:
        doc = (fn.__doc__ or "").strip().splitlines()
        rows.append({"rule": fn.__name__, "summary": doc[0] if doc else ""})
    return rows
