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
    """Each single technique alone at the same budget, vs the advisor's pick (finetune run)."""
    from advisor.decide.plan import Plan, Step
    from advisor import apply_plan

    plans = {
        "int8 static alone": [Step("int8_static", {"calibration": "minmax"})],
        "structured 50% + fine-tune": [Step("prune_structured", {"ratio": 0.5}), Step("finetune", {})],
        "Tucker + fine-tune": [Step("factorize", {"method": "vbmf"}), Step("finetune", {})],
    }
    rows = []
    pick = results.get("resnet cpu retrain=finetune", {}).get("chosen")
    for name, steps in plans.items():
        plan = Plan(name, steps, factors={"retrain": "finetune"}, target="cpu",
                    data={"train": train, "val": data["data"]})
        t0 = time.perf_counter()
        try:
            out = WORK / "single" / name.replace(" ", "_")
            shutil.rmtree(out, ignore_errors=True)
            res = apply_plan(str(ex / "resnet.pt2"), plan, out=out, calib_data=data["data"],
                             train_data=train, progress=False, retrain_seconds=120)
            after_file = res.files.get("onnx") or res.files["pt2"]
            acc = test_accuracy(after_file, res.after["runtime"], data["test_data"])
            base_acc = (results.get("resnet cpu retrain=none") or {}).get("baseline", {}) \
                .get("accuracy_test")
            rows.append([name, res.after["runtime"], res.before["p50_ms"], res.after["p50_ms"],
                         res.before["p50_ms"] / res.after["p50_ms"],
                         res.after["size_mb"] / res.before["size_mb"], base_acc, acc,
                         round(time.perf_counter() - t0, 1)])
        except Exception as e:  # a technique failing is a result too
            rows.append([name, "failed", None, None, None, None, None, None, str(e)[:80]])
    if pick:
        m = pick["measured"]
        rows.append(["advisor pick: " + pick["name"], m.get("runtime"), None,
                     m["latency_ms"]["p50"], m.get("speedup"), m.get("size_ratio"), None,
                     pick.get("accuracy_test"), pick.get("seconds")])
    md = "## single techniques vs the advisor's pick (resnet, test split)\n\n" + markdown_table(
        ["plan", "runtime", "base p50 ms", "p50 ms", "speed-up", "size ratio", "base acc",
         "acc", "s"], rows)
    return {"rows": rows, "markdown": md}


if __name__ == "__main__":
    main()
