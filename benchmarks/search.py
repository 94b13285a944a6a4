"""Benchmark: does the search keep its budget's promise on real architectures?

On the digits-trained torchvision ResNet-18 and MobileNetV2 of `advisor.examples.zoo` (the
case of the "search keeps its promise" issue): `advisor analyze MODEL.pt2 --arch ... --retrain
finetune --budget 12m --max-drop 1%` with the digits train/val/test splits, in-process through
`advisor.api.analyze` as the CLI runs it. Recorded per model: the run's wall time against the
budget (+10% allowed), every trial with its cost estimate and the time it took, whether int8
static alone was measured, the pick's speed-up against int8 alone and its held-out drop.

    .venv-vision/bin/python benchmarks/search.py [--models tv-resnet18,tv-mobilenet_v2]
        [--budget 12m]

Writes benchmarks/results/search.{json,md} (a `--models` subset as search-partial).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import markdown_table, record  # noqa: E402
from benchmarks.zoo import TRAINED_MODELS, log, trained_examples  # noqa: E402


def run_one(stem: str, examples: Path, budget: str) -> dict:
    from advisor.api import analyze
    from advisor.decide.factors import parse_duration_s

    t0 = time.perf_counter()
    res = analyze(str(examples / f"{stem}.pt2"), arch=TRAINED_MODELS[stem], target="cpu",
                  max_drop="1%", retrain="finetune", budget=budget,
                  data=str(examples / "digits-val.pt"), test_data=str(examples / "digits-test.pt"),
                  train_data=str(examples / "digits-train.pt"), progress=False,
                  on_event=lambda kind, p: log(f"{stem}: {kind} {p}"))
    wall = time.perf_counter() - t0
    r = res.report
    trials = [{"id": c["id"], "name": c["name"], "status": c["status"],
               "steps": [s["pass"] for s in c["plan"]["steps"]],
               "estimate_s": (c.get("predicted") or {}).get("seconds"),
               "took_s": round(c.get("seconds") or 0.0, 1) if c["status"] != "skipped" else None,
               "speedup": (c.get("measured") or {}).get("speedup"),
               "drop": (c.get("measured") or {}).get("accuracy_drop"),
               "note": c.get("error") or "; ".join(c.get("reasons") or [])[:160]}
              for c in r["candidates"]]
    int8_alone = [t for t in trials if t["steps"] == ["int8_static"] and t["status"] == "ok"]
    chosen = r.get("chosen") or {}
    budget_s = parse_duration_s(budget)
    return {"model": stem, "budget_s": budget_s, "wall_s": round(wall, 1),
            "within_budget_10pct": wall <= 1.1 * budget_s,
            "int8_alone_measured": bool(int8_alone),
            "int8_alone_best_speedup": max((t["speedup"] or 0 for t in int8_alone), default=None),
            "pick": chosen.get("name"), "pick_speedup": (chosen.get("measured") or {}).get("speedup"),
            "pick_drop_test": chosen.get("accuracy_drop_test"), "trials": trials,
            "warnings": r.get("warnings", [])}


def markdown(rows: list[dict], host: str) -> str:
    out = ["# Search within its budget on real architectures",
           "", f"Host: {host}. `analyze MODEL.pt2 --arch torchvision.models:NAME --retrain finetune "
           "--budget B --max-drop 1%` on the digits splits (`benchmarks/search.py`).", ""]
    out.append(markdown_table(
        ["model", "budget s", "wall s", "within +10%", "int8 alone measured",
         "int8 alone speed-up", "pick", "pick speed-up", "pick held-out drop (pts)"],
        [[r["model"], r["budget_s"], r["wall_s"], "yes" if r["within_budget_10pct"] else "NO",
          "yes" if r["int8_alone_measured"] else "NO", r["int8_alone_best_speedup"], r["pick"],
          r["pick_speedup"], r["pick_drop_test"]] for r in rows]))
    for r in rows:
        out += ["", f"## {r['model']}: every trial, estimated against actual cost", ""]
        out.append(markdown_table(
            ["id", "plan", "status", "estimate s", "took s", "speed-up", "drop (pts)", "note"],
            [[t["id"], t["name"], t["status"], t["estimate_s"], t["took_s"], t["speedup"],
              t["drop"], t["note"]] for t in r["trials"]]))
        if r["warnings"]:
            out += ["", "Warnings: " + "; ".join(r["warnings"])]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(TRAINED_MODELS))
    ap.add_argument("--budget", default="12m")
    args = ap.parse_args()
    from advisor.measure.host import detect_host

    stems = [m for m in args.models.split(",") if m]
    unknown = set(stems) - set(TRAINED_MODELS)
    if unknown:
        raise SystemExit(f"unknown model(s) {sorted(unknown)}; known: {sorted(TRAINED_MODELS)}")
    examples = trained_examples(quick=False)
    rows = [run_one(s, examples, args.budget) for s in stems]
    host = detect_host()
    host_text = (f"{host.get('cpu_model')} ({host.get('arch')}), ISA: "
                 f"{', '.join(host.get('isa') or []) or 'unknown'}; "
                 f"{host.get('cores_available')} cores; torch {host.get('torch')}; load average "
                 f"at the end {' / '.join(str(x) for x in host.get('load_average') or [])}")
    name = "search" if set(stems) == set(TRAINED_MODELS) else "search-partial"
    record(name, {"host": host, "rows": rows}, markdown(rows, host_text))


if __name__ == "__main__":
    main()
