"""Search and selection against a fake trial boundary (no models, no measurement)."""
from advisor.decide.candidate import Candidate
from advisor.decide.factors import Factors
from advisor.decide.plan import Step
from advisor.search import Baseline, SearchSettings, run_search, select

BASE = Baseline({"onnxruntime": 10.0}, size_mb=4.0, accuracy=0.98, verified=True)


def fake_run(results):
    calls = []

    def run_one(plan, train_s, **kw):
        calls.append(plan)
        plan.kw = kw  # what the search passed beside the plan (resume, timing)
        key = plan.name
        r = results[key]
        if isinstance(r, Exception):
            return {"status": "failed", "error": str(r)}
        lat, size, acc = r
        return {"status": "ok", "runtime": "onnxruntime", "seconds": 0.1,
                "measured": {"latency_ms": {"p50": lat, "p90": lat, "cv": 0.01},
                             "size_mb": size, "accuracy": acc}}
    return run_one, calls


def cand(name, knob=None):
    return Candidate(name, [Step("prune_structured", {"ratio": 0.3})], "pruning", "r", knob=knob)


def test_picks_fastest_feasible_and_records_failures():
    run_one, _ = fake_run({"a": (5.0, 1.0, 0.975), "b": (3.0, 1.0, 0.95), "c": RuntimeError("x")})
    recs = run_search([cand("a"), cand("b"), cand("c")], run_one=run_one, baseline=BASE,
                      factors=Factors(max_drop=1.0), settings=SearchSettings(), target_name="cpu",
                      data_specs={})
    chosen, closest = select(recs, Factors(max_drop=1.0))
    assert chosen.name == "a" and chosen.measured["speedup"] == 2.0
    b = next(r for r in recs if r.name == "b")
    assert not b.meets_constraints and "accuracy drop 3.00" in b.violations[0]
    assert next(r for r in recs if r.name == "c").status == "failed"


def test_nothing_feasible_keeps_closest():
    run_one, _ = fake_run({"a": (5.0, 1.0, 0.90), "b": (12.0, 1.0, 0.98)})
    recs = run_search([cand("a"), cand("b")], run_one=run_one, baseline=BASE, factors=Factors(),
                      settings=SearchSettings(), target_name="cpu", data_specs={})
    chosen, closest = select(recs, Factors())
    assert chosen is None and len(closest) == 2


def test_monotonic_knob_stops_after_accuracy_breaks():
    knob = {"step": 0, "field": "ratio", "values": [0.3, 0.5, 0.7]}
    run_one, calls = fake_run({"p [ratio=0.3]": (6.0, 2.0, 0.98), "p [ratio=0.5]": (4.0, 1.0, 0.90),
                               "p [ratio=0.7]": (2.0, 0.5, 0.5)})
    recs = run_search([cand("p", knob)], run_one=run_one, baseline=BASE, factors=Factors(),
                      settings=SearchSettings(), target_name="cpu", data_specs={})
    assert [p.name for p in calls] == ["p [ratio=0.3]", "p [ratio=0.5]"]
    assert calls[1].steps[0].config["ratio"] == 0.5


def test_budget_exhausted_marks_skipped():
    run_one, calls = fake_run({"a": (5.0, 1.0, 0.98), "b": (5.0, 1.0, 0.98)})
    recs = run_search([cand("a"), cand("b")], run_one=run_one, baseline=BASE, factors=Factors(),
                      settings=SearchSettings(budget_seconds=0.0), target_name="cpu",
                      data_specs={})
    assert not calls and all(r.status == "skipped" for r in recs)


def test_size_goal_requires_smaller():
    run_one, _ = fake_run({"a": (5.0, 4.0, 0.98), "b": (11.0, 1.0, 0.98)})
    f = Factors(goal="size")
    recs = run_search([cand("a"), cand("b")], run_one=run_one, baseline=BASE, factors=f,
                      settings=SearchSettings(), target_name="cpu", data_specs={})
    chosen, _ = select(recs, f)
    assert chosen.name == "b"


def test_unverified_uses_agreement():
    base = Baseline({"onnxruntime": 10.0}, 4.0, None, verified=False)

    def run_one(plan, t):
        return {"status": "ok", "runtime": "onnxruntime", "measured": {
            "latency_ms": {"p50": 4.0}, "size_mb": 1.0, "accuracy": None,
            "agreement": {"top1_agreement": 0.95, "max_abs_diff": 0.3}}}
    recs = run_search([cand("a")], run_one=run_one, baseline=base, factors=Factors(max_drop=1.0),
                      settings=SearchSettings(), target_name="cpu", data_specs={})
    assert recs[0].violations and "disagrees" in recs[0].violations[0]


def test_accuracy_miss_retries_with_the_pass_declared_fallback():
    """The fallback field comes from the config's metadata (int8_static: max_drop)."""
    c = Candidate("q", [Step("prune_structured", {"ratio": 0.3}),
                        Step("int8_static", {"calibration": "minmax"})], "quantization", "r")
    run_one, calls = fake_run({"q": (4.0, 1.0, 0.90), "q + fp32 fallback": (5.0, 1.0, 0.975)})
    recs = run_search([c], run_one=run_one, baseline=BASE, factors=Factors(max_drop=1.0),
                      settings=SearchSettings(), target_name="cpu", data_specs={})
    assert [p.name for p in calls] == ["q", "q + fp32 fallback"]
    assert calls[1].steps[1].config["max_drop"] == 1.0 and "max_drop" not in calls[1].steps[0].config
    assert recs[1].meets_constraints and "int8_static missed" in recs[1].reasons[0]


def test_unordered_knob_tries_every_value():
    knob = {"step": 0, "field": "calibration", "values": ["minmax", "entropy"]}
    c = Candidate("q", [Step("int8_static", {"max_drop": 0.5})], "quantization", "r", knob=knob)
    run_one, calls = fake_run({"q [calibration=minmax]": (4.0, 1.0, 0.90),
                               "q [calibration=entropy]": (4.0, 1.0, 0.98)})
    run_search([c], run_one=run_one, baseline=BASE, factors=Factors(), settings=SearchSettings(),
               target_name="cpu", data_specs={})
    assert [p.name for p in calls] == ["q [calibration=minmax]", "q [calibration=entropy]"]
    # calibration changes only the scales: the second variant is not timed again
    assert calls[0].kw == {} and calls[1].kw["timing"]["from"] == "c1"
    assert calls[1].kw["timing"]["latency_ms"]["p50"] == 4.0


def test_fallback_retry_counts_against_max_trials():
    """An int8 plan that misses the accuracy budget is retried with its fp32 fallback, but only
    while the trial limit (and the budget) leave room: the retry is a trial like any other."""
    int8 = Candidate("q", [Step("int8_static", {"calibration": "minmax"})], "quantization", "r")
    results = {"q": (4.0, 1.0, 0.90), "q + fp32 fallback": (5.0, 1.2, 0.978)}
    run_one, calls = fake_run(results)
    recs = run_search([int8], run_one=run_one, baseline=BASE, factors=Factors(max_drop=1.0),
                      settings=SearchSettings(max_trials=2), target_name="cpu", data_specs={})
    assert [p.name for p in calls] == ["q", "q + fp32 fallback"]
    assert recs[-1].meets_constraints
    run_one, calls = fake_run(results)
    recs = run_search([int8], run_one=run_one, baseline=BASE, factors=Factors(max_drop=1.0),
                      settings=SearchSettings(max_trials=1), target_name="cpu", data_specs={})
    assert [p.name for p in calls] == ["q"], "the retry must not exceed --max-trials"


# ---- the budget's promise: order, estimates, what is not started -----------------------------

def _timed_run(seconds: dict[str, float], log: list):
    """A fake trial that takes `seconds[name]` of wall time (training included)."""
    import time

    def run_one(plan, train_s):
        log.append((plan.name, train_s))
        time.sleep(seconds[plan.name])
        return {"status": "ok", "runtime": "onnxruntime", "seconds": seconds[plan.name],
                "measured": {"latency_ms": {"p50": 5.0, "p90": 5.0, "cv": 0.01},
                             "size_mb": 1.0, "accuracy": 0.98}}
    return run_one


def _chain(name):
    return Candidate(name, [Step("prune_structured", {"ratio": 0.3}), Step("finetune", {})],
                     "pruning", "r", trains=True)


def _int8(name):
    return Candidate(name, [Step("int8_static", {})], "quantization", "r")


def test_post_training_candidates_run_before_any_training_chain():
    log = []
    run_one = _timed_run({"chain": 0.0, "int8": 0.0, "tucker": 0.0}, log)
    tucker = Candidate("tucker", [Step("factorize", {})], "lowrank", "r")
    recs = run_search([_chain("chain"), _int8("int8"), tucker], run_one=run_one, baseline=BASE,
                      factors=Factors(), settings=SearchSettings(budget_seconds=None),
                      target_name="cpu", data_specs={})
    assert [name for name, _ in log] == ["int8", "tucker", "chain"]
    assert [r.name for r in recs] == ["int8", "tucker", "chain"]


def test_a_chain_that_cannot_finish_in_the_time_left_is_not_started():
    log = []
    run_one = _timed_run({"int8": 0.4, "chain": 0.0}, log)
    # the chain would get at least 10 s of training, and 0.6 s are left after int8
    recs = run_search([_chain("chain"), _int8("int8")], run_one=run_one, baseline=BASE,
                      factors=Factors(), settings=SearchSettings(budget_seconds=1.0),
                      target_name="cpu", data_specs={})
    assert [name for name, _ in log] == ["int8"]
    chain = next(r for r in recs if r.name == "chain")
    assert chain.status == "skipped" and chain.error.startswith("not started: estimated")
    assert "of training" in chain.error and chain.predicted["seconds"] > 10


def test_estimates_come_from_measured_trials_of_the_family():
    log = []
    run_one = _timed_run({"a": 0.3, "b": 0.3}, log)
    recs = run_search([_int8("a"), _int8("b")], run_one=run_one, baseline=BASE, factors=Factors(),
                      settings=SearchSettings(budget_seconds=None, first_guess_s=7.0),
                      target_name="cpu", data_specs={})
    assert recs[0].predicted["seconds"] == 7.0  # before any trial: the baseline-based guess
    assert 0.25 < recs[1].predicted["seconds"] < 0.6  # after one: what that trial took


def test_the_first_trial_may_use_the_allowed_overrun_later_ones_not():
    log = []
    run_one = _timed_run({"a": 0.0, "b": 0.0}, log)
    # a guess 5% over the budget: the first starts (the user learns what int8 gives) ...
    recs = run_search([_int8("a")], run_one=run_one, baseline=BASE, factors=Factors(),
                      settings=SearchSettings(budget_seconds=10.0, first_guess_s=10.5),
                      target_name="cpu", data_specs={})
    assert recs[0].status == "ok"
    # ... and a guess 20% over does not
    recs = run_search([_int8("a")], run_one=run_one, baseline=BASE, factors=Factors(),
                      settings=SearchSettings(budget_seconds=10.0, first_guess_s=12.0),
                      target_name="cpu", data_specs={})
    assert recs[0].status == "skipped" and "estimated 12 s" in recs[0].error


# ---- not choosing on noise -------------------------------------------------------------------

def test_the_speedup_spread_comes_from_consecutive_stretches_of_the_paired_run():
    from advisor.measure.latency import segment_speedups

    ref = [2.0] * 15
    cand = [1.0] * 6 + [0.5] * 3 + [1.0] * 6  # one stretch ran faster
    parts = segment_speedups(cand, ref)
    assert len(parts) == 5 and min(parts) == 2.0 and max(parts) == 4.0
    assert segment_speedups([1.0, 1.0], [2.0, 2.0]) == [2.0]  # too short to split


def test_the_speedup_interval_is_a_notch_one_slow_stretch_does_not_widen():
    from advisor.measure.latency import speedup_interval

    parts = [1.8, 3.9, 4.1, 4.3, 4.5]  # one slow stretch on a noisy host
    lo, hi = speedup_interval(parts, 4.15)
    half = 1.58 * (4.3 - 3.9) / 5 ** 0.5  # median 4.1, quartiles 3.9 and 4.3
    assert abs(lo - (4.1 - half)) < 1e-9 and abs(hi - (4.1 + half)) < 1e-9
    assert 3.5 < lo < 4.15 < hi < 4.5
    assert speedup_interval([2.0, 2.0, 2.0], 2.5) == (2.0, 2.5)  # widened to hold the estimate
    assert speedup_interval([2.0], 2.0) is None  # one stretch: no interval


def _paired_run(results):
    def run_one(plan, train_s):
        speedup, low, high, acc = results[plan.name]
        return {"status": "ok", "runtime": "onnxruntime",
                "measured": {"latency_ms": {"p50": 10 / speedup, "p90": 10 / speedup, "cv": 0.0},
                             "size_mb": 1.0, "accuracy": acc,
                             "paired": {"speedup": speedup, "speedup_low": low,
                                        "speedup_high": high}}}
    return run_one


def test_overlapping_speedups_are_ties_broken_by_accuracy():
    run_one = _paired_run({"fast": (3.2, 2.4, 3.9, 0.975), "close": (3.0, 2.6, 3.3, 0.98),
                           "slow": (1.5, 1.4, 1.6, 0.98)})
    recs = run_search([_int8("fast"), _int8("close"), _int8("slow")], run_one=run_one,
                      baseline=BASE, factors=Factors(max_drop=1.0),
                      settings=SearchSettings(budget_seconds=None), target_name="cpu",
                      data_specs={})
    chosen, _ = select(recs, Factors(max_drop=1.0))
    assert chosen.name == "close"  # 3.0x vs 3.2x is noise here; it keeps 0.5 pts more
    assert "overlap" in " ".join(chosen.reasons) and recs[0].id in " ".join(chosen.reasons)
    # separated ranges: the faster one wins however small its lead
    run_one = _paired_run({"fast": (3.2, 3.1, 3.3, 0.975), "close": (3.0, 2.9, 3.05, 0.98)})
    recs = run_search([_int8("fast"), _int8("close")], run_one=run_one, baseline=BASE,
                      factors=Factors(max_drop=1.0), settings=SearchSettings(budget_seconds=None),
                      target_name="cpu", data_specs={})
    assert select(recs, Factors(max_drop=1.0))[0].name == "fast"


def test_a_noisy_timing_is_said():
    run_one = _paired_run({"a": (3.0, 2.0, 3.6, 0.98)})
    recs = run_search([_int8("a")], run_one=run_one, baseline=BASE, factors=Factors(max_drop=1.0),
                      settings=SearchSettings(budget_seconds=None), target_name="cpu",
                      data_specs={})
    chosen, _ = select(recs, Factors(max_drop=1.0))
    assert any("host was noisy" in r and "2.00x and 3.60x" in r for r in chosen.reasons)


def test_no_fallback_retry_without_labelled_data():
    """The fp32 fallback ranks layers by their accuracy cost: without labels it cannot run."""
    base = Baseline({"onnxruntime": 10.0}, 4.0, None, verified=False)
    calls = []

    def run_one(plan, train_s, **kw):
        calls.append(plan.name)
        return {"status": "ok", "runtime": "onnxruntime", "measured": {
            "latency_ms": {"p50": 4.0}, "size_mb": 1.0, "accuracy": None,
            "agreement": {"top1_agreement": 0.86, "max_abs_diff": 0.3}}}
    recs = run_search([Candidate("q", [Step("int8_static", {})], "quantization", "r")],
                      run_one=run_one, baseline=base, factors=Factors(max_drop=1.0),
                      settings=SearchSettings(budget_seconds=None), target_name="cpu",
                      data_specs={})
    assert calls == ["q"] and "disagrees" in recs[0].violations[0]


def test_siblings_that_share_their_training_take_one_share_of_the_time():
    """"prune → fine-tune → int8" and "prune → fine-tune" train once (the second reuses the
    first's steps), so the time left is split between two training runs, not three."""
    log = []
    run_one = _timed_run({"chain + int8": 0.0, "chain": 0.0, "other": 0.0}, log)
    twin = Candidate("chain + int8", [Step("prune_structured", {"ratio": 0.3}), Step("finetune", {}),
                                      Step("int8_static", {})], "pruning", "r", trains=True)
    other = Candidate("other", [Step("prune_structured", {"ratio": 0.5}), Step("finetune", {})],
                      "pruning", "r", trains=True)
    run_search([twin, _chain("chain"), other], run_one=run_one, baseline=BASE, factors=Factors(),
               settings=SearchSettings(budget_seconds=1000.0), target_name="cpu", data_specs={})
    first = dict(log)["chain + int8"]
    assert first is not None and first > 0.9 * 1000 / 2 - 60  # a half, not a third


def test_a_plan_that_changed_nothing_is_not_chosen_on_its_noise():
    """Tucker-2 at conservative energy may factorize no layer: the same model as the baseline,
    whose "1.4x" is the host's noise, must not be picked."""
    def run_one(plan, train_s, **kw):
        info = {"unchanged": "no layer was worth factorizing at these ranks"} \
            if plan.name == "tucker" else {}
        return {"status": "ok", "runtime": "onnxruntime", "seconds": 0.1,
                "steps": [{"pass": plan.steps[0].pass_name, "info": info}],
                "measured": {"latency_ms": {"p50": 7.0, "p90": 7.0, "cv": 0.01},
                             "size_mb": 4.0, "accuracy": 0.98}}

    tucker = Candidate("tucker", [Step("factorize", {})], "lowrank", "r")
    recs = run_search([tucker, _int8("int8")], run_one=run_one, baseline=BASE,
                      factors=Factors(max_drop=1.0), settings=SearchSettings(budget_seconds=None),
                      target_name="cpu", data_specs={})
    t = next(r for r in recs if r.name == "tucker")
    assert not t.meets_constraints and "unchanged" in t.violations[0]
    assert select(recs, Factors(max_drop=1.0))[0].name == "int8"


# ---- several trials in flight (an executor that runs them side by side) ----------------------

def _spans_run(seconds: float, spans: dict):
    """A fake trial of `seconds` wall time that records when it ran."""
    import threading
    import time

    lock = threading.Lock()

    def run_one(plan, train_s, **kw):
        t0 = time.perf_counter()
        time.sleep(seconds)
        with lock:
            spans[plan.name] = (t0, time.perf_counter(), dict(kw))
        torch_steps = [s for s in plan.steps if s.pass_name != "int8_static"]
        ran = [{"pass": s.pass_name, "info": {}} for s in plan.steps]
        return {"status": "ok", "runtime": "onnxruntime", "seconds": seconds, "steps": ran,
                "prefix_onnx": {"steps": len(torch_steps), "path": f"/x/{plan.name}.onnx"}
                if torch_steps else None,
                "measured": {"latency_ms": {"p50": 5.0, "p90": 5.0, "cv": 0.01},
                             "size_mb": 1.0, "accuracy": 0.98}}
    return run_one


def _overlap(a, b) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def test_independent_candidates_run_side_by_side_and_dependent_ones_in_order():
    import time

    spans: dict = {}
    knob = {"step": 0, "field": "ratio", "values": [0.3, 0.5]}
    chain = _chain("chain")
    twin = Candidate("chain + int8", chain.steps + [Step("int8_static", {})], "pruning", "r",
                     trains=True)
    t0 = time.perf_counter()
    recs = run_search([_int8("a"), _int8("b"), cand("p", knob), chain, twin],
                      run_one=_spans_run(0.4, spans), baseline=BASE, factors=Factors(),
                      settings=SearchSettings(budget_seconds=None), target_name="cpu",
                      data_specs={}, parallel=3)
    wall = time.perf_counter() - t0
    assert sorted(r.name for r in recs) == sorted(
        ["a", "b", "p [ratio=0.3]", "p [ratio=0.5]", "chain", "chain + int8"])
    assert _overlap(spans["a"], spans["b"])  # independent: in flight together
    # a knob's values one after another (a monotonic knob stops at the first that breaks)
    assert spans["p [ratio=0.3]"][1] <= spans["p [ratio=0.5]"][0]
    # the twin reuses the chain's training: after it, with its prefix
    assert spans["chain"][1] <= spans["chain + int8"][0]
    assert spans["chain + int8"][2]["resume"]["trial"] == \
        next(r.id for r in recs if r.name == "chain")
    assert wall < 6 * 0.4 - 0.5, "side by side, not one after another"
    assert [r.id for r in recs] == [f"c{i}" for i in range(1, 7)]  # numbered as they finish


def test_in_flight_trials_share_the_trial_limit():
    spans: dict = {}
    recs = run_search([_int8(n) for n in "abcde"], run_one=_spans_run(0.1, spans),
                      baseline=BASE, factors=Factors(),
                      settings=SearchSettings(budget_seconds=None, max_trials=3),
                      target_name="cpu", data_specs={}, parallel=2)
    ran = [r for r in recs if r.status == "ok"]
    assert len(recs) == 5 and len(ran) == 3  # trials in flight count against the limit
    assert all("trial limit" in r.error for r in recs if r.status == "skipped")


def test_an_error_in_one_lane_ends_the_search_at_once_and_no_lane_starts_another():
    """Ctrl-C (or a lane's error) reaches the thread that waits for the lanes: the search
    returns without waiting for the trials in flight, which the caller cancels."""
    import threading
    import time

    import pytest

    started, release = [], threading.Event()

    def run_one(plan, train_s, **kw):
        started.append(plan.name)
        if plan.name == "a":
            time.sleep(0.2)
            raise KeyboardInterrupt
        release.wait(10)  # "b": a long trial in flight
        return {"status": "ok", "runtime": "onnxruntime", "seconds": 0.1,
                "measured": {"latency_ms": {"p50": 5.0, "p90": 5.0, "cv": 0.01},
                             "size_mb": 1.0, "accuracy": 0.98}}

    knob = {"step": 0, "field": "calibration", "values": ["minmax", "entropy"]}
    b = Candidate("b", [Step("int8_static", {})], "quantization", "r", knob=knob)
    t0 = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        run_search([_int8("a"), b], run_one=run_one, baseline=BASE, factors=Factors(),
                   settings=SearchSettings(budget_seconds=None), target_name="cpu",
                   data_specs={}, parallel=2)
    assert time.perf_counter() - t0 < 5, "did not wait for the trial in flight"
    release.set()
    time.sleep(0.3)
    assert sorted(started) == ["a", "b [calibration=minmax]"], "b's next value not started"
