"""One candidate trial: apply a plan, export, measure on the target, evaluate. Runs in a worker.

The deploy runtime is the target's first runtime that can run the result: ONNX Runtime for
anything that exports to ONNX (quantized models only exist there), torch for models that only
run in torch (e.g. CSR sparse layers). Latency is measured in a fresh subprocess
(`advisor.measure.latency`), accuracy on the validation split only — the held-out test split is
touched once, for the chosen plan.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from advisor.decide.plan import plan_from_json
from advisor.measure.accuracy import correct_flags, logits_agreement
from advisor.passes.base import OnnxArtifact, PassContext, RetrainBudget, load_builtin_passes
from advisor.progress import stage


@dataclass
class TrialPayload:
    model: Any  # nn.Module, or None for ONNX input
    onnx_path: str | None
    input_shape: tuple[int, ...]
    plan: dict
    target: Any
    workdir: str
    train_loader: Any = None
    val_loader: Any = None
    calib_loader: Any = None
    budget: RetrainBudget = field(default_factory=RetrainBudget)
    reference_inputs: torch.Tensor | None = None
    reference_logits: np.ndarray | None = None
    measure: dict = field(default_factory=dict)  # warmup, repeats, max_seconds
    device: str = "cpu"
    progress: bool = False
    keep_torch_model: bool = False
    baseline_artifacts: dict = field(default_factory=dict)  # runtime -> baseline file to pair with
    # the result of this plan's first steps from an earlier trial (`search_prefix`): start there
    resume: dict | None = None
    # latency figures of a plan that runs the same kernels (`knob_same_kernels`): not re-timed
    timing: dict | None = None
    # a plan that starts with an ONNX-stage step (int8) starts from the baseline's fp32 ONNX
    # (`baseline_artifacts`): the same export, not done again in every trial
    reuse_baseline_onnx: bool = False
    # how a plan's data-parallel training workers start (`advisor.train_workers`): "local"
    # processes, or "ray" (Ray Train on the cluster the trial runs on)
    train_engine: str = "local"


def run_trial(p: TrialPayload) -> dict:
    """The whole trial in this process: `prepare_trial`, then `finish_trial`."""
    return finish_trial(p, prepare_trial(p))


def prepare_trial(p: TrialPayload) -> dict:
    """Transform, train and export: everything before the measurement on the target. Returns
    what `finish_trial` needs (plain data; the artefact is a file under `p.workdir`), so a
    distributed executor can run the two stages on different machines (`advisor.executor_ray`).
    """
    from advisor.runner import run_plan

    start = time.perf_counter()
    passes = load_builtin_passes()
    plan = plan_from_json(p.plan, passes.keys())
    if p.model is not None:
        torch.set_num_threads(max(1, getattr(p.target, "threads", None) or torch.get_num_threads()))
    workdir = Path(p.workdir)
    ctx = PassContext.for_shape(p.input_shape, budget=p.budget, train_loader=p.train_loader,
                                val_loader=p.val_loader,
                                calib_loader=p.calib_loader or p.val_loader, target=p.target,
                                teacher=p.model, workdir=workdir, seed=plan.seed,
                                device=p.device, progress=p.progress,
                                train_workers=plan.train_workers, train_engine=p.train_engine)
    start_model = p.model if p.model is not None else \
        OnnxArtifact(Path(p.onnx_path), p.input_shape, {})
    first = 0
    base_onnx = p.baseline_artifacts.get("onnxruntime")
    if p.resume is None and p.reuse_baseline_onnx and base_onnx and plan.steps and \
            passes[plan.steps[0].pass_name].stage == "onnx" and Path(base_onnx).is_file():
        start_model = OnnxArtifact(Path(base_onnx), p.input_shape, {})
    if p.resume is not None:  # the prefix's fp32 ONNX, measured once already
        stage(f"reuse steps 1-{p.resume['steps']} of {p.resume['trial']}")
        start_model = OnnxArtifact(Path(p.resume["path"]), p.input_shape, {})
        first = int(p.resume["steps"])
    result = run_plan(start_model, plan, ctx, workdir, first_step=first)
    # the steps this trial ran (a reused prefix trained in an earlier trial, not here)
    trained = [s for s in result.steps if passes[s["pass"]].trains]
    train_s = sum(float(s.get("seconds") or 0.0) for s in trained)
    if p.resume is not None:
        result.steps = [dict(s, reused_from=p.resume["trial"]) for s in p.resume["ran"]] + \
            result.steps
    exported = time.perf_counter()
    stage("export the deployable model")
    artifact, runtime, export_note = _deploy_artifact(result, p, workdir)
    done = time.perf_counter()
    # transform: the plan's steps that do not train, with the setup and the fp32 export between
    # them, so transform + train + export = prepare
    seconds = {"transform": max(0.0, exported - start - train_s), "train": train_s,
               "export": done - exported}
    prep = {"artifact": str(artifact), "runtime": runtime, "steps": result.steps,
            "export_note": export_note,
            "prefix_onnx": prefix_onnx(plan, passes, workdir, artifact, runtime, result),
            "prepare_seconds": round(done - start, 3),
            "stage_seconds": {k: round(v, 3) for k, v in seconds.items()}}
    if trained:  # where the training ran: the context's device, and how many worker processes
        prep["train_devices"] = _train_devices(result.steps, ctx)
    if p.keep_torch_model and result.torch_model is not None:
        prep["torch_model"] = result.torch_model
    return prep


def finish_trial(p: TrialPayload, prep: dict) -> dict:
    """Measure the prepared artefact on the target and evaluate it: the trial's result."""
    t0 = time.perf_counter()
    artifact, runtime, steps = Path(prep["artifact"]), prep["runtime"], prep["steps"]
    measured = measure_artifact(artifact, runtime, p)
    evaluate_s = float(measured.pop("evaluate_seconds", 0.0))
    measured["size_mb"], measured["size_stored_as"] = _stored_size(artifact, steps)
    finish_s = time.perf_counter() - t0  # the two stages may run on different machines
    out = {"status": "ok", "measured": measured, "steps": steps,
           "artifact": str(artifact), "runtime": runtime,
           "seconds": round(float(prep.get("prepare_seconds") or 0.0) + finish_s, 2),
           # `prepare` (= transform + train + export) stays for readers of the two-stage split
           "stage_seconds": {**(prep.get("stage_seconds") or {}),
                             "prepare": prep.get("prepare_seconds"),
                             "measure": round(max(0.0, finish_s - evaluate_s), 3),
                             "evaluate": round(evaluate_s, 3)}}
    if prep.get("train_devices"):
        out["ran_on"] = {"train": prep["train_devices"]}
    if prep.get("prefix_onnx") is not None:
        out["prefix_onnx"] = prep["prefix_onnx"]
    export_note = prep.get("export_note")
    notes = [export_note] if export_note else []
    if measured["size_stored_as"] == "gzip":
        notes.append("size: the gzip-compressed model file (sparse weights shrink only when "
                     "stored compressed; gunzip before loading)")
    if notes:
        out["note"] = "; ".join(notes)
    if prep.get("torch_model") is not None:
        out["torch_model"] = prep["torch_model"]
    return out


def _train_devices(steps: list[dict], ctx) -> dict:
    """Where this trial's training ran: the devices of its data-parallel workers (the step's
    own record, `advisor.train_workers`) or the context's one device."""
    for step in steps:
        parallel = (step.get("info") or {}).get("train_workers")
        if parallel and not step.get("reused_from"):
            return {"device": ", ".join(sorted(set(parallel["devices"]))),
                    "workers": parallel["workers"], "backend": parallel["backend"],
                    **({"engine": parallel["engine"]} if parallel.get("engine") else {}),
                    **({"weights_agree": parallel["weights_agree"]}
                       if "weights_agree" in parallel else {})}
    return {"device": str(ctx.device), "workers": 1}


def prefix_onnx(plan, passes, workdir: Path, artifact: Path, runtime: str, result
                ) -> dict | None:
    """The fp32 ONNX of this plan's torch steps, for a sibling plan that shares them
    (`search_prefix`): the export before its first ONNX-stage step, or the deployed model
    when every step ran in torch."""
    torch_steps = 0
    for step in plan.steps:
        if passes[step.pass_name].stage != "torch":
            break
        torch_steps += 1
    if torch_steps == 0:
        return None
    if torch_steps < len(plan.steps):
        path = workdir / "fp32.onnx"
    elif runtime == "onnxruntime" and not result.is_onnx:
        path = artifact
    else:
        return None
    return {"steps": torch_steps, "path": str(path)} if path.is_file() else None


def _runtimes(target) -> list[str]:
    return [r.name for r in getattr(target, "runtimes", ())] or ["onnxruntime", "torch"]


def _deploy_artifact(result, p: TrialPayload, workdir: Path) -> tuple[Path, str, str | None]:
    from advisor.export import export_onnx, save_torch_artifact

    runtimes = _runtimes(p.target)
    if result.is_onnx:
        if "onnxruntime" not in runtimes:
            raise RuntimeError("the plan produced an ONNX model but the target has no ONNX Runtime")
        return Path(result.model.path), "onnxruntime", None
    note = None
    for rt in runtimes:
        if rt == "onnxruntime":
            try:
                path = workdir / "candidate.onnx"
                export_onnx(result.model, path, p.input_shape)
                return path, "onnxruntime", None
            except Exception as e:
                note = f"no ONNX export ({type(e).__name__}); measured in torch"
        elif rt == "torch":
            path = Path(save_torch_artifact(result.model, workdir / "candidate.pt2",
                                            p.input_shape))
            return path, "torch", note
    raise RuntimeError(f"no runtime of the target can run this model ({note})")


def measure_artifact(artifact: Path, runtime: str, p: TrialPayload) -> dict:
    """Latency (subprocess), accuracy on val, agreement with the original on reference inputs.
    `evaluate_seconds` is the time spent evaluating (loading the predictor included): the
    caller takes it out, the rest of the call is the measurement."""
    from advisor.measure.latency import measure_latency

    t0 = time.perf_counter()
    predict = _predictor(artifact, runtime, p.target)
    load_s = time.perf_counter() - t0
    if p.timing is not None and p.timing.get("runtime") == runtime:
        out: dict[str, Any] = {"runtime": runtime, "timed_with": p.timing["from"],
                               **{k: p.timing[k] for k in ("latency_ms", "peak_memory_mb",
                                                           "paired") if p.timing.get(k)}}
        reference = None
    else:
        stage(f"measure latency ({runtime})")
        lat = measure_latency(artifact, runtime, p.input_shape, target=p.target, **p.measure)
        out = {"runtime": runtime, "latency_ms": {"p50": lat.p50, "p90": lat.p90, "cv": lat.cv},
               "peak_memory_mb": getattr(lat, "peak_rss_mb", None)}
        reference = p.baseline_artifacts.get(runtime)
    if reference:
        from advisor.measure.latency import measure_speedup
        stage("time against the baseline (paired)")
        paired = measure_speedup(artifact, reference, runtime, p.input_shape, target=p.target,
                                 warmup=int(p.measure.get("warmup", 10)),
                                 repeats=2 * int(p.measure.get("repeats", 100)),
                                 max_seconds=min(4.0, float(p.measure.get("max_seconds", 4.0))))
        out["paired"] = paired.to_json()
    stage("evaluate")
    t1 = time.perf_counter()
    out["accuracy"] = None
    if p.val_loader is not None:
        from advisor.measure.drop_bound import pack

        flags = correct_flags(predict, p.val_loader)
        out["accuracy"], out["correct"] = float(flags.mean()), pack(flags)
    if p.reference_inputs is not None and p.reference_logits is not None:
        out["agreement"] = logits_agreement(p.reference_logits, predict(p.reference_inputs))
    out["evaluate_seconds"] = load_s + time.perf_counter() - t1
    return out


def _predictor(artifact: Path, runtime: str, target=None):
    """A function inputs → logits (numpy) for the deployed artefact (on the target's device
    when it has one)."""
    from advisor.measure.accuracy import artifact_predictor
    return artifact_predictor(artifact, runtime, target)


def _stored_size(artifact: Path, steps: list[dict]) -> tuple[float, str]:
    """Size in MB of the file that ships and how it is stored: a model with sparse weights is
    shipped gzip-compressed (its zeros shrink only there; `advisor apply` writes the same
    file), any other model as it is."""
    from advisor.fileio import gzip_copy
    from advisor.sparse import leaves_sparse_weights

    if leaves_sparse_weights(steps):
        return gzip_copy(artifact).stat().st_size / 2 ** 20, "gzip"
    return artifact.stat().st_size / 2 ** 20, "file"
