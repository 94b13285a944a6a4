"""Measuring the baseline profile of a model on a target (`profile_model`): what the rule engine
decides from.

`profile_model` exports the model to the artefact each runtime of the target runs (`.pt2` for
torch, one-file ONNX for ONNX Runtime; an ONNX input runs on ONNX Runtime only), measures each in
a fresh subprocess (`measure.latency`, via `profile_runtime`), and adds FLOPs/parameters, size on
disk, and hot spots (`profile_extras`) measured like a candidate's: on the primary runtime's
artefact (ONNX Runtime's profiler, layers named by module), or with hooks on the eager module
when the primary runtime is torch. A runtime that cannot export or run the model is recorded
with its error; the profile fails only when no runtime works (`profile_checks`). The result is a
`Profile` (`profile_record`).
"""
from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from advisor.errors import InputShapeError, TargetError
from advisor.device.remote import measured_on
from advisor.measure.latency import measurement_settings
from advisor.measure.profile_checks import memory_summary, noise_warnings, pick_primary
from advisor.measure.profile_extras import (baseline_hotspots, count_model_flops, param_count,
                                            size_on_disk)
from advisor.measure.profile_record import Profile
from advisor.measure.profile_runtime import export_artefact, measure_entry
from advisor.procs import scratch_dir

__all__ = ["profile_model"]

ProgressFn = Callable[[str, int, int], None]


class _Steps:
    """Progress over the profile's steps: a rich bar (stderr), a callback, or nothing."""

    def __init__(self, progress: bool | ProgressFn, total: int):
        self.total, self.done = total, 0
        self.callback: ProgressFn | None = progress if callable(progress) else None
        self.bar = None
        if progress is True:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn,
                                       TextColumn, TimeElapsedColumn)
            self.bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                MofNCompleteColumn(), TimeElapsedColumn(),
                                console=Console(stderr=True), transient=True)

    def __enter__(self):
        if self.bar is not None:
            self.bar.__enter__()
            self.task = self.bar.add_task("profiling", total=self.total)
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)
        return False

    def start(self, description: str) -> None:
        if self.bar is not None:
            self.bar.update(self.task, description=description)
        if self.callback is not None:
            self.callback(description, self.done, self.total)

    def advance(self) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(self.task, completed=self.done)


def profile_model(loaded, target, *, batch_size: int = 1, runtimes: list[str] | None = None,
                  warmup: int = 10, repeats: int = 100, max_seconds: float = 10.0,
                  workdir: str | Path | None = None, progress: bool | ProgressFn = True,
                  hotspot_runs: int = 7, processes: int = 1) -> Profile:
    """Measure `loaded` (an `advisor.model_io.LoadedModel`) on `target` (see module docstring)."""
    from advisor.measure.host import detect_host
    from advisor.targets import load_target, target_available

    target = load_target(target) if isinstance(target, (str, Path)) else target
    ok, why = target_available(target)
    if not ok:
        raise TargetError(f"target {target.name!r} cannot be measured on this host: {why}",
                          "measure on the device with `advisor profile --json` and pass "
                          "--from-profile, or choose another --target")
    if loaded.input_shape is None:
        raise InputShapeError("the model's input shape is unknown", "pass --input-shape 1,3,H,W")
    if batch_size < 1:
        raise InputShapeError(f"batch size must be >= 1 (got {batch_size})")
    names = _runtime_names(target, runtimes)
    shape = (int(batch_size),) + tuple(int(d) for d in loaded.input_shape[1:])
    settings = measurement_settings(target)
    own_dir = workdir is None
    # advisor-profile-PID-*: removed below on every exit path, and by a later run if this
    # process is killed (advisor.procs.remove_stale_scratch)
    work = scratch_dir("profile") if own_dir else Path(workdir)
    warnings: list[str] = []
    entries: dict[str, dict[str, Any]] = {}
    artefacts: dict[str, Path] = {}
    try:
        work.mkdir(parents=True, exist_ok=True)
        with _Steps(progress, total=2 * len(names) + 2) as steps:
            for name in names:
                steps.start(f"exporting for {name}")
                entry, path = export_artefact(loaded, name, work)
                steps.advance()
                steps.start(f"measuring {name}" + (" (emulated)" if target.emulated else ""))
                if path is not None:
                    artefacts[name] = path
                    entry.update(measure_entry(path, name, shape, target, batch_size, warmup,
                                               repeats, max_seconds, processes))
                    if not own_dir:
                        entry["artifact"] = str(path)
                entries[name] = entry
                steps.advance()
            primary = pick_primary(names, entries, target, warnings)
            steps.start("counting FLOPs")
            flops = count_model_flops(loaded, artefacts, warnings)
            steps.advance()
            steps.start("finding hot spots")
            hot = baseline_hotspots(loaded, artefacts, primary, shape, target,
                                    settings["threads"], hotspot_runs, warnings)
            steps.advance()
        size_mb, size_source = size_on_disk(loaded, artefacts)
    finally:
        if own_dir:
            shutil.rmtree(work, ignore_errors=True)
    memory = memory_summary(entries, primary, target, warnings)
    noise_warnings(entries, warnings)
    return Profile(
        model={"path": str(loaded.path) if loaded.path else None, "format": loaded.format,
               "input_shape": list(loaded.input_shape), "editable": bool(loaded.editable),
               "arch": (loaded.metadata or {}).get("arch")},
        target={**target.to_json(), "limits": target.limits(),
                "measured_on": measured_on(target)},
        host=measured_on(target)["fingerprint"] if target.link is not None else detect_host(),
        batch_size=int(batch_size), primary_runtime=primary, runtimes=entries,
        peak_memory_mb=memory.get("peak_mb"), flops=flops.total if flops else None,
        params=param_count(loaded, flops), size_mb=size_mb, hotspots=hot,
        flops_by_module=dict(flops.by_module) if flops else {},
        params_by_module=dict(flops.by_module_params) if flops else {},
        flops_convention=flops.convention if flops else "", size_source=size_source,
        memory=memory,
        measurement={"threads": settings["threads"], "affinity": settings["cores"],
                     "env": settings["env"], "warmup": warmup, "repeats": repeats,
                     "max_seconds": max_seconds, "processes": int(processes),
                     "batch_size": int(batch_size),
                     "input_shape": list(shape), "isolation": "fresh subprocess per runtime" + (
                         f" (x{processes}: p50 = median of the workers' p50s, other statistics "
                         "pooled)" if processes > 1 else ""),
                     "timer": "cuda events" if target.device == "cuda" else
                     "perf_counter under torch.inference_mode / session.run",
                     "emulated": target.emulated},
        warnings=warnings, created=datetime.now(timezone.utc).isoformat(timespec="seconds"))


def _runtime_names(target, runtimes: list[str] | None) -> list[str]:
    if not runtimes:
        return [r.name for r in target.runtimes]
    for name in runtimes:
        target.runtime(name)  # raises TargetError for a runtime the target does not have
    return list(dict.fromkeys(runtimes))
