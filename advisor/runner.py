"""Carry out a plan: run its passes in order, exporting to ONNX where a pass needs ONNX.

Torch-stage passes (pruning, factorization, distillation, fine-tuning) come first and hand an
`nn.Module` on; the first ONNX-stage pass (ONNX Runtime quantization) triggers one fp32 ONNX
export; after that only ONNX-stage passes may follow. Each step is seeded (plan.seed + index)
so that `advisor apply` replays a plan deterministically.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from advisor.decide.plan import Plan
from advisor.errors import PassError, PlanError
from advisor.passes.base import OnnxArtifact, PassContext, get_pass
from advisor.passes.config import config_from_dict, config_to_dict
from advisor.progress import stage


@dataclass
class RunResult:
    model: Any  # nn.Module or OnnxArtifact
    torch_model: nn.Module | None  # the last torch-stage model (for .pt2 and hot spots)
    steps: list[dict] = field(default_factory=list)  # per step: pass, config, info, seconds

    @property
    def is_onnx(self) -> bool:
        return isinstance(self.model, OnnxArtifact)


def run_plan(model: nn.Module | OnnxArtifact, plan: Plan, ctx: PassContext,
             workdir: Path, first_step: int = 0) -> RunResult:
    """Apply every step of `plan` to `model` (never modified in place by well-behaved passes).

    `first_step` > 0 resumes a plan whose first steps another run already carried out (`model`
    is their result): step i is still seeded plan.seed + i, so the result is the same."""
    from advisor.export import export_onnx
    from advisor.train import seed_everything

    workdir.mkdir(parents=True, exist_ok=True)
    ctx.workdir = workdir
    current: Any = model
    torch_model = model if isinstance(model, nn.Module) else None
    steps: list[dict] = []
    for i, step in enumerate(plan.steps):
        if i < first_step:
            continue
        spec = get_pass(step.pass_name)
        config = config_from_dict(spec.config_cls, step.config)
        if spec.stage == "onnx" and isinstance(current, nn.Module):
            stage("export to ONNX")
            fp32 = workdir / "fp32.onnx"
            info = export_onnx(current, fp32, ctx.input_shape)
            current = OnnxArtifact(fp32, ctx.input_shape, {"export": info})
        elif spec.stage == "torch" and not isinstance(current, nn.Module):
            raise PlanError(f"step {i + 1} ({step.pass_name}) needs a PyTorch model, but an "
                            "earlier step already produced ONNX",
                            "order torch passes (pruning, factorization, KD) before quantization")
        seed_everything(plan.seed + i)
        stage(f"step {i + 1}/{len(plan.steps)}: {step.pass_name}")
        start = time.perf_counter()
        try:
            if spec.trains and ctx.train_workers > 1:
                from advisor.train_workers import apply_data_parallel
                result = apply_data_parallel(spec, current, config, ctx, plan.seed + i)
            else:
                result = spec.apply(current, config, ctx)
        except PassError:
            raise
        except Exception as e:  # a technique failing on this model is reported, not a crash
            raise PassError(f"{step.pass_name} failed: {type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''}") from e
        current = result.model
        if isinstance(current, nn.Module):
            torch_model = current
        steps.append({"pass": step.pass_name, "config": config_to_dict(config),
                      "info": result.info, "seconds": round(time.perf_counter() - start, 3)})
    return RunResult(current, torch_model, steps)


def write_artifacts(result: RunResult, out_dir: Path, input_shape: tuple[int, ...],
                    metadata: dict | None = None) -> dict[str, Path]:
    """Write the optimized model: `model.onnx` always, `model.pt2` when it is a torch model, and
    for a model with sparse weights a gzip-compressed copy of each (`*.gz`: the file to ship
    where size matters; its zeros shrink only there)."""
    from advisor.export import export_onnx, save_torch_artifact
    from advisor.fileio import atomic_path

    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    if isinstance(result.model, OnnxArtifact):
        with atomic_path(out_dir / "model.onnx") as tmp:
            shutil.copyfile(result.model.path, tmp)
        written["onnx"] = out_dir / "model.onnx"
    else:
        try:
            export_onnx(result.model, out_dir / "model.onnx", input_shape)
            written["onnx"] = out_dir / "model.onnx"
        except Exception as e:  # e.g. CSR sparse layers have no ONNX form
            written["onnx_error"] = Path(f"{type(e).__name__}: {str(e).splitlines()[0][:200]}")
        # torch.ao quantized modules cannot be torch.exported: they are written as TorchScript
        written["pt2"] = Path(save_torch_artifact(result.model, out_dir / "model.pt2",
                                                  input_shape, metadata))
    from advisor.fileio import gzip_copy
    from advisor.sparse import leaves_sparse_weights

    if leaves_sparse_weights(result.steps):
        for kind in ("onnx", "pt2"):
            if kind in written and written[kind].is_file():
                written[kind + "_gz"] = gzip_copy(written[kind])
    return written
