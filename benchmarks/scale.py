"""Beyond one machine, measured on this one: `analyze --retrain finetune` of the ResNet example
with the process executor vs the Ray executor (a local Ray instance, trials in flight side by
side), the trial cache's effect on a repeated run, data-parallel fine-tuning with 1 vs 2 gloo
workers, and a projection for N nodes built from the measured per-stage times.

    .venv/bin/python benchmarks/scale.py [--budget 4m] [--max-trials 8] [--skip-ray]

The projection replays the process executor's trials (their recorded `stage_seconds`) on a
simulated cluster: N nodes run transform/train/export side by side (one trial per node), the
measurement runs on a device, one at a time per device (D = 1 shared device, or one per node),
and trials that depend on each other (a knob's values; a chain and its `+ int8` twin, which
reuses the chain's training) stay in order, as `advisor.search.run_search` keeps them. The
assumptions are listed in benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import copy
import heapq
import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._common import WORK, ensure_examples, markdown_table, record  # noqa: E402


def _analyze(ex: Path, out: Path, cache: Path | None, **kw) -> tuple[dict, float]:
    from advisor.api import analyze

    t0 = time.perf_counter()
    analyze(str(ex / "resnet.pt2"), target="cpu", max_drop="1%", retrain="finetune",
            data=str(ex / "digits-val.pt"), test_data=str(ex / "digits-test.pt"),
            train_data=str(ex / "digits-train.pt"), out=out, progress=False,
            cache=str(cache) if cache else False, **kw)
    wall = time.perf_counter() - t0
    return json.loads((out / "report.json").read_text()), wall


def _summary(label: str, report: dict, wall: float) -> dict:
    ok = [c for c in report["candidates"] if c["status"] == "ok"]
    chosen = report.get("chosen") or {}
    return {"run": label, "wall_s": round(wall, 1), "trials_ok": len(ok),
            "skipped": sum(c["status"] == "skipped" for c in report["candidates"]),
            "reused": (report.get("trial_cache") or {}).get("reused", 0),
            "chosen": chosen.get("name"),
            "speedup": (chosen.get("measured") or {}).get("speedup")}


def _lane(cand: dict) -> str:
    """Which trials must run in order: a candidate's knob values and fallback, and plans that
    share trained steps (the same key `run_search` groups by)."""
    from advisor.passes.base import load_builtin_passes

    passes = load_builtin_passes()
    steps = cand["plan"]["steps"]
    last = max((i for i, s in enumerate(steps) if passes[s["pass"]].trains), default=-1)
    if last >= 0:
        return json.dumps([s["pass"] for s in steps[:last + 1]])
    return re.sub(r" \[.*$| \+ fp32 fallback$", "", cand["name"])


def project(report: dict, nodes: int, devices: int) -> float:
    """Makespan (s) of the report's trials on `nodes` workers and `devices` measuring slots."""
    trials = []
    for c in report["candidates"]:
        st = c.get("stage_seconds") or {}
        if c["status"] != "ok" or not st:
            continue
        # what the search paid for the trial (its wall time, the worker's start included)
        # less the measurement: the part a node does, overhead included
        meas = float(st.get("measure", 0)) + float(st.get("evaluate", 0))
        prep = max(0.0, float(c.get("seconds") or 0.0) - meas)
        trials.append((_lane(c), prep, meas))
    lanes: dict[str, list] = {}
    for lane, prep, meas in trials:
        lanes.setdefault(lane, []).append((prep, meas))
    # event simulation: a lane's next trial starts when its previous one is measured
    node_free = [0.0] * nodes
    dev_free = [0.0] * devices
    ready = [(0.0, i) for i in range(len(lanes))]
    queues = list(lanes.values())
    heapq.heapify(ready)
    end = 0.0
    while ready:
        t, i = heapq.heappop(ready)
        prep, meas = queues[i].pop(0)
        n = min(range(nodes), key=lambda k: node_free[k])
        start = max(t, node_free[n])
        node_free[n] = start + prep
        d = min(range(devices), key=lambda k: dev_free[k])
        m_start = max(node_free[n], dev_free[d])
        dev_free[d] = m_start + meas
        end = max(end, dev_free[d])
        if queues[i]:
            heapq.heappush(ready, (dev_free[d], i))
    return end


def _train_workers(ex: Path, seeds=(0, 1, 2)) -> list[dict]:
    """Fine-tune the half-pruned ResNet example 3 epochs with 1 and 2 gloo workers, for each
    training seed."""
    import torch

    from advisor.examples.digits import loader
    from advisor.model_io import load_model
    from advisor.passes.base import PassContext, get_pass, load_builtin_passes
    from advisor.passes.config import config_from_dict
    from advisor.train import evaluate, seed_everything
    from advisor.train_workers import apply_data_parallel

    load_builtin_passes()
    torch.set_num_threads(2)
    model = load_model(str(ex / "resnet.pt2")).module
    splits = {k: torch.load(ex / f"digits-{k}.pt") for k in ("train", "val", "test")}
    from advisor.examples.digits import Split
    loaders = {k: loader(Split(v["inputs"], v["labels"]), 64 if k == "train" else 256,
                         shuffle=k == "train") for k, v in splits.items()}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        def ctx(w):
            return PassContext.for_shape((1, 3, 32, 32), budget="finetune",
                                         train_loader=loaders["train"],
                                         val_loader=loaders["val"], workdir=Path(tmp),
                                         progress=False, train_workers=w)
        prune = get_pass("prune_structured")
        seed_everything(0)
        pruned = prune.apply(model, config_from_dict(prune.config_cls, {"ratio": 0.5}),
                             ctx(1)).model
        ft = get_pass("finetune")
        cfg = config_from_dict(ft.config_cls, {"epochs": 3})
        for seed in seeds:
            for w in (1, 2):
                c = ctx(w)
                c.seed = seed
                seed_everything(seed)
                t0 = time.perf_counter()
                out = ft.apply(copy.deepcopy(pruned), cfg, c) if w == 1 else \
                    apply_data_parallel(ft, copy.deepcopy(pruned), cfg, c, seed=seed)
                rows.append({"seed": seed, "workers": w,
                             "wall_s": round(time.perf_counter() - t0, 2),
                             "train_s": out.info["seconds"],
                             "test_accuracy": round(evaluate(out.model, loaders["test"]), 4)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", default="4m")
    ap.add_argument("--max-trials", type=int, default=20)
    ap.add_argument("--skip-ray", action="store_true")
    args = ap.parse_args()
    ex = ensure_examples(("resnet",))
    work = WORK / "scale"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    kw = {"budget": args.budget, "max_trials": args.max_trials}
    runs = []
    process, wall = _analyze(ex, work / "process", work / "cache", **kw)
    runs.append(_summary("process executor (fresh cache)", process, wall))
    again, wall = _analyze(ex, work / "process-again", work / "cache", **kw)
    runs.append(_summary("process executor, repeated (cache)", again, wall))
    if not args.skip_ray:
        ray_report, wall = _analyze(ex, work / "ray", None, executor="ray", **kw)
        runs.append(_summary("Ray executor, local instance (2 CPUs, trials side by side)",
                             ray_report, wall))
    stages = {}
    for c in process["candidates"]:
        for k, v in (c.get("stage_seconds") or {}).items():
            if k != "prepare" and isinstance(v, (int, float)):
                stages[k] = stages.get(k, 0.0) + v
    proj = [{"nodes": n, "devices": d, "makespan_s": round(project(process, n, d), 1)}
            for n in (1, 2, 4, 8) for d in sorted({1, n})]
    ddp = _train_workers(ex)
    md = ["# Scale-out on this machine (2 cores)", "",
          f"`analyze resnet.pt2 --retrain finetune --budget {args.budget} --max-trials "
          f"{args.max_trials}` (digits ResNet example), one after another in one run:", "",
          markdown_table(["run", "wall s", "trials ok", "skipped", "from cache", "chosen",
                          "speed-up"],
                         [[r["run"], r["wall_s"], r["trials_ok"], r["skipped"], r["reused"],
                           r["chosen"], r["speedup"]] for r in runs]), "",
          "Seconds per stage, summed over the process executor's trials:", "",
          markdown_table(list(stages), [[round(v, 1) for v in stages.values()]]), "",
          "Projection from those stage times (transform/train/export on N nodes side by side, "
          "measurement one at a time per device; dependent trials in order):", "",
          markdown_table(["nodes", "devices", "makespan s"],
                         [[p["nodes"], p["devices"], p["makespan_s"]] for p in proj]), "",
          "Data-parallel fine-tuning of the half-pruned ResNet example, 3 epochs, per "
          "training seed (gloo, the 2 threads shared out; wall includes starting the "
          "workers):", "",
          markdown_table(["seed", "workers", "wall s", "training s", "test accuracy"],
                         [[r["seed"], r["workers"], r["wall_s"], r["train_s"],
                           r["test_accuracy"]] for r in ddp])]
    record("scale", {"runs": runs, "stage_seconds": stages, "projection": proj,
                     "train_workers": ddp, "settings": vars(args)}, "\n".join(md))


if __name__ == "__main__":
    main()
