"""Low-rank factorization side by side, in one run: Tucker-2 (k x k convs) + SVD (1x1 convs,
Linear) at retained energy 0.99/0.95/0.90 and with VBMF ranks, on the ResNet- and VGG-style
examples.

    .venv/bin/python benchmarks/factorization.py [--quick] [--models resnet,vgg]

Writes benchmarks/results/factorization.{json,md}.

- Models: the examples trained on digits (benchmarks/work/example/*.pt2).
- Which layers are replaced is decided at 224x224 batch 1, the resolution the latency target is
  about: a layer is replaced only where the factorized form has fewer FLOPs *and* was measured
  faster on the `cpu` target (the pass's default). The factorized modules do not depend on the
  resolution, so the same model is evaluated and fine-tuned at the trained 32x32 resolution.
- Latency: p50 at batch 1, torch and ONNX Runtime, at 32 and 224 px; every model timed against
  the original in ONE fresh process (`measure_speedup`; speed-up = ratio of the fastest calls).
- Accuracy: digits test split (359 images; one image = 0.28 points) right after factorization
  and after a short fine-tune (the shared loop, `finetune` pass).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import (RUNTIMES, SHAPES, WORK, ensure_examples,  # noqa: E402
                                export_for, latency_cells, markdown_table, paired_latency,
                                record, run_pass)

OUT = WORK / "factorization"
SETTINGS = [("energy 0.99", {"method": "energy", "energy": 0.99}),
            ("energy 0.95", {"method": "energy", "energy": 0.95}),
            ("energy 0.90", {"method": "energy", "energy": 0.90}),
            ("VBMF", {"method": "vbmf"}),
            ("VBMF, ranks x16", {"method": "vbmf", "rank_multiple": 16})]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="VBMF only, 1 fine-tune epoch")
    ap.add_argument("--models", default="resnet,vgg")
    ap.add_argument("--epochs", type=int, default=5, help="fine-tune epochs")
    args = ap.parse_args()
    torch.set_num_threads(1)  # training; latency workers set the target's threads themselves
    OUT.mkdir(parents=True, exist_ok=True)

    from advisor.examples.digits import load_digits_splits, loader
    from advisor.model_io import load_model
    from advisor.passes.base import PassContext, RetrainBudget
    from advisor.targets import load_target
    from advisor.train import evaluate

    models = args.models.split(",")
    example = ensure_examples(tuple(models))
    splits = load_digits_splits()
    data = {"train": loader(splits["train"], 64, shuffle=True), "val": loader(splits["val"], 256),
            "test": loader(splits["test"], 256)}
    target = load_target("cpu")
    settings = SETTINGS[3:4] if args.quick else SETTINGS
    epochs = 1 if args.quick else args.epochs

    def ctx(shape, budget="finetune"):
        return PassContext(example_inputs=(torch.zeros(shape),), input_shape=shape,
                           train_loader=data["train"], val_loader=data["val"],
                           budget=RetrainBudget(budget), target=target,
                           workdir=OUT / "work", progress=False)

    started = time.perf_counter()
    results: dict = {"epochs": epochs, "models": {}}
    md = ["# Low-rank factorization benchmark\n\nTucker-2 for k x k convolutions, SVD for 1x1 "
          "convolutions and Linear layers; layers replaced only where cheaper in FLOPs and "
          "measured faster at 224 px on the `cpu` target. Latency: p50 ms at batch 1 "
          "(speed-up vs the original, timed in the same process). Accuracy: digits test split "
          f"at 32 px; fine-tune: {epochs} epochs. The p50 columns move with the machine's load; "
          "the speed-up (ratio of the fastest calls, interleaved) is what to compare."]
    for name in models:
        model = load_model(str(example / f"{name}.pt2")).module.eval()
        dense_acc = evaluate(model, data["test"])
        baselines = {(rt, res): export_for(model, OUT / f"{name}-base-{res}", SHAPES[res], rt)
                     for res in SHAPES for rt in RUNTIMES}
        from advisor.passes.structured import count_flops
        flops0 = {res: count_flops(model, SHAPES[res])[0] for res in SHAPES}
        params0 = sum(p.numel() for p in model.parameters())
        rows, recs = [], []
        for label, config in settings:
            print(f"{name}: {label}", flush=True)
            t = time.perf_counter()
            res = run_pass("factorize", model, ctx(SHAPES["224"]), **config)
            fact = res.model
            acc = evaluate(fact, data["test"])
            tuned = run_pass("finetune", fact, ctx(SHAPES["32"]), epochs=epochs).model
            acc_tuned = evaluate(tuned, data["test"])
            lat = paired_latency(tuned, baselines, OUT / f"{name}-{label.replace(' ', '_')}",
                                 target)
            flops = {r: count_flops(tuned, SHAPES[r])[0] for r in SHAPES}
            params = sum(p.numel() for p in tuned.parameters())
            layers = [r for r in res.info["layers"] if r.get("replaced")]
            rec = {"setting": label, "config": config, "replaced": len(layers),
                   "layers": res.info["layers"], "params": params, "flops_32": flops["32"],
                   "flops_224": flops["224"], "test_acc_factorized": acc,
                   "test_acc_finetuned": acc_tuned, "drop_pts": (dense_acc - acc_tuned) * 100,
                   "latency": lat, "seconds": round(time.perf_counter() - t, 1)}
            recs.append(rec)
            rows.append([label, f"{len(layers)}/{len(res.info['layers'])}",
                         f"{params / 1e3:.1f}k ({params / params0:.2f})",
                         f"{flops['224'] / 1e6:.0f}M ({flops['224'] / flops0['224']:.2f})",
                         *latency_cells(lat), f"{acc:.2%}", f"{acc_tuned:.2%}",
                         f"{(acc_tuned - dense_acc) * 100:+.2f}"])
        base = recs[0]["latency"] if recs else {}
        results["models"][name] = {"dense_test_acc": dense_acc, "params": params0,
                                   "flops_32": flops0["32"], "flops_224": flops0["224"],
                                   "settings": recs}
        headers = ["ranks", "layers replaced", "params", "FLOPs@224", "torch@32 ms (x)",
                   "ORT@32 ms (x)", "torch@224 ms (x)", "ORT@224 ms (x)", "acc factorized",
                   "acc fine-tuned", "Δ pts"]
        md.append(f"## {name}\n\nOriginal: {params0 / 1e3:.1f}k params, "
                  f"{flops0['224'] / 1e6:.0f}M FLOPs at 224 px, test accuracy {dense_acc:.2%}; "
                  "baseline p50 (ms) " + ", ".join(f"{k} {v['base_p50']:.3f}"
                                                   for k, v in base.items()) + ".\n\n"
                  + markdown_table(headers, rows) + "\n\n" + _layer_table(recs))
    results["acceptance_vgg"] = _acceptance(results["models"].get("vgg"))
    md.append("## Acceptance (VGG: ≥1.5x at 224 px with ≤1 point drop after fine-tune)\n\n"
              + results["acceptance_vgg"]["text"])
    results["seconds"] = round(time.perf_counter() - started, 1)
    md.append(f"\nWhole run: {results['seconds'] / 60:.1f} min.")
    record("factorization" if not args.quick and args.models == ap.get_default("models")
           else "factorization-partial", results, "\n\n".join(md))


def _layer_table(recs: list[dict]) -> str:
    """Per layer for the VBMF setting: ranks, FLOPs before/after, error, measured times."""
    rec = next((r for r in recs if r["setting"] == "VBMF"), recs[0] if recs else None)
    if rec is None:
        return ""
    rows = []
    for r in rec["layers"]:
        rows.append([r.get("name"), r.get("kind"), r.get("ranks"), r.get("flops_before"),
                     r.get("flops_after") if r.get("replaced") else r.get("flops_factorized"),
                     r.get("rel_error"), r.get("latency_ms_before"), r.get("latency_ms_after"),
                     "yes" if r.get("replaced") else (r.get("reason") or "")[:60]])
    return (f"Per layer ({rec['setting']}, decided at 224 px):\n\n"
            + markdown_table(["layer", "kind", "ranks", "FLOPs before", "FLOPs factorized",
                              "rel. error", "ms dense", "ms factorized", "replaced"], rows))


def _acceptance(vgg: dict | None) -> dict:
    if not vgg:
        return {"met": None, "text": "VGG not run."}
    best = None
    for s in vgg["settings"]:
        sp = max(s["latency"]["onnxruntime@224"]["speedup"], s["latency"]["torch@224"]["speedup"])
        if s["drop_pts"] <= 1.0 and (best is None or sp > best[1]):
            best = (s["setting"], sp, s["drop_pts"])
    if best and best[1] >= 1.5:
        return {"met": True, "setting": best[0], "speedup": best[1], "drop_pts": best[2],
                "text": f"Met: {best[0]} runs {best[1]:.2f}x faster at 224 px with "
                        f"a drop of {best[2]:.2f} points after fine-tune (negative: a gain)."}
    text = ("Not met. " + (f"Best setting within 1 point: {best[0]} at {best[1]:.2f}x. "
                           if best else "No setting stayed within 1 point. ")
            + "See the per-layer table: what limits the speed-up is which layers were found "
              "faster factorized on this CPU.")
    return {"met": False, "best": best, "text": text}


if __name__ == "__main__":
    main()
