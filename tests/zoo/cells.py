"""One cell of the zoo table: apply one registered pass to one architecture and check its effect.

A cell ends in one of three states:
- **ok** — the pass applied and its effect was checked (what the check found is the cell's text);
- **refused** — the pass raised `PassError` before doing any work, with a one-line reason;
- **failed** — anything else: a crash, a multi-line or empty refusal, or an effect check that did
  not hold. The zoo tests fail on every failed cell.

The pass configurations are the smallest that still exercise the code path (one training step,
a few calibration samples); the checks are the ones the zoo issue asks for: structured pruning
removes channels, keeps the outputs at ratio 0 and exports to one ONNX file that runs in a plain
onnxruntime session; factorization keeps the outputs at full rank; int8 runs and its agreement
with fp32 is reported; training passes run a step.
"""
from __future__ import annotations

import copy
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from tests.zoo.cases import SHAPE


@dataclass
class Cell:
    status: str  # ok | refused | failed
    text: str
    seconds: float = 0.0


class EffectError(AssertionError):
    """The pass ran but its effect check did not hold."""


def loaders(n: int = 4, batch: int = 2, classes: int = 10, seed: int = 0) -> dict:
    """Tiny seeded random image loaders (train shuffled): enough for one step of every pass."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *SHAPE[1:], generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    ds = TensorDataset(x, y)
    return {"train": DataLoader(ds, batch_size=batch, shuffle=True,
                                generator=torch.Generator().manual_seed(seed)),
            "val": DataLoader(ds, batch_size=batch)}


# the smallest configuration of each pass that still runs its code path
SMOKE_CONFIGS: dict[str, dict] = {
    "prune_structured": {"ratio": 0.3, "slimming_epochs": 0, "calibration_samples": 4},
    "factorize": {"method": "energy", "energy": 1.0, "require_cheaper": False,
                  "check_latency": False},
    "prune_unstructured": {"sparsity": 0.5},
    "int8_static": {"num_samples": 4, "sensitivity_samples": 0, "measure_speedup": False},
    "int8_dynamic": {"measure_speedup": False},
    "weight_only_int8": {"measure_speedup": False},
    "torch_dynamic_int8": {"measure_speedup": False},
    "fp16": {}, "bf16": {},
    "distill": {"epochs": 1},
    "distill_student": {"epochs": 1},
    "finetune": {"epochs": 1},
    "prune_at_init": {"iterations": 1, "epochs": 1},
    "prune_unstructured_iterative": {"sparsity": 0.5, "rounds": 1, "epochs_per_round": 1},
}


def run_cell(pass_name: str, model: torch.nn.Module, onnx_path: Path, workdir: Path,
             data: dict) -> Cell:
    """Apply `pass_name` to a copy of `model` (or to `onnx_path` for ONNX-stage passes)."""
    from advisor.errors import PassError
    from advisor.passes.base import OnnxArtifact, PassContext, load_builtin_passes

    spec = load_builtin_passes()[pass_name]
    config = spec.config_cls(**SMOKE_CONFIGS[pass_name])
    workdir.mkdir(parents=True, exist_ok=True)
    budget = "full" if spec.needs_full_retrain else ("finetune" if spec.trains else "none")
    ctx = PassContext.for_shape(SHAPE, budget=budget, epochs=1, train_loader=data["train"],
                                val_loader=data["val"], calib_loader=data["val"],
                                teacher=model, workdir=workdir, progress=False)
    subject = OnnxArtifact(Path(onnx_path), SHAPE) if spec.stage == "onnx" \
        else copy.deepcopy(model)
    started = time.perf_counter()
    try:
        result = spec.apply(subject, config, ctx)
        text = CHECKS.get(pass_name, _generic)(model, result, config, ctx, onnx_path, workdir)
        return Cell("ok", text, time.perf_counter() - started)
    except PassError as e:
        line = str(e)
        if not line.strip() or "\n" in line.strip():
            return Cell("failed", f"refusal is not one line: {line!r}",
                        time.perf_counter() - started)
        return Cell("refused", line.strip(), time.perf_counter() - started)
    except EffectError as e:
        return Cell("failed", f"effect check: {e}", time.perf_counter() - started)
    except Exception as e:  # noqa: BLE001 - the table records what broke
        return failed_cell(e, started)


def failed_cell(e: BaseException, started: float) -> Cell:
    """What broke, in one line with the file and line it broke at."""
    where = traceback.extract_tb(e.__traceback__)[-1]
    return Cell("failed", f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
                f" ({Path(where.filename).name}:{where.lineno})", time.perf_counter() - started)


# ---- effect checks ------------------------------------------------------------------------------

def _probe(n: int = 2) -> torch.Tensor:
    return torch.randn(n, *SHAPE[1:], generator=torch.Generator().manual_seed(1))


def _outputs(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model.eval()(x)


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def _channels(model: torch.nn.Module) -> int:
    return sum(m.weight.shape[0] for m in model.modules()
               if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))


def _plain_ort(path: Path, x: torch.Tensor) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]


def _check_structured(model, result, config, ctx, onnx_path, workdir) -> str:
    from advisor.export import export_onnx
    from advisor.passes.base import load_builtin_passes

    pruned = result.model
    before, after = _channels(model), _channels(pruned)
    if after >= before:
        raise EffectError(f"no channel removed ({before} → {after})")
    x = _probe()
    path = workdir / "pruned.onnx"
    export_onnx(pruned, path, SHAPE)
    files = sorted(p.name for p in workdir.iterdir() if p.name.startswith("pruned."))
    if files != ["pruned.onnx"]:
        raise EffectError(f"the export is not one file: {files}")
    err = _rel_err(torch.from_numpy(_plain_ort(path, x)), _outputs(pruned, x))
    if err > 1e-3:
        raise EffectError(f"plain onnxruntime differs from torch by {err:.2e} (relative)")
    spec = load_builtin_passes()["prune_structured"]
    same = spec.apply(copy.deepcopy(model), spec.config_cls(ratio=0.0, slimming_epochs=0,
                                                           calibration_samples=4), ctx).model
    err0 = _rel_err(_outputs(same, x), _outputs(model, x))
    if err0 > 1e-4:
        raise EffectError(f"at ratio 0 the outputs changed by {err0:.2e} (relative)")
    kept = after / before
    params = result.info.get("params", {})
    return (f"{before - after} of {before} channels removed ({1 - kept:.0%}); params "
            f"{params.get('before', 0) / 1e6:.1f}M → {params.get('after', 0) / 1e6:.1f}M; "
            f"ratio 0 equal ({err0:.0e}); one ONNX file runs in plain ORT")


def _check_factorize(model, result, config, ctx, onnx_path, workdir) -> str:
    layers = result.info.get("layers") or []
    replaced = [lay for lay in layers if lay.get("replaced")]
    if not replaced:
        reasons = sorted({str(lay.get("reason")) for lay in layers})[:2]
        raise EffectError(f"no layer replaced at full rank ({'; '.join(reasons) or 'no layers'})")
    x = _probe()
    err = _rel_err(_outputs(result.model, x), _outputs(model, x))
    if err > 1e-3:
        raise EffectError(f"full rank changed the outputs by {err:.2e} (relative)")
    kinds = sorted({lay.get("kind") for lay in replaced})
    return f"{len(replaced)} layers ({', '.join(kinds)}) at full rank equal ({err:.0e})"


def _check_onnx_quant(model, result, config, ctx, onnx_path, workdir) -> str:
    x = _probe(4)
    q = _plain_ort(Path(result.model.path), x)
    ref = _outputs(model, x).numpy()
    agree = float((q.argmax(1) == ref.argmax(1)).mean())
    err = float(np.abs(q - ref).max() / max(np.abs(ref).max(), 1e-12))
    size = Path(result.model.path).stat().st_size / Path(onnx_path).stat().st_size
    return f"runs; top-1 agreement with fp32 {agree:.0%} on 4 random inputs, max rel err " \
           f"{err:.2f}; size ×{size:.2f}"


def _check_torch_quant(model, result, config, ctx, onnx_path, workdir) -> str:
    mods = result.info.get("quantized_modules") or []
    x = _probe()
    err = _rel_err(_outputs(result.model, x), _outputs(model, x))
    return f"{len(mods)} modules quantized ({', '.join(mods[:2])}{'…' if len(mods) > 2 else ''});" \
           f" max rel err {err:.2e}"


def _check_sparsity(model, result, config, ctx, onnx_path, workdir) -> str:
    weights = [m.weight for m in result.model.modules()
               if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    zeros = sum(int((w == 0).sum()) for w in weights)
    total = sum(w.numel() for w in weights)
    if zeros / total < 0.25:
        raise EffectError(f"only {zeros / total:.0%} of the weights are zero")
    return f"{zeros / total:.0%} of conv/linear weights zero"


def _check_trained(model, result, config, ctx, onnx_path, workdir) -> str:
    x = _probe()
    out = _outputs(result.model, x)
    if not torch.isfinite(out).all():
        raise EffectError("the trained model outputs NaN/inf")
    moved = any(not torch.equal(a, b) for a, b in
                zip(result.model.state_dict().values(), model.state_dict().values())
                if a.shape == b.shape)
    shapes_differ = any(a.shape != b.shape for a, b in
                        zip(result.model.state_dict().values(), model.state_dict().values()))
    if not (moved or shapes_differ):
        raise EffectError("no weight changed after a training step")
    return "one training step ran; weights updated"


def _generic(model, result, config, ctx, onnx_path, workdir) -> str:
    return "applied"


CHECKS = {
    "prune_structured": _check_structured, "factorize": _check_factorize,
    "int8_static": _check_onnx_quant, "int8_dynamic": _check_onnx_quant,
    "weight_only_int8": _check_onnx_quant, "torch_dynamic_int8": _check_torch_quant,
    "prune_unstructured": _check_sparsity, "prune_unstructured_iterative": _check_sparsity,
    "prune_at_init": _check_sparsity, "distill": _check_trained, "finetune": _check_trained,
    "distill_student": _check_trained,
}
