"""Benchmark: models given only as a plain `torch.export.save` file, lifted into layers.

Coverage (the "exported graph" issue's acceptance): each model saved with plain
`torch.export.save` (no advisor metadata) and loaded by `advisor.model_io.load_model` without
`--arch`, so the scan, the load and `advisor.lift` run as for a user. Per model: the layers
lifted, the largest output difference from the original (two batch sizes), structured pruning at
ratio 0 (must equal the original) and at 50% of the channels (FLOPs against the lifted model),
and whether the pruned model's single ONNX file runs in a plain onnxruntime session.

    .venv/bin/python benchmarks/lift.py                       # the three digits examples
    .venv-vision/bin/python benchmarks/lift.py --torchvision  # and six torchvision CNNs
    .venv/bin/python benchmarks/lift.py --analyze             # analyze: lifted vs --arch

`--analyze`: `advisor analyze` of the digits ResNet saved with plain `torch.export.save`,
`--retrain finetune --budget 8m`, against the same model given with `--arch` (one run each,
same host): the choices, speed-ups and held-out drops side by side.

Writes benchmarks/results/lift.{json,md} (lift-vision with --torchvision, lift-analyze).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import WORK, ensure_examples, markdown_table, record  # noqa: E402

TORCHVISION = ("resnet18", "mobilenet_v2", "efficientnet_b0", "regnet_y_400mf", "densenet121",
               "shufflenet_v2_x1_0")


def _flops(model, shape) -> float:
    import torch
    from fvcore.nn import FlopCountAnalysis

    return float(FlopCountAnalysis(model, torch.zeros(shape)).unsupported_ops_warnings(False)
                 .uncalled_modules_warnings(False).total())


def coverage_row(name: str, model, shape: tuple[int, ...], work: Path) -> dict:
    import onnxruntime as ort
    import torch

    from advisor.export import export_onnx
    from advisor.model_io import load_model
    from advisor.passes.base import PassContext, get_pass, load_builtin_passes
    from advisor.passes.config import config_from_dict

    started = time.perf_counter()
    model = model.eval()
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    two = torch.randn((2, *shape[1:]), generator=torch.Generator().manual_seed(1))
    f = work / f"{name}.pt2"
    torch.export.save(torch.export.export(model, (x,)), str(f))
    row: dict = {"model": name}
    loaded = load_model(str(f))
    if not loaded.metadata.get("lifted"):
        return {**row, "lifted": False, "reason": loaded.metadata.get("lift_refused")}
    with torch.no_grad():
        row["max_diff"] = max(float((loaded.module(t) - model(t)).abs().max()) for t in (x, two))
    row["layers"] = next(n for n in loaded.metadata["notes"] if n.startswith("lifted from"))
    load_builtin_passes()
    spec = get_pass("prune_structured")

    def prune(ratio):
        fresh = load_model(str(f)).module
        return spec.apply(fresh, config_from_dict(spec.config_cls, {"ratio": ratio}),
                          PassContext.for_shape(shape)).model.eval()

    try:
        same = prune(0.0)
        with torch.no_grad():
            row["ratio0_diff"] = float((same(x) - model(x)).abs().max())
        half = prune(0.5)
    except Exception as e:  # a model the pruning cannot follow is a result too
        return {**row, "lifted": True, "prune_error": f"{type(e).__name__}: {str(e)[:160]}",
                "seconds": round(time.perf_counter() - started, 1)}
    row["flops_ratio_50"] = _flops(half, shape) / _flops(loaded.module, shape)
    onnx_file = work / f"{name}-half.onnx"
    export_onnx(half, onnx_file, shape)
    sess = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    out = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        row["onnx_diff"] = float(abs(out - half(x).numpy()).max())
    return {**row, "lifted": True, "seconds": round(time.perf_counter() - started, 1)}


def coverage(torchvision: bool) -> list[dict]:
    from advisor.examples.models import FACTORIES

    rows = []
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        for name in ("resnet", "mobilenet", "vgg"):
            rows.append(coverage_row(name, FACTORIES[name](), (1, 3, 32, 32), work))
            print(rows[-1], flush=True)
        if torchvision:
            import torchvision as tv

            for name in TORCHVISION:
                rows.append(coverage_row(f"tv-{name}", getattr(tv.models, name)(num_classes=10),
                                         (1, 3, 224, 224), work))
                print(rows[-1], flush=True)
    return rows


def coverage_markdown(rows: list[dict]) -> str:
    def fmt(r):
        if not r["lifted"]:
            return [r["model"], "NOT LIFTED: " + str(r.get("reason")), None, None, None, None]
        if "prune_error" in r:
            return [r["model"], r["layers"], f"{r['max_diff']:.1e}", None,
                    "pruning failed: " + r["prune_error"], None]
        return [r["model"], r["layers"], f"{r['max_diff']:.1e}", f"{r['ratio0_diff']:.1e}",
                f"{r['flops_ratio_50']:.2f}", f"yes ({r['onnx_diff']:.1e})"]

    return ("# Models given only as a plain torch.export file, lifted into layers\n\n"
            "Saved with `torch.export.save(torch.export.export(model, (x,)))`, loaded without "
            "`--arch` (`benchmarks/lift.py`). Random weights; digits examples at 32 px, "
            "torchvision models (num_classes=10) at 224 px.\n\n" + markdown_table(
                ["model", "lifted", "max abs difference from the original", "ratio 0: max diff",
                 "FLOPs at 50% channels (of lifted)", "pruned ONNX runs in plain ORT (max diff)"],
                [fmt(r) for r in rows]))


def analyze_rows(budget: str) -> list[dict]:
    import torch

    from advisor.api import analyze
    from advisor.model_io import load_model

    ex = ensure_examples()
    plain = WORK / "lift" / "resnet-plain.pt2"
    plain.parent.mkdir(parents=True, exist_ok=True)
    original = load_model(str(ex / "resnet.pt2"))
    eager = original.module.eval()
    torch.export.save(torch.export.export(eager, (torch.zeros(1, 3, 32, 32),)), str(plain))
    rows = []
    for label, model, arch in (("plain torch.export.save (lifted)", plain, None),
                               ("--arch advisor.examples.models:resnet", plain,
                                "advisor.examples.models:resnet")):
        t0 = time.perf_counter()
        res = analyze(str(model), arch=arch, arch_kwargs=original.metadata.get("arch_kwargs")
                      if arch else None, out=WORK / "lift" / ("arch" if arch else "lifted"),
                      target="cpu", max_drop="1%", retrain="finetune",
                      budget=budget, data=str(ex / "digits-val.pt"),
                      test_data=str(ex / "digits-test.pt"), train_data=str(ex / "digits-train.pt"),
                      progress=False)
        r = res.report
        ch = r.get("chosen") or {}
        m = ch.get("measured") or {}
        rows.append({"given as": label, "pick": ch.get("name"), "speedup": m.get("speedup"),
                     "speedup_range": m.get("speedup_range"),
                     "drop_test": ch.get("accuracy_drop_test"),
                     "families": sorted({c["family"] for c in r["candidates"]}),
                     "trials": len(r["candidates"]), "wall_s": round(time.perf_counter() - t0, 1),
                     "lifted": bool((ch.get("plan") or {}).get("model", {}).get("lifted"))})
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--torchvision", action="store_true")
    ap.add_argument("--analyze", action="store_true")
    ap.add_argument("--budget", default="8m")
    args = ap.parse_args()
    if args.analyze:
        rows = analyze_rows(args.budget)
        md = ("# analyze on a lifted graph against the same model with --arch\n\n"
              f"Digits ResNet, `--retrain finetune --budget {args.budget} --max-drop 1%`, one run "
              "each on the same host (`benchmarks/lift.py --analyze`).\n\n" + markdown_table(
                  ["given as", "pick", "speed-up", "interval", "held-out drop (pts)",
                   "families tried", "trials", "wall s", "plan records lifted"],
                  [[r["given as"], r["pick"], r["speedup"],
                    "—" if not r["speedup_range"] else
                    f"{r['speedup_range'][0]:.2f}–{r['speedup_range'][1]:.2f}",
                    r["drop_test"], ", ".join(r["families"]), r["trials"], r["wall_s"],
                    r["lifted"]] for r in rows]))
        record("lift-analyze", {"rows": rows}, md)
        return
    rows = coverage(args.torchvision)
    record("lift-vision" if args.torchvision else "lift", {"rows": rows}, coverage_markdown(rows))


if __name__ == "__main__":
    main()
