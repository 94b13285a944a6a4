"""Selection on bounds: the drop's paired uncertainty and the held-out fallback order."""
from __future__ import annotations

import numpy as np

from advisor.decide.candidate import Candidate
from advisor.decide.factors import Factors
from advisor.decide.plan import Step
from advisor.measure.drop_bound import pack, paired_drop, unpack
from advisor.search import Baseline, SearchSettings, run_search
from advisor.selection import select, selection_order

N = 400
BASE_FLAGS = np.ones(N, dtype=bool)
BASE_FLAGS[:8] = False  # the baseline gets 98% right


def test_the_bound_rests_on_the_samples_where_the_models_disagree():
    cand = BASE_FLAGS.copy()
    cand[10:12] = False  # two more wrong
    d = paired_drop(BASE_FLAGS, cand)
    assert (d["worse"], d["better"], d["n"]) == (2, 0, N)
    assert abs(d["drop"] - 0.5) < 1e-12
    se = np.sqrt(2 - 4 / N) / N * 100
    assert abs(d["upper"] - (0.5 + 1.645 * se)) < 1e-9
    same = paired_drop(BASE_FLAGS, BASE_FLAGS)
    assert same["drop"] == same["upper"] == 0.0  # no disagreement: no uncertainty
    swapped = BASE_FLAGS.copy()
    swapped[:8], swapped[8:16] = True, False  # as many right as wrong: drop 0, bound > 0
    d = paired_drop(BASE_FLAGS, swapped)
    assert d["drop"] == 0.0 and d["upper"] > 1.0
    assert np.array_equal(unpack(pack(cand)), cand)


def _flags(worse: int, better: int = 0) -> np.ndarray:
    f = BASE_FLAGS.copy()
    f[20:20 + worse] = False
    f[:better] = True
    return f


def _run(results):
    def run_one(plan, train_s):
        speedup, flags = results[plan.name]
        return {"status": "ok", "runtime": "onnxruntime",
                "measured": {"latency_ms": {"p50": 10 / speedup, "p90": 10 / speedup, "cv": 0.0},
                             "size_mb": 1.0, "accuracy": float(flags.mean()),
                             "correct": pack(flags)}}
    return run_one


def _search(results):
    base = Baseline({"onnxruntime": 10.0}, 4.0, float(BASE_FLAGS.mean()), True, BASE_FLAGS)
    cands = [Candidate(n, [Step("int8_static", {})], "quantization", "r") for n in results]
    return run_search(cands, run_one=_run(results), baseline=base, factors=Factors(max_drop=1.0),
                      settings=SearchSettings(budget_seconds=None), target_name="cpu",
                      data_specs={})


def test_a_plan_surely_within_the_budget_is_preferred_to_a_faster_borderline_one():
    # 'edge': 3 wrong of 400 = 0.75 pts measured (within 1), upper bound about 1.5 pts
    recs = _search({"edge": (3.0, _flags(3)), "margin": (2.8, _flags(1))})
    edge = recs[0].measured
    assert edge["accuracy_drop"] < 1.0 < edge["accuracy_drop_upper"]
    assert recs[0].meets_constraints  # feasible on the point estimate ...
    chosen, _ = select(recs, Factors(max_drop=1.0))
    assert chosen.name == "margin"  # ... but the sure one, 7% slower, is chosen
    assert [r.name for r in selection_order(recs, Factors(max_drop=1.0))] == ["margin", "edge"]
    # a sure plan 17% slower is not worth it: the faster one is chosen, and says it is not sure
    recs = _search({"edge": (3.0, _flags(3)), "margin": (2.5, _flags(1))})
    chosen, _ = select(recs, Factors(max_drop=1.0))
    assert chosen.name == "edge" and any("not surely" in r for r in chosen.reasons)


def test_without_a_sure_plan_the_point_estimate_decides_and_says_so():
    recs = _search({"edge": (3.0, _flags(3)), "edge2": (2.5, _flags(3))})
    chosen, _ = select(recs, Factors(max_drop=1.0))
    assert chosen.name == "edge"
    assert any("not surely" in r and "400 validation samples" in r for r in chosen.reasons)


def test_a_pick_the_held_out_split_rejects_falls_back_to_the_next_plan(monkeypatch):
    from types import SimpleNamespace

    import advisor.api as api

    recs = _search({"a": (3.0, _flags(0)), "b": (2.5, _flags(0)), "c": (2.0, _flags(0))})
    held_out = {"c1": 0.96, "c2": 0.975, "c3": 0.98}  # the baseline: 0.98 on the test split
    monkeypatch.setattr(api, "artifact_accuracy", lambda rec, data, target: held_out[rec.id])
    st = SimpleNamespace(records=recs, chosen=recs[0], factors=Factors(max_drop=1.0),
                         data=SimpleNamespace(test=object()), base_acc_test=0.98, warnings=[],
                         tgt=None)
    pick, acc, drop = api._held_out_pick(st)
    assert pick.id == "c2" and acc == 0.975 and abs(drop - 0.5) < 1e-9
    assert "c1 (a) dropped 2.00 points on the held-out split" in st.warnings[0]
    assert st.warnings[0] in pick.reasons
    held_out.update(c2=0.95, c3=0.95)  # none passes: the validation's pick stays, said so
    st.warnings.clear()
    pick, _, _ = api._held_out_pick(st)
    assert pick.id == "c1" and "and so do the next 2 plans" in st.warnings[0]


def test_speed_ties_between_sure_plans_go_to_the_smaller_not_the_least_changed():
    """Both surely within the drop, speed-ups overlapping (a noisy host): two images of
    accuracy are noise, so the smaller plan wins, not the one closest to the baseline."""
    base = Baseline({"onnxruntime": 10.0}, 4.0, float(BASE_FLAGS.mean()), True, BASE_FLAGS)
    results = {"pruned": (3.3, 2.0, 3.6, _flags(1), 0.5),  # one image worse, half the size
               "gentle": (1.7, 1.5, 2.1, _flags(0, better=2), 1.0)}  # two better, full size

    def run_one(plan, train_s):
        speedup, low, high, flags, size = results[plan.name]
        return {"status": "ok", "runtime": "onnxruntime",
                "measured": {"latency_ms": {"p50": 10 / speedup, "p90": 10 / speedup, "cv": 0.0},
                             "size_mb": size, "accuracy": float(flags.mean()),
                             "correct": pack(flags),
                             "paired": {"speedup": speedup, "speedup_low": low,
                                        "speedup_high": high}}}

    cands = [Candidate(n, [Step("int8_static", {})], "quantization", "r") for n in results]
    recs = run_search(cands, run_one=run_one, baseline=base, factors=Factors(max_drop=1.0),
                      settings=SearchSettings(budget_seconds=None), target_name="cpu",
                      data_specs={})
    chosen, _ = select(recs, Factors(max_drop=1.0))
    assert chosen.name == "pruned"
    # the same two with "pruned" not surely within the drop: the sure one wins the tie
    results["pruned"] = (3.3, 2.0, 3.6, _flags(4, better=1), 0.5)
    recs = run_search(cands, run_one=run_one, baseline=base, factors=Factors(max_drop=1.0),
                      settings=SearchSettings(budget_seconds=None), target_name="cpu",
                      data_specs={})
    chosen, _ = select(recs, Factors(max_drop=1.0))
    assert chosen.name == "gentle" and "surely within the allowed drop" in " ".join(chosen.reasons)
