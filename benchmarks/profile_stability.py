"""How repeatable is `advisor profile`? Profiles each example model several times per target and
prints the p50 spread, (max - min) / median, per model and runtime (goal: within 5%).

The models are built untrained (latency does not depend on the weights). Each profile exports
the model afresh and measures every runtime in a fresh worker process, exactly as
`advisor profile` does, so the spread covers everything a user would see between two runs.
Each measurement's CPU share (CPU time / (wall time x threads) inside the worker), how often the
worker was preempted and the host load are recorded: on a shared machine they explain most of
the spread.

The first row per target, `floor`, is a model that only adds 1 to the same input: its p50 is the
runtime's fixed cost per call (session run, dispatch, copying the input). Each example's p50 is
also given as a multiple of that floor: a speed-up measured on a model that is many times its
floor is a change in work done, not in launch overhead.

    python benchmarks/profile_stability.py [--runs 3] [--targets cpu,edge-arm]
                                           [--models resnet,mobilenet,vgg] [--input-shape 1,3,32,32]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import markdown_table, record  # noqa: E402


def build(name: str):
    import torch

    if name == "floor":
        class AddOne(torch.nn.Module):
            """The cheapest model with the examples' input: one elementwise add."""

            def forward(self, x):
                return x + 1

        return AddOne().eval()
    from advisor.examples.build import EXAMPLES
    from advisor.examples.models import FACTORIES

    kwargs = EXAMPLES.get(name, ({},))[0]
    return FACTORIES[name](**kwargs).eval()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--targets", default="cpu,edge-arm")
    ap.add_argument("--models", default="floor,resnet,mobilenet,vgg",
                    help="`floor` = one add on the same input: the runtime's cost per call")
    ap.add_argument("--input-shape", default="1,3,32,32")
    ap.add_argument("--repeats", type=int, default=100)
    ap.add_argument("--max-seconds", type=float, default=10.0)
    ap.add_argument("--processes", type=int, default=3,
                    help="worker processes per measurement (as `advisor profile` by default)")
    args = ap.parse_args(argv)

    import torch

    from advisor.measure.host import detect_host
    from advisor.measure.profile import profile_model
    from advisor.model_io import LoadedModel
    from advisor.targets import load_target

    torch.set_num_threads(1)  # in-process export/FLOPs: one thread finishes fastest on a busy host
    shape = tuple(int(d) for d in args.input_shape.split(","))
    results, rows = [], []
    start = time.perf_counter()
    for model_name in args.models.split(","):
        model = build(model_name)
        loaded = LoadedModel(path=None, format="module", module=model, onnx_path=None,
                             input_shape=shape, metadata={"arch": model_name}, editable=True)
        for target_name in args.targets.split(","):
            target = load_target(target_name)
            per_runtime: dict[str, list[dict]] = {}
            for i in range(args.runs):
                prof = profile_model(loaded, target, repeats=args.repeats,
                                     max_seconds=args.max_seconds, processes=args.processes,
                                     progress=False)
                for rt, r in prof.runtimes.items():
                    if r.get("status") == "ok":
                        per_runtime.setdefault(rt, []).append(
                            {"p50": r["p50"], "p90": r["p90"], "cv": r["cv"], "runs": r["runs"],
                             "process_p50s": r.get("process_p50s"),
                             "cpu_share": r.get("cpu_share"),
                             "preemptions_per_s": r.get("preemptions_per_s"),
                             "load": (r.get("load_average") or [None])[0]})
                print(f"{model_name:9s} {target_name:8s} run {i + 1}: " + ", ".join(
                    f"{rt} p50 {v[-1]['p50']:.3f} ms (cpu share {v[-1]['cpu_share']}, "
                    f"preempted {v[-1]['preemptions_per_s']}/s)"
                    for rt, v in per_runtime.items()), flush=True)
            for rt, runs in per_runtime.items():
                p50s = [r["p50"] for r in runs]
                med = statistics.median(p50s)
                spread = (max(p50s) - min(p50s)) / med if med > 0 else None
                shares = [r["cpu_share"] for r in runs if r["cpu_share"] is not None]
                preempt = [r["preemptions_per_s"] for r in runs
                           if r.get("preemptions_per_s") is not None]
                loads = [r["load"] for r in runs if r["load"] is not None]
                entry = {"model": model_name, "target": target_name, "runtime": rt,
                         "emulated": target.emulated, "p50_ms": p50s, "median_ms": med,
                         "spread": spread, "within_5pct": spread is not None and spread <= 0.05,
                         "cpu_share_min": min(shares) if shares else None,
                         "preemptions_per_s_max": max(preempt) if preempt else None,
                         "load_max": max(loads) if loads else None, "runs": runs}
                results.append(entry)
                rows.append([model_name, target_name + (" (emulated)" if target.emulated else ""),
                             rt, " / ".join(f"{x:.4g}" for x in p50s), med,
                             f"{spread * 100:.1f}%" if spread is not None else None,
                             "yes" if entry["within_5pct"] else "no",
                             f"{min(shares):.2f}" if shares else None,
                             f"{max(preempt):.0f}" if preempt else None,
                             f"{max(loads):.1f}" if loads else None])
    floors = {(e["target"], e["runtime"]): e["median_ms"] for e in results
              if e["model"] == "floor"}
    for entry, row in zip(results, rows):
        floor = floors.get((entry["target"], entry["runtime"]))
        entry["x_floor"] = (round(entry["median_ms"] / floor, 1)
                            if floor and entry["model"] != "floor" else None)
        row.insert(5, f"{entry['x_floor']:g}x" if entry["x_floor"] else "—")
    host = detect_host()
    table = markdown_table(["model", "target", "runtime", "p50 per run (ms)", "median ms",
                            "x floor", "spread", "within 5%", "min CPU share",
                            "max preempted/s", "max load"], rows)
    note = (f"\nInput {list(shape)}, {args.runs} profiles per model and target, "
            f"{args.repeats} repeats (max {args.max_seconds:g} s) each; host "
            f"{host.get('cpu_model')}, {host.get('cores_available')} cores; "
            f"took {time.perf_counter() - start:.0f} s. A CPU share well below 1 means other "
            "processes took the worker's cores during timing (a multi-threaded runtime may also leave "
            "threads idle on a small model); preempted/s counts the scheduler taking a core away.")
    record("profile_stability", {"input_shape": list(shape), "runs": args.runs,
                                 "repeats": args.repeats, "host": host, "results": results},
           table + "\n" + note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
