"""A realistic fake analysis report (what `advisor analyze` produces) and its variants.

Numbers are those of a small residual network on the digits data on an emulated edge board:
several candidates, a failed one, a skipped one, one that violates the accuracy budget.
"""
from __future__ import annotations

import copy

import pytest

BASE_HOT = [
    {"name": "(outside layers)", "kind": "other", "share": 0.19, "ms": 0.081},
    {"name": "layers.0.conv1", "kind": "conv", "share": 0.12, "ms": 0.051},
    {"name": "layers.0.conv2", "kind": "conv", "share": 0.11, "ms": 0.047},
    {"name": "layers.1.conv1", "kind": "conv", "share": 0.10, "ms": 0.043},
    {"name": "layers.1.conv2", "kind": "conv", "share": 0.09, "ms": 0.038},
    {"name": "layers.2.conv2", "kind": "conv", "share": 0.09, "ms": 0.038},
    {"name": "layers.2.conv1", "kind": "conv", "share": 0.08, "ms": 0.034},
    {"name": "stem.0", "kind": "conv", "share": 0.07, "ms": 0.030},
    {"name": "head.fc", "kind": "linear", "share": 0.05, "ms": 0.021},
    {"name": "head.pool", "kind": "other", "share": 0.10, "ms": 0.043},
]
ORT_HOT = [  # ONNX Runtime names nodes after fusion: they do not match the module names
    {"name": "relu_1_nchwc", "kind": "conv", "share": 0.17, "ms": 0.030},
    {"name": "getitem_6_nchwc", "kind": "conv", "share": 0.15, "ms": 0.027},
    {"name": "(runtime overhead)", "kind": "other", "share": 0.14, "ms": 0.025},
    {"name": "getitem_12_nchwc", "kind": "conv", "share": 0.13, "ms": 0.023},
    {"name": "relu_5_nchwc", "kind": "conv", "share": 0.12, "ms": 0.021},
    {"name": "relu_3_nchwc", "kind": "conv", "share": 0.11, "ms": 0.019},
    {"name": "Gemm_0", "kind": "linear", "share": 0.08, "ms": 0.014},
    {"name": "GlobalAveragePool_0", "kind": "other", "share": 0.10, "ms": 0.018},
]


def _plan(name: str, steps: list[tuple[str, dict]]) -> dict:
    return {"schema_version": 1, "kind": "advisor-plan", "name": name,
            "steps": [{"pass": p, "config": c} for p, c in steps],
            "factors": {"hardware": "edge", "goal": "latency", "max_drop": 1.0,
                        "max_drop_relative": None, "max_latency_ms": None, "max_size_mb": None,
                        "retrain": "none", "budget_seconds": 300.0},
            "target": "edge-arm", "seed": 0, "data": {"val": "digits-val.npz"},
            "created": "2025-11-24T19:00:00+00:00"}


def _measured(p50, size, acc, agree, *, runtime="onnxruntime", base_p50=0.425, base_size=2.80):
    """Figures as the search derives them (advisor.outcome): one source for every view."""
    from advisor.outcome import derive_outcome

    raw = {"latency_ms": {"p50": p50, "p90": p50 * 1.08, "cv": 0.04}, "peak_memory_mb": 61.5,
           "accuracy": acc, "size_mb": size,
           "agreement": {"top1_agreement": agree,
                         "max_abs_diff": round((1 - agree) * 3 + 0.01, 4)}}
    return derive_outcome(raw, runtime=runtime, baseline_latency={runtime: base_p50},
                          baseline_size_mb=base_size, baseline_accuracy=0.9811,
                          allowed_drop=1.0).to_json()


def _cand(cid, name, steps, status="ok", measured=None, meets=False, violations=(),
          reasons=(), error=None, predicted=(None, None), seconds=12.5):
    return {"id": cid, "name": name, "rule": "rule-" + name.split()[0], "family": name.split()[0],
            "status": status, "error": error, "plan": _plan(name, steps),
            "predicted": {"speedup": predicted[0], "size_ratio": predicted[1],
                          "note": "from the conv share of the profile"},
            "measured": measured, "steps": [], "meets_constraints": meets,
            "violations": list(violations), "reasons": list(reasons), "seconds": seconds,
            "runtime": (measured or {}).get("runtime")}


def make_report() -> dict:
    """The verified report: a plan was chosen (int8 after pruning)."""
    cands = [
        _cand("c1", "int8 static",
              [("int8_static", {"calibration": "minmax", "per_channel": True})],
              measured=_measured(0.201, 0.76, 0.9756, 0.988), meets=True, predicted=(2.0, 0.26),
              reasons=["int8 kernels: the host has avx2 (no VNNI)"]),
        _cand("c2", "structured prune [ratio=0.3]", [("structured_prune", {"ratio": 0.3})],
              measured=_measured(0.301, 1.41, 0.9778, 0.991, runtime="torch"),
              violations=["latency 0.30 ms > 0.25 ms"], predicted=(1.4, 0.5)),
        _cand("c3", "structured prune [ratio=0.5]", [("structured_prune", {"ratio": 0.5})],
              measured=_measured(0.222, 0.72, 0.9578, 0.962, runtime="torch"),
              violations=["accuracy drop 2.33 pts > 1.00"], predicted=(2.0, 0.25)),
        _cand("c4", "tucker factorize [energy=0.9]", [("tucker", {"energy": 0.9})],
              status="failed", error="PassError: rank selection failed for layers.0.conv1 <3x3>",
              predicted=(1.3, 0.6), seconds=3.1),
        _cand("c5", "prune 0.3 + int8 static",
              [("structured_prune", {"ratio": 0.3, "importance": "l1"}),
               ("int8_static", {"calibration": "minmax", "per_channel": True,
                                "exclude": ["stem.0", "head.fc"]})],
              measured=_measured(0.152, 0.39, 0.9733, 0.982), meets=True, predicted=(2.8, 0.13)),
        _cand("c6", "fp16", [("fp16", {})],
              measured=_measured(0.44, 1.41, 0.9811, 1.0),
              violations=["not faster than the baseline (0.97x)"], predicted=(1.0, 0.5)),
        _cand("c7", "unstructured [sparsity=0.5]", [("unstructured", {"sparsity": 0.5})],
              status="skipped", error="budget exhausted before this candidate ran",
              seconds=0.0),
    ]
    chosen = copy.deepcopy(cands[4])
    chosen.update({"accuracy_test": 0.9700, "accuracy_drop_test": 0.78, "hotspots": ORT_HOT})
    return {
        "schema_version": 1,
        "tool": {"name": "advisor", "version": "0.1.0"},
        "created": "2025-11-24T19:05:12+00:00",
        "model": {"path": "examples/resnet.pt2", "format": "pt2", "input_shape": [1, 3, 32, 32]},
        "target": {"name": "edge-arm", "device": "cpu", "emulated": True, "threads": 1,
                   "precisions": ["fp32", "int8"], "sparse_kernels": [],
                   "memory_budget_mb": 512, "runtimes": ["onnxruntime", "torch"],
                   "description": "Edge Arm board: 1 core, 512 MB RAM (emulated on this host)"},
        "host": {"arch": "x86_64", "cpu_model": "Intel(R) Xeon(R) CPU @ 2.20GHz",
                 "isa": ["avx2", "fma"], "cores_logical": 2, "cores_available": 2,
                 "memory_mb": 7962, "torch": "2.13.0", "onnxruntime": "1.23.2",
                 "python": "3.11.9", "os": "Linux-6.1-x86_64"},
        "factors": {"goal": "latency", "max_drop": 1.0, "max_drop_relative": None,
                    "max_latency_ms": 0.25, "max_size_mb": None, "retrain": "none",
                    "budget_seconds": 300.0, "hardware": "edge", "allowed_drop_points": 1.0},
        "measurement": {"latency": "latency = the baseline's p50 / the paired speed-up"},
        "data": {"verified": True, "val": "digits-val.npz", "test": "digits-test.npz",
                 "train": None, "metric": "top1"},
        "baseline": {"runtime": "onnxruntime",
                     "latency_ms": {"p50": 0.425, "p90": 0.47, "cv": 0.05},
                     "latency_by_runtime": {"onnxruntime": 0.425, "torch": 0.61},
                     "size_mb": 2.80, "peak_memory_mb": 58.2, "flops": 39_800_000,
                     "params": 700_000, "accuracy": 0.9811, "accuracy_test": 0.9778,
                     "hotspots": BASE_HOT},
        "candidates": cands,
        "chosen": chosen,
        "closest": [],
        "reasons": [
            {"rule": "int8-static", "verdict": "recommend",
             "text": "Convolutions take 76% of the time and the target runs int8: static int8 "
                     "quantization should give about 2x.", "cites": "Lecture 5, quantization",
             "candidates": ["int8 static"]},
            {"rule": "structured-pruning", "verdict": "consider",
             "text": "Conv-dominated network: removing channels lowers FLOPs and latency.",
             "cites": "Lecture 3, pruning (Li et al., arXiv:1608.08710)"},
            {"rule": "unstructured-sparsity", "verdict": "avoid",
             "text": "No sparse kernels on this target: unstructured sparsity only shrinks the "
                     "file.", "cites": None},
            {"rule": "host-info", "verdict": "info", "text": "The host has no VNNI.",
             "cites": None},
        ],
        "warnings": ["edge-arm is emulated on this host: absolute latencies differ on the device"],
        "timing": {"total_seconds": 187.4},
    }


def make_unverified(report: dict) -> dict:
    """The same analysis without --data: accuracy unverified, agreement instead."""
    r = copy.deepcopy(report)
    r["data"] = {"verified": False, "val": None, "test": None, "train": None,
                 "metric": "agreement"}
    r["baseline"]["accuracy"] = r["baseline"]["accuracy_test"] = None
    for c in r["candidates"] + [r["chosen"]]:
        if c.get("measured"):
            c["measured"]["accuracy"] = c["measured"]["accuracy_drop"] = None
            c["measured"]["allowed_drop"] = 2.0
    r["chosen"]["accuracy_test"] = None
    r["chosen"].pop("accuracy_drop_test")
    r["factors"]["max_drop"] = 2.0  # agreement must stay above 98%: c3 (96.2%) misses it
    r["factors"]["allowed_drop_points"] = 2.0
    r["candidates"][2]["violations"] = ["disagrees with the original on 3.80% of inputs > 2.00"]
    return r


def make_nothing_chosen(report: dict) -> dict:
    """A stricter run where no plan met the constraints."""
    r = copy.deepcopy(report)
    r["factors"]["max_drop"] = r["factors"]["allowed_drop_points"] = 0.2
    r["factors"]["max_latency_ms"] = 0.1
    for c in r["candidates"]:
        if c["status"] == "ok":
            m = c["measured"]
            c["meets_constraints"] = False
            c["violations"] = [f"latency {m['latency_ms']['p50']:.2f} ms > 0.1 ms"]
            if m["accuracy_drop"] > 0.2:
                c["violations"].insert(0, f"accuracy drop {m['accuracy_drop']:.2f} pts > 0.20")
    r["chosen"] = None
    r["closest"] = ["c5", "c1", "c2"]
    return r


@pytest.fixture
def report() -> dict:
    return make_report()


@pytest.fixture
def unverified_report(report) -> dict:
    return make_unverified(report)


@pytest.fixture
def nothing_report(report) -> dict:
    return make_nothing_chosen(report)
