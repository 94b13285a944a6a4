"""Benchmark: real models at 224 px — advisor's pick against what a user gets from the tools alone.

For every model, side by side in one run: (a) fp32 ONNX Runtime (`advisor.export.export_onnx`);
(b) plain ONNX Runtime `quantize_static` (QDQ, per-channel, MinMax, ORT's default int8 types,
called directly with a CalibrationDataReader); (c) Torch-Pruning L1 50% of channels alone
(`MagnitudePruner` + `MagnitudeImportance(p=1)`, the classifier ignored, no fine-tuning), exported
to ONNX Runtime; (d) the artefact `advisor.api.analyze(..., retrain="none", apply=True)` ships.
All files of one model are timed in ONE process in interleaved rounds at the same thread count
(`advisor.measure.timer.time_interleaved`); speed-up = fp32's fastest call / the row's fastest call
(the p50 ratio is shown too).

Models: random-weight torchvision resnet18 / resnet50 / mobilenet_v2 (/ efficientnet_b0) at
1x3x224x224, where "accuracy" is top-1 agreement with fp32 on seeded random inputs; and the
digits-trained torchvision resnet18 / mobilenet_v2 of `advisor.examples.zoo` (10 classes), at their
native 32x32 for everything (latency and test accuracy).

    .venv-vision/bin/python benchmarks/zoo.py [--models resnet18,resnet50,mobilenet_v2]
        [--quick] [--threads 2] [--budget 10m] [--max-drop 1%] [--skip-trained]

Writes benchmarks/results/zoo-bench.{json,md} (a `--quick`, `--skip-trained` or `--models` run as
zoo-bench-quick / zoo-bench-partial). Intermediate files: benchmarks/work/zoo/.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import shutil
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import WORK, markdown_table, record  # noqa: E402

RANDOM_MODELS = {  # name: torchvision factory (random weights, seeded)
    "resnet18": "torchvision.models:resnet18",
    "resnet50": "torchvision.models:resnet50",
    "mobilenet_v2": "torchvision.models:mobilenet_v2",
    "efficientnet_b0": "torchvision.models:efficientnet_b0",
}
TRAINED_MODELS = {  # advisor.examples.zoo stem: architecture
    "tv-resnet18": "torchvision.models:resnet18",
    "tv-mobilenet_v2": "torchvision.models:mobilenet_v2",
}
ROOT = WORK / "zoo"
VARIANTS = ("ORT fp32", "ORT quantize_static", "Torch-Pruning L1 50%", "advisor pick")
_START = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - _START:7.1f} s] {msg}", file=sys.stderr, flush=True)


@dataclasses.dataclass
class Case:
    """One model and everything its rows are measured with."""

    name: str
    kind: str  # "random" | "trained"
    module: torch.nn.Module
    shape: tuple[int, ...]
    eval_x: torch.Tensor
    eval_y: torch.Tensor | None  # labels (trained) or None: agreement with fp32
    calib_x: torch.Tensor
    analyze_model: object  # what analyze() is given
    analyze_kwargs: dict


# ---- the cases --------------------------------------------------------------------------------

def random_case(name: str, n_eval: int, n_calib: int) -> Case:
    from advisor.model_common import import_factory

    torch.manual_seed(0)
    model = import_factory(RANDOM_MODELS[name])(weights=None).eval()
    shape = (1, 3, 224, 224)
    # analyze without data calibrates on its own seeded N(0, 1) inputs (seed 0); the plain ORT
    # anchor calibrates on the same distribution (seed 1); every row is judged on seed 2
    calib = torch.randn((n_calib,) + shape[1:], generator=torch.Generator().manual_seed(1))
    ev = torch.randn((n_eval,) + shape[1:], generator=torch.Generator().manual_seed(2))
    return Case(name, "random", model, shape, ev, None, calib, copy.deepcopy(model),
                {"input_shape": shape})


def trained_examples(quick: bool) -> Path:
    """`advisor.examples.zoo.write_zoo_examples`, once (cached under benchmarks/work/)."""
    from advisor.examples.zoo import write_zoo_examples

    out = WORK / "zoo-examples"
    stems = ("tv-resnet18",) if quick else tuple(TRAINED_MODELS)
    missing = tuple(s for s in stems if not (out / f"{s}.pt2").exists())
    if missing or not (out / "digits-test.pt").exists():
        log(f"training the zoo examples {', '.join(missing or stems)} (cached afterwards)")
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # faster than 2 on a loaded 2-core machine
        try:
            write_zoo_examples(out, names=missing or stems, progress=False)
        finally:
            torch.set_num_threads(threads)
    return out


def split_tensors(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    from advisor.data import load_data

    xs, ys = zip(*load_data(str(path), batch_size=256))
    return torch.cat(xs), torch.cat(ys)


def trained_case(stem: str, examples: Path, n_calib: int) -> Case:
    from advisor.model_io import load_model

    path = examples / f"{stem}.pt2"
    loaded = load_model(str(path), arch=TRAINED_MODELS[stem])
    test_x, test_y = split_tensors(examples / "digits-test.pt")
    val_x, _ = split_tensors(examples / "digits-val.pt")
    # analyze with --retrain none and no training data calibrates on the validation split:
    # the plain ORT anchor does the same
    return Case(stem, "trained", loaded.module.eval(), tuple(loaded.input_shape), test_x, test_y,
                val_x[:n_calib], str(path),
                {"arch": TRAINED_MODELS[stem], "data": str(examples / "digits-val.pt"),
                 "test_data": str(examples / "digits-test.pt")})


# ---- the four rows ----------------------------------------------------------------------------

def export_fp32(case: Case, d: Path) -> Path:
    from advisor.export import export_onnx

    path = d / "fp32.onnx"
    export_onnx(copy.deepcopy(case.module), path, case.shape)
    return path


def plain_quantize_static(case: Case, fp32: Path, d: Path) -> tuple[Path, dict]:
    """What onnxruntime alone gives: quantize_static, QDQ, per-channel, MinMax, default types."""
    import onnxruntime as ort
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          quantize_static)

    name = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"]) \
        .get_inputs()[0].name
    batch = 8 if case.shape[-1] > 64 else 64

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter([{name: case.calib_x[i:i + batch].numpy()}
                             for i in range(0, len(case.calib_x), batch)])

        def get_next(self):
            return next(self._it, None)

    out = d / "ort-int8-static.onnx"
    quantize_static(str(fp32), str(out), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, calibrate_method=CalibrationMethod.MinMax)
    return out, {"quant_format": "QDQ", "per_channel": True, "calibrate_method": "MinMax",
                 "activation_type": "QInt8 (default)", "weight_type": "QInt8 (default)",
                 "calibration_samples": len(case.calib_x)}


def torch_pruning_l1(case: Case, d: Path) -> tuple[Path, dict]:
    """Torch-Pruning alone: L1 magnitude, 50% of the channels of every layer, classifier kept."""
    import torch_pruning as tp
    from advisor.export import export_onnx

    model = copy.deepcopy(case.module).eval()
    classifier = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1:]
    example = torch.randn(case.shape)
    params_before = sum(p.numel() for p in model.parameters())
    pruner = tp.pruner.MagnitudePruner(model, example, importance=tp.importance.MagnitudeImportance(p=1),
                                       pruning_ratio=0.5, ignored_layers=classifier)
    pruner.step()
    params_after = sum(p.numel() for p in model.parameters())
    out = d / "tp-l1-50.onnx"
    export_onnx(model.eval(), out, case.shape)
    return out, {"params_before": params_before, "params_after": params_after}


def advisor_pick(case: Case, d: Path, tgt, args) -> tuple[Path | None, str | None, dict]:
    """analyze(..., apply=True): the shipped artefact, its runtime and what the report says."""
    from advisor.api import analyze

    def on_event(kind: str, payload: dict) -> None:
        if kind == "stage":
            log(f"  analyze {case.name}: stage {payload.get('name')}")
        elif kind == "trial":
            log(f"  analyze {case.name}: trial {payload.get('i')}/{payload.get('n')} "
                f"{payload.get('name')}")

    out = d / "analyze"
    res = analyze(case.analyze_model, target=tgt, retrain="none", max_drop=args.max_drop,
                  out=out, apply=True, budget=args.budget, max_trials=args.max_trials,
                  measure=args.measure, progress=False, on_event=on_event, **case.analyze_kwargs)
    report = res.report
    chosen = report.get("chosen")
    info = {"report_json": str(out / "report.json"), "chosen": None,
            "warnings": report.get("warnings", []),
            "candidates": [{"name": c.get("name"), "status": c.get("status"),
                            "error": c.get("error"), "meets": c.get("meets_constraints"),
                            "violations": c.get("violations"), "runtime": c.get("runtime"),
                            "speedup": (c.get("measured") or {}).get("speedup"),
                            "steps": [s.get("pass") for s in (c.get("plan") or {}).get("steps", [])]}
                           for c in report.get("candidates", [])],
            "reasons": report.get("reasons", []),
            "baseline": {k: report["baseline"].get(k) for k in
                         ("runtime", "latency_ms", "latency_by_runtime", "size_mb", "accuracy",
                          "accuracy_test", "hotspots")},
            "seconds": report.get("timing", {}).get("total_seconds")}
    if chosen is None:
        return None, None, info
    m = chosen.get("measured") or {}
    info["chosen"] = {"name": chosen.get("name"), "runtime": chosen.get("runtime"),
                      "steps": [s.get("pass") for s in (chosen.get("plan") or {}).get("steps", [])],
                      "own_speedup": m.get("speedup"), "own_latency_ms": m.get("latency_ms"),
                      "own_size_mb": m.get("size_mb"), "accuracy_test": chosen.get("accuracy_test"),
                      "disagreement": m.get("disagreement"), "hotspots": chosen.get("hotspots"),
                      "int8_layer_cost": chosen.get("int8_layer_cost")}
    files = (report.get("applied") or {}).get("files", {})
    shipped = next((Path(p) for k, p in files.items() if not k.endswith("_gz")), None)
    return shipped, chosen.get("runtime"), info


# ---- measuring the rows -----------------------------------------------------------------------

def runner(path: Path, runtime: str, x: torch.Tensor, threads: int):
    """A no-argument call of one batch-1 inference on the artefact's runtime."""
    if runtime == "onnxruntime":
        from advisor.export import onnx_session

        sess = onnx_session(path, threads)
        feed = {sess.get_inputs()[0].name: x.numpy()}
        return lambda: sess.run(None, feed)
    module = torch.export.load(str(path)).module()
    return lambda: module(x)


def time_rows(rows: list[dict], shape, threads: int, seconds: float, rounds: int) -> None:
    """Every artefact of one model timed in this process in interleaved rounds
    (`advisor.measure.timer.time_interleaved`); fills min/p50 and speed-ups vs the fp32 row."""
    from advisor.measure.timer import probe_seconds, time_interleaved

    x = torch.randn(shape, generator=torch.Generator().manual_seed(3))
    live = []
    for r in rows:
        if r.get("file") and not r.get("error"):
            try:
                live.append((r, runner(Path(r["file"]), r["runtime"], x, threads)))
            except Exception as e:  # a file its runtime cannot load: that row's error
                r["error"] = f"load for timing: {type(e).__name__}: {e}"[:300]
    if not live or live[0][0]["variant"] != VARIANTS[0]:
        return
    fns = [f for _, f in live]
    for f in fns:  # warm-up (first calls allocate and pick kernels)
        for _ in range(3):
            f()
    one = max(probe_seconds(fns) / len(fns), 1e-5)
    per_round = max(1, min(50, int(seconds / (rounds * len(fns) * one))))
    t = time_interleaved(fns, rounds, per_round)
    base_min, base_p50 = t.mins[0], t.medians[0]
    for (r, _), mn, md in zip(live, t.mins, t.medians):
        r.update(min_ms=mn, p50_ms=md, speedup_min=base_min / mn, speedup_p50=base_p50 / md,
                 timed_calls=rounds * per_round)


def score_rows(rows: list[dict], case: Case) -> None:
    """Accuracy (trained) or top-1 agreement with fp32 (random weights) of every row, its
    drop in points below the fp32 row and its largest logit difference from it."""
    from advisor.measure.accuracy import artifact_predictor

    batch = 16 if case.shape[-1] > 64 else 256
    outs = {}
    for r in rows:
        if not r.get("file") or r.get("error"):
            continue
        try:
            predict = artifact_predictor(Path(r["file"]), r["runtime"])
            outs[r["variant"]] = np.concatenate([predict(case.eval_x[i:i + batch])
                                                 for i in range(0, len(case.eval_x), batch)])
        except Exception as e:
            r["error"] = f"evaluation: {type(e).__name__}: {e}"[:300]
    ref = outs.get(VARIANTS[0])
    if ref is None:
        return
    labels = case.eval_y.numpy() if case.eval_y is not None else ref.argmax(1)
    for r in rows:
        out = outs.get(r["variant"])
        if out is None:
            continue
        r["value"] = float((out.argmax(1) == labels).mean() * 100)
        r["max_abs_diff"] = float(np.abs(out - ref).max())
        r["rel_logit_err"] = float(np.abs(out - ref).max() / max(np.abs(ref).max(), 1e-12))
    for r in rows:
        if r.get("value") is not None:
            r["drop"] = rows[0]["value"] - r["value"]
    rows[0]["distinct_fp32_classes"] = int(len(np.unique(ref.argmax(1))))


def depthwise_facts(module: torch.nn.Module, hotspots: list[dict]) -> dict:
    """Share of the baseline's per-layer time in depthwise convs (report hot spots, names of
    modules) and in all convs; None where the names do not match the module's."""
    dw = {n for n, m in module.named_modules() if isinstance(m, torch.nn.Conv2d)
          and m.groups > 1 and m.groups == m.in_channels}
    convs = {n for n, m in module.named_modules() if isinstance(m, torch.nn.Conv2d)}
    if not dw:
        return {"depthwise_convs": 0}
    matched = [h for h in hotspots if h.get("name") in convs]
    return {"depthwise_convs": len(dw), "conv_layers": len(convs),
            "hotspot_rows": len(hotspots), "hotspot_rows_matched": len(matched),
            "depthwise_share": sum(h["share"] for h in matched if h["name"] in dw)
            if matched else None,
            "conv_share": sum(h["share"] for h in matched) if matched else None,
            "top_depthwise": [h for h in hotspots if h.get("name") in dw][:3]}


def bench_model(case: Case, tgt, args) -> dict:
    from advisor.decide.factors import make_factors

    d = ROOT / case.name
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    rows = [{"variant": v, "runtime": "onnxruntime", "file": None, "error": None}
            for v in VARIANTS]
    extra: dict = {}
    t0 = time.perf_counter()
    try:
        fp32 = export_fp32(case, d)
        rows[0].update(file=str(fp32), seconds=time.perf_counter() - t0)
    except Exception as e:
        rows[0]["error"] = f"{type(e).__name__}: {e}"[:300]
        log(f"{case.name}: fp32 export failed: {rows[0]['error']}")
        return {"model": case.name, "kind": case.kind, "rows": rows, "extra": extra}
    log(f"{case.name}: fp32 exported ({rows[0]['seconds']:.1f} s)")
    steps = [(1, lambda: plain_quantize_static(case, fp32, d)),
             (2, lambda: torch_pruning_l1(case, d))]
    for i, fn in steps:
        t0 = time.perf_counter()
        try:
            path, info = fn()
            rows[i].update(file=str(path), info=info)
        except Exception as e:
            rows[i]["error"] = f"{type(e).__name__}: {e}"[:300]
            extra[f"traceback_{i}"] = traceback.format_exc()[-2000:]
        rows[i]["seconds"] = time.perf_counter() - t0
        log(f"{case.name}: {VARIANTS[i]} {'failed: ' + rows[i]['error'] if rows[i]['error'] else 'done'}"
            f" ({rows[i]['seconds']:.1f} s)")
    t0 = time.perf_counter()
    try:
        path, runtime, info = advisor_pick(case, d, tgt, args)
        extra["analyze"] = info
        if path is None:
            closest = [c["name"] for c in info["candidates"] if c["status"] == "ok"][:3]
            rows[3]["error"] = "nothing met the constraints" + \
                (f" (tried: {', '.join(closest)})" if closest else "")
        else:
            rows[3].update(file=str(path), runtime=runtime,
                           variant_detail=info["chosen"]["name"])
    except Exception as e:
        rows[3]["error"] = f"{type(e).__name__}: {e}"[:300]
        extra["traceback_3"] = traceback.format_exc()[-2000:]
    rows[3]["seconds"] = time.perf_counter() - t0
    log(f"{case.name}: advisor pick {rows[3].get('variant_detail') or rows[3]['error']} "
        f"({rows[3]['seconds']:.1f} s)")
    for r in rows:
        if r.get("file") and Path(r["file"]).is_file():
            r["size_mb"] = Path(r["file"]).stat().st_size / 2 ** 20
    factors = make_factors(hardware="cpu", max_drop=args.max_drop)
    t0 = time.perf_counter()
    try:
        score_rows(rows, case)
        ref_acc = rows[0].get("value")
        # the constraint analyze applies: points of accuracy (trained) or of disagreement
        allowed = factors.allowed_drop_points(ref_acc / 100 if case.kind == "trained" and
                                              ref_acc is not None else None)
        for r in rows:
            if r.get("drop") is not None:
                r["meets"] = bool(r["drop"] <= allowed + 1e-9)
        extra["allowed_drop_points"] = allowed
    except Exception as e:
        extra["score_error"] = f"{type(e).__name__}: {e}"
    log(f"{case.name}: evaluated on {len(case.eval_x)} inputs ({time.perf_counter() - t0:.1f} s)")
    t0 = time.perf_counter()
    try:
        time_rows(rows, case.shape, args.threads, args.time_seconds, args.rounds)
    except Exception as e:
        extra["timing_error"] = f"{type(e).__name__}: {e}"
    log(f"{case.name}: timed interleaved ({time.perf_counter() - t0:.1f} s)")
    hot = ((extra.get("analyze") or {}).get("baseline") or {}).get("hotspots") or []
    extra["depthwise"] = depthwise_facts(case.module, hot)
    return {"model": case.name, "kind": case.kind, "shape": list(case.shape),
            "eval_inputs": len(case.eval_x), "rows": rows, "extra": extra}


# ---- tables and findings ----------------------------------------------------------------------

def metric_of(res: dict) -> str:
    if res["kind"] == "trained":
        return f"test acc % ({res.get('shape', ['?'] * 4)[-1]} px)"
    return f"top-1 agreement % ({res.get('eval_inputs')} random inputs)"


def table(results: list[dict]) -> str:
    headers = ["model", "px", "variant", "speed-up (min)", "speed-up (p50)", "p50 ms", "size MB",
               "metric", "value", "drop pts", "meets", "max rel Δlogit", "row wall s", "note"]
    out = []
    for res in results:
        px = res.get("shape", [None] * 4)[-1]
        for r in res["rows"]:
            name = r["variant"] + (f": {r['variant_detail']}" if r.get("variant_detail") else "")
            out.append([res["model"], px, name,
                        f"{r['speedup_min']:.2f}x" if r.get("speedup_min") else None,
                        f"{r['speedup_p50']:.2f}x" if r.get("speedup_p50") else None,
                        r.get("p50_ms"), r.get("size_mb"),
                        "accuracy" if res["kind"] == "trained" else "agreement",
                        r.get("value"), r.get("drop"), r.get("meets"), r.get("rel_logit_err"),
                        round(r["seconds"], 1) if r.get("seconds") is not None else None,
                        ("error: " + r["error"]) if r.get("error") else
                        (r.get("runtime") if r.get("runtime") != "onnxruntime" else "")])
    return markdown_table(headers, out)


def _row(res: dict, i: int) -> dict:
    return res["rows"][i]


def _is_int8(res: dict) -> bool:
    chosen = ((res["extra"].get("analyze") or {}).get("chosen") or {})
    return any("int8" in (s or "") or "quant" in (s or "") for s in chosen.get("steps", []))


def verdict(a: float | None, b: float | None, noise: float = 0.03) -> str:
    """'yes' if a >= b, 'within noise' if a >= b*(1-noise), else 'no' (n/a when missing)."""
    if a is None or b is None:
        return "n/a"
    return "yes" if a >= b else ("within noise (3%)" if a >= b * (1 - noise) else "no")


def findings(results: list[dict]) -> list[str]:
    lines = []
    for res in results:
        k = res["rows"][0].get("distinct_fp32_classes")
        if res["kind"] == "random" and k is not None and k <= 3:
            lines.append(f"- {res['model']}: with random weights fp32 predicts only {k} distinct "
                         f"class(es) over the {res.get('eval_inputs')} random inputs, so top-1 "
                         "agreement says little; the max relative logit difference is the "
                         "finer measure of fidelity there.")
    for res in results:
        if res["kind"] != "random" or res["model"] not in ("resnet18", "resnet50"):
            continue
        pick, qs = _row(res, 3), _row(res, 1)
        sp, sq = pick.get("speedup_min"), qs.get("speedup_min")
        if sp is None:
            lines.append(f"- {res['model']}: no advisor pick to compare "
                         f"({pick.get('error') or 'not timed'}).")
            continue
        plain = f"plain quantize_static {sq:.2f}x" if sq else "plain quantize_static n/a"
        lines.append(
            f"- {res['model']} (224 px): advisor's pick is "
            f"{'an int8 plan' if _is_int8(res) else 'not int8'} ({pick.get('variant_detail')}), "
            f"{sp:.2f}x over ORT fp32 (p50 ratio {pick.get('speedup_p50', 0):.2f}x): >= 2x: "
            f"{'yes' if sp >= 2 else 'no'}; {plain}; pick at least as fast as quantize_static: "
            f"{verdict(sp, sq)}.")
    for res in results:
        pick = _row(res, 3)
        anchors = [r for r in res["rows"][1:3] if r.get("meets") and r.get("speedup_min")]
        best = max(anchors, key=lambda r: r["speedup_min"], default=None)
        allowed = res["extra"].get("allowed_drop_points")
        if pick.get("speedup_min") is None:
            lines.append(f"- {res['model']}: pick vs anchors: n/a ({pick.get('error') or 'not timed'}).")
            continue
        pick_ok = pick.get("meets")
        if best is None:
            lines.append(f"- {res['model']}: no anchor meets the allowed drop ({allowed:.2f} pts) "
                         f"on this evaluation; the pick ({pick['speedup_min']:.2f}x, drop "
                         f"{pick.get('drop', float('nan')):.2f} pts) {'meets' if pick_ok else 'misses'} it."
                         if allowed is not None else f"- {res['model']}: not scored.")
        else:
            lines.append(f"- {res['model']}: best anchor meeting the allowed drop "
                         f"({allowed:.2f} pts): {best['variant']} {best['speedup_min']:.2f}x; "
                         f"pick {pick['speedup_min']:.2f}x (drop {pick.get('drop', float('nan')):.2f} "
                         f"pts, {'meets' if pick_ok else 'misses'} the constraint here): never "
                         f"slower: {verdict(pick['speedup_min'], best['speedup_min'])}.")
    for res in results:
        dwf = res["extra"].get("depthwise") or {}
        if not dwf.get("depthwise_convs"):
            continue
        qs = _row(res, 1)
        an = res["extra"].get("analyze") or {}
        int8_cands = [c for c in an.get("candidates", []) if any(
            "int8" in (s or "") or "quant" in (s or "") for s in c.get("steps") or [])]
        share = dwf.get("depthwise_share")
        pays = qs.get("speedup_min")
        text = (f"- {res['model']} ({dwf['depthwise_convs']} depthwise convs): plain int8 "
                f"{pays:.2f}x over fp32 here" if pays else f"- {res['model']}: plain int8 not timed")
        text += (f"; baseline hot spots (report.json, {dwf.get('hotspot_rows_matched')} conv rows "
                 f"matched by module name): depthwise convs {share * 100:.1f}% of the time, all "
                 f"convs {dwf['conv_share'] * 100:.1f}%" if share is not None else
                 "; depthwise share: not available (hot-spot names did not match the modules)")
        if int8_cands:
            text += "; advisor's int8 candidates: " + ", ".join(
                f"{c['name']} {c['speedup']:.2f}x" if c.get("speedup") else
                f"{c['name']} ({c.get('status')}{': ' + c['error'] if c.get('error') else ''})"
                for c in int8_cands[:4])
        chosen = an.get("chosen") or {}
        text += f"; chosen: {chosen.get('name') or 'nothing'}."
        lines.append(text)
        quotes = [r for r in an.get("reasons", []) if "int8" in (r.get("text") or "").lower()
                  or "depthwise" in (r.get("text") or "").lower()]
        for q in quotes[:4]:
            lines.append(f"  - report reason ({q.get('rule')}, {q.get('verdict')}): "
                         f"\"{(q.get('text') or '')[:300]}\"")
    return lines


# ---- main -------------------------------------------------------------------------------------

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet18,resnet50,mobilenet_v2",
                    help=f"random-weight models, of {', '.join(RANDOM_MODELS)}")
    ap.add_argument("--quick", action="store_true",
                    help="resnet18 only, fewer repeats and inputs, small analyze budget")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--budget", default=None, help="analyze's budget (default 10m, quick 3m)")
    ap.add_argument("--max-drop", default="1%", help="analyze's --max-drop (and the anchors')")
    ap.add_argument("--skip-trained", action="store_true", help="no digits-trained zoo models")
    args = ap.parse_args(argv)
    from advisor.measure.latency import ALLOCATOR_ENV

    if argv is None and any(os.environ.get(k) != v for k, v in ALLOCATOR_ENV.items()):
        # glibc reads its allocator thresholds at start-up: run again with them set, as the
        # latency workers are (see benchmarks/quantization.py)
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **ALLOCATOR_ENV})
    names = ["resnet18"] if args.quick else [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [n for n in names if n not in RANDOM_MODELS]
    if unknown:
        ap.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(RANDOM_MODELS)}")
    args.budget = args.budget or ("3m" if args.quick else "10m")
    args.max_trials = 4 if args.quick else 20
    # only keys both the baseline profile and the trials' measure_latency accept
    # (hotspot_runs is refused by the trials)
    args.measure = {"repeats": 30, "max_seconds": 3.0} if args.quick else None
    args.time_seconds, args.rounds = (8.0, 5) if args.quick else (24.0, 9)
    n_eval, n_calib = (16, 16) if args.quick else (64, 64)
    torch.set_num_threads(args.threads)

    from advisor.measure.host import detect_host
    from advisor.targets import load_target, target_available

    tgt = dataclasses.replace(load_target("cpu"), threads=args.threads)
    ok, why = target_available(tgt)
    if not ok:
        log(f"target cpu with {args.threads} threads is not available: {why}")
        return 2
    log(f"models {names}{'' if args.skip_trained else ' + trained zoo examples'}, "
        f"{args.threads} threads, analyze budget {args.budget}")
    results = []
    plan = [("random", n) for n in names]
    if not args.skip_trained:
        plan += [("trained", s) for s in (("tv-resnet18",) if args.quick else TRAINED_MODELS)]
    examples = None
    for kind, name in plan:
        t0 = time.perf_counter()
        log(f"== {name} ({kind})")
        try:
            if kind == "random":
                case = random_case(name, n_eval, n_calib)
            else:
                examples = examples or trained_examples(args.quick)
                case = trained_case(name, examples, 256)
            res = bench_model(case, tgt, args)
        except Exception as e:  # the model itself could not be built/loaded: one error row
            res = {"model": name, "kind": kind, "rows": [
                {"variant": VARIANTS[0], "error": f"{type(e).__name__}: {e}"[:300]}],
                "extra": {"traceback": traceback.format_exc()[-2000:]}}
        res["seconds"] = round(time.perf_counter() - t0, 1)
        results.append(res)
        log(f"== {name} done ({res['seconds']:.0f} s)")

    host = detect_host()
    lines = findings(results)
    md = ["# Benchmark: real models at 224 px\n",
          f"Host: {host.get('cpu_model')} ({host.get('arch')}), ISA: "
          f"{', '.join(host.get('isa') or []) or 'unknown'}; {host.get('cores_available')} cores "
          f"available; {args.threads} thread(s) for every runtime; torch {host.get('torch')}, "
          f"onnxruntime {host.get('onnxruntime')}. Load average at the end: "
          f"{' / '.join(str(x) for x in host.get('load_average') or [])}. "
          f"Total {time.perf_counter() - _START:.0f} s{' (--quick)' if args.quick else ''}.\n",
          "Each model's files are timed at batch 1 in one process, interleaved "
          f"({args.rounds} rounds; `advisor.measure.timer.time_interleaved`). Speed-up (min) = ORT "
          "fp32's fastest call / the row's fastest call; (p50) the ratio of medians. Random-weight "
          f"models: 1x3x224x224 for latency and agreement (top-1 agreement with ORT fp32 on "
          f"{n_eval} seeded N(0,1) inputs; analyze gets no data and judges agreement on its own "
          "seeded inputs). Trained zoo models (digits, 10 classes): everything at their native "
          "32x32, accuracy on digits-test.pt. `meets` = drop <= the allowed drop for "
          f"--max-drop {args.max_drop} on this evaluation. Row wall s: export (fp32), quantize "
          "(quantize_static), prune + export (Torch-Pruning), the whole `analyze` run (pick). "
          f"analyze: retrain none, budget {args.budget}, max_trials {args.max_trials}.\n",
          "## Results\n", table(results), "\n## Findings (computed from the numbers above)\n",
          *lines]
    for res in results:
        if any(k.startswith("traceback") for k in res["extra"]):
            md.append(f"\n{res['model']}: see the JSON for the traceback of a failed step.")
    for res in results:  # what the report said about a small int8 gain, per model
        note = ((res.get("extra") or {}).get("analyze") or {}).get("chosen") or {}
        if note.get("int8_layer_cost"):
            md.append(f"\n{res['model']}, from advisor's report: {note['int8_layer_cost']['text']}")
    name = "zoo-bench"
    if args.quick:
        name += "-quick"
    elif not names:
        name += "-trained"  # `--models ''`: only the digits-trained zoo models
    elif args.skip_trained or args.models != ap.get_default("models"):
        name += "-partial"
    record(name, {"args": {k: v for k, v in vars(args).items()}, "host": host,
                  "threads": args.threads, "versions": {"torch": host.get("torch"),
                                                        "onnxruntime": host.get("onnxruntime")},
                  "findings": lines, "results": results}, "\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
