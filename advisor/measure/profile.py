"""The baseline profile of a model on a target: what the rule engine decides from.

`profile_model` exports the model to the artefact each runtime of the target runs (`.pt2` for
torch, one-file ONNX for ONNX Runtime; an ONNX input runs on ONNX Runtime only), measures each in
a fresh subprocess (`measure.latency`), and adds FLOPs/parameters (`measure.flops`), size on
disk, and hot spots (`measure.layers`) measured like a candidate's: on the primary runtime's
artefact (ONNX Runtime's profiler, layers named by module), or with hooks on the eager module
when the primary runtime is torch. A runtime that cannot export or run the model is recorded
with its error; the profile fails only when no runtime works.

`Profile.to_json()` is schema-versioned; `Profile.from_json()` reads it back, e.g. a profile
measured earlier on the real device and passed as `--from-profile`.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from advisor.errors import InputShapeError, TargetError
from advisor.measure.layers import Hotspots
from advisor.measure.latency import LatencyError, LatencyStats, measurement_settings
from advisor.procs import scratch_dir

__all__ = ["Profile", "profile_model", "SCHEMA_VERSION"]

SCHEMA_VERSION = 1
KIND = "advisor-profile"
# A timing was disturbed by other load when its worker was preempted more often than this per
# second and thread, or (one thread: a tight loop that should own its core) got less than this
# share of its core. Heuristics from benchmarks/profile_stability.py on a shared 2-core host:
# undisturbed runs showed 0-70 preemptions/s and a CPU share of 0.98-1.0.
_BUSY_PREEMPTIONS = 50.0
_BUSY_CPU_SHARE = 0.8
_NOISY_CV = 0.25
_REQUIRED_KEYS = ("schema_version", "latency_ms", "runtimes", "target", "host")

ProgressFn = Callable[[str, int, int], None]


@dataclass
class Profile:
    """A measured (or loaded) baseline. `runtimes` holds one JSON-ready entry per runtime."""

    model: dict[str, Any]
    target: dict[str, Any]
    host: dict[str, Any]
    batch_size: int
    primary_runtime: str
    runtimes: dict[str, dict[str, Any]]
    peak_memory_mb: float | None
    flops: int | None
    params: int | None
    size_mb: float | None
    hotspots: Hotspots | None = None
    flops_by_module: dict[str, int] = field(default_factory=dict)
    params_by_module: dict[str, int] = field(default_factory=dict)
    flops_convention: str = ""
    size_source: str = ""
    memory: dict[str, Any] = field(default_factory=dict)
    measurement: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    created: str = ""
    schema_version: int = SCHEMA_VERSION

    # ---- views ---------------------------------------------------------------------------
    @property
    def latency_ms(self) -> dict[str, Any]:
        """p50/p90/mean/cv of the primary runtime, plus the same per runtime under its name."""
        main = self.runtimes.get(self.primary_runtime, {})
        out: dict[str, Any] = {"runtime": self.primary_runtime,
                               **{k: main.get(k) for k in ("p50", "p90", "mean", "std", "cv",
                                                           "min")}}
        for name, r in self.runtimes.items():
            if r.get("status") == "ok":
                out[name] = {k: r.get(k) for k in ("p50", "p90", "mean", "cv")}
        return out

    @property
    def p50(self) -> float:
        return float(self.runtimes[self.primary_runtime]["p50"])

    @property
    def emulated(self) -> bool:
        return bool(self.target.get("emulated"))

    def ok_runtimes(self) -> list[str]:
        return [n for n, r in self.runtimes.items() if r.get("status") == "ok"]

    # ---- JSON ----------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version, "kind": KIND,
            "tool": {"name": "advisor", "version": _advisor_version()}, "created": self.created,
            "model": self.model, "target": self.target, "host": self.host,
            "batch_size": self.batch_size, "runtime": self.primary_runtime,
            "latency_ms": self.latency_ms, "runtimes": self.runtimes,
            "peak_memory_mb": self.peak_memory_mb, "memory": self.memory,
            "flops": self.flops, "flops_convention": self.flops_convention,
            "params": self.params, "size_mb": self.size_mb, "size_source": self.size_source,
            "hotspots": self.hotspots.to_json() if self.hotspots else None,
            "flops_by_module": self.flops_by_module, "params_by_module": self.params_by_module,
            "measurement": self.measurement, "warnings": self.warnings,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any], source: str = "profile") -> "Profile":
        """Read `to_json()` output back; a malformed or newer file is a TargetError."""
        if not isinstance(d, dict):
            raise TargetError(f"{source}: not a profile (expected a JSON object)")
        missing = [k for k in _REQUIRED_KEYS if k not in d]
        if missing:
            raise TargetError(f"{source}: not an advisor profile (missing {', '.join(missing)})",
                              "write one with `advisor profile MODEL --target T --json FILE`")
        version = d["schema_version"]
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise TargetError(f"{source}: profile schema version {version!r} is not supported "
                              f"(this advisor reads up to {SCHEMA_VERSION})",
                              "re-measure with this version of advisor")
        runtimes = d["runtimes"]
        primary = d.get("runtime") or (d["latency_ms"] or {}).get("runtime")
        if not isinstance(runtimes, dict) or primary not in runtimes or \
                not isinstance(runtimes[primary].get("p50"), (int, float)):
            raise TargetError(f"{source}: the profile has no latency of its primary runtime "
                              f"({primary!r})")
        try:
            return cls(
                model=dict(d.get("model") or {}), target=dict(d["target"]), host=dict(d["host"]),
                batch_size=int(d.get("batch_size", 1)), primary_runtime=primary,
                runtimes={k: dict(v) for k, v in runtimes.items()},
                peak_memory_mb=_num(d.get("peak_memory_mb")), flops=_int(d.get("flops")),
                params=_int(d.get("params")), size_mb=_num(d.get("size_mb")),
                hotspots=Hotspots.from_json(d["hotspots"]) if d.get("hotspots") else None,
                flops_by_module=dict(d.get("flops_by_module") or {}),
                params_by_module=dict(d.get("params_by_module") or {}),
                flops_convention=d.get("flops_convention", ""),
                size_source=d.get("size_source", ""), memory=dict(d.get("memory") or {}),
                measurement=dict(d.get("measurement") or {}),
                warnings=list(d.get("warnings") or []), created=d.get("created", ""),
                schema_version=version)
        except (TypeError, ValueError, KeyError, AttributeError) as e:
            raise TargetError(f"{source}: malformed profile ({type(e).__name__}: {e})") from e

    @classmethod
    def from_json_file(cls, path: str | Path) -> "Profile":
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as e:
            raise TargetError(f"profile {path} does not exist") from e
        except (OSError, ValueError) as e:
            raise TargetError(f"profile {path}: cannot read it as JSON ({e})") from e
        return cls.from_json(data, source=str(path))


def _advisor_version() -> str | None:
    try:
        from advisor import __version__
        return __version__
    except ImportError:  # advisor imported as a namespace package (a stale editable install)
        from importlib import metadata
        try:
            return metadata.version("advisor")
        except metadata.PackageNotFoundError:
            return None


def _num(x) -> float | None:
    return None if x is None else float(x)


def _int(x) -> int | None:
    return None if x is None else int(x)


# ---- measuring -----------------------------------------------------------------------------

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
                entry, path = _artefact(loaded, name, work)
                steps.advance()
                steps.start(f"measuring {name}" + (" (emulated)" if target.emulated else ""))
                if path is not None:
                    artefacts[name] = path
                    entry.update(_measure(path, name, shape, target, batch_size, warmup, repeats,
                                          max_seconds, processes))
                    if not own_dir:
                        entry["artifact"] = str(path)
                entries[name] = entry
                steps.advance()
            primary = _primary(names, entries, target, warnings)
            steps.start("counting FLOPs")
            flops = _flops(loaded, artefacts, warnings)
            steps.advance()
            steps.start("finding hot spots")
            hot = _hotspots(loaded, artefacts, primary, shape, target, settings["threads"],
                            hotspot_runs, warnings)
            steps.advance()
        size_mb, size_source = _size(loaded, artefacts)
    finally:
        if own_dir:
            shutil.rmtree(work, ignore_errors=True)
    memory = _memory(entries, primary, target, warnings)
    _noise_warnings(entries, warnings)
    return Profile(
        model={"path": str(loaded.path) if loaded.path else None, "format": loaded.format,
               "input_shape": list(loaded.input_shape), "editable": bool(loaded.editable),
               "arch": (loaded.metadata or {}).get("arch")},
        target={**target.to_json(), "limits": target.limits()}, host=detect_host(),
        batch_size=int(batch_size), primary_runtime=primary, runtimes=entries,
        peak_memory_mb=memory.get("peak_mb"), flops=flops.total if flops else None,
        params=_params(loaded, flops), size_mb=size_mb, hotspots=hot,
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


def _artefact(loaded, runtime: str, work: Path) -> tuple[dict[str, Any], Path | None]:
    """The file `runtime` runs, exported into `work`; failures become the entry's error."""
    from advisor.export import export_onnx, save_pt2

    if loaded.module is None:  # an ONNX model
        if runtime == "onnxruntime":
            return {"status": "ok"}, Path(loaded.onnx_path)
        return {"status": "skipped", "reason": "the model is ONNX: it runs on onnxruntime only"}, \
            None
    try:
        if runtime == "onnxruntime":
            info = export_onnx(loaded.module, work / "model.onnx", tuple(loaded.input_shape))
            return {"status": "ok", "export": {k: info.get(k) for k in
                                               ("dynamic_batch", "max_abs_diff", "size_bytes")}}, \
                Path(info["path"])
        if loaded.format == "torchscript" and loaded.path:
            return {"status": "ok", "export": {"note": "measured the TorchScript file as given"}}, \
                Path(loaded.path)
        return {"status": "ok"}, save_pt2(loaded.module, work / "model.pt2",
                                          tuple(loaded.input_shape))
    except Exception as e:  # noqa: BLE001 - an export failure is a result, not a crash
        if runtime == "torch" and loaded.format == "pt2" and loaded.path:
            return {"status": "ok", "export": {"note": "re-export failed; measured the input "
                                                       f".pt2 ({_first_line(e)})"}}, \
                Path(loaded.path)
        return {"status": "error", "stage": "export", "error": _first_line(e)}, None


def _measure(path: Path, runtime: str, shape, target, batch_size: int, warmup: int, repeats: int,
             max_seconds: float, processes: int = 1) -> dict[str, Any]:
    try:
        s = _latency(path, runtime, shape, target, batch_size, warmup, repeats, max_seconds,
                     processes)
    except LatencyError as e:
        return {"status": "error", "stage": "measure", "error_kind": e.kind, "error": e.message}
    return {"status": "ok", **_stats_entry(s)}


def _latency(path, runtime, shape, target, batch_size, warmup, repeats,
             max_seconds, processes: int = 1) -> LatencyStats:
    from advisor.measure.latency import measure_latency

    return measure_latency(path, runtime, shape, target=target, batch_size=batch_size,
                           warmup=warmup, repeats=repeats, max_seconds=max_seconds,
                           processes=processes)


def _stats_entry(s: LatencyStats) -> dict[str, Any]:
    r4 = lambda x: None if x is None else round(float(x), 4)  # noqa: E731
    return {"provider": s.provider, "device": s.device,
            "p50": r4(s.p50), "p90": r4(s.p90), "mean": r4(s.mean), "std": r4(s.std),
            "cv": r4(s.cv), "min": r4(s.min), "per_item_ms": r4(s.per_item_ms), "runs": s.runs,
            "warmup": s.warmup, "batch_size": s.batch_size, "threads": s.threads,
            "runtime_threads": s.runtime_threads, "affinity": s.affinity, "env": s.env,
            "peak_memory_mb": r4(s.cuda_peak_mb if s.device == "cuda" else s.peak_rss_mb),
            "peak_rss_mb": r4(s.peak_rss_mb), "runtime_memory_mb": r4(s.baseline_rss_mb),
            "model_memory_mb": r4(s.model_peak_mb), "memory_cap_mb": r4(s.memory_cap_mb),
            "cpu_share": s.cpu_share, "preemptions_per_s": s.preemptions_per_s,
            "load_average": s.load_average, "timer": s.timer,
            "emulated": s.emulated, "worker_pid": s.pid, "processes": max(1, len(s.process_p50s)),
            "process_p50s": s.process_p50s, "pooled_p50": r4(s.pooled_p50)}


def _primary(names: list[str], entries: dict, target, warnings: list[str]) -> str:
    ok = [n for n in names if entries[n].get("status") == "ok"]
    if not ok:
        detail = "; ".join(f"{n}: {entries[n].get('error') or entries[n].get('reason')}"
                           for n in names)
        raise LatencyError(f"no runtime of target {target.name!r} could run the model ({detail})",
                           "check that the model exports with torch.export / ONNX, or choose "
                           "another --runtime", kind=next((entries[n].get("error_kind")
                                                           for n in names
                                                           if entries[n].get("error_kind")),
                                                          "error"))
    if ok[0] != names[0]:
        e = entries[names[0]]
        warnings.append(f"the target's primary runtime {names[0]} failed "
                        f"({e.get('error') or e.get('reason')}); latency_ms is from {ok[0]}")
    return ok[0]


def _memory(entries: dict, primary: str, target, warnings: list[str]) -> dict[str, Any]:
    """Peak memory of the primary runtime's process, and the budget check per runtime."""
    budget = target.memory_budget_mb
    main = entries[primary]
    out = {"peak_mb": main.get("peak_memory_mb"), "runtime_mb": main.get("runtime_memory_mb"),
           "model_mb": main.get("model_memory_mb"), "budget_mb": budget,
           "within_budget": None, "measure": "peak RSS of the measuring process (VmHWM)"
           if target.device == "cpu" else "torch.cuda.max_memory_allocated"}
    if budget is None:
        return out
    out["within_budget"] = True
    for name, e in entries.items():
        if e.get("error_kind") == "memory":
            out["within_budget"] = False
            warnings.append(f"{name}: the model ran out of memory under the {budget:g} MB budget "
                            f"of {target.name}")
        elif e.get("status") == "ok" and (e.get("peak_memory_mb") or 0) > budget:
            if name == primary:
                out["within_budget"] = False
            warnings.append(
                f"{name}: peak memory {e['peak_memory_mb']:.0f} MB exceeds the {budget:g} MB "
                f"budget of {target.name} (the runtime itself {e.get('runtime_memory_mb') or 0:.0f}"
                f" MB, the model {e.get('model_memory_mb') or 0:.0f} MB)")
    return out


def _noise_warnings(entries: dict, warnings: list[str]) -> None:
    """Say when a timing was disturbed by other processes (preempted often, or a single-thread
    worker that got well under its core) or is merely noisy (high cv)."""
    for name, e in entries.items():
        if e.get("status") != "ok":
            continue
        share, cv = e.get("cpu_share"), e.get("cv") or 0.0
        rate, threads = e.get("preemptions_per_s"), e.get("threads") or 1
        busy = (rate is not None and rate > _BUSY_PREEMPTIONS * threads) or \
            (threads == 1 and share is not None and share < _BUSY_CPU_SHARE)
        if busy:
            load = e.get("load_average")
            warnings.append(f"{name}: other processes competed for the measuring process's "
                            f"{threads} core(s) (preempted {rate or 0:.0f} times/s, CPU share "
                            f"{share if share is not None else 0:.0%}, host load "
                            f"{load[0] if load else '?'}): p90 and the mean are inflated and p50 "
                            "may be; compare numbers only from a quiet machine")
        elif cv > _NOISY_CV:
            warnings.append(f"{name}: noisy latency (cv {cv:.2f}); p50 is robust, p90/mean less so")


def _flops(loaded, artefacts: dict[str, Path], warnings: list[str]):
    from advisor.measure.flops import count_flops, count_onnx_flops

    one = (1,) + tuple(int(d) for d in loaded.input_shape[1:])
    try:
        if loaded.module is not None:
            return count_flops(loaded.module, one)
        onnx = artefacts.get("onnxruntime") or loaded.onnx_path
        return count_onnx_flops(onnx, one) if onnx else None
    except Exception as e:  # noqa: BLE001 - FLOPs are informative, not essential
        warnings.append(f"FLOPs could not be counted ({_first_line(e)})")
        return None


def _params(loaded, flops) -> int | None:
    if flops is not None and flops.params:
        return int(flops.params)
    if loaded.module is not None:
        return int(sum(p.numel() for p in loaded.module.parameters()))
    return None


def _hotspots(loaded, artefacts: dict[str, Path], primary: str, shape, target, threads: int,
              runs: int, warnings: list[str]) -> Hotspots | None:
    """Hot spots measured like a candidate's (`artifact_hotspots` on the primary runtime's
    artefact, so the baseline and the chosen plan name the same layers); a torch primary keeps
    the hooks on the eager module, which name the same layers as its `.pt2`."""
    from advisor.measure.layers import artifact_hotspots, hotspots

    try:
        path = artefacts.get(primary)
        eager = loaded.module is not None and loaded.editable
        if path is not None and (primary == "onnxruntime" or
                                 (not eager and target.device == "cpu" and path.suffix == ".pt2")):
            provider = target.runtime(primary).provider if primary == "onnxruntime" else None
            return artifact_hotspots(path, primary, shape, threads=threads, runs=runs,
                                     **({"provider": provider} if provider else {}))
        if loaded.module is not None:
            module = loaded.module
            if target.device == "cuda":
                import copy
                module = copy.deepcopy(module).to("cuda")
            return hotspots(module, shape, threads=threads, runs=runs, device=target.device)
        return None
    except Exception as e:  # noqa: BLE001 - hot spots are informative, not essential
        warnings.append(f"hot spots could not be measured ({_first_line(e)})")
        return None


def _size(loaded, artefacts: dict[str, Path]) -> tuple[float | None, str]:
    """Size on disk: the fp32 ONNX file (+ external data) if there is one, else the input file."""
    onnx = artefacts.get("onnxruntime")
    if onnx is not None and onnx.is_file():
        data = onnx.with_name(onnx.name + ".data")
        size = onnx.stat().st_size + (data.stat().st_size if data.is_file() else 0)
        return size / 2 ** 20, "fp32 ONNX" if loaded.module is not None else "input ONNX file"
    if loaded.path and Path(loaded.path).is_file():
        return Path(loaded.path).stat().st_size / 2 ** 20, f"input {loaded.format} file"
    pt2 = artefacts.get("torch")
    if pt2 is not None and pt2.is_file():
        return pt2.stat().st_size / 2 ** 20, ".pt2 export"
    return None, "unknown"


def _first_line(e: BaseException) -> str:
    text = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), "")
    return f"{type(e).__name__}: {text}"[:300] if text else type(e).__name__
