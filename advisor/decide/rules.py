"""The rule table: the lecture's four factors + a measured profile → reasons and candidates.

Each rule is a small named function `(Situation) -> RuleResult | None` that explains itself in
plain words and cites the lecture or the measurement it relies on; `@rule(offers=...)` registers
it in `RULES` (in the order defined here, which is the order the engine runs them) and names the
passes its candidates may use. Rules only propose chains whose passes are registered (a
technique that has not been built is simply not offered). Running, filtering and ranking them is
`advisor.decide.engine`; the shared pieces of their candidates are in `advisor.decide.rule_parts`.

Predictions (speed-up, size ratio) are rough priors used for ranking only; the search measures
every candidate on the target and the report shows predicted vs measured.
Pure Python: no torch import.
"""
from __future__ import annotations

from typing import Callable

from advisor.decide.candidate import Candidate, RuleResult
from advisor.decide.plan import Step
from advisor.decide.rule_parts import (INT8_TAIL, LECTURE, RECOVERY, channel_multiple, int8_tail,
                                       knob_for, may_train, over_memory, recovery_steps)
from advisor.decide.situation import Situation

RuleFn = Callable[[Situation], "RuleResult | None"]
RULES: list[RuleFn] = []


def rule(fn: RuleFn | None = None, *, offers: tuple[str, ...] = ()):
    """Register a rule (`@rule` or `@rule(offers=(...))`); `offers` names every pass its
    candidates may contain, so `registry_defaults` leaves those passes to the rules."""
    def deco(f: RuleFn) -> RuleFn:
        f.offers = frozenset(offers)
        RULES.append(f)
        return f
    return deco(fn) if fn is not None else deco


def offered_by_rules() -> frozenset[str]:
    """Every pass some rule may propose (the rest are offered by `registry_defaults`)."""
    return frozenset().union(*(getattr(fn, "offers", ()) for fn in RULES))


# ---- target-driven rules ------------------------------------------------------------------

@rule(offers=("int8_static",))
def int8_static_on_cpu(s: Situation) -> RuleResult | None:
    """CPU target with int8: static int8 (calibrated, QDQ) in ONNX Runtime."""
    if s.device != "cpu" or "int8" not in s.precisions or not s.has("int8_static"):
        return None
    speed = 2.5 if s.int8_kernels else 1.6
    isa = "VNNI/AMX int8 dot products" if s.int8_kernels else "no VNNI: int8 gains are smaller"
    c = Candidate("int8 static", [Step("int8_static", {"calibration": "minmax"})], "quantization",
                  "int8_static_on_cpu", speed, 0.27, 0.3,
                  "ONNX Runtime QDQ, per-channel weights, calibrated activations",
                  knob=knob_for(s, "int8_static", 0, ["minmax", "entropy", "percentile"]))
    return RuleResult("int8_static_on_cpu", "recommend",
                      f"The target runs int8 on the CPU ({isa}); static int8 with calibration "
                      "quantizes convolutions and linear layers with real int8 kernels in ONNX "
                      "Runtime: typically 2-4x faster and ~4x smaller, with no retraining. "
                      "Accuracy is checked on your data; layers that lose too much are kept in fp32.",
                      f"{LECTURE}: quantization; benchmarks/results/quantization.md: int8 static "
                      "3.25x faster than fp32 ONNX Runtime (ResNet, 224 px)",
                      [c])


@rule(offers=("int8_dynamic", "torch_dynamic_int8"))
def dynamic_int8_for_linear_models(s: Situation) -> RuleResult | None:
    """Linear-dominated: dynamic int8; conv-dominated: avoid (4-12x slower in the quantization benchmark)."""
    if s.device != "cpu" or not (s.has("int8_dynamic") or s.has("torch_dynamic_int8")):
        return None
    if s.linear_share >= 0.5:
        cands = []
        if s.has("int8_dynamic"):
            cands.append(Candidate("int8 dynamic (ORT)", [Step("int8_dynamic", {})],
                                   "quantization", "dynamic_int8_for_linear_models", 1.8, 0.27,
                                   0.3, "weights int8, activations quantized at run time"))
        if s.has("torch_dynamic_int8"):
            cands.append(Candidate("int8 dynamic (torch)", [Step("torch_dynamic_int8", {})],
                                   "quantization", "dynamic_int8_for_linear_models", 1.5, 0.3,
                                   0.3, "torch dynamic quantization of Linear layers"))
        return RuleResult("dynamic_int8_for_linear_models", "recommend",
                          f"Linear layers take {s.linear_share:.0%} of the time: dynamic int8 "
                          "needs no calibration data and speeds up matrix multiplies.",
                          f"{LECTURE}: quantization", cands)
    return RuleResult("dynamic_int8_for_linear_models", "avoid",
                      f"Convolutions dominate ({s.conv_share:.0%} of the time): dynamic int8 "
                      "re-quantizes activations at run time and ran 4-12x slower than fp32 in "
                      "ONNX Runtime on the CNN benchmarks (ConvInteger has no fast kernel). "
                      "Static int8 is the int8 option for CNNs.",
                      "benchmarks/results/quantization.md: int8 dynamic on the CNNs "
                      "0.08-0.26x the speed of fp32")


@rule(offers=("fp16", "bf16"))
def half_precision_on_gpu(s: Situation) -> RuleResult | None:
    """CUDA target: fp16/bf16."""
    if s.device != "cuda":
        return None
    cands = [Candidate(p, [Step(p, {})], "quantization", "half_precision_on_gpu", 1.8, 0.5, 0.1,
                       f"{p} weights and activations on CUDA")
             for p in ("fp16", "bf16") if p in s.precisions and s.has(p)]
    return RuleResult("half_precision_on_gpu", "recommend" if cands else "info",
                      "On a CUDA GPU, fp16/bf16 halve memory traffic and use tensor cores, with "
                      "almost no accuracy loss and no retraining.", f"{LECTURE}: quantization",
                      cands)


# ---- goal-driven rules --------------------------------------------------------------------

@rule(offers=("prune_structured", *RECOVERY, *INT8_TAIL))
def structured_pruning_for_latency(s: Situation) -> RuleResult | None:
    """Latency goal + retraining: structured pruning (BN-scale/L1), KD recovery, then int8."""
    if not s.has("prune_structured") or s.is_onnx:
        return None
    if not s.editable:
        return RuleResult("structured_pruning_for_latency", "info",
                          "Structured pruning needs the model's layers (an eager module); this file "
                          "holds only a traced graph" +
                          (f" that could not be lifted into layers ({s.lift_refused})"
                           if s.lift_refused else "") +
                          ". Pass --arch pkg.module:factory to enable it.")
    if s.factors.goal == "size" and not may_train(s):
        return None
    if not may_train(s):
        return RuleResult("structured_pruning_for_latency", "avoid",
                          "Structured pruning removes whole channels, so it really cuts FLOPs and "
                          "latency on ordinary kernels — but without retraining (--retrain none) "
                          "the accuracy loss of a useful ratio rarely fits a tight budget.",
                          f"{LECTURE}: pruning (structured; on a trained model, then fine-tune)")
    criterion = "bn_scale" if s.has_batchnorm else "l1"
    multiple = channel_multiple(s)
    steps = [Step("prune_structured", {"criterion": criterion, "scope": "global", "ratio": 0.5,
                                       "round_to": multiple})]
    steps += recovery_steps(s)
    c1 = Candidate(f"prune {criterion} + recover", steps, "pruning",
                   "structured_pruning_for_latency", 2.5, 0.3, 1.0,
                   "channels physically removed (DepGraph keeps residual/concat couplings)",
                   knob=knob_for(s, "prune_structured", 0, [0.3, 0.5, 0.7]))
    cands = [c1]
    tail = int8_tail(s)
    if tail:
        cands.append(Candidate(f"prune {criterion} + recover + int8", steps + tail, "pruning",
                               "structured_pruning_for_latency", 5.0, 0.08, 1.3,
                               "compress first, then quantize",
                               knob=knob_for(s, "prune_structured", 0, [0.3, 0.5, 0.7])))
    crit_text = ("BatchNorm scaling factors rank channels (network slimming)" if s.has_batchnorm
                 else "L1 magnitude ranks filters")
    crit_text += (f"; channel counts are kept multiples of {multiple}, which the target's conv "
                  "kernels need to run at full speed")
    return RuleResult("structured_pruning_for_latency", "recommend",
                      "Latency must drop and retraining is allowed: structured pruning removes "
                      f"filters physically, which speeds up dense kernels; {crit_text}; "
                      "distillation from the original model recovers accuracy; int8 last.",
                      f"{LECTURE}: Network Slimming (Liu et al. 2017), HRank (Lin et al. 2020)",
                      cands)


@rule(offers=("factorize", *RECOVERY, *INT8_TAIL))
def tucker_for_conv_heavy(s: Situation) -> RuleResult | None:
    """Conv-dominated with kxk convs: Tucker-2 (VBMF ranks), recover if allowed."""
    if not s.has("factorize") or s.is_onnx or not s.editable or s.spatial_convs == 0:
        return None
    if s.conv_share < 0.4:
        return RuleResult("tucker_for_conv_heavy", "info",
                          f"Convolutions take only {s.conv_share:.0%} of the time; factorizing "
                          "them cannot speed up much.", f"{LECTURE}: weight factorization")
    cands = []
    if may_train(s):
        steps = [Step("factorize", {"method": "vbmf", "rank_multiple": channel_multiple(s)})] \
            + recovery_steps(s)
        cands.append(Candidate("Tucker-2 (VBMF) + recover", steps, "factorization",
                               "tucker_for_conv_heavy", 1.6, 0.5, 1.5,
                               "ranks chosen by VBMF as in Kim et al. 2015"))
        tail = int8_tail(s)
        if tail:
            cands.append(Candidate("Tucker-2 + recover + int8", steps + tail, "factorization",
                                   "tucker_for_conv_heavy", 3.5, 0.15, 1.8,
                                   "factorize, recover, then quantize"))
    cands.append(Candidate("Tucker-2 (energy)", [Step("factorize",
                                                            {"method": "energy", "energy": 0.99})],
                           "factorization", "tucker_for_conv_heavy", 1.2, 0.8, 0.3,
                           "conservative ranks: little accuracy lost without retraining",
                           knob=knob_for(s, "factorize", 0, [0.99, 0.95])))
    return RuleResult("tucker_for_conv_heavy", "consider",
                      f"{s.spatial_convs} kxk convolutions take {s.conv_share:.0%} of the time: "
                      "Tucker-2 splits each into 1x1 -> small kxk -> 1x1, replacing a layer only "
                      "where the factorized form measures faster on the target.",
                      f"{LECTURE}: weight factorization (Tucker); Kim et al. 2015 arXiv:1511.06530",
                      cands)


@rule(offers=("weight_only_int8", "prune_unstructured", "prune_unstructured_iterative",
                *RECOVERY))
def size_goal(s: Situation) -> RuleResult | None:
    """Size goal or memory over budget: weight-only int8, unstructured sparsity + compressed storage."""
    if s.factors.goal not in ("size", "balanced") and s.factors.max_size_mb is None and \
            not over_memory(s):
        return None
    cands = []
    if s.has("weight_only_int8"):
        cands.append(Candidate("weight-only int8", [Step("weight_only_int8", {})], "quantization",
                               "size_goal", 1.0, 0.27, 0.2,
                               "int8 weights on disk, fp32 compute"))
    if s.has("prune_unstructured") and not s.is_onnx:
        sparsity = 0.8 if may_train(s) else 0.5
        steps = [Step("prune_unstructured", {"sparsity": sparsity, "scope": "global"})]
        if may_train(s):
            steps += recovery_steps(s)
        cands.append(Candidate(f"unstructured {int(sparsity * 100)}% (compressed)", steps,
                               "sparsity", "size_goal", 1.0, 0.45 if sparsity >= 0.8 else 0.7,
                               1.0, "smaller when stored compressed; no speed-up on dense kernels",
                               knob=knob_for(s, "prune_unstructured", 0,
                                          [0.5, 0.8, 0.9] if may_train(s) else [0.3, 0.5])))
    if s.has("prune_unstructured_iterative") and not s.is_onnx and may_train(s) and \
            s.has_train_data:
        cands.append(Candidate("iterative 90% + lr rewinding (compressed)",
                               [Step("prune_unstructured_iterative",
                                     {"sparsity": 0.9, "rewind": "lr"})],
                               "sparsity", "size_goal", 1.0, 0.3, 1.0,
                               "prune-retrain rounds reach higher sparsity at the same accuracy "
                               "than one shot (Renda et al. 2020); costs several retraining "
                               "rounds"))
    if not cands:
        return None
    return RuleResult("size_goal", "recommend",
                      "The model must get smaller: int8 stores each weight in one byte (4x "
                      "smaller); unstructured sparsity shrinks storage when compressed, but dense "
                      "CPU kernels skip no zeros, so latency will not drop on this target.",
                      f"{LECTURE}: unstructured pruning helps only with sparse kernels; quantization",
                      cands)


@rule(offers=("prune_unstructured", *RECOVERY))
def sparse_kernels_on_target(s: Situation) -> RuleResult | None:
    """No sparse kernels: sparsity never speeds up; CSR linear where the target has it."""
    if not s.sparse_kernels:
        return RuleResult("sparse_kernels_on_target", "info",
                          "The target has no sparse kernels: unstructured sparsity can only make "
                          "the stored model smaller, never faster.",
                          f"{LECTURE}: unstructured pruning needs sparse software/hardware support")
    if "csr-linear" in s.sparse_kernels and s.linear_share >= 0.5 and \
            s.has("prune_unstructured") and may_train(s):
        c = Candidate("unstructured 90% + CSR linear",
                      [Step("prune_unstructured", {"sparsity": 0.9, "scope": "global",
                                                   "csr_linear": True})] + recovery_steps(s),
                      "sparsity", "sparse_kernels_on_target", 2.0, 0.4, 1.5,
                      "CSR execution of highly sparse Linear layers (torch runtime only)")
        return RuleResult("sparse_kernels_on_target", "consider",
                          "Linear layers dominate and the target runs CSR sparse matmuls: at ~90% "
                          "sparsity they can be faster (2.79x for a 4096x4096 Linear at 90% and "
                          "batch 1 in the benchmark).",
                          "benchmarks/results/pruning.md: CSR Linear 4096x4096, 90% sparse, "
                          "2.79x at batch 1", [c])
    return None


@rule(offers=("distill_student", "prune_at_init"))
def retrain_full_options(s: Situation) -> RuleResult | None:
    """--retrain full: smaller student by KD, pruning at initialization."""
    if s.factors.retrain != "full" or not s.has_train_data or s.is_onnx:
        return None
    cands = []
    if s.has("distill_student"):
        cands.append(Candidate("smaller student + KD", [Step("distill_student", {})],
                               "distillation", "retrain_full_options", 3.0, 0.25, 1.5,
                               "width-reduced student trained from scratch with the original as teacher"))
    if s.has("prune_at_init"):
        cands.append(Candidate("prune at init (SynFlow) + train", [Step("prune_at_init", {})],
                               "pruning", "retrain_full_options", 1.0, 0.4, 1.5,
                               "sparse network trained from scratch: saves training, not latency"))
    if not cands:
        return None
    return RuleResult("retrain_full_options", "consider",
                      "Full retraining is allowed: a smaller student trained by distillation "
                      "(efficient architecture + KD), or a network pruned at initialization and "
                      "trained sparse from scratch.",
                      f"{LECTURE}: knowledge distillation; pruning at initialization (SNIP, SynFlow)",
                      cands)


# ---- information rules ----------------------------------------------------------------------

@rule
def latency_requirement(s: Situation) -> RuleResult | None:
    """States the speed-up --max-latency requires."""
    if s.factors.max_latency_ms is None or not s.latency_ms:
        return None
    need = s.latency_ms / s.factors.max_latency_ms
    if need <= 1:
        return RuleResult("latency_requirement", "info",
                          f"The model already meets --max-latency ({s.latency_ms:.2f} ms <= "
                          f"{s.factors.max_latency_ms:g} ms).")
    hint = "" if need < 2.5 or may_train(s) else \
        " Beyond ~2.5x usually needs structural changes and retraining (--retrain finetune)."
    return RuleResult("latency_requirement", "info",
                      f"--max-latency needs a {need:.1f}x speed-up ({s.latency_ms:.2f} -> "
                      f"{s.factors.max_latency_ms:g} ms).{hint}")


@rule
def memory_budget(s: Situation) -> RuleResult | None:
    """Peak memory over the target's budget favours size reduction."""
    if not over_memory(s):
        return None
    return RuleResult("memory_budget", "info",
                      f"Peak memory {s.peak_memory_mb:.0f} MB exceeds the target's budget of "
                      f"{s.memory_budget_mb:.0f} MB: size-reducing techniques are favoured.")


@rule
def no_retraining(s: Situation) -> RuleResult | None:
    """--retrain none: only post-training techniques."""
    if s.factors.retrain != "none":
        return None
    return RuleResult("no_retraining", "info",
                      "--retrain none: only post-training techniques are offered (quantization, "
                      "conservative factorization, light sparsity); passes that train are left out.",
                      f"{LECTURE}: factor 4, hardware/compute budget for retraining")


@rule
def accuracy_unverified(s: Situation) -> RuleResult | None:
    """No data: accuracy unverified, agreement reported instead."""
    if s.has_val_data:
        return None
    return RuleResult("accuracy_unverified", "info",
                      "No evaluation data was given: accuracy is unverified; candidates are "
                      "compared by agreement with the original model instead (top-1 agreement "
                      "and max logit difference on synthetic inputs). Pass --data to verify.")
