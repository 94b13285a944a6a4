"""A training chain is trained once for itself and its `+ int8` sibling (search_prefix)."""
from __future__ import annotations

import numpy as np

from advisor.decide.candidate import Candidate
from advisor.decide.factors import Factors
from advisor.decide.plan import Plan, Step
from advisor.search import Baseline, SearchSettings, run_search

PRUNE, TUNE, INT8 = (Step("prune_structured", {"ratio": 0.3}), Step("finetune", {"epochs": 1}),
                     Step("int8_static", {}))


def test_the_sibling_starts_from_the_remembered_prefix():
    calls = []

    def run_one(plan, train_s, resume=None):
        calls.append((plan.name, train_s, resume))
        k = sum(s.pass_name != "int8_static" for s in plan.steps)
        ran = [{"pass": s.pass_name, "config": s.config, "seconds": 5.0, "info": {}}
               for s in plan.steps]
        return {"status": "ok", "runtime": "onnxruntime", "steps": ran,
                "prefix_onnx": {"steps": k, "path": f"/w/{plan.name}/fp32.onnx"},
                "measured": {"latency_ms": {"p50": 3.0, "p90": 3.0, "cv": 0.01},
                             "size_mb": 1.0, "accuracy": 0.98}}

    chain_int8 = Candidate("p+r+q", [PRUNE, TUNE, INT8], "pruning", "r", trains=True)
    chain = Candidate("p+r", [PRUNE, TUNE], "pruning", "r", trains=True)
    recs = run_search([chain_int8, chain], run_one=run_one,
                      baseline=Baseline({"onnxruntime": 10.0}, 4.0, 0.98, True),
                      factors=Factors(), settings=SearchSettings(budget_seconds=600.0),
                      target_name="cpu", data_specs={})
    (n1, t1, r1), (n2, t2, r2) = calls
    assert (n1, r1) == ("p+r+q", None) and t1 is not None  # trained, within an allowance
    assert n2 == "p+r" and t2 is None  # nothing left to train
    assert r2["trial"] == recs[0].id and r2["steps"] == 2 and r2["path"] == "/w/p+r+q/fp32.onnx"
    assert "reused from c1" in " ".join(recs[1].reasons)


def _payload(model, steps, workdir, loaders, resume=None):
    from advisor.passes.base import RetrainBudget
    from advisor.targets import load_target
    from advisor.trial import TrialPayload

    plan = Plan("t", steps, factors={}, target="cpu", seed=3)
    return TrialPayload(model=model, onnx_path=None, input_shape=(1, 3, 32, 32),
                        plan=plan.to_json(), target=load_target("cpu"), workdir=str(workdir),
                        train_loader=loaders["train"], val_loader=loaders["val"],
                        calib_loader=loaders["train"], budget=RetrainBudget("finetune"),
                        measure={"warmup": 2, "repeats": 10, "max_seconds": 0.3},
                        resume=resume)


def test_a_reused_prefix_gives_the_model_a_fresh_run_trains(tmp_path, digits_loaders):
    import torch

    from advisor.examples.models import resnet
    from advisor.export import onnx_session, run_onnx
    from advisor.trial import run_trial

    torch.manual_seed(0)
    model = resnet().eval()
    first = run_trial(_payload(model, [PRUNE, TUNE, INT8], tmp_path / "a", digits_loaders))
    prefix = first["prefix_onnx"]
    assert prefix["steps"] == 2 and prefix["path"].endswith("fp32.onnx")
    resume = {"trial": "c1", "ran": first["steps"][:2], **prefix}
    reused = run_trial(_payload(model, [PRUNE, TUNE], tmp_path / "b", digits_loaders, resume))
    fresh = run_trial(_payload(model, [PRUNE, TUNE], tmp_path / "c", digits_loaders))
    assert [s.get("reused_from") for s in reused["steps"]] == ["c1", "c1"]
    assert reused["steps"][1]["info"] == first["steps"][1]["info"]  # the training it measured
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    a = run_onnx(onnx_session(reused["artifact"]), x)
    b = run_onnx(onnx_session(fresh["artifact"]), x)
    assert np.abs(a - b).max() < 1e-5  # the same steps and seeds: the same model
    assert reused["measured"]["accuracy"] == fresh["measured"]["accuracy"]
