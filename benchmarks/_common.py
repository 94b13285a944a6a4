"""Shared helpers for the benchmark scripts: example models, data files, table output."""
from __future__ import annotations

import json
import platform
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
WORK = Path(__file__).parent / "work"


def ensure_examples(names=("resnet", "mobilenet", "vgg")) -> Path:
    """Train the example models once (cached under benchmarks/work/example)."""
    from advisor.examples.build import write_examples

    out = WORK / "example"
    missing = [n for n in names if not (out / f"{n}.pt2").exists()]
    if missing or not (out / "digits-test.pt").exists():
        write_examples(out, names=tuple(missing) or tuple(names), progress=False)
    return out


def markdown_table(headers: list[str], rows: list[list]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return "—" if v is None else str(v)
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def record(name: str, data: dict, markdown: str) -> None:
    """Write results/<name>.json and results/<name>.md (with host and date)."""
    from advisor.fileio import write_json_atomic, write_text_atomic

    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {"date": time.strftime("%Y-%m-%d %H:%M"), "host": platform.processor() or platform.machine()}
    write_json_atomic(RESULTS / f"{name}.json", {"meta": meta, **data})
    write_text_atomic(RESULTS / f"{name}.md", f"<!-- recorded {meta['date']} -->\n{markdown}\n")
    print(markdown)


def dump(obj) -> str:
    return json.dumps(obj, indent=2, default=str)


# ---- shared by the technique benchmarks (pruning, factorization) ----------------------------

SHAPES = {"32": (1, 3, 32, 32), "224": (1, 3, 224, 224)}
RUNTIMES = ("torch", "onnxruntime")


def run_pass(name: str, model, ctx, **config):
    """Apply a registered pass with a config given as keyword arguments."""
    from advisor.passes.base import get_pass
    from advisor.passes.config import config_from_dict

    spec = get_pass(name)
    return spec.apply(model, config_from_dict(spec.config_cls, config), ctx)


def export_for(model, stem: Path, shape, runtime: str) -> Path:
    """The file `runtime` deploys: ONNX for onnxruntime, .pt2 (or TorchScript) for torch."""
    import copy

    from advisor.export import export_onnx, save_torch_artifact

    if runtime == "onnxruntime":
        path = stem.with_suffix(".onnx")
        export_onnx(model, path, shape)
        return path
    return Path(save_torch_artifact(copy.deepcopy(model).eval(), stem.with_suffix(".pt2"), shape))


def paired_latency(model, baselines: dict, stem: Path, target, resolutions=("32", "224"),
                   runtimes=RUNTIMES) -> dict:
    """p50 and speed-up of `model` against the baseline files {(runtime, res): path}, each pair
    timed in one fresh process (`measure_speedup`: ratio of the fastest calls)."""
    from advisor.measure.latency import measure_speedup

    out = {}
    for res in resolutions:
        for rt in runtimes:
            path = export_for(model, Path(f"{stem}-{res}"), SHAPES[res], rt)
            p = measure_speedup(path, baselines[(rt, res)], rt, SHAPES[res], target=target,
                                repeats=150, max_seconds=3.0)
            out[f"{rt}@{res}"] = {"p50": p.p50, "base_p50": p.reference_p50,
                                  "speedup": p.speedup}
    return out


def latency_cells(lat: dict) -> list[str]:
    return [f"{lat[k]['p50']:.3f} ({lat[k]['speedup']:.2f}x)"
            for k in ("torch@32", "onnxruntime@32", "torch@224", "onnxruntime@224")]
