"""Benchmark: does the search keep its budget's promise on real architectures?

On the digits-trained torchvision ResNet-18 and MobileNetV2 of `advisor.examples.zoo` (the
case of the "search keeps its promise" issue): `advisor analyze MODEL.pt2 --arch ... --retrain
finetune --budget 12m --max-drop 1%` with the digits train/val/test splits, in-process through
`advisor.api.analyze` as the CLI runs it. Recorded per model: the run's wall time against the
budget (+10% allowed), every trial with its cost estimate and the time it took, whether int8
static alone was measured, the pick's speed-up against int8 alone and its held-out drop.

    .venv-vision/bin/python benchmarks/search.py [--models tv-resnet18,tv-mobilenet_v2]
        [--budget 12m] [--regret] [--repeat N] [--examples]

Writes benchmarks/results/search.{json,md} (a `--models` subset as search-partial).

`--regret`: the same analysis once more without a budget (every candidate and knob value the
rules offer runs to completion), and the pick within the budget against the best plan of that
run that keeps the allowed drop on both splits: regret = 1 − pick speed-up / best speed-up.
Written as search-regret.

`--default-budget NAME`: `analyze --retrain none` with its default budget on a random-weight
torchvision NAME at 1x3x224x224 (the issue's ResNet-50 case): wall time against that budget.
Written as search-default-budget-NAME.

`--examples`: the three digits examples (resnet, mobilenet, vgg), `--retrain none` with its
default budget and `--retrain finetune --budget 8m` as results/advisor.json recorded them before
the search kept its budget: within the budget, int8 alone measured, and the pick no worse than
the recorded one. Written as search-examples.

`--repeat N`: N runs of `analyze --retrain none` (default budget) on a random-weight torchvision
ResNet-18 at 1x3x224x224: do the picks' speed-ups agree within their stated spread? Written as
search-repeat.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import markdown_table, record  # noqa: E402
from benchmarks.zoo import TRAINED_MODELS, log, trained_examples  # noqa: E402


def run_one(stem: str, examples: Path, budget: str, arch: str | None = "trained",
            retrain: str = "finetune") -> dict:
    """One budgeted analysis of examples/STEM.pt2 (arch "trained": its TRAINED_MODELS entry)."""
    from advisor.api import analyze
    from advisor.decide.factors import parse_duration_s

    t0 = time.perf_counter()
    res = analyze(str(examples / f"{stem}.pt2"),
                  arch=TRAINED_MODELS[stem] if arch == "trained" else arch, target="cpu",
                  max_drop="1%", retrain=retrain, budget=budget,
                  data=str(examples / "digits-val.pt"), test_data=str(examples / "digits-test.pt"),
                  train_data=str(examples / "digits-train.pt") if retrain != "none" else None,
                  progress=False, on_event=lambda kind, p: log(f"{stem}: {kind} {p}"))
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
    budget_s = parse_duration_s(budget) if budget else _default_budget_s(retrain)
    return {"model": stem, "budget_s": budget_s, "wall_s": round(wall, 1),
            "within_budget_10pct": wall <= 1.1 * budget_s,
            "int8_alone_measured": bool(int8_alone),
            "int8_alone_best_speedup": max((t["speedup"] or 0 for t in int8_alone), default=None),
            "pick": chosen.get("name"), "pick_speedup": (chosen.get("measured") or {}).get("speedup"),
            "pick_drop_test": chosen.get("accuracy_drop_test"), "trials": trials,
            "warnings": r.get("warnings", [])}


def _default_budget_s(retrain: str) -> float:
    from advisor.api import _default_budget
    from advisor.decide.factors import Factors

    return _default_budget(Factors(retrain=retrain))


EXAMPLE_SCENARIOS = (("resnet", "none"), ("resnet", "finetune"), ("mobilenet", "none"),
                     ("mobilenet", "finetune"), ("vgg", "none"), ("vgg", "finetune"))


def example_rows(budget: str, only: str = "") -> list[dict]:
    """The three digits examples, retrain none (default budget) and finetune (BUDGET), each
    against the scenario recorded in results/advisor.json before the search kept its budget."""
    import json

    from benchmarks._common import RESULTS, ensure_examples

    ex = ensure_examples()
    recorded = {}
    if (RESULTS / "advisor.json").exists():
        recorded = {s["scenario"]: s for s in json.loads(
            (RESULTS / "advisor.json").read_text())["scenarios"]}
    rows = []
    for stem, retrain in EXAMPLE_SCENARIOS:
        if only and stem != only:
            continue
        row = run_one(stem, ex, budget if retrain != "none" else None, arch=None, retrain=retrain)
        row["retrain"] = retrain
        prev = recorded.get(f"{stem} cpu retrain={retrain}")
        row["recorded"] = None if prev is None else {
            "pick": prev["chosen"], "speedup": prev["speedup"], "drop_test": prev["drop_test_pts"],
            "seconds": prev["seconds"]}
        row["no_worse"] = None if prev is None else no_worse(row, row["recorded"])
        rows.append(row)
    return rows


def no_worse(now: dict, prev: dict, allowed_drop: float = 1.0, tolerance: float = 0.10) -> bool:
    """The pick keeps the allowed drop on the held-out split and is as fast as the recorded
    pick within TOLERANCE (timing noise between two runs on this host), or the recorded pick
    broke the allowed drop on the held-out split and this one does not."""
    drop = now.get("pick_drop_test")
    if drop is None or drop > allowed_drop + 1e-9:
        return False
    if now.get("pick") == prev.get("pick"):  # the same plan: only the host's timing differs
        return True
    if (prev.get("drop_test") or 0.0) > allowed_drop + 1e-9:
        return True
    return (now.get("pick_speedup") or 0.0) >= (1 - tolerance) * (prev.get("speedup") or 0.0)


def examples_markdown(rows: list[dict], host: str) -> str:
    out = ["# Search within its budget on the three digits examples", "",
           f"Host: {host}. `analyze example/NAME.pt2 --retrain R --max-drop 1%` on the digits "
           "splits (`benchmarks/search.py --examples`); 'recorded' is the same scenario in "
           "results/advisor.json, measured before the search kept its budget. 'No worse': the pick "
           "keeps 1 pt on the held-out split and is the recorded plan, or within 10% of its "
           "speed-up, or the recorded pick broke 1 pt held-out.", ""]
    out.append(markdown_table(
        ["model", "retrain", "budget s", "wall s", "within +10%", "int8 alone speed-up", "pick",
         "pick speed-up", "held-out drop", "recorded pick", "recorded speed-up",
         "recorded drop", "no worse"],
        [[r["model"], r["retrain"], r["budget_s"], r["wall_s"],
          "yes" if r["within_budget_10pct"] else "NO",
          r["int8_alone_best_speedup"] if r["int8_alone_measured"] else "NOT MEASURED",
          r["pick"], r["pick_speedup"], r["pick_drop_test"],
          *((r["recorded"]["pick"], r["recorded"]["speedup"], r["recorded"]["drop_test"])
            if r["recorded"] else (None, None, None)),
          {True: "yes", False: "NO", None: "—"}[r["no_worse"]]] for r in rows]))
    for r in rows:
        out += ["", f"## {r['model']} retrain={r['retrain']}: every trial, estimated against "
                "actual cost", ""]
        out.append(markdown_table(
            ["id", "plan", "status", "estimate s", "took s", "speed-up", "drop (pts)", "note"],
            [[t["id"], t["name"], t["status"], t["estimate_s"], t["took_s"], t["speedup"],
              t["drop"], t["note"]] for t in r["trials"]]))
    return "\n".join(out)


def regret_row(stem: str, examples: Path, budget: str, within: dict) -> dict:
    """The unbudgeted run's best plan that keeps the drop on both splits, against the pick."""
    from advisor.api import analyze

    res = analyze(str(examples / f"{stem}.pt2"), arch=TRAINED_MODELS[stem], target="cpu",
                  max_drop="1%", retrain="finetune", budget="24h", max_trials=100,
                  data=str(examples / "digits-val.pt"), test_data=str(examples / "digits-test.pt"),
                  train_data=str(examples / "digits-train.pt"), progress=False,
                  on_event=lambda kind, p: log(f"{stem} (unbudgeted): {kind} {p.get('name', '')}"))
    r = res.report
    best, rows = None, []
    for c in r["candidates"]:  # feasible: keeps the allowed drop (and every constraint) on val
        m = c.get("measured") or {}
        if c["status"] != "ok" or not c.get("meets_constraints"):
            continue
        rows.append({"name": c["name"], "speedup": m.get("speedup"),
                     "drop_val": m.get("accuracy_drop"), "drop_upper": m.get("accuracy_drop_upper")})
        if best is None or m["speedup"] > best["speedup"]:
            best = rows[-1]
    pick = within.get("pick_speedup")
    return {"model": stem, "unbudgeted_wall_s": r["timing"]["total_seconds"],
            "plans_feasible": rows, "best": best, "pick": within.get("pick"),
            "pick_speedup": pick,
            "regret": (1 - pick / best["speedup"]) if pick and best else None}


def default_budget_row(name: str) -> dict:
    import torch
    import torchvision

    from advisor.api import _default_budget, analyze
    from advisor.decide.factors import Factors

    torch.manual_seed(0)
    model = getattr(torchvision.models, name)().eval()
    t0 = time.perf_counter()
    res = analyze(model, target="cpu", max_drop="1%", retrain="none", input_shape=(1, 3, 224, 224),
                  progress=False, on_event=lambda kind, p: log(f"{name}: {kind} {p.get('name', '')}"))
    wall = time.perf_counter() - t0
    r = res.report
    ch = r.get("chosen") or {}
    return {"model": name, "budget_s": _default_budget(Factors()), "wall_s": round(wall, 1),
            "pick": ch.get("name"), "speedup": (ch.get("measured") or {}).get("speedup"),
            "ok": sum(c["status"] == "ok" for c in r["candidates"]),
            "skipped": sum(c["status"] == "skipped" for c in r["candidates"]),
            "skip_reasons": sorted({c.get("error") or "" for c in r["candidates"]
                                    if c["status"] == "skipped"})}


def repeat_rows(n: int) -> list[dict]:
    import torch
    import torchvision

    from advisor.api import analyze

    out = []
    for i in range(n):
        torch.manual_seed(0)
        model = torchvision.models.resnet18().eval()
        res = analyze(model, target="cpu", max_drop="1%", retrain="none",
                      input_shape=(1, 3, 224, 224), progress=False,
                      on_event=lambda kind, p: log(f"repeat {i + 1}: {kind} {p.get('name', '')}"))
        ch = res.report.get("chosen") or {}
        m = ch.get("measured") or {}
        out.append({"run": i + 1, "pick": ch.get("name"), "speedup": m.get("speedup"),
                    "range": m.get("speedup_range"), "wall_s": res.report["timing"]["total_seconds"]})
    return out


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
    ap.add_argument("--regret", action="store_true")
    ap.add_argument("--repeat", type=int, default=0)
    ap.add_argument("--default-budget", default=None, metavar="NAME")
    ap.add_argument("--examples", action="store_true",
                    help="the three digits examples against results/advisor.json (budget 8m)")
    ap.add_argument("--only", default="", help="with --examples: one example (resnet, ...)")
    args = ap.parse_args()
    from advisor.measure.host import detect_host

    stems = [m for m in args.models.split(",") if m]
    from advisor.measure.host import detect_host as _host

    if args.default_budget:
        row = default_budget_row(args.default_budget)
        md = [f"# `analyze --retrain none` on torchvision {row['model']} at 224 px, default budget",
              "", markdown_table(["model", "budget s", "wall s", "within +10%", "pick",
                                  "speed-up", "trials ok", "not started"],
                                 [[row["model"], row["budget_s"], row["wall_s"],
                                   "yes" if row["wall_s"] <= 1.1 * row["budget_s"] else "NO",
                                   row["pick"], row["speedup"], row["ok"], row["skipped"]]]),
              "", "Not started: " + "; ".join(row["skip_reasons"])]
        record(f"search-default-budget-{row['model']}", {"host": _host(), **row}, "\n".join(md))
        return
    if args.examples:
        rows = example_rows("8m" if args.budget == "12m" else args.budget, args.only)
        host = detect_host()
        record("search-examples" + (f"-{args.only}" if args.only else ""),
               {"host": host, "rows": rows}, examples_markdown(
            rows, f"{host.get('cpu_model')}; {host.get('cores_available')} cores; load average "
                  f"at the end {' / '.join(str(x) for x in host.get('load_average') or [])}"))
        return
    if args.repeat:
        reps = repeat_rows(args.repeat)
        ranges = [r["range"] for r in reps if r["range"]]
        agree = bool(ranges) and max(lo for lo, _ in ranges) <= min(hi for _, hi in ranges)
        md = ["# Repeated `analyze --retrain none` on a 224 px ResNet-18 (random weights)", "",
              markdown_table(["run", "pick", "speed-up", "spread", "wall s"],
                             [[r["run"], r["pick"], r["speedup"],
                               "—" if not r["range"] else f"{r['range'][0]:.2f}–{r['range'][1]:.2f}",
                               r["wall_s"]] for r in reps]),
              "", f"All spreads overlap: {'yes' if agree else 'NO'}."]
        record("search-repeat", {"host": _host(), "runs": reps, "agree": agree}, "\n".join(md))
        return
    unknown = set(stems) - set(TRAINED_MODELS)
    if unknown:
        raise SystemExit(f"unknown model(s) {sorted(unknown)}; known: {sorted(TRAINED_MODELS)}")
    examples = trained_examples(quick=False)
    rows = [run_one(s, examples, args.budget) for s in stems]
    if args.regret:
        reg = [regret_row(s, examples, args.budget, r) for s, r in zip(stems, rows)]
        md = ["# Regret: the pick within the budget against every plan run to completion", "",
              f"Budget {args.budget}; the unbudgeted run tries every candidate and knob value; "
              "'best' is the fastest plan that keeps the allowed drop (and every constraint) on the validation split; the unbudgeted run's own pick is in the JSON.", "",
              markdown_table(["model", "pick (budgeted)", "pick speed-up", "best plan",
                              "best speed-up", "regret", "unbudgeted wall s"],
                             [[g["model"], g["pick"], g["pick_speedup"],
                               (g["best"] or {}).get("name"), (g["best"] or {}).get("speedup"),
                               g["regret"], g["unbudgeted_wall_s"]] for g in reg])]
        record("search-regret", {"host": _host(), "rows": reg, "budgeted": rows}, "\n".join(md))
    host = detect_host()
    host_text = (f"{host.get('cpu_model')} ({host.get('arch')}), ISA: "
                 f"{', '.join(host.get('isa') or []) or 'unknown'}; "
                 f"{host.get('cores_available')} cores; torch {host.get('torch')}; load average "
                 f"at the end {' / '.join(str(x) for x in host.get('load_average') or [])}")
    name = "search" if set(stems) == set(TRAINED_MODELS) else "search-partial"
    record(name, {"host": host, "rows": rows}, markdown(rows, host_text))


if __name__ == "__main__":
    main()
