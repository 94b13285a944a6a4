"""What a notebook imports: `profile`, `analyze`, `apply_plan`.

The CLI is a thin layer over these. Flow of `analyze` (see docs/ and shared DESIGN):
load → measure the baseline on the target → decide (rules) → search (apply, export, re-measure,
evaluate on the validation split) → select → confirm on the held-out split → report (+ apply).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from advisor.bundle import (accuracy_of, baseline_predict, calibration_loader, check_data_fits,
                            load_bundle, reference_inputs)
from advisor.decide.factors import Factors, check_search_limits, make_factors
from advisor.decide.plan import Plan, plan_from_json
from advisor.decide.rules import evaluate_rules, rank_candidates
from advisor.decide.situation import PassFlags, situation_from
from advisor.errors import PlanError, TargetError
from advisor.replay import ApplyResult, apply_plan  # re-exported: the public surface is here
from advisor.session import DEFAULT_MEASURE, load_model_arg as _load, resolve_target as _target

__all__ = ["profile", "analyze", "apply_plan", "AnalysisResult", "ApplyResult"]


def profile(model, *, target="cpu", arch=None, input_shape=None, trust_pickle=False,
            batch_size: int = 1, progress: bool = True, processes: int = 3, **measure):
    """Measure `model` on `target`; returns a `Profile` (see advisor.measure.profile).

    Like `advisor profile`, each runtime is measured in `processes` fresh workers (p50 = median of
    their p50s). `measure`: `runtimes`, `warmup`, `repeats`, `max_seconds`, `hotspot_runs`,
    `workdir` of `profile_model`. The target is checked before the model is loaded, and the
    input at `batch_size` is checked for size before anything is measured."""
    from advisor.data import check_input_size
    from advisor.measure.profile import profile_model

    tgt = _target(target)
    for name in measure.get("runtimes") or ():
        tgt.runtime(name)  # an unknown runtime fails before the model is loaded
    loaded = _load(model, arch, input_shape, trust_pickle)
    check_input_size(loaded.input_shape, batch_size=batch_size)
    return profile_model(loaded, tgt, batch_size=batch_size, progress=progress,
                         processes=processes, **measure)


# ---- data -----------------------------------------------------------------------------------

def _device_profile(from_profile):
    """The `--from-profile` baseline, read and validated up front (a TargetError otherwise)."""
    if from_profile is None:
        return None
    from advisor.measure.profile import Profile

    path = Path(from_profile)
    hint = "write it with `advisor profile MODEL --target T --json FILE` (on the device)"
    if not path.is_file():
        raise TargetError(f"--from-profile {path} does not exist" if not path.exists() else
                          f"--from-profile {path} is not a file", hint)
    try:
        return Profile.from_json_file(path)
    except TargetError:
        raise
    except Exception as e:  # a JSON value of an unexpected type deep inside
        raise TargetError(f"--from-profile {path}: malformed profile ({type(e).__name__}: "
                          f"{str(e).splitlines()[0][:160] if str(e) else ''})", hint) from None


def _model_facts(loaded) -> dict:
    m = loaded.module
    facts = {"editable": bool(loaded.editable), "is_onnx": m is None}
    if m is None:
        return facts
    convs = [x for x in m.modules() if isinstance(x, torch.nn.Conv2d)]
    facts["has_batchnorm"] = any(isinstance(x, torch.nn.modules.batchnorm._BatchNorm)
                                 for x in m.modules())
    facts["has_depthwise"] = any(c.groups > 1 and c.groups == c.in_channels for c in convs)
    facts["spatial_convs"] = sum(1 for c in convs if c.groups == 1 and
                                 max(c.kernel_size) > 1)
    return facts


@dataclass
class AnalysisResult:
    report: dict
    chosen_plan: Plan | None
    out_dir: Path | None
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def chosen(self) -> dict | None:
        return self.report.get("chosen")


def _registry_flags() -> dict[str, PassFlags]:
    """The registry as the rule engine sees it: plain flags (incl. each config's knob and
    fallback field, read from its field metadata), so the engine never imports a pass."""
    from advisor.passes.base import load_builtin_passes

    return {n: PassFlags(n, s.family, s.stage, s.trains, s.needs_full_retrain, s.needs_labels,
                         s.needs_calibration, tuple(s.devices),
                         knob=s.knob[0] if s.knob else None,
                         knob_direction=s.knob[1] if s.knob else None,
                         fallback_field=s.fallback_field)
            for n, s in load_builtin_passes().items()}


def _in_workspace(fn):
    """Give `analyze` its work root: a staged, locked `--out` (advisor.outdir) or, without
    `out`, a temporary directory that is removed on every exit path."""
    import functools

    @functools.wraps(fn)
    def wrapper(model, **kw):
        out = kw.get("out")
        if out is None:
            import os
            import tempfile
            # advisor-PID-*: removed on every exit path; after a kill -9, by the next CLI run
            with tempfile.TemporaryDirectory(prefix=f"advisor-{os.getpid()}-") as tmp:
                return fn(model, **kw, _workroot=Path(tmp), _run=None)
        from advisor.outdir import open_output
        inputs = [model, kw.get("data"), kw.get("test_data"), kw.get("train_data"),
                  kw.get("from_profile"), kw.get("target")]
        with open_output(out, command="analyze", inputs=inputs, writes=ANALYZE_OUTPUTS) as run:
            return fn(model, **kw, _workroot=run.staging / "work", _run=run)
    return wrapper


# what `analyze --out` may write (checked against its inputs before any work)
ANALYZE_OUTPUTS = ("report.md", "report.html", "report.json", "plan.json", "plan-closest.json",
                   "plans", "work", "optimized")


@_in_workspace
def analyze(model, *, target="cpu", max_drop: str = "1%", goal: str = "latency",
            max_latency: str | None = None, max_size: str | None = None, retrain: str = "none",
            data=None, test_data=None, train_data=None, budget: str | None = None,
            out: str | Path | None = None, apply: bool = False, arch: str | None = None,
            input_shape=None, trust_pickle: bool = False, from_profile: str | Path | None = None,
            executor: str = "process", seed: int = 0, max_trials: int = 20,
            measure: dict | None = None, progress: bool = True,
            on_event: Callable[[str, dict], None] | None = None,
            _workroot: Path | None = None, _run=None) -> AnalysisResult:
    """Measure, decide, try and select compression plans for `model` on `target`.

    Nothing is written into `out` until the end: the run stages its outputs and commits them
    in one step (see `advisor.outdir`); without `out`, scratch space is a temporary directory
    removed on every exit path.
    """
    from advisor import __version__
    from advisor.measure.profile import profile_model
    from advisor.search import Baseline, SearchSettings, run_search, select

    t_start = time.perf_counter()
    emit = on_event or (lambda kind, payload: None)
    measure = {**DEFAULT_MEASURE, **(measure or {})}
    check_search_limits(max_trials=max_trials, measure=measure)
    # a device profile that cannot be read fails now, not after the baseline measurement
    device_profile = _device_profile(from_profile)
    loaded = _load(model, arch, input_shape, trust_pickle)
    tgt = _target(target)
    factors = make_factors(hardware="edge" if tgt.emulated else tgt.device, goal=goal,
                           max_drop=max_drop, max_latency=max_latency, max_size=max_size,
                           retrain=retrain, budget=budget, has_train_data=train_data is not None)
    data_b = load_bundle(data, test_data, train_data, loaded.input_shape, seed)
    check_data_fits(loaded, data_b)  # labels the model cannot output: refused before measuring
    warnings: list[str] = list(data_b.notes)
    if factors.retrain == "none" and train_data is not None:
        warnings.append("--train-data was given but --retrain none: it is not used")

    workroot = _workroot
    emit("stage", {"name": "baseline"})
    # the baseline's exported files are kept: every candidate is timed against them
    prof = profile_model(loaded, tgt, batch_size=1, progress=progress,
                         workdir=workroot / "baseline", **measure)
    prof_json = prof.to_json()
    if device_profile is not None:
        warnings.append(f"baseline of the device taken from {from_profile}; candidates are "
                        "measured on this host")
    rules_profile = device_profile.to_json() if device_profile is not None else prof_json
    runtimes = prof_json.get("runtimes") or {}
    latency_by_rt = {rt: v["p50"] for rt, v in runtimes.items()
                     if isinstance(v, dict) and v.get("p50")}
    if not latency_by_rt:
        latency_by_rt = {prof_json.get("runtime", "torch"): prof_json["latency_ms"]["p50"]}
    base_files = {rt: v["artifact"] for rt, v in runtimes.items()
                  if isinstance(v, dict) and v.get("p50") and v.get("artifact")}
    # the baseline is evaluated like a candidate: its deployed artefact on the runtime the
    # report compares against (the fastest), not the eager module
    base_rt = min(latency_by_rt, key=latency_by_rt.get)
    predict = baseline_predict(loaded, base_files.get(base_rt), base_rt)
    base_acc = accuracy_of(predict, data_b.val) if data_b.verified else None
    base_acc_test = accuracy_of(predict, data_b.test) if data_b.test is not None else None
    baseline = Baseline(latency_by_rt, float(prof_json["size_mb"]), base_acc, data_b.verified)

    emit("stage", {"name": "decide"})
    passes = _registry_flags()
    situation = situation_from(rules_profile, _target_json(tgt), _model_facts(loaded), factors,
                               passes, has_val_data=data_b.verified,
                               has_train_data=data_b.train is not None)
    rule_results = evaluate_rules(situation)
    ranked, rejected = rank_candidates(situation, rule_results)

    ref_x = reference_inputs(data_b, loaded.input_shape, seed=seed)
    ref_logits = predict(ref_x)
    calib = calibration_loader(data_b, ref_x)
    if data_b.train is None and data_b.val is None:
        warnings.append("no data: int8 calibration used synthetic inputs, which may misjudge "
                        "activation ranges; pass --data for a trustworthy calibration")
    from advisor.executor import make_executor
    from advisor.passes.base import RetrainBudget
    from advisor.trial import TrialPayload, run_trial

    # a graph-only module (ep.module()) cannot be pickled to a worker (torch limitation):
    # such trials run in this process, still isolated by exception handling
    if loaded.module is not None and not loaded.editable:
        executor = "inline"
        warnings.append("the model is a traced graph without layers: trials run in-process")
    ex = make_executor(executor)
    counter = {"n": 0}

    def run_one(plan: Plan, train_seconds: float | None) -> dict:
        counter["n"] += 1
        payload = TrialPayload(
            model=loaded.module, onnx_path=str(loaded.onnx_path) if loaded.onnx_path else None,
            input_shape=tuple(loaded.input_shape), plan=plan.to_json(), target=tgt,
            workdir=str(workroot / f"trial{counter['n']}"), train_loader=data_b.train,
            # calibrate on training inputs when given, so selection data stays unseen
            val_loader=data_b.val, calib_loader=calib,
            budget=RetrainBudget(factors.retrain, epochs=None, seconds=train_seconds),
            reference_inputs=ref_x, reference_logits=ref_logits, measure=measure,
            baseline_artifacts=base_files)
        return ex.run(run_trial, payload)

    emit("stage", {"name": "search", "candidates": len(ranked)})
    settings = SearchSettings(budget_seconds=factors.budget_seconds or _default_budget(factors),
                              max_trials=max_trials, seed=seed)
    records = run_search(ranked, run_one=run_one, baseline=baseline, factors=factors,
                         settings=settings, target_name=tgt.name, data_specs=data_b.specs,
                         progress=lambda name, i, n: emit("trial", {"name": name, "i": i, "n": n}))
    chosen, closest = select(records, factors)
    chosen_json = None
    if chosen is not None:
        emit("stage", {"name": "confirm"})
        chosen_json = chosen.to_json()
        chosen_json["accuracy_test"] = _artifact_accuracy(chosen, data_b.test) \
            if data_b.test is not None else None
        chosen_json["hotspots"] = _artifact_hotspots(chosen, tuple(loaded.input_shape), tgt,
                                                     base_files.get("onnxruntime"))
        if chosen_json["accuracy_test"] is not None and base_acc_test is not None:
            drop_test = (base_acc_test - chosen_json["accuracy_test"]) * 100
            chosen_json["accuracy_drop_test"] = drop_test
            if drop_test > factors.allowed_drop_points(base_acc_test):
                warnings.append(f"on the held-out split the chosen plan drops {drop_test:.2f} "
                                "points, more than allowed: validation and test disagree; "
                                "consider more evaluation data")
    from advisor.report.build import build_report
    report = build_report(loaded, tgt, _target_json(tgt), prof_json, device_profile, factors,
                          data_b, baseline, base_acc_test, records, chosen_json, closest,
                          rule_results, rejected, warnings, __version__,
                          time.perf_counter() - t_start)
    result = AnalysisResult(report, None, Path(out) if out else None)
    if chosen is not None:
        result.chosen_plan = plan_from_json(chosen.plan, passes.keys())
        # what `advisor apply` of this plan must rebuild (checked there)
        result.chosen_plan.expected = dict(chosen.outcome.reproduce or {})
    if _run is not None:
        emit("stage", {"name": "report"})
        if apply and chosen is not None:
            emit("stage", {"name": "apply"})
            report["applied"] = _final_paths(_ship_chosen(chosen, _run.staging / "optimized"),
                                             _run)
        files = _write_outputs(result, _run.staging, records, closest, loaded)
        for kind, path in (report.get("applied") or {}).get("files", {}).items():
            files[f"optimized_{kind}"] = Path(path)
        _run.commit()
        result.files = {k: _run.final(v) for k, v in files.items()}
    return result


def _ship_chosen(chosen, out_dir: Path) -> dict:
    """`--apply`: the chosen trial's artefact itself — the file that was timed and evaluated —
    copied (with its gzip copy for sparse models), its sha256 checked against the measured one."""
    import shutil

    from advisor.outcome import sha256_file

    src = Path(chosen.artifact)
    out_dir.mkdir(parents=True, exist_ok=True)
    dst = out_dir / f"model{''.join(src.suffixes[-1:])}"
    shutil.copyfile(src, dst)
    sha = sha256_file(dst)
    if sha != chosen.outcome.artifact_sha256:
        raise PlanError(f"the chosen artefact {src} changed after it was measured",
                        "run the analysis again")
    files = {dst.suffix.lstrip("."): str(dst)}
    gz = src.with_name(src.name + ".gz")
    if chosen.outcome.size_stored_as == "gzip" and gz.is_file():
        shutil.copyfile(gz, dst.with_name(dst.name + ".gz"))
        files[dst.suffix.lstrip(".") + "_gz"] = str(dst.with_name(dst.name + ".gz"))
    m = chosen.measured
    return {"out_dir": str(out_dir), "files": files, "sha256": sha,
            "source": f"the measured artefact of {chosen.id} ({chosen.name})",
            "after": {"runtime": m["runtime"], "p50_ms": m["latency_ms"]["p50"],
                      "size_mb": m["size_mb"], "accuracy": m.get("accuracy")},
            "steps": [{"pass": s["pass"], "seconds": s.get("seconds")} for s in chosen.steps]}


def _final_paths(value, run):
    """`value` with every staged path string replaced by where it lives after the commit."""
    if isinstance(value, dict):
        return {k: _final_paths(v, run) for k, v in value.items()}
    if isinstance(value, list):
        return [_final_paths(v, run) for v in value]
    if isinstance(value, str) and value.startswith(str(run.staging)):
        return str(run.final(value))
    return value


def _default_budget(f: Factors) -> float:
    return {"none": 300.0, "finetune": 900.0, "full": 1800.0}[f.retrain]


def _target_json(t) -> dict:
    return {"name": t.name, "device": t.device, "precisions": list(t.precisions),
            "sparse_kernels": list(t.sparse_kernels), "emulated": t.emulated,
            "memory_budget_mb": t.memory_budget_mb, "threads": t.threads,
            "runtimes": [r.name for r in t.runtimes]}


def _artifact_accuracy(rec, loader) -> float | None:
    from advisor.trial import _accuracy as acc, _predictor

    if rec.artifact is None:
        return None
    return acc(_predictor(Path(rec.artifact), rec.runtime), loader)


def _artifact_hotspots(rec, input_shape, tgt, reference: str | None = None) -> list[dict]:
    """Per-layer times of the chosen artefact on its deploy runtime, named by the module each
    node came from — the same names as the baseline's (for the before/after tables)."""
    from advisor.measure.layers import artifact_hotspots
    from advisor.report.build import hot_row

    try:
        rt = tgt.runtime(rec.runtime)
        hs = artifact_hotspots(rec.artifact, rec.runtime, input_shape, threads=tgt.threads,
                               **({"provider": rt.provider} if rt.provider else {}),
                               reference=reference)
        return [hot_row(r) for r in hs.to_json()["layers"]]
    except Exception:  # hot spots are an illustration; their failure must not sink the analysis
        return []


def _write_outputs(result: AnalysisResult, out: Path, records, closest, loaded) -> dict[str, Path]:
    from advisor.fileio import write_json_atomic
    from advisor.report import write_reports

    out.mkdir(parents=True, exist_ok=True)
    files = dict(write_reports(result.report, out))
    for r in records:  # every plan tried is kept: nothing measured is lost
        write_json_atomic(out / "plans" / f"{r.id}.json", r.plan)
    if result.chosen_plan is not None:
        files["plan"] = write_json_atomic(out / "plan.json", result.chosen_plan.to_json())
    elif closest:
        files["closest_plan"] = write_json_atomic(out / "plan-closest.json", closest[0].plan)
    return files


# ---- apply -----------------------------------------------------------------------------------
