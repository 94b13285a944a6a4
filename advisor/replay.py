"""`advisor apply`: replay a plan on the original model, stage and commit the artefacts, measure
before and after, and check that the replay rebuilt the model `analyze` measured
(`advisor.reproduce`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from advisor.bundle import (DataBundle, accuracy_of, baseline_predict, calibration_loader,
                            check_data_fits, data_changed, load_bundle, reference_inputs)
from advisor.decide.plan import Plan, load_plan
from advisor.errors import DataError, PlanError
from advisor.model_common import arch_record
from advisor.device.connection import closes_sessions
from advisor.session import DEFAULT_MEASURE, load_model_arg, resolve_target

__all__ = ["ApplyResult", "apply_plan", "APPLY_OUTPUTS"]


@dataclass
class ApplyResult:
    out_dir: Path
    files: dict[str, Path]
    before: dict
    after: dict
    steps: list[dict]
    warnings: list[str] = field(default_factory=list)  # e.g. the plan's data changed since
    # the replay against what analyze measured (advisor.reproduce.compare); None: not recorded
    reproduction: dict | None = None

    def summary(self) -> dict:
        return {"out_dir": str(self.out_dir), "files": {k: str(v) for k, v in self.files.items()},
                "before": self.before, "after": self.after, "reproduction": self.reproduction,
                "steps": [{"pass": s["pass"], "seconds": s["seconds"]} for s in self.steps]}


@closes_sessions
def apply_plan(model, plan: Plan | str | Path, *, out: str | Path, target: str | None = None,
               train_data=None, calib_data=None, arch=None, input_shape=None,
               trust_pickle=False, measure: dict | None = None, progress: bool = True,
               retrain_seconds: float | None = None, allow_imports=(), arch_kwargs=None,
               preprocess=None) -> ApplyResult:
    """Replay `plan` on the original model (seeded), write model.onnx (+ model.pt2), re-measure.

    A plan *file* is untrusted input: any `pkg.module:name` it names (a student architecture, a
    data hook) would be imported and run, so only advisor's example architectures and the specs
    given here explicitly (`arch`, the data arguments, `allow_imports`) are accepted.

    Data the plan needs (training for fine-tuning/KD, calibration for int8) defaults to the data
    specs recorded in the plan, read with the preprocessing recorded there; pass them explicitly
    to override. The architecture's keyword arguments recorded in the plan are used when `arch`
    is the plan's architecture (`arch_kwargs` overrides them); the plan never imports it.
    """
    from advisor.preprocess import Preprocess, as_preprocess
    from advisor.passes.base import PassContext, RetrainBudget, load_builtin_passes
    from advisor.outdir import open_output, reject_input_overwrite

    out = Path(out)
    plan_path = None if isinstance(plan, Plan) else plan
    # refuse before loading anything when an input is one of the files apply writes
    reject_input_overwrite(out, [model, plan_path, train_data, calib_data], APPLY_OUTPUTS)
    if not isinstance(plan, Plan):
        plan = load_plan(plan, load_builtin_passes().keys())
        _check_plan_imports(plan, {arch, train_data, calib_data, *allow_imports})
    if arch_kwargs is None and arch and arch == (plan.model or {}).get("arch"):
        arch_kwargs = plan.model.get("arch_kwargs")
    loaded = load_model_arg(model, arch, input_shape, trust_pickle, arch_kwargs)
    _check_lifted(plan, loaded, str(plan_path or "plan"))
    from advisor.passes.config import check_plan_configs
    check_plan_configs(plan.steps, load_builtin_passes(), source=str(plan_path or "plan"))
    tgt = resolve_target(target or plan.target)
    from_plan = {"train": plan.data.get("train") if train_data is None else None,
                 "val": plan.data.get("val") if calib_data is None else None}
    train_data = train_data if train_data is not None else plan.data.get("train")
    calib_data = calib_data if calib_data is not None else plan.data.get("val")
    # the validation split as analyze made it: halved unless analyze had separate test data
    pre = as_preprocess(preprocess) if preprocess is not None else \
        Preprocess.from_dict(plan.data.get("preprocess"), where=str(plan_path or "plan"))
    data_b = load_bundle(calib_data, None, train_data, loaded.input_shape, plan.seed,
                         split_val=plan.data.get("test") is None, preprocess=pre) \
        if (calib_data or train_data) else DataBundle()
    check_data_fits(loaded, data_b)
    data_notes = data_changed(plan, from_plan)
    needs = [s.pass_name for s in plan.steps]
    specs = load_builtin_passes()
    if any(specs[n].trains for n in needs) and data_b.train is None:
        raise DataError(f"the plan trains ({', '.join(n for n in needs if specs[n].trains)}) "
                        "and needs training data", "pass --train-data FILE")
    retrain = plan.factors.get("retrain", "finetune") if any(specs[n].trains for n in needs) \
        else "none"
    ctx = PassContext.for_shape(
        loaded.input_shape, budget=RetrainBudget(retrain, seconds=retrain_seconds),
        train_loader=data_b.train, val_loader=data_b.val,
        calib_loader=calibration_loader(
            data_b, reference_inputs(data_b, loaded.input_shape, seed=plan.seed)),
        target=tgt, teacher=loaded.module, seed=plan.seed, progress=progress,
        # as many data-parallel workers as the measured trial: the count shapes the weights
        train_workers=plan.train_workers)
    inputs = [loaded.path, plan_path, train_data, calib_data]
    with open_output(out, command="apply", inputs=inputs, writes=APPLY_OUTPUTS) as run:
        res = _replay(loaded, plan, ctx, tgt, data_b, run,
                      {**DEFAULT_MEASURE, **(measure or {})})
        run.commit()
    res.files = {k: run.final(v) for k, v in res.files.items()}
    res.warnings = data_notes + res.warnings
    return res


def _check_lifted(plan: Plan, loaded, source: str) -> None:
    """A plan made on a lifted graph replays on the same lifting, or not at all (its steps
    name layers that only the lifting creates)."""
    want, got = (plan.model or {}).get("lifted"), (loaded.metadata or {}).get("lifted")
    if want is None or want == got:
        return
    why = (loaded.metadata or {}).get("lift_refused") or \
        ("it was rebuilt from its architecture instead" if got is None else f"version {got}")
    raise PlanError(f"{source} was made on the model lifted from its exported graph (lifting "
                    f"version {want}), but this model was not lifted that way: {why}",
                    "apply the plan to the same .pt2 file, without --arch")


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
                            {"plan": plan.name, "source": str(loaded.path),
                             **{f"source_{k}": v for k, v in arch_record(loaded).items()}})
    base_path = work / "baseline.onnx"
    if loaded.onnx_path is not None:  # the user's ONNX file is the baseline, lifted or not
        base_path = Path(loaded.onnx_path)
    else:
        export_onnx(loaded.module, base_path, tuple(loaded.input_shape))
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
        from advisor.measure.accuracy import accuracy as acc
        from advisor.trial import _predictor
        base_predict = baseline_predict(loaded, base_path, "onnxruntime", tgt)  # as measured
        b["accuracy"] = accuracy_of(base_predict, data_b.val)
        a["accuracy"] = acc(_predictor(Path(after_file), a["runtime"], tgt), data_b.val)
    res = ApplyResult(run.out, {k: v for k, v in files.items()
                                if k in ("onnx", "pt2", "onnx_gz", "pt2_gz")}, b, a,
                      result.steps)
    if "onnx_error" in files:  # e.g. CSR sparse layers have no ONNX form
        res.warnings.append(f"no model.onnx: the export failed ({files['onnx_error']}); "
                            "model.pt2 runs in torch")
    if plan.expected.get("outputs"):
        from advisor.passes.base import load_builtin_passes
        from advisor.reproduce import compare, fingerprint

        trains = any(load_builtin_passes()[s.pass_name].trains for s in plan.steps)
        res.reproduction = compare(plan.expected,
                                   fingerprint(after_file, a["runtime"], loaded.input_shape),
                                   trains=trains)
    return res


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
