"""The rule engine is pure: these tests build Situations by hand (no torch needed)."""
import subprocess
import sys

import pytest

from advisor.decide.factors import Factors
from advisor.decide.engine import evaluate_rules, rank_candidates, rule_table
from advisor.decide.situation import PassFlags, Situation, situation_from

ALL = {
    "int8_static": PassFlags("int8_static", "quantization", stage="onnx", needs_calibration=True,
                             devices=("cpu",), knob="calibration", knob_direction="unordered",
                             fallback_field="max_drop"),
    "int8_dynamic": PassFlags("int8_dynamic", "quantization", stage="onnx", devices=("cpu",)),
    "weight_only_int8": PassFlags("weight_only_int8", "quantization", stage="onnx"),
    "fp16": PassFlags("fp16", "quantization", stage="onnx", devices=("cuda",)),
    "prune_structured": PassFlags("prune_structured", "pruning", knob="ratio",
                                  knob_direction="increasing"),
    "prune_unstructured": PassFlags("prune_unstructured", "sparsity", knob="sparsity",
                                    knob_direction="increasing"),
    "factorize": PassFlags("factorize", "factorization", knob="energy", knob_direction="decreasing"),
    "finetune": PassFlags("finetune", "training", trains=True, needs_labels=True),
    "distill": PassFlags("distill", "distillation", trains=True),
    "distill_student": PassFlags("distill_student", "distillation", trains=True,
                                 needs_full_retrain=True),
}


def sit(**kw):
    base = dict(factors=Factors(), device="cpu", precisions=("fp32", "int8"), conv_share=0.85,
                linear_share=0.05, latency_ms=10.0, has_batchnorm=True, spatial_convs=6,
                has_val_data=True, has_train_data=False, passes=ALL)
    base.update(kw)
    return Situation(**base)


def names(cands):
    return [c.name for c in cands]


def test_cpu_cnn_no_retrain_prefers_int8_static_and_never_trains():
    ranked, rejected = rank_candidates(sit())
    assert ranked[0].steps[0].pass_name == "int8_static"
    assert not any(c.trains for c in ranked)
    assert all(s.pass_name not in ("finetune", "distill") for c in ranked for s in c.steps)


def test_dynamic_int8_avoided_for_conv_heavy_with_reason():
    results = evaluate_rules(sit())
    r = next(r for r in results if r.rule == "dynamic_int8_for_linear_models")
    assert r.verdict == "avoid" and "slower than fp32" in r.text
    assert "benchmarks/results/quantization.md" in r.cites  # a recorded figure, not "here"
    ranked, _ = rank_candidates(sit())
    assert "int8_dynamic" not in [s.pass_name for c in ranked for s in c.steps]


def test_linear_heavy_gets_dynamic_int8():
    ranked, _ = rank_candidates(sit(conv_share=0.05, linear_share=0.9, spatial_convs=0))
    assert "int8_dynamic" in [s.pass_name for c in ranked for s in c.steps]


def test_finetune_budget_unlocks_pruning_chain_with_recovery_then_int8():
    s = sit(factors=Factors(retrain="finetune"), has_train_data=True)
    ranked, _ = rank_candidates(s)
    chains = [[st.pass_name for st in c.steps] for c in ranked]
    assert ["prune_structured", "finetune", "int8_static"] in chains
    no_ft = {k: v for k, v in ALL.items() if k != "finetune"}
    chains2 = [[st.pass_name for st in c.steps] for c in rank_candidates(
        sit(factors=Factors(retrain="finetune"), has_train_data=True, passes=no_ft))[0]]
    assert ["prune_structured", "distill", "int8_static"] in chains2
    prune = next(c for c in ranked if c.steps[0].pass_name == "prune_structured")
    assert prune.steps[0].config["criterion"] == "bn_scale"  # BN present → network slimming
    assert prune.knob["field"] == "ratio"


def test_missing_pass_is_not_offered():
    passes = {k: v for k, v in ALL.items() if k != "int8_static"}
    ranked, _ = rank_candidates(sit(passes=passes))
    assert all(s.pass_name != "int8_static" for c in ranked for s in c.steps)


def test_size_goal_explains_sparsity_gives_no_speed():
    s = sit(factors=Factors(goal="size"))
    results = evaluate_rules(s)
    size = next(r for r in results if r.rule == "size_goal")
    assert "skip no zeros" in size.text
    ranked, _ = rank_candidates(s)
    assert ranked[0].predicted_size_ratio <= 0.3


def test_gpu_offers_half_precision_and_no_cpu_int8():
    s = sit(device="cuda", precisions=("fp32", "fp16", "bf16", "int8"))
    ranked, _ = rank_candidates(s)
    assert ranked[0].steps[0].pass_name == "fp16"
    assert all(s.pass_name != "int8_static" for c in ranked for s in c.steps)


def test_full_retrain_offers_student_only_with_full():
    full, _ = rank_candidates(sit(factors=Factors(retrain="full"), has_train_data=True))
    ft, rej = rank_candidates(sit(factors=Factors(retrain="finetune"), has_train_data=True))
    assert "distill_student" in [s.pass_name for c in full for s in c.steps]
    assert "distill_student" not in [s.pass_name for c in ft for s in c.steps]


def test_registry_defaults_pick_up_unknown_passes():
    passes = dict(ALL, shiny_new=PassFlags("shiny_new", "quantization", stage="onnx"))
    ranked, _ = rank_candidates(sit(passes=passes))
    assert "shiny_new" in [s.pass_name for c in ranked for s in c.steps]


def test_onnx_input_only_gets_onnx_passes():
    ranked, _ = rank_candidates(sit(is_onnx=True, factors=Factors(goal="balanced")))
    assert ranked and all(ALL[s.pass_name].stage == "onnx" for c in ranked for s in c.steps)


def test_unverified_accuracy_is_stated():
    results = evaluate_rules(sit(has_val_data=False))
    assert any(r.rule == "accuracy_unverified" for r in results)


def test_latency_requirement_states_needed_speedup():
    r = next(r for r in evaluate_rules(sit(factors=Factors(max_latency_ms=2.5)))
             if r.rule == "latency_requirement")
    assert "4.0x" in r.text


def test_every_rule_has_a_summary():
    rows = rule_table()
    assert len(rows) >= 10 and all(r["summary"] for r in rows)


def test_situation_from_profile_json():
    prof = {"latency_ms": {"p50": 3.0}, "hotspots": {"layers": [
        {"name": "a", "kind": "conv", "share": 0.7}, {"name": "b", "kind": "linear", "share": 0.1}]},
        "host": {"isa": ["avx2", "avx512_vnni"]}, "size_mb": 1.0}
    s = situation_from(prof, {"device": "cpu", "precisions": ["fp32", "int8"]}, {}, Factors(),
                       ALL, has_val_data=True, has_train_data=False)
    assert s.conv_share == pytest.approx(0.7) and s.int8_kernels and s.latency_ms == 3.0


def test_rule_engine_does_not_import_torch():
    code = ("import sys; import advisor.decide.engine, advisor.decide.plan, "
            "advisor.decide.factors; assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_pruning_and_tucker_keep_channel_counts_the_target_kernels_like():
    factors = Factors(retrain="finetune")

    def first(s, pass_name):
        ranked, _ = rank_candidates(s)
        return next(c.steps[0].config for c in ranked if c.steps[0].pass_name == pass_name)

    avx512 = sit(factors=factors, has_train_data=True, isa=("avx2", "avx512f"))
    avx2 = sit(factors=factors, has_train_data=True, isa=("avx2",))
    assert first(avx512, "prune_structured")["round_to"] == 16
    assert first(avx2, "prune_structured")["round_to"] == 8
    assert first(avx512, "factorize")["rank_multiple"] == 16


def test_size_goal_offers_iterative_pruning_only_with_training():
    passes = {**ALL, "prune_unstructured_iterative": PassFlags(
        "prune_unstructured_iterative", "sparsity", trains=True, needs_labels=True)}
    chains = lambda s: [c.steps[0].pass_name for c in rank_candidates(s)[0]]  # noqa: E731
    with_training = sit(factors=Factors(goal="size", retrain="finetune"), has_train_data=True,
                        passes=passes)
    assert "prune_unstructured_iterative" in chains(with_training)
    assert "prune_unstructured_iterative" not in chains(sit(factors=Factors(goal="size"),
                                                            passes=passes))
