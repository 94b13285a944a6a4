"""The advisor end to end on the example models, against single techniques at the same budget.

Scenarios (issue "The advisor itself", acceptance):
1. resnet, cpu, --max-drop 1%, --retrain none and --retrain finetune: chosen plan vs fp32 ONNX
   Runtime baseline (speed-up, size, held-out accuracy), wall time.
2. mobilenet, same factors.
3. resnet --goal size (≥4x smaller expected).
4. resnet on edge-arm (emulated limits).
5. Single techniques alone (int8 static; structured 50% + fine-tune; Tucker + fine-tune) replayed
   with `apply_plan` on the same data and budget, side by side with the advisor's pick.

Usage: python benchmarks/advisor.py [--quick] [--only SUBSTRING] [--no-single]
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

# this script is named advisor.py: drop its own folder from the path so `import advisor` finds
# the package, not this file
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))
from benchmarks._common import WORK, ensure_examples, markdown_table, record  # noqa: E402


def run_analyze(model, label, **kw):
    from advisor import analyze

    t0 = time.perf_counter()
    res = analyze(str(model), progress=False, **kw)
    secs = time.perf_counter() - t0
    r = res.report
    c = r.get("chosen") or {}
    m = c.get("measured") or {}
    steps = " → ".join(s["pass"] for s in (c.get("plan") or {}).get("steps", [])) or "none"
    b = r["baseline"]
    row = {"scenario": label, "chosen": c.get("name", "nothing met the constraints"),
           "steps": steps, "runtime": m.get("runtime"),
           "baseline_p50_ms": b["latency_by_runtime"].get("onnxruntime", b["latency_ms"]["p50"]),
           "p50_ms": (m.get("latency_ms") or {}).get("p50"), "speedup": m.get("speedup"),
           "size_ratio": m.get("size_ratio"),
           "baseline_test": b.get("accuracy_test"), "test": c.get("accuracy_test"),
           "drop_test_pts": c.get("accuracy_drop_test"),
           "trains": any(s["pass"] in ("finetune", "distill", "distill_student", "prune_at_init")
                         for s in (c.get("plan") or {}).get("steps", [])),
           "trials": len(r["candidates"]), "seconds": round(secs, 1),
           "emulated": r["target"].get("emulated")}
    return row, res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer scenarios")
    ap.add_argument("--only", default=None, help="run the scenarios whose label contains this")
    ap.add_argument("--no-single", action="store_true", help="skip the single-technique runs")
    args = ap.parse_args()
    ex = ensure_examples()
    data = {"data": str(ex / "digits-val.pt"), "test_data": str(ex / "digits-test.pt")}
    train = str(ex / "digits-train.pt")
    scenarios = [
        ("resnet cpu retrain=none", ex / "resnet.pt2", dict(target="cpu", retrain="none")),
        ("resnet cpu retrain=finetune", ex / "resnet.pt2",
         dict(target="cpu", retrain="finetune", train_data=train, budget="8m")),
        ("mobilenet cpu retrain=none", ex / "mobilenet.pt2", dict(target="cpu", retrain="none")),
        ("mobilenet cpu retrain=finetune", ex / "mobilenet.pt2",
         dict(target="cpu", retrain="finetune", train_data=train, budget="8m")),
        ("resnet cpu goal=size retrain=none", ex / "resnet.pt2", dict(target="cpu", goal="size")),
        ("resnet cpu goal=size retrain=finetune", ex / "resnet.pt2",
         dict(target="cpu", goal="size", retrain="finetune", train_data=train, budget="8m")),
        ("resnet edge-arm retrain=none", ex / "resnet.pt2", dict(target="edge-arm")),
    ]
    if args.quick:
        scenarios = scenarios[:1] + scenarios[4:5]
    if args.only:
        scenarios = [s for s in scenarios if args.only in s[0]]
    rows, results = [], {}
    for label, model, kw in scenarios:
        print(f"== {label}", flush=True)
        row, res = run_analyze(model, label, max_drop="1%", out=WORK / "advisor" / label.replace(" ", "_"),
                               **data, **kw)
        rows.append(row)
        results[label] = res.report
    headers = ["scenario", "chosen", "steps", "baseline ORT p50 ms", "p50 ms", "speed-up",
               "size ratio", "test acc base", "test acc", "drop pts", "trains?", "trials", "s"]
    table = markdown_table(headers, [[r["scenario"], r["chosen"], r["steps"], r["baseline_p50_ms"],
                                      r["p50_ms"], r["speedup"], r["size_ratio"],
                                      r["baseline_test"], r["test"], r["drop_test_pts"],
                                      r["trains"], r["trials"], r["seconds"]] for r in rows])
    single = {"rows": [], "markdown": ""} if args.no_single else \
        single_techniques(ex, data, train, results)
    md = "## advisor analyze on the examples\n\n" + table + "\n\n" + single["markdown"]
    name = "advisor" if not (args.only or args.quick or args.no_single) else "advisor-partial"
    record(name, {"scenarios": rows, "single_techniques": single["rows"]}, md)


def test_accuracy(model_file, runtime: str, test_file: str) -> float:
    """Top-1 (%) of an output model on the held-out split, run on its deploy runtime."""
    from advisor.data import load_data
    from advisor.trial import _accuracy, _predictor

    return _accuracy(_predictor(Path(model_file), runtime), load_data(test_file))


def single_techniques(ex: Path, data: dict, train: str, results: dict) -> dict:
    """Each single technique alone at the same budget vs the advisor's pick (finetune run).

    Every plan, the pick included, is replayed with `apply_plan` (seeded) and its output ONNX
    model timed against ONE fp32 baseline file in a fresh process, interleaved with it
    (`measure_speedup`: the ratio of the fastest calls). So all rows share one baseline and one
    timing method, and load on the machine hits the baseline and the candidate alike.
    """
    from advisor import apply_plan
    from advisor.decide.plan import Plan, Step
    from advisor.export import export_onnx
    from advisor.measure.latency import measure_speedup
    from advisor.model_io import load_model
    from advisor.targets import load_target

    shape = (1, 3, 32, 32)
    root = WORK / "single"
    root.mkdir(parents=True, exist_ok=True)
    baseline = root / "baseline.onnx"
    export_onnx(load_model(str(ex / "resnet.pt2")).module, baseline, shape)
    target = load_target("cpu")
    base_acc = test_accuracy(baseline, "onnxruntime", data["test_data"])
    plans: dict[str, object] = {
        "int8 static alone": [Step("int8_static", {"calibration": "minmax"})],
        "structured 50% + fine-tune": [Step("prune_structured", {"ratio": 0.5, "round_to": 16}),
                                       Step("finetune", {})],
        "Tucker + fine-tune": [Step("factorize", {"method": "vbmf", "rank_multiple": 16}),
                               Step("finetune", {})],
    }
    pick_dir = WORK / "advisor" / "resnet_cpu_retrain=finetune"
    pick = results.get("resnet cpu retrain=finetune", {}).get("chosen")
    if pick and (pick_dir / "plan.json").exists():
        plans["advisor pick: " + pick["name"]] = pick_dir / "plan.json"
    rows, recs = [], []
    for name, steps in plans.items():
        plan = steps if isinstance(steps, Path) else Plan(
            name, steps, factors={"retrain": "finetune"}, target="cpu",
            data={"train": train, "val": data["data"]})
        t0 = time.perf_counter()
        out = root / name.split(":")[0].replace(" ", "_")
        shutil.rmtree(out, ignore_errors=True)
        try:
            res = apply_plan(str(ex / "resnet.pt2"), plan, out=out, calib_data=data["data"],
                             train_data=train, progress=False, retrain_seconds=120)
            onnx_file = res.files["onnx"]
            acc = test_accuracy(onnx_file, "onnxruntime", data["test_data"])
            paired = measure_speedup(onnx_file, baseline, "onnxruntime", shape, target=target,
                                     repeats=300, max_seconds=4.0)
            size_ratio = Path(onnx_file).stat().st_size / baseline.stat().st_size
            rec = {"plan": name, "p50_ms": paired.p50, "baseline_p50_ms": paired.reference_p50,
                   "speedup": paired.speedup, "speedup_p50": paired.speedup_p50,
                   "size_ratio": size_ratio, "test_acc": acc, "baseline_test_acc": base_acc,
                   "drop_pts": (base_acc - acc) * 100,
                   "seconds": round(time.perf_counter() - t0, 1)}
        except Exception as e:  # a technique failing is a result too
            rec = {"plan": name, "error": f"{type(e).__name__}: {str(e)[:100]}"}
        recs.append(rec)
    feasible = [r for r in recs if "speedup" in r and r["drop_pts"] <= 1.0]
    best = max((r["speedup"] for r in feasible), default=None)
    for r in recs:
        if "error" in r:
            rows.append([r["plan"], None, None, None, None, None, None, r["error"]])
            continue
        ok = r["drop_pts"] <= 1.0
        rows.append([r["plan"], r["baseline_p50_ms"], r["p50_ms"], f"{r['speedup']:.2f}x",
                     f"{r['size_ratio']:.3f}", f"{r['test_acc']:.2%}",
                     f"{r['drop_pts']:+.2f}" if r["drop_pts"] else "0.00",
                     ("feasible" + (" (best)" if best and r["speedup"] == best else
                                    f" ({r['speedup'] / best:.0%} of best)" if best else ""))
                     if ok else "drop > 1 pt"])
    md = ("## single techniques vs the advisor's pick (resnet, held-out test split)\n\n"
          "Each plan replayed with `advisor apply` (the pick from its plan.json), output ONNX "
          "timed against the same fp32 baseline file in one process (ratio of fastest calls); "
          f"baseline test accuracy {base_acc:.2%}.\n\n" + markdown_table(
              ["plan", "base p50 ms", "p50 ms", "speed-up", "size ratio", "test acc",
               "drop pts", "verdict (≤1 pt)"], rows))
    return {"rows": recs, "markdown": md}


if __name__ == "__main__":
    main()
