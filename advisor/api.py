"""What a notebook imports: `profile`, `analyze`, `apply_plan`.

The CLI is a thin layer over these. Flow of `analyze` (see docs/ and shared DESIGN):
load → measure the baseline on the target → decide (rules) → search (apply, export, re-measure,
evaluate on the validation split) → select → confirm on the held-out split → report (+ apply).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from advisor.decide.factors import Factors, check_search_limits, make_factors
from advisor.decide.plan import Plan, load_plan, plan_from_json
from advisor.decide.rules import evaluate_rules, rank_candidates
from advisor.decide.situation import PassFlags, situation_from
from advisor.errors import DataError, PlanError, TargetError

__all__ = ["profile", "analyze", "apply_plan", "AnalysisResult", "ApplyResult"]

DEFAULT_MEASURE = {"warmup": 10, "repeats": 100, "max_seconds": 6.0}


# ---- shared loading ------------------------------------------------------------------------

def _load(model, arch=None, input_shape=None, trust_pickle=False):
    from advisor.model_io import LoadedModel, load_model

    if isinstance(model, LoadedModel):
        return model
    from advisor.data import check_input_size
    check_input_size(input_shape)  # an absurd --input-shape fails before anything allocates it
    if isinstance(model, torch.nn.Module):
        if input_shape is None:
            raise DataError("an nn.Module needs input_shape=(1, C, H, W)")
        shape = tuple(int(x) for x in (input_shape.split(",") if isinstance(input_shape, str)
                                       else input_shape))
        return LoadedModel(path=None, format="module", module=model.eval(), onnx_path=None,
                           input_shape=shape, metadata={}, editable=True)
    return load_model(str(model), arch=arch, input_shape=input_shape, trust_pickle=trust_pickle)


def _target(target):
    from advisor.targets import Target, load_target, target_available

    t = target if isinstance(target, Target) else load_target(str(target))
    ok, why = target_available(t)
    if not ok:
        raise TargetError(f"target {t.name!r} cannot run on this host: {why}",
                          "measure on the device with `advisor profile --json` and pass "
                          "--from-profile, or choose another --target")
    return t


def profile(model, *, target="cpu", arch=None, input_shape=None, trust_pickle=False,
            batch_size: int = 1, progress: bool = True, processes: int = 3, **measure):
    """Measure `model` on `target`; returns a `Profile` (see advisor.measure.profile).

    Like `advisor profile`, each runtime is measured in `processes` fresh workers (p50 = median of
    their p50s)."""
    from advisor.measure.profile import profile_model

    loaded = _load(model, arch, input_shape, trust_pickle)
    return profile_model(loaded, _target(target), batch_size=batch_size, progress=progress,
                         processes=processes, **measure)


# ---- data -----------------------------------------------------------------------------------

@dataclass
class DataBundle:
    val: Any = None
    test: Any = None
    train: Any = None
    specs: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def verified(self) -> bool:
        return self.val is not None


def _data(data, test_data, train_data, input_shape, seed: int = 0) -> DataBundle:
    """Loaders for val/test/train; with only `data`, it is split 50/50 (seeded) into val/test so
    that selection and the final confirmation never use the same samples."""
    from advisor.data import load_data, split_loader

    b = DataBundle(specs={"val": _spec(data), "test": _spec(test_data), "train": _spec(train_data)})
    get = lambda s, **kw: s if not isinstance(s, (str, Path)) else \
        load_data(str(s), input_shape=input_shape, **kw)
    if data is not None:
        b.val = get(data, batch_size=256)
    if test_data is not None:
        b.test = get(test_data, batch_size=256)
    elif b.val is not None:
        b.val, b.test = split_loader(b.val, (0.5, 0.5), seed=seed)
        b.notes.append("no --test-data: the evaluation data was split 50/50 (seeded) into a "
                       "validation half (selection) and a held-out half (confirmation)")
    if train_data is not None:
        b.train = get(train_data, batch_size=64, shuffle=True, seed=seed)
    if b.test is not None and b.val is None:
        raise DataError("--test-data needs --data (the validation split used for selection)")
    hashes = {role: h for role, x in (("val", data), ("test", test_data), ("train", train_data))
              if (h := _fingerprint(x)) is not None}
    if hashes:  # plan.json's data section: apply notices data that changed since
        b.specs["sha256"] = hashes
    return b


def _spec(x) -> str | None:
    """The spec recorded in report/plan: files and folders as absolute paths (so `apply` works
    from another directory), hooks as written, in-memory loaders as `<DataLoader>`."""
    from advisor.data import absolute_spec

    return None if x is None else (absolute_spec(str(x)) if isinstance(x, (str, Path))
                                   else f"<{type(x).__name__}>")


def _fingerprint(x) -> str | None:
    from advisor.data import data_fingerprint

    return data_fingerprint(str(x)) if isinstance(x, (str, Path)) else None


def _data_changed(plan: Plan, used: dict) -> list[str]:
    """Warnings for data taken from the plan whose content hash differs from the recorded one.

    `used`: {role: spec} of the data apply took from the plan (not passed explicitly)."""
    recorded = plan.data.get("sha256") or {}
    notes = []
    for role, spec in used.items():
        if spec is None or not recorded.get(role):
            continue
        now = _fingerprint(spec)
        if now is not None and now != recorded[role]:
            flag = "--data" if role == "val" else f"--{role}-data"
            notes.append(f"the plan's {role} data {spec} changed since `advisor analyze` "
                         f"recorded it (sha256 {recorded[role][:12]}... now {now[:12]}...); "
                         f"results may differ: pass {flag} explicitly to use other data")
    return notes


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


def _output_width(loaded, loader) -> int | None:
    """The number of classes the model outputs: its logits' width on one sample of `loader`."""
    for x, _ in loader:
        try:
            out = _baseline_predict(loaded)(x[:1])
        except Exception as e:
            raise DataError(f"the model fails on the data's first sample: {type(e).__name__}: "
                            f"{str(e).splitlines()[0][:160] if str(e) else ''}",
                            "pass data of the model's input shape") from None
        return int(out.shape[1]) if getattr(out, "ndim", 0) >= 2 else None
    return None


def _check_data_fits(loaded, b: "DataBundle") -> None:
    """Refuse labels outside the model's classes (or negative), before any measurement: one
    forward pass on one sample gives the model's output width. (Non-finite inputs are refused
    when the data is read, in advisor.data.)"""
    from advisor.data import check_labels

    split = b.test is not None and b.specs.get("test") is None  # val/test: halves of --data
    loaders = {"--data": [b.val, b.test] if split else b.val,
               "--test-data": None if split else b.test, "--train-data": b.train}
    first = next((x for x in (b.val, b.test, b.train) if x is not None), None)
    if first is None:
        return
    check_labels(loaders, _output_width(loaded, first),
                 {"--data": b.specs.get("val"), "--test-data": b.specs.get("test"),
                  "--train-data": b.specs.get("train")})


# ---- baseline -------------------------------------------------------------------------------

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


def _baseline_predict(loaded) -> Callable[[torch.Tensor], np.ndarray]:
    if loaded.module is not None:
        mod = loaded.module.eval()

        @torch.inference_mode()
        def predict(x):
            return mod(x).float().numpy()
        return predict
    from advisor.export import onnx_session, run_onnx
    sess = onnx_session(loaded.onnx_path)
    return lambda x: run_onnx(sess, x)


def _accuracy(predict, loader) -> float:
    correct = total = 0
    for x, y in loader:
        correct += int((torch.from_numpy(predict(x).argmax(1)) == y).sum())
        total += len(y)
    if not total:
        raise DataError("the evaluation data is empty")
    return correct / total


def _reference_inputs(data: DataBundle, input_shape, n: int = 128, seed: int = 0) -> torch.Tensor:
    """Inputs for the agreement check: validation inputs, else seeded synthetic ones."""
    if data.val is not None:
        xs, count = [], 0
        for x, _ in data.val:
            xs.append(x)
            count += len(x)
            if count >= n:
                break
        return torch.cat(xs)[:n]
    g = torch.Generator().manual_seed(seed)
    return torch.randn((min(n, 64),) + tuple(input_shape[1:]), generator=g)


# ---- analyze ---------------------------------------------------------------------------------

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
    from advisor.measure.profile import Profile, profile_model
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
    data_b = _data(data, test_data, train_data, loaded.input_shape, seed)
    _check_data_fits(loaded, data_b)  # labels the model cannot output: refused before measuring
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
    predict = _baseline_predict(loaded)
    base_acc = _accuracy(predict, data_b.val) if data_b.verified else None
    base_acc_test = _accuracy(predict, data_b.test) if data_b.test is not None else None
    runtimes = prof_json.get("runtimes") or {}
    latency_by_rt = {rt: v["p50"] for rt, v in runtimes.items()
                     if isinstance(v, dict) and v.get("p50")}
    if not latency_by_rt:
        latency_by_rt = {prof_json.get("runtime", "torch"): prof_json["latency_ms"]["p50"]}
    baseline = Baseline(latency_by_rt, float(prof_json["size_mb"]), base_acc, data_b.verified)
    base_files = {rt: v["artifact"] for rt, v in runtimes.items()
                  if isinstance(v, dict) and v.get("p50") and v.get("artifact")}

    emit("stage", {"name": "decide"})
    passes = _registry_flags()
    situation = situation_from(rules_profile, _target_json(tgt), _model_facts(loaded), factors,
                               passes, has_val_data=data_b.verified,
                               has_train_data=data_b.train is not None)
    rule_results = evaluate_rules(situation)
    ranked, rejected = rank_candidates(situation, rule_results)

    ref_x = _reference_inputs(data_b, loaded.input_shape, seed=seed)
    ref_logits = predict(ref_x)
    calib = data_b.train or data_b.val
    if calib is None:
        from torch.utils.data import DataLoader, TensorDataset
        calib = DataLoader(TensorDataset(ref_x, torch.full((len(ref_x),), -1)), batch_size=32)
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
        chosen_json["hotspots"] = _artifact_hotspots(chosen, tuple(loaded.input_shape), tgt)
        if chosen_json["accuracy_test"] is not None and base_acc_test is not None:
            drop_test = (base_acc_test - chosen_json["accuracy_test"]) * 100
            chosen_json["accuracy_drop_test"] = drop_test
            if drop_test > factors.allowed_drop_points(base_acc_test):
                warnings.append(f"on the held-out split the chosen plan drops {drop_test:.2f} "
                                "points, more than allowed: validation and test disagree; "
                                "consider more evaluation data")
    report = _report(loaded, tgt, prof_json, device_profile, factors, data_b, baseline,
                     base_acc_test, records, chosen_json, closest, rule_results, rejected,
                     warnings, __version__, time.perf_counter() - t_start)
    result = AnalysisResult(report, None, Path(out) if out else None)
    if chosen is not None:
        result.chosen_plan = plan_from_json(chosen.plan, passes.keys())
    if _run is not None:
        emit("stage", {"name": "report"})
        files = _write_outputs(result, _run.staging, records, closest, loaded)
        if apply and result.chosen_plan is not None:
            emit("stage", {"name": "apply"})
            try:
                applied = apply_plan(loaded, result.chosen_plan, out=_run.staging / "optimized",
                                     train_data=train_data, calib_data=data, measure=measure,
                                     progress=progress)
            except BaseException:
                _run.commit()  # the analysis itself is complete: keep it, then report the failure
                raise
            report["applied"] = _final_paths(applied.summary(), _run)
            files = _write_outputs(result, _run.staging, records, closest, loaded)
        _run.commit()
        result.files = {k: _run.final(v) for k, v in files.items()}
    return result


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


def _artifact_hotspots(rec, input_shape, tgt) -> list[dict]:
    """Per-layer times of the chosen artefact on its deploy runtime (for before/after plots)."""
    from advisor.measure.layers import hotspots, onnx_hotspots

    try:
        if rec.runtime == "onnxruntime":
            hs = onnx_hotspots(rec.artifact, input_shape, threads=tgt.threads)
        else:
            hs = hotspots(torch.export.load(rec.artifact).module(), input_shape,
                          threads=tgt.threads)
        return [_hot_row(r) for r in hs.to_json()["layers"]]
    except Exception:  # hot spots are an illustration; their failure must not sink the analysis
        return []


def _report(loaded, tgt, prof, device_profile, factors: Factors, data_b, baseline, base_acc_test,
            records, chosen, closest, rule_results, rejected, warnings, version, seconds) -> dict:
    from datetime import datetime, timezone

    hot = prof.get("hotspots")
    hot_rows = hot.get("layers", []) if isinstance(hot, dict) else (hot or [])
    reasons = [r.to_json() for r in rule_results]
    reasons += [{"rule": c.rule, "verdict": "avoid", "text": f"{c.name}: not tried — {why}",
                 "cites": None} for c, why in rejected]
    lat = prof["latency_ms"]
    report = {
        "schema_version": 1,
        "tool": {"name": "advisor", "version": version},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": {"path": str(loaded.path) if loaded.path else "<in-memory module>",
                  "format": loaded.format, "input_shape": list(loaded.input_shape)},
        "target": {**_target_json(tgt), "description": tgt.description},
        "host": prof.get("host", {}),
        "factors": {"goal": factors.goal, "max_drop": factors.max_drop,
                    "max_drop_relative": factors.max_drop_relative,
                    "max_latency_ms": factors.max_latency_ms, "max_size_mb": factors.max_size_mb,
                    "retrain": factors.retrain, "budget_seconds": factors.budget_seconds,
                    "hardware": factors.hardware},
        "data": {"verified": data_b.verified, "val": data_b.specs.get("val"),
                 "test": data_b.specs.get("test"), "train": data_b.specs.get("train"),
                 "metric": "top1" if data_b.verified else "agreement"},
        "baseline": {"runtime": min(baseline.latency_p50, key=baseline.latency_p50.get),
                     "latency_ms": {"p50": lat["p50"], "p90": lat.get("p90"), "cv": lat.get("cv")},
                     "latency_by_runtime": baseline.latency_p50,
                     "size_mb": baseline.size_mb, "peak_memory_mb": prof.get("peak_memory_mb"),
                     "flops": prof.get("flops"), "params": prof.get("params"),
                     "accuracy": baseline.accuracy, "accuracy_test": base_acc_test,
                     "hotspots": [_hot_row(r) for r in hot_rows]},
        "candidates": [r.to_json() for r in records],
        "chosen": chosen,
        "closest": [r.id for r in closest],
        "reasons": reasons,
        "warnings": warnings,
        "timing": {"total_seconds": round(seconds, 1)},
    }
    if device_profile is not None:
        report["device_baseline"] = device_profile.to_json()
    return report


def _hot_row(r: dict) -> dict:
    return {"name": r.get("name", "?"), "kind": r.get("kind", "other"),
            "share": float(r.get("share", 0.0)), "ms": float(r.get("ms", r.get("time_ms", 0.0)))}


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

@dataclass
class ApplyResult:
    out_dir: Path
    files: dict[str, Path]
    before: dict
    after: dict
    steps: list[dict]
    warnings: list[str] = field(default_factory=list)  # e.g. the plan's data changed since

    def summary(self) -> dict:
        return {"out_dir": str(self.out_dir), "files": {k: str(v) for k, v in self.files.items()},
                "before": self.before, "after": self.after,
                "steps": [{"pass": s["pass"], "seconds": s["seconds"]} for s in self.steps]}


def apply_plan(model, plan: Plan | str | Path, *, out: str | Path, target: str | None = None,
               train_data=None, calib_data=None, arch=None, input_shape=None,
               trust_pickle=False, measure: dict | None = None, progress: bool = True,
               retrain_seconds: float | None = None, allow_imports=()) -> ApplyResult:
    """Replay `plan` on the original model (seeded), write model.onnx (+ model.pt2), re-measure.

    A plan *file* is untrusted input: any `pkg.module:name` it names (a student architecture, a
    data hook) would be imported and run, so only advisor's example architectures and the specs
    given here explicitly (`arch`, the data arguments, `allow_imports`) are accepted.

    Data the plan needs (training for fine-tuning/KD, calibration for int8) defaults to the data
    specs recorded in the plan; pass them explicitly to override.
    """
    from advisor.passes.base import PassContext, RetrainBudget, load_builtin_passes
    from advisor.outdir import open_output, reject_input_overwrite

    out = Path(out)
    plan_path = None if isinstance(plan, Plan) else plan
    # refuse before loading anything when an input is one of the files apply writes
    reject_input_overwrite(out, [model, plan_path, train_data, calib_data], APPLY_OUTPUTS)
    loaded = _load(model, arch, input_shape, trust_pickle)
    if not isinstance(plan, Plan):
        plan = load_plan(plan, load_builtin_passes().keys())
        _check_plan_imports(plan, {arch, train_data, calib_data, *allow_imports})
    from advisor.passes.base import check_plan_configs
    check_plan_configs(plan.steps, load_builtin_passes(), source=str(plan_path or "plan"))
    tgt = _target(target or plan.target)
    from_plan = {"train": plan.data.get("train") if train_data is None else None,
                 "val": plan.data.get("val") if calib_data is None else None}
    train_data = train_data if train_data is not None else plan.data.get("train")
    calib_data = calib_data if calib_data is not None else plan.data.get("val")
    data_b = _data(calib_data, None, train_data, loaded.input_shape, plan.seed) \
        if (calib_data or train_data) else DataBundle()
    _check_data_fits(loaded, data_b)
    data_notes = _data_changed(plan, from_plan)
    needs = [s.pass_name for s in plan.steps]
    specs = load_builtin_passes()
    if any(specs[n].trains for n in needs) and data_b.train is None:
        raise DataError(f"the plan trains ({', '.join(n for n in needs if specs[n].trains)}) "
                        "and needs training data", "pass --train-data FILE")
    retrain = plan.factors.get("retrain", "finetune") if any(specs[n].trains for n in needs) \
        else "none"
    ctx = PassContext(example_inputs=(torch.zeros(loaded.input_shape),),
                      input_shape=tuple(loaded.input_shape), train_loader=data_b.train,
                      val_loader=data_b.val, calib_loader=data_b.val or data_b.train,
                      budget=RetrainBudget(retrain, seconds=retrain_seconds), target=tgt,
                      teacher=loaded.module, seed=plan.seed, progress=progress)
    inputs = [loaded.path, plan_path, train_data, calib_data]
    with open_output(out, command="apply", inputs=inputs, writes=APPLY_OUTPUTS) as run:
        res = _replay(loaded, plan, ctx, tgt, data_b, run,
                      {**DEFAULT_MEASURE, **(measure or {})})
        run.commit()
    res.files = {k: run.final(v) for k, v in res.files.items()}
    res.warnings = data_notes
    return res


# what `apply --out` may write (checked against its inputs before any work)
APPLY_OUTPUTS = ("model.onnx", "model.pt2", "model.onnx.gz", "model.pt2.gz")


def _replay(loaded, plan: Plan, ctx, tgt, data_b, run, measure: dict) -> ApplyResult:
    """Run the plan with scratch space in `run.scratch`, stage the artefacts, measure both."""
    from advisor.export import export_onnx
    from advisor.measure.latency import measure_latency
    from advisor.runner import run_plan, write_artifacts

    work = run.scratch
    start = loaded.module if loaded.module is not None else None
    if start is None:
        from advisor.passes.base import OnnxArtifact
        start = OnnxArtifact(Path(loaded.onnx_path), tuple(loaded.input_shape), {})
    result = run_plan(start, plan, ctx, work / "plan")
    files = write_artifacts(result, run.staging, tuple(loaded.input_shape),
                            {"plan": plan.name, "source": str(loaded.path)})
    base_path = work / "baseline.onnx"
    if loaded.module is not None:
        export_onnx(loaded.module, base_path, tuple(loaded.input_shape))
    else:
        base_path = Path(loaded.onnx_path)
    before = measure_latency(base_path, "onnxruntime", tuple(loaded.input_shape), target=tgt,
                             **measure)
    if "onnx" in files:
        after = measure_latency(files["onnx"], "onnxruntime", tuple(loaded.input_shape),
                                target=tgt, **measure)
        after_file = files["onnx"]
    else:
        after = measure_latency(files["pt2"], "torch", tuple(loaded.input_shape), target=tgt,
                                **measure)
        after_file = files["pt2"]
    b = {"runtime": "onnxruntime", "p50_ms": before.p50, "size_mb": base_path.stat().st_size / 2 ** 20}
    shipped = files.get(("onnx" if "onnx" in files else "pt2") + "_gz", after_file)
    a = {"runtime": "onnxruntime" if "onnx" in files else "torch", "p50_ms": after.p50,
         "size_mb": Path(shipped).stat().st_size / 2 ** 20,
         "size_stored_as": "gzip" if shipped != after_file else "file"}
    if data_b.val is not None:
        from advisor.trial import _accuracy as acc, _predictor
        b["accuracy"] = _accuracy(_baseline_predict(loaded), data_b.val)
        a["accuracy"] = acc(_predictor(Path(after_file), a["runtime"]), data_b.val)
    return ApplyResult(run.out, {k: v for k, v in files.items()
                                 if k in ("onnx", "pt2", "onnx_gz", "pt2_gz")}, b, a,
                       result.steps)


def _check_plan_imports(plan: Plan, allowed) -> None:
    """Refuse a plan file that names code to import which the user did not allow."""
    from advisor.model_io import FACTORY_ALLOWLIST, is_object_spec

    def strings(v):
        if isinstance(v, str):
            yield v
        elif isinstance(v, dict):
            for x in v.values():
                yield from strings(x)
        elif isinstance(v, (list, tuple)):
            for x in v:
                yield from strings(x)

    found = [(f"step {i + 1} ({st.pass_name})", v) for i, st in enumerate(plan.steps)
             for v in strings(st.config)]
    found += [("data", v) for v in strings(plan.data)]
    for where, spec in found:
        if is_object_spec(spec) and spec not in FACTORY_ALLOWLIST and spec not in allowed:
            raise PlanError(f"the plan's {where} names code to import and run: {spec!r}; a plan "
                            "file is not trusted to do that",
                            f"if you trust it, pass --allow-import {spec}")
