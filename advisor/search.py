"""Run the ranked candidates within the budget, tune each family's knob by measurement, select.

- Post-training candidates run first, then training chains, each in rank order
  (`advisor.search_costs`: a trial whose cost estimate does not fit the time left is not
  started); they run through an `Executor` (isolated worker processes by default); a
  failing candidate is recorded with its error and the search goes on.
- A candidate's knob (prune ratio, sparsity, Tucker energy, calibration method) is tuned by
  measurement: monotonic knobs go from mild to aggressive and stop at the first value that breaks
  the accuracy budget; a pass that misses the budget is retried with its accuracy-aware fallback
  (int8 with layers kept in fp32). Which knobs are monotonic and which field is a pass's
  fallback budget is declared in its config's field metadata (`advisor.passes.base`).
- Selection: the best plan meeting every constraint (accuracy drop on the validation split,
  --max-latency, --max-size, and a real gain on the goal); nothing is dropped when none
  qualifies — the closest plans are reported.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from advisor.decide.candidate import Candidate
from advisor.decide.factors import Factors
from advisor.decide.plan import Plan, Step
from advisor.search_costs import OVERRUN_ALLOWED, CostModel, schedule, train_allowance
from advisor.search_prefix import PrefixStore
from advisor.search_prefix import key as prefix_key
from advisor.selection import objective, select  # noqa: F401  (re-exported: the search's API)

@dataclass
class SearchSettings:
    budget_seconds: float | None = 600.0
    max_trials: int = 12
    train_epochs: int = 6  # per training step, capped by the time left
    seed: int = 0
    model: dict = field(default_factory=dict)  # plan.json's model section: arch, arch_kwargs
    # a post-training trial's cost before any was measured (api: the baseline stage's time
    # times search_costs.FIRST_GUESS_FACTOR); 0 starts the first trial unconditionally
    first_guess_s: float = 0.0
    # data-parallel processes per training step (`--train-workers`); recorded in the plans
    # that train, since the worker count is part of what makes their weights
    train_workers: int = 1


@dataclass
class Baseline:
    latency_p50: dict[str, float]  # per runtime
    size_mb: float
    accuracy: float | None  # on the validation split (fraction)
    verified: bool
    correct: Any = None  # per validation sample, the baseline's top-1 is right (numpy bool)


@dataclass
class TrialRecord:
    id: str
    name: str
    rule: str
    family: str
    plan: dict
    predicted: dict
    status: str = "pending"
    error: str | None = None
    measured: dict | None = None
    steps: list = field(default_factory=list)
    meets_constraints: bool = False
    violations: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    seconds: float = 0.0
    artifact: str | None = None
    runtime: str | None = None
    outcome: Any = None  # advisor.outcome.TrialOutcome once measured
    cached: dict | None = None  # {"key", "stored"} when the result came from the trial cache
    ran_on: dict | None = None  # where the trial's stages ran (advisor.executor_ray)
    stage_seconds: dict | None = None  # {"prepare": s, "measure": s}

    def to_json(self) -> dict:
        return {"id": self.id, "name": self.name, "rule": self.rule, "family": self.family,
                "status": self.status, "error": self.error, "plan": self.plan,
                "predicted": self.predicted, "measured": self.measured,
                "steps": self.steps, "meets_constraints": self.meets_constraints,
                "violations": self.violations, "reasons": self.reasons,
                "seconds": self.seconds, "runtime": self.runtime, "cached": self.cached,
                "ran_on": self.ran_on, "stage_seconds": self.stage_seconds}


def make_plan(c: Candidate, factors: Factors, target: str, seed: int, data: dict,
              model: dict | None = None, train_workers: int = 1) -> Plan:
    """The candidate as a plan; each step records its pass's config version, and a plan that
    trains with several data-parallel workers says how many."""
    from advisor.passes.base import load_builtin_passes
    from advisor.passes.config import stamp_config_versions

    steps = copy.deepcopy(c.steps)
    passes = load_builtin_passes()
    stamp_config_versions(steps, passes)
    trains = any(getattr(passes.get(s.pass_name), "trains", False) for s in steps)
    return Plan(name=c.name, steps=steps, factors=factors.to_json(),
                target=target, seed=seed, data=data, model=dict(model or {}),
                training={"workers": train_workers} if trains and train_workers > 1 else {})


def variants(c: Candidate) -> list[tuple[str, list[Step], Any]]:
    """The candidate's plans over its knob values (mild → aggressive for monotonic knobs)."""
    if not c.knob:
        return [(c.name, c.steps, None)]
    out = []
    for v in c.knob["values"]:
        steps = copy.deepcopy(c.steps)
        steps[c.knob["step"]].config[c.knob["field"]] = v
        out.append((f"{c.name} [{c.knob['field']}={v}]", steps, v))
    return out


def check_constraints(rec: TrialRecord, baseline: Baseline, factors: Factors) -> list[str]:
    """Violated constraints of a measured trial, in words (empty = feasible)."""
    m = rec.measured or {}
    v = []
    allowed = m.get("allowed_drop", factors.allowed_drop_points(baseline.accuracy))
    drop, disagree = m.get("accuracy_drop"), m.get("disagreement")
    if baseline.verified and drop is not None:
        if drop > allowed + 1e-9:
            v.append(f"accuracy drop {drop:.2f} pts > {allowed:.2f}")
    elif disagree is not None:
        if disagree > allowed + 1e-9:
            v.append(f"disagrees with the original on {disagree:.2f}% of inputs > {allowed:.2f}")
    p50 = (m.get("latency_ms") or {}).get("p50")
    if factors.max_latency_ms is not None and p50 is not None and p50 > factors.max_latency_ms:
        v.append(f"latency {p50:.2f} ms > {factors.max_latency_ms:g} ms")
    if factors.max_size_mb is not None and m.get("size_mb", 0) > factors.max_size_mb:
        v.append(f"size {m['size_mb']:.2f} MB > {factors.max_size_mb:g} MB")
    speedup, ratio = m.get("speedup"), m.get("size_ratio")
    if factors.goal == "latency" and speedup is not None and speedup <= 1.02:
        v.append(f"not faster than the baseline ({speedup:.2f}x)")
    if factors.goal == "size" and ratio is not None and ratio >= 0.98:
        v.append(f"not smaller than the baseline ({ratio:.2f}x)")
    if factors.goal == "balanced" and speedup is not None and ratio is not None and \
            speedup / ratio <= 1.02:
        v.append("neither faster nor smaller than the baseline")
    return v


def _annotate(rec: TrialRecord, result: dict, baseline: Baseline, factors: Factors) -> None:
    """Fill `rec` from a trial's result: every figure is derived once (`advisor.outcome`)."""
    from advisor.outcome import derive_outcome

    rec.status = result.get("status", "failed")
    rec.error = result.get("error")
    rec.ran_on, rec.stage_seconds = result.get("ran_on"), result.get("stage_seconds")
    rec.seconds = float(result.get("seconds", rec.seconds))
    if rec.status != "ok":
        return
    rt = result.get("runtime")
    rec.outcome = derive_outcome(
        result["measured"], runtime=rt, baseline_latency=baseline.latency_p50,
        baseline_size_mb=baseline.size_mb, baseline_accuracy=baseline.accuracy,
        allowed_drop=factors.allowed_drop_points(baseline.accuracy),
        artifact=result.get("artifact"), baseline_correct=baseline.correct)
    rec.measured, rec.steps = rec.outcome.to_json(), result.get("steps", [])
    pin_replay_configs(rec.plan, rec.steps)
    rec.artifact, rec.runtime = result.get("artifact"), rt
    if result.get("note"):
        rec.reasons.append(result["note"])
    for step in rec.steps:  # how the time cap shaped each training step, in the report's notes
        info = step.get("info") or {}
        sizing = info.get("sizing") or (info.get("train") or {}).get("sizing")
        if sizing and sizing.get("text"):
            rec.reasons.append(f"{step.get('pass')}: {sizing['text']}")
    rec.violations = check_constraints(rec, baseline, factors)
    unchanged = [(step.get("info") or {}).get("unchanged") for step in rec.steps]
    if unchanged and all(unchanged):
        # the same model as the baseline: any speed-up it shows is the host's noise (seen: an
        # untouched MobileNet "1.4x faster" picked over real plans)
        rec.violations.insert(0, f"the model is unchanged ({unchanged[0]}): its speed-up is "
                                 "timing noise")
    rec.meets_constraints = not rec.violations


def pin_replay_configs(plan_json: dict, steps: list[dict]) -> None:
    """Write into the trial's plan the config each step reports as the one that replays it
    exactly (`info["replay_config"]`): a run shaped by this machine — ranks chosen by measured
    latency, training cut by a time limit — is then rebuilt by `advisor apply` as it was
    measured, not re-decided on the replaying machine."""
    for step_json, ran in zip(plan_json.get("steps") or [], steps):
        pinned = (ran.get("info") or {}).get("replay_config")
        if isinstance(pinned, dict) and step_json.get("pass") == ran.get("pass"):
            step_json["config"] = pinned


def run_search(candidates: list[Candidate], *, run_one: Callable[[Plan, float | None], dict],
               baseline: Baseline, factors: Factors, settings: SearchSettings, target_name: str,
               data_specs: dict,
               progress: Callable[[str, int, int, float], None] | None = None,
               parallel: int = 1) -> list[TrialRecord]:
    """Evaluate candidates (and knob variants) within the budget: post-training candidates
    first, then training chains, each in rank order (`search_costs.schedule`); a trial whose
    cost estimate does not fit the time left is not started, and its record says so.

    `run_one(plan, train_seconds)` performs one isolated trial and returns its result dict;
    `progress(name, done, total, estimated_seconds)` is called as each trial starts.

    `parallel` > 1 (an executor that runs trials side by side, `advisor.executor_ray`) keeps
    up to that many trials in flight. What depends on an earlier trial stays in order: a
    candidate's knob values (a monotonic knob stops at the first value that breaks the budget;
    same-kernel values reuse the first one's timing) and candidates that share trained steps
    (`search_prefix`: the second reuses the first's training) run one after another in one
    lane; lanes run side by side, started in rank order. With `parallel` = 1 the lanes run one
    after another: the order of the sequential search."""
    import threading

    start = time.perf_counter()
    records: list[TrialRecord] = []
    queue = [(c, variants(c)) for c in schedule(candidates)]
    total = sum(len(v) for _, v in queue)
    # the training runs still to come: a chain whose trained steps an earlier sibling already
    # trains (its `+ int8` twin, `search_prefix`) is not one, so it takes no share of the time
    to_train = [_trained_steps_key(steps) for c, v in queue if c.trains for _, steps, _ in v]
    trained: set[str] = set()
    costs = CostModel(settings.first_guess_s)
    prefixes = PrefixStore()
    done = [0]
    in_flight = [0]  # trials started and not yet recorded: they count against max_trials
    lock = threading.RLock()  # the shared state above, between lanes
    stop = threading.Event()  # the search was interrupted or failed: lanes start nothing new

    def time_left() -> float | None:
        if settings.budget_seconds is None:
            return None
        return settings.budget_seconds - (time.perf_counter() - start)

    def new_id() -> str:
        return f"c{len(records) + 1}"

    def skipped(c: Candidate, name: str, steps: list, why: str, estimate: float | None = None
                ) -> TrialRecord:
        plan = make_plan(Candidate(name, steps, c.family, c.rule), factors, target_name,
                         settings.seed, data_specs, settings.model,
                         settings.train_workers)
        predicted = {**_predicted(c), **({"seconds": round(estimate, 1)} if estimate else {})}
        return TrialRecord(new_id(), name, c.rule, c.family, plan.to_json(),
                           predicted, status="skipped", error=why)

    def add(rec: TrialRecord) -> None:
        with lock:
            rec.id = new_id()  # numbered as they finish: the order of the records
            records.append(rec)
            done[0] += 1

    def run_candidate(c: Candidate, vars_: list) -> None:
        direction = _monotonic_direction(c)
        timing = None  # a same-kernels knob: the first variant's latency figures, for the rest
        for name, steps, value in vars_:
            if stop.is_set():
                return
            with lock:
                left = time_left()
                if c.trains:
                    mine = _trained_steps_key(steps)
                    to_train.remove(mine)
                    chains_left = len({k for k in to_train if k not in trained} | {mine}) \
                        if mine not in trained else 1
                if len(records) + in_flight[0] >= settings.max_trials:
                    add(skipped(c, name, steps,
                                f"the trial limit ({settings.max_trials}) was reached"))
                    continue
                reuse = prefixes.find(steps)
                trains = c.trains and not (reuse and _only_untrained_after(steps, reuse["steps"]))
                train_s = train_allowance(c, left, chains_left, costs.overhead(c.family)) \
                    if trains else None
                estimate = costs.estimate(c, train_s)
                # the first trial may use the allowed overrun: a user with a short budget still
                # learns what the cheapest candidate gives
                room = None if left is None else \
                    left + (OVERRUN_ALLOWED * settings.budget_seconds if not records else 0.0)
                if room is not None and estimate > room:
                    why = ("the time budget was spent before this candidate ran" if left <= 0
                           else f"not started: estimated {estimate:.0f} s"
                           + (f" ({train_s:.0f} s of training)" if train_s else "")
                           + f", {max(0.0, left):.0f} s of the budget left")
                    add(skipped(c, name, steps, why, estimate))
                    continue
                plan = make_plan(Candidate(name, steps, c.family, c.rule), factors, target_name,
                                 settings.seed, data_specs, settings.model,
                                 settings.train_workers)
                rec = TrialRecord("", name, c.rule, c.family, plan.to_json(),
                                  {**_predicted(c), "seconds": round(estimate, 1)},
                                  reasons=[c.note] if c.note else [])
                if progress:
                    progress(name, done[0], total, estimate)
                in_flight[0] += 1
            if reuse:
                rec.reasons.append(f"steps 1-{reuse['steps']} reused from {reuse['trial']} "
                                   "(the same steps and seeds: not trained again)")
            if timing:
                rec.reasons.append(f"timed once with {timing['from']}: the {c.knob['field']} "
                                   "values change only numbers, the same kernels run")
            extra = {**({"resume": reuse} if reuse else {}), **({"timing": timing} if timing else {})}
            t0 = time.perf_counter()
            result = run_one(plan, train_s, **extra)
            _annotate(rec, result, baseline, factors)
            # what the budget paid: the worker's start and imports included
            rec.seconds = time.perf_counter() - t0
            _mark_cached(rec, result)
            with lock:
                in_flight[0] -= 1
                add(rec)
                if rec.status == "ok":
                    if c.trains:
                        trained.add(_trained_steps_key(steps))
                    if not rec.cached:  # a reused trial says nothing about what a trial costs
                        costs.observe(c, rec.seconds,
                                      [s for s in rec.steps if not s.get("reused_from")])
                    prefixes.remember(rec.id, steps, result)
                    if timing is None and _same_kernels(c):
                        timing = {"from": rec.id, "runtime": result.get("runtime"),
                                  **{k: (result.get("measured") or {}).get(k)
                                     for k in ("latency_ms", "paired", "peak_memory_mb")}}
                left = time_left()
                room_left = len(records) + in_flight[0] < settings.max_trials and \
                    (left is None or left > 0)
                fb_estimate = costs.estimate(c, None)
                # a retry is a trial: it counts against both limits; the fallback ranks layers
                # by their accuracy cost, so without labelled data it cannot run (not even tried)
                retry = room_left and rec.status == "ok" and not rec.meets_constraints and \
                    baseline.verified and _accuracy_only(rec)
                in_flight[0] += int(retry)
            if retry:
                fb = _fallback_retry(c, steps, rec, baseline, factors, run_one, settings,
                                     target_name, data_specs, fb_estimate, left)
                with lock:
                    in_flight[0] -= 1
                    if fb is not None:
                        add(fb)
                if direction:  # more aggressive values would lose even more accuracy
                    break
            if rec.status != "ok" and direction:
                break

    def run_lane(lane) -> None:
        for c, vars_ in lane:
            run_candidate(c, vars_)

    lanes = _lanes(queue) if parallel > 1 else [[item] for item in queue]
    if parallel <= 1 or len(lanes) <= 1:
        for lane in lanes:
            run_lane(lane)
        return records
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="advisor-lane")
    try:
        for fut in [pool.submit(run_lane, lane) for lane in lanes]:
            fut.result()  # an error in a lane is the search's error, as it is sequentially
    except BaseException:
        # Ctrl-C or a lane's error: return at once, not after the trials in flight (the
        # caller cancels those, `RayExecutor.cancel_all`); no lane starts another
        stop.set()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return records


def _lanes(queue: list) -> list[list]:
    """The candidates grouped into lanes that may run side by side: candidates that share
    trained steps (one reuses the other's training, `search_prefix`) share a lane, in rank
    order; lanes are ordered by their first candidate."""
    lanes: list[list] = []
    by_key: dict[str, list] = {}
    for c, vars_ in queue:
        keys = {_trained_steps_key(steps) for _, steps, _ in vars_} if c.trains else set()
        lane = next((by_key[k] for k in keys if k in by_key), None)
        if lane is None:
            lane = []
            lanes.append(lane)
        lane.append((c, vars_))
        for k in keys:
            by_key.setdefault(k, lane)
    return lanes


def _same_kernels(c: Candidate) -> bool:
    """Whether the candidate's knob values all run the same kernels (`knob_same_kernels`)."""
    from advisor.passes.config import knob_same_kernels

    if not c.knob:
        return False
    spec = _spec(c.steps[c.knob["step"]].pass_name)
    return bool(spec and knob_same_kernels(spec.config_cls, c.knob["field"]))


def _trained_steps_key(steps: list[Step]) -> str:
    """The steps up to the last one that trains (what a sibling plan can reuse)."""
    last = max((i for i, st in enumerate(steps) if getattr(_spec(st.pass_name), "trains", False)),
               default=-1)
    return prefix_key(steps[:last + 1])


def _only_untrained_after(steps: list[Step], k: int) -> bool:
    """Whether every step after the first `k` needs no training."""
    return not any(getattr(_spec(st.pass_name), "trains", False) for st in steps[k:])


def _spec(pass_name: str):
    """The registered pass (None if unknown); the registry is loaded lazily."""
    from advisor.passes.base import load_builtin_passes

    return load_builtin_passes().get(pass_name)


def _monotonic_direction(c: Candidate) -> str | None:
    """"increasing"/"decreasing" when c's knob is declared monotonic by its pass's config."""
    from advisor.passes.config import knob_direction

    if not c.knob:
        return None
    spec = _spec(c.steps[c.knob["step"]].pass_name)
    direction = knob_direction(spec.config_cls, c.knob["field"]) if spec else None
    return direction if direction in ("increasing", "decreasing") else None


def _accuracy_only(rec: TrialRecord) -> bool:
    return bool(rec.violations) and all(v.startswith(("accuracy", "disagrees"))
                                        for v in rec.violations)


def _fallback_retry(c, steps, rec, baseline, factors, run_one, settings, target_name,
                    data_specs, estimate: float, left: float | None
                    ) -> TrialRecord | None:
    """A plan that misses the accuracy budget: retry its first step that declares an
    accuracy-aware fallback (int8: layers reverted to fp32) with the budget filled in — when
    its estimate (a trial like the one that missed) fits the time left."""
    if left is not None and estimate > left:
        return None
    for i, st in enumerate(steps):
        spec = _spec(st.pass_name)
        budget_field = spec.fallback_field if spec else None
        if budget_field is None:
            continue
        if st.config.get(budget_field) is not None:
            return None
        new_steps = copy.deepcopy(steps)
        new_steps[i].config[budget_field] = factors.allowed_drop_points(baseline.accuracy)
        name = f"{rec.name} + fp32 fallback"
        plan = make_plan(Candidate(name, new_steps, c.family, c.rule), factors, target_name,
                         settings.seed, data_specs, settings.model,
                         settings.train_workers)
        fb = TrialRecord("", name, c.rule, c.family, plan.to_json(),
                         {**_predicted(c), "seconds": round(estimate, 1)},
                         reasons=[f"{st.pass_name} missed the accuracy budget: the most "
                                  "sensitive layers are kept in fp32 until it fits"])
        t0 = time.perf_counter()
        result = run_one(plan, None)
        _annotate(fb, result, baseline, factors)
        fb.seconds = time.perf_counter() - t0
        _mark_cached(fb, result)
        return fb
    return None


def _mark_cached(rec: TrialRecord, result: dict) -> None:
    """Say so when a trial's result came from the trial cache (`advisor.trial_cache`)."""
    if result.get("cached"):
        rec.cached = result["cached"]
        rec.reasons.append(f"from the trial cache (measured {rec.cached.get('stored')} with the "
                           "same model, data, target and settings)")


def _predicted(c: Candidate) -> dict:
    return {"speedup": c.predicted_speedup, "size_ratio": c.predicted_size_ratio,
            "note": c.note}
