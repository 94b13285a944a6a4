"""Knowledge distillation on the digits ResNet: recovery after pruning, and a smaller student.

Prints both acceptance tables in one run and writes benchmarks/results/distillation.json and
distillation.md:

1. Recovery (use (a)): the ResNet example (trained with `train_example`, default epochs) is
   pruned by 50% of its channels (`prune_structured`, ratio 0.5, its default criterion and
   scope); then, on the same epoch budget: no recovery / fine-tune only (`finetune` pass) /
   KD response / feature / relation / combined (`distill` pass, default weights) — digits test
   accuracy and wall time, mean over the seeds, at the passes' default lr and at the example's
   training lr.
2. Student (use (b)): a width-reduced copy of the teacher at ~25% of its FLOPs, re-initialised,
   trained from scratch on a short budget (a subset of the training split, few epochs) with KD
   (`distill_student`, response) and without (the same student, cross-entropy only, same
   loop, same budget) — test accuracy per seed and mean.

Run: `.venv/bin/python benchmarks/distillation.py` (about 5-10 minutes; one torch thread by
default, see --threads).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from advisor.examples import digits  # noqa: E402
from advisor.examples.build import EXAMPLES, INPUT_SHAPE, train_example  # noqa: E402
from advisor.passes.base import PassContext, RetrainBudget, get_pass  # noqa: E402
from advisor.passes.distill import DistillConfig, DistillStudentConfig  # noqa: E402
from advisor.passes.kd_students import build_student  # noqa: E402
from advisor.passes.structured import count_flops  # noqa: E402
from advisor.train import TrainConfig, evaluate, train  # noqa: E402
from benchmarks._common import record  # noqa: E402

RECOVERY = ("none", "finetune", "response", "feature", "relation", "combined")


def _ctx(teacher, train_loader, val_loader, budget: str, seed: int) -> PassContext:
    return PassContext(example_inputs=(torch.zeros(INPUT_SHAPE),), input_shape=INPUT_SHAPE,
                       train_loader=train_loader, val_loader=val_loader,
                       budget=RetrainBudget(budget), teacher=teacher, seed=seed,
                       progress=False)


def recovery(teacher, splits, args) -> dict:
    """Prune 50% of the channels, then recover with each method on the same epoch budget."""
    val = digits.loader(splits["val"], 256)
    test = digits.loader(splits["test"], 256)
    prune = get_pass("prune_structured")
    ctx = _ctx(teacher, None, val, "none", 0)
    pruned_result = prune.apply(teacher, prune.config_cls(ratio=args.prune_ratio), ctx)
    pruned = pruned_result.model
    flops = pruned_result.info["flops"]
    pruned_acc = evaluate(pruned, test)
    runs = {}
    for lr in args.lrs:
        rows = {m: {"test_accuracy": [], "seconds": []} for m in RECOVERY}
        for seed in args.seeds:
            train_loader = digits.loader(splits["train"], 64, shuffle=True, seed=seed)
            ctx = _ctx(teacher, train_loader, val, "finetune", seed)
            for method in RECOVERY:
                torch.manual_seed(seed)
                start = time.perf_counter()
                if method == "none":
                    model = pruned
                elif method == "finetune":
                    ft = get_pass("finetune")
                    model = ft.apply(pruned, ft.config_cls(epochs=args.epochs, lr=lr),
                                     ctx).model
                else:
                    config = DistillConfig(kind=method, epochs=args.epochs, lr=lr)
                    model = get_pass("distill").apply(pruned, config, ctx).model
                seconds = time.perf_counter() - start
                acc = evaluate(model, test) if method != "none" else pruned_acc
                rows[method]["test_accuracy"].append(acc)
                rows[method]["seconds"].append(seconds)
                print(f"  recovery lr {lr:g} seed {seed} {method:9s} test {acc:.2%}  "
                      f"{seconds:6.1f} s", flush=True)
        runs[f"{lr:g}"] = {m: _summary(r) for m, r in rows.items()}
    return {"prune": {"pass": "prune_structured", "ratio": args.prune_ratio,
                      "flops_before": flops["before"], "flops_after": flops["after"],
                      "flops_fraction": flops["after"] / flops["before"],
                      "test_accuracy": pruned_acc},
            "epochs": args.epochs, "seeds": list(args.seeds), "runs": runs}


def student(teacher, splits, args) -> dict:
    """~25% FLOPs student from scratch: KD vs no KD on the same short budget."""
    tr = splits["train"]
    n = int(round(len(tr) * args.train_fraction))
    idx = torch.randperm(len(tr), generator=torch.Generator().manual_seed(0))[:n]
    subset = digits.Split(tr.inputs[idx], tr.labels[idx])
    val = digits.loader(splits["val"], 256)
    test = digits.loader(splits["test"], 256)
    config = DistillStudentConfig(kind="response", flops_fraction=args.flops_fraction,
                                  epochs=args.student_epochs, lr=args.student_lr)
    rows = {"kd": {"test_accuracy": [], "seconds": []},
            "no_kd": {"test_accuracy": [], "seconds": []}}
    info = None
    for seed in args.student_seeds:
        ctx = _ctx(teacher, digits.loader(subset, args.student_batch, shuffle=True, seed=seed),
                   val, "full", seed)
        start = time.perf_counter()
        plain, info = build_student(teacher, config, ctx)
        train(plain, ctx.train_loader, TrainConfig(epochs=args.student_epochs,
                                                   lr=args.student_lr, seed=seed),
              val_loader=val, progress=False)
        rows["no_kd"]["seconds"].append(time.perf_counter() - start)
        rows["no_kd"]["test_accuracy"].append(evaluate(plain, test))

        ctx.train_loader = digits.loader(subset, args.student_batch, shuffle=True, seed=seed)
        start = time.perf_counter()
        kd = get_pass("distill_student").apply(teacher, config, ctx).model
        rows["kd"]["seconds"].append(time.perf_counter() - start)
        rows["kd"]["test_accuracy"].append(evaluate(kd, test))
        print(f"  student seed {seed}: no KD {rows['no_kd']['test_accuracy'][-1]:.2%}  "
              f"KD {rows['kd']['test_accuracy'][-1]:.2%}", flush=True)
    return {"student": {k: info[k] for k in ("source", "channel_ratio", "init", "flops",
                                             "teacher_flops", "flops_fraction", "params",
                                             "teacher_params")},
            "budget": {"train_samples": n, "of_train_samples": len(tr),
                       "epochs": args.student_epochs, "batch_size": args.student_batch,
                       "lr": args.student_lr},
            "kd_config": {"kind": config.kind, "temperature": config.temperature,
                          "alpha": config.alpha, "hard_label_weight": 1 - config.alpha},
            "seeds": list(args.student_seeds),
            "methods": {m: _summary(r) for m, r in rows.items()}}


def _summary(r: dict) -> dict:
    accs = r["test_accuracy"]
    return {"test_accuracy": accs, "test_accuracy_mean": statistics.fmean(accs),
            "test_accuracy_min": min(accs), "seconds": [round(s, 2) for s in r["seconds"]],
            "seconds_mean": statistics.fmean(r["seconds"])}


def markdown(result: dict) -> str:
    t = result["teacher"]
    rec, stu = result["recovery"], result["student"]
    p = rec["prune"]
    lines = [
        "# Knowledge distillation on the digits ResNet",
        "",
        f"Teacher: `resnet` example (width 24), {t['epochs']} epochs, test accuracy "
        f"**{t['test_accuracy']:.2%}**, {t['flops'] / 1e6:.1f} MFLOPs. Host: {result['host']}; "
        f"wall times measured on a shared machine (load average at start "
        f"{result['load_average_start']}), so they are indicative only.",
        "",
        f"## Recovery after {p['ratio']:.0%} structured pruning",
        "",
        f"`prune_structured` ratio {p['ratio']} (defaults otherwise): FLOPs "
        f"{p['flops_before'] / 1e6:.1f} M → {p['flops_after'] / 1e6:.1f} M "
        f"({p['flops_fraction']:.0%}), test accuracy {p['test_accuracy']:.2%}. Same budget for "
        f"every method: {rec['epochs']} epochs on the full training split, at the passes' default "
        f"lr (1e-3) and at the example's training lr (5e-3); test accuracy and wall time are "
        f"means over seeds {rec['seeds']}; gap = teacher − method. The test split has "
        f"{result['test_size']} images: one image is {100 / result['test_size']:.2f} points.",
        "",
    ]
    lrs = list(rec["runs"])
    lines += [
        "| method | " + " | ".join(f"lr {lr}: test acc. | gap (points) | time (s)" for lr in lrs)
        + " |",
        "|---|" + "---:|---:|---:|" * len(lrs),
    ]
    for m in RECOVERY:
        label = {"none": "no recovery", "finetune": "fine-tune only"}.get(m, f"KD {m}")
        cells = []
        for lr in lrs:
            r = rec["runs"][lr][m]
            gap = (t["test_accuracy"] - r["test_accuracy_mean"]) * 100
            cells.append(f"{r['test_accuracy_mean']:.2%} | {gap:+.2f} | {r['seconds_mean']:.1f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    s, b = stu["student"], stu["budget"]
    lines += [
        "",
        "## A smaller student trained from scratch",
        "",
        f"Student: {s['source']}, channel ratio {s['channel_ratio']}, re-initialised; "
        f"{s['flops'] / 1e6:.2f} MFLOPs = **{s['flops_fraction']:.0%} of the teacher's FLOPs**, "
        f"{s['params']:,} parameters (teacher {s['teacher_params']:,}). Budget (short, so that "
        f"the teacher's knowledge matters): {b['train_samples']} of {b['of_train_samples']} "
        f"training samples, {b['epochs']} epochs, batch {b['batch_size']}, lr {b['lr']}. "
        f"KD: response, T = {stu['kd_config']['temperature']}, alpha = "
        f"{stu['kd_config']['alpha']}.",
        "",
        "| student | " + " | ".join(f"seed {x}" for x in stu["seeds"])
        + " | mean | wall time (s) |",
        "|---|" + "---:|" * (len(stu["seeds"]) + 2),
    ]
    for m, label in (("no_kd", "without KD"), ("kd", "with KD")):
        r = stu["methods"][m]
        lines.append(f"| {label} | " + " | ".join(f"{a:.2%}" for a in r["test_accuracy"]) +
                     f" | {r['test_accuracy_mean']:.2%} | {r['seconds_mean']:.1f} |")
    a = result["acceptance"]
    lines += [
        "",
        "## Acceptance",
        "",
        f"- Some KD variant within 1 point of the teacher after 50% pruning: "
        f"**{'yes' if a['kd_within_1_point'] else 'no'}** — KD variants within 1 point: "
        f"{', '.join(a['kd_within_1_point_variants']) or 'none'}.",
        f"- The ~25% FLOPs student with KD beats the same student without KD: "
        f"**{'yes' if a['student_kd_beats_no_kd'] else 'no'}** "
        f"({a['student_kd_mean']:.2%} vs {a['student_no_kd_mean']:.2%}, mean; KD better on "
        f"{a['student_kd_wins']} of {len(stu['seeds'])} seeds).",
        "",
        f"Total benchmark time: {result['seconds_total']:.0f} s.",
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher-epochs", type=int, default=None, help="default: train_example's")
    ap.add_argument("--prune-ratio", type=float, default=0.5)
    ap.add_argument("--epochs", type=int, default=5, help="recovery budget (every method)")
    ap.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 5e-3],
                    help="recovery learning rates (every method at each)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="recovery seeds")
    ap.add_argument("--student-seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--flops-fraction", type=float, default=0.25)
    ap.add_argument("--train-fraction", type=float, default=0.1)
    ap.add_argument("--student-epochs", type=int, default=30)
    ap.add_argument("--student-batch", type=int, default=32)
    ap.add_argument("--student-lr", type=float, default=5e-3)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads; 1 because on a shared machine 2 spin-wait (measured "
                         "9 s vs 81 s wall for the same small training run under load)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    load = [round(x, 2) for x in os.getloadavg()]
    t0 = time.perf_counter()

    splits = digits.load_digits_splits()
    print("training the teacher (resnet example) ...", flush=True)
    ex = train_example("resnet", splits, epochs=args.teacher_epochs)
    teacher = ex.model.eval()
    teacher_info = {"arch": ex.arch, "kwargs": ex.arch_kwargs,
                    "epochs": args.teacher_epochs or EXAMPLES["resnet"][1],
                    "test_accuracy": ex.test_accuracy, "val_accuracy": ex.val_accuracy,
                    "train_seconds": round(ex.train_seconds, 1),
                    "flops": count_flops(teacher, INPUT_SHAPE)[0]}
    print(f"  teacher test {ex.test_accuracy:.2%} ({ex.train_seconds:.0f} s)", flush=True)

    print(f"recovery after {args.prune_ratio:.0%} structured pruning ...", flush=True)
    rec = recovery(teacher, splits, args)
    print(f"student at ~{args.flops_fraction:.0%} of the teacher's FLOPs ...", flush=True)
    stu = student(teacher, splits, args)

    gaps = {f"{m} (lr {lr})": round((ex.test_accuracy - r["test_accuracy_mean"]) * 100, 3)
            for lr, run in rec["runs"].items() for m, r in run.items()
            if m in ("response", "feature", "relation", "combined")}
    within = [f"{k} {v:+.2f}" for k, v in gaps.items() if v <= 1.0]
    kd_accs, plain_accs = (stu["methods"][m]["test_accuracy"] for m in ("kd", "no_kd"))
    result = {
        "benchmark": "distillation",
        "host": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
                f"{torch.get_num_threads()} threads",
        "load_average_start": load,
        "test_size": len(splits["test"]),
        "teacher": teacher_info,
        "recovery": rec,
        "student": stu,
        "acceptance": {
            "kd_gap_points": gaps,
            "kd_within_1_point_variants": within,
            "kd_within_1_point": bool(within),
            "student_kd_mean": stu["methods"]["kd"]["test_accuracy_mean"],
            "student_no_kd_mean": stu["methods"]["no_kd"]["test_accuracy_mean"],
            "student_kd_wins": sum(k > p for k, p in zip(kd_accs, plain_accs)),
            "student_kd_beats_no_kd": stu["methods"]["kd"]["test_accuracy_mean"]
            > stu["methods"]["no_kd"]["test_accuracy_mean"],
        },
        "seconds_total": round(time.perf_counter() - t0, 1),
    }
    print()
    record("distillation", result, markdown(result))
    return result


if __name__ == "__main__":
    main()
