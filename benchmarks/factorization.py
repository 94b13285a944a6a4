"""Low-rank factorization side by side, in one run: Tucker-2 (k x k convs) + SVD (1x1 convs,
Linear) at retained energy 0.99/0.95/0.90 and with VBMF ranks (plain and rounded up to multiples
of 16), on the ResNet- and VGG-style examples.

    .venv/bin/python benchmarks/factorization.py [--quick] [--models resnet,vgg] [--epochs 3]

Writes benchmarks/results/factorization.{json,md} (other options: factorization-partial).

- Models: the examples trained on digits at 32x32 (benchmarks/work/example/*.pt2). They are
  fully convolutional up to a global average pool, so the same weights run at 224x224.
- The pass runs ONCE per setting, with its input shape at 224x224 batch 1 (the resolution the
  latency criterion is about): ranks come from the weights alone (energy, VBMF); a layer is
  replaced only where the factorized form has fewer FLOPs *and* was measured faster alone at its
  224-px input on the `cpu` target (the pass's defaults). The factorized modules do not depend
  on the resolution, so the SAME model is timed at 224 and 32 px and evaluated / fine-tuned at
  the trained 32 px.
- Latency: p50 ms at batch 1, torch (.pt2) and ONNX Runtime, 32 and 224 px; every model timed
  against the original in ONE fresh process in alternating blocks (`measure_speedup`; the
  speed-up is the ratio of the fastest calls, robust on a shared host).
- Accuracy: digits test split (359 images; one image = 0.28 points) right after factorization
  and after a short fine-tune (the shared `finetune` pass, OneCycle). The original fine-tuned
  for the same epochs is shown as a control: what fine-tuning alone does.
- A setting that replaces no layer gives the original model back: it is neither fine-tuned nor
  timed again (its cells say "= original"); "FLOPs if forced" says what factorizing every
  candidate at those ranks would have cost.
"""
from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import (RUNTIMES, SHAPES, WORK, ensure_examples,  # noqa: E402
                                export_for, markdown_table, paired_latency, record, run_pass)

OUT = WORK / "factorization"
SETTINGS = [("energy 0.99", {"method": "energy", "energy": 0.99}),
            ("energy 0.95", {"method": "energy", "energy": 0.95}),
            ("energy 0.90", {"method": "energy", "energy": 0.90}),
            ("VBMF", {"method": "vbmf"}),
            ("VBMF, ranks x16", {"method": "vbmf", "rank_multiple": 16})]
LAT_KEYS = ("torch@32", "onnxruntime@32", "torch@224", "onnxruntime@224")
MAX_DROP_PTS, MIN_SPEEDUP = 1.0, 1.5


def slug(label: str) -> str:
    """A file-name stem without dots (Path.with_suffix would cut "energy 0.99" at the dot)."""
    return re.sub(r"[^a-z0-9]+", "-", label.lower().replace(".", "")).strip("-")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="VBMF settings only, 1 fine-tune epoch (recorded as factorization-quick)")
    ap.add_argument("--models", default="resnet,vgg")
    ap.add_argument("--epochs", type=int, default=3, help="fine-tune epochs")
    args = ap.parse_args()
    torch.set_num_threads(1)  # training; latency workers set the target's threads themselves
    OUT.mkdir(parents=True, exist_ok=True)

    from advisor.examples.digits import load_digits_splits, loader
    from advisor.model_io import load_model
    from advisor.passes.base import PassContext, RetrainBudget
    from advisor.passes.structured import count_flops
    from advisor.targets import load_target
    from advisor.train import evaluate

    models = args.models.split(",")
    example = ensure_examples(tuple(models))
    splits = load_digits_splits()
    data = {"train": loader(splits["train"], 64, shuffle=True), "val": loader(splits["val"], 256),
            "test": loader(splits["test"], 256)}
    target = load_target("cpu")
    settings = SETTINGS[3:] if args.quick else SETTINGS
    epochs = 1 if args.quick else args.epochs

    def ctx(shape, budget="finetune"):
        return PassContext(example_inputs=(torch.zeros(shape),), input_shape=shape,
                           train_loader=data["train"], val_loader=data["val"],
                           budget=RetrainBudget(budget), target=target,
                           workdir=OUT / "work", progress=False)

    def flops_params(m):
        return {r: count_flops(m, SHAPES[r])[0] for r in SHAPES}, \
            sum(p.numel() for p in m.parameters())

    started = time.perf_counter()
    results: dict = {"epochs": epochs, "quick": args.quick, "target": "cpu",
                     "criterion": {"model": "vgg", "max_drop_pts": MAX_DROP_PTS,
                                   "min_speedup_224": MIN_SPEEDUP}, "models": {}}
    md = ["# Low-rank factorization benchmark\n\n"
          "Tucker-2 for k x k convolutions, SVD for 1x1 convolutions and Linear layers (pass "
          "`factorize`), decided at 224x224 batch 1: a layer is replaced only where cheaper in "
          "FLOPs *and* measured faster alone on the `cpu` target. The same factorized model is "
          "timed at 32 and 224 px and evaluated at the trained 32 px. Latency: p50 ms at batch 1 "
          "with the speed-up vs the original timed in the same process (ratio of the fastest "
          "calls; p50 columns move with the machine's load, the speed-up is what to compare). "
          f"Accuracy: digits test split (359 images, 0.28 pts each) at 32 px; fine-tune: "
          f"{epochs} epochs of the shared loop (`finetune` pass)."]
    for name in models:
        model = load_model(str(example / f"{name}.pt2")).module.eval()
        dense_acc = evaluate(model, data["test"])
        print(f"{name}: original {dense_acc:.2%}; fine-tuning the original (control)", flush=True)
        control = run_pass("finetune", model, ctx(SHAPES["32"]), epochs=epochs).model
        control_acc = evaluate(control, data["test"])
        baselines = {(rt, res): export_for(model, OUT / f"{name}-base-{res}", SHAPES[res], rt)
                     for res in SHAPES for rt in RUNTIMES}
        flops0, params0 = flops_params(model)
        rows, recs = [], []
        for label, config in settings:
            print(f"{name}: {label}", flush=True)
            t = time.perf_counter()
            res = run_pass("factorize", model, ctx(SHAPES["224"], "none"), **config)
            info, fact = res.info, res.model
            acc = evaluate(fact, data["test"])
            layers = [r for r in info["layers"] if r.get("replaced")]
            forced = info["flops_before"] - sum(
                r["flops_before"] - r["flops_factorized"] for r in info["layers"]
                if "flops_factorized" in r)
            rec = {"setting": label, "config": config, "replaced": len(layers),
                   "candidates": sum(r["kind"] != "skipped" for r in info["layers"]),
                   "layers": info["layers"], "layer_ranks": info["layer_ranks"],
                   "flops_224_if_forced": forced, "test_acc_factorized": acc,
                   "pass_seconds": info["seconds"]}
            if layers:
                tuned = run_pass("finetune", fact, ctx(SHAPES["32"]), epochs=epochs).model
                acc_tuned = evaluate(tuned, data["test"])
                lat = paired_latency(tuned, baselines, OUT / f"{name}-{slug(label)}", target)
                flops, params = flops_params(tuned)
            else:  # the original model, unchanged
                acc_tuned, lat, (flops, params) = None, None, (flops0, params0)
            rec.update({"params": params, "flops_32": flops["32"], "flops_224": flops["224"],
                        "test_acc_finetuned": acc_tuned,
                        "drop_pts": None if acc_tuned is None else (dense_acc - acc_tuned) * 100,
                        "latency": lat, "seconds": round(time.perf_counter() - t, 1)})
            recs.append(rec)
            rows.append(_row(rec, params0, flops0, dense_acc))
            print(f"  {rows[-1]}", flush=True)
        results["models"][name] = {"dense_test_acc": dense_acc,
                                   "control_finetuned_test_acc": control_acc,
                                   "params": params0, "flops_32": flops0["32"],
                                   "flops_224": flops0["224"], "settings": recs}
        base = next((r["latency"] for r in recs if r["latency"]), None)
        base_txt = ("; baseline p50 (ms) " + ", ".join(f"{k} {base[k]['base_p50']:.3f}"
                                                       for k in LAT_KEYS)) if base else ""
        headers = ["ranks", "layers replaced", "kept dense: more FLOPs / not faster", "params",
                   "FLOPs@224 (; if forced)",
                   "torch@32 ms (x)", "ORT@32 ms (x)", "torch@224 ms (x)", "ORT@224 ms (x)",
                   "acc factorized", "acc fine-tuned", "Δ pts"]
        md.append(f"## {name}\n\nOriginal: {params0 / 1e3:.1f}k params, "
                  f"{flops0['224'] / 1e6:.0f}M FLOPs at 224 px ({flops0['32'] / 1e6:.1f}M at "
                  f"32 px), test accuracy {dense_acc:.2%} ({control_acc:.2%} after the same "
                  f"{epochs}-epoch fine-tune, the control){base_txt}.\n\n"
                  + markdown_table(headers, rows) + "\n\n" + _layer_table(recs))
        _save(results, md, args, ap, started, partial=True)  # keep what is done if cut off
    results["acceptance_vgg"] = _acceptance(results["models"].get("vgg"))
    md.append(f"## Acceptance (VGG: ≥{MIN_SPEEDUP}x at 224 px with ≤{MAX_DROP_PTS:g} point drop "
              "after fine-tune)\n\n" + results["acceptance_vgg"]["text"])
    _save(results, md, args, ap, started, partial=False)


def _save(results, md, args, ap, started, partial: bool) -> None:
    results["seconds"] = round(time.perf_counter() - started, 1)
    full = not args.quick and args.models == ap.get_default("models") and \
        args.epochs == ap.get_default("epochs")
    name = "factorization" if full else ("factorization-quick" if args.quick
                                         else "factorization-partial")
    if partial:
        name += "-inprogress"
    text = "\n\n".join(md + [f"Whole run: {results['seconds'] / 60:.1f} min."])
    if partial:
        from advisor.fileio import write_json_atomic

        write_json_atomic(WORK / "factorization" / f"{name}.json", results)
        (WORK / "factorization" / f"{name}.md").write_text(text + "\n")
        return
    record(name, results, text)


def _row(rec: dict, params0: int, flops0: dict, dense_acc: float) -> list:
    lat = rec["latency"]
    if lat:
        cells = [f"{lat[k]['p50']:.3f} ({lat[k]['speedup']:.2f}x)" for k in LAT_KEYS]
    else:
        cells = ["= original"] * len(LAT_KEYS)
    forced = rec["flops_224_if_forced"]
    fl = f"{rec['flops_224'] / 1e6:.0f}M ({rec['flops_224'] / flops0['224']:.2f})"
    if rec["replaced"] < rec["candidates"] and abs(forced - rec["flops_224"]) > \
            0.005 * flops0["224"]:  # what the layers kept dense would have cost factorized
        fl += f"; forced {forced / 1e6:.0f}M ({forced / flops0['224']:.2f})"
    tuned = rec["test_acc_finetuned"]
    final = rec["test_acc_factorized"] if tuned is None else tuned
    kept = [r.get("reason", "") for r in rec["layers"] if r["kind"] != "skipped"
            and not r.get("replaced")]
    gate = f"{sum('more FLOPs' in r for r in kept)} / {sum('not faster' in r for r in kept)}"
    return [rec["setting"], f"{rec['replaced']}/{rec['candidates']}", gate,
            f"{rec['params'] / 1e3:.1f}k ({rec['params'] / params0:.2f})", fl, *cells,
            f"{rec['test_acc_factorized']:.2%}", "= original" if tuned is None else f"{tuned:.2%}",
            f"{(final - dense_acc) * 100:+.2f}"]


def _layer_table(recs: list[dict]) -> str:
    """Per layer: ranks, FLOPs, error and measured layer times for the VBMF settings."""
    chosen = [r for r in recs if r["setting"].startswith("VBMF")] or recs[-1:]
    if not chosen:
        return ""
    headers = ["layer", "kind", "max ranks", "FLOPs@224 dense"]
    for r in chosen:
        s = r["setting"]
        headers += [f"{s}: ranks", f"{s}: rel. error", f"{s}: FLOPs", f"{s}: ms dense → fact.",
                    f"{s}: replaced"]
    rows = []
    for i, first in enumerate(chosen[0]["layers"]):
        row = [first.get("name"), first.get("kind"), first.get("max_ranks"),
               first.get("flops_before")]
        for r in chosen:
            lay = r["layers"][i]
            ms = (f"{lay['latency_ms_before']:.3f} → {lay['latency_ms_after']:.3f}"
                  if "latency_ms_after" in lay else None)
            row += [lay.get("ranks"), lay.get("rel_error"), lay.get("flops_factorized"), ms,
                    "yes" if lay.get("replaced") else (lay.get("reason") or "")[:48]]
        rows.append(row)
    return ("Per layer (decided at 224 px; ms: the layer alone, fastest of interleaved runs):\n\n"
            + markdown_table(headers, rows))


def _acceptance(vgg: dict | None) -> dict:
    if not vgg:
        return {"met": None, "text": "VGG not run."}
    per_runtime, lines = {}, []
    for rt in RUNTIMES:
        key = f"{rt}@224"
        ok = [(s["setting"], s["latency"][key]["speedup"], s["drop_pts"]) for s in vgg["settings"]
              if s["latency"] and s["drop_pts"] <= MAX_DROP_PTS]
        best = max(ok, key=lambda x: x[1]) if ok else None
        met = bool(best and best[1] >= MIN_SPEEDUP)
        per_runtime[rt] = {"met": met, "best": best}
        if best:
            lines.append(f"- {rt}: {'met' if met else 'not met'} — best within "
                         f"{MAX_DROP_PTS:g} point: {best[0]}, {best[1]:.2f}x at 224 px, "
                         f"drop {best[2]:+.2f} points after fine-tune (negative: a gain).")
        else:
            lines.append(f"- {rt}: not met — no factorized setting stayed within "
                         f"{MAX_DROP_PTS:g} point after fine-tune.")
    met = any(v["met"] for v in per_runtime.values())
    text = (("**Met**" if met else "**Not met**") + " (drop measured against the original's "
            f"{vgg['dense_test_acc']:.2%}; the original fine-tuned alike reaches "
            f"{vgg['control_finetuned_test_acc']:.2%}).\n\n" + "\n".join(lines))
    return {"met": met, "per_runtime": per_runtime, "text": text}


if __name__ == "__main__":
    main()
