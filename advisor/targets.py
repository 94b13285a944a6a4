"""Deployment targets: what a device runs (runtimes, precisions, sparse kernels) and its limits.

A target is a small TOML file (built-ins in `advisor/profiles/`, or any path given as
`--target mine.toml`):

    name = "edge-arm"
    description = "..."
    device = "cpu"                  # cpu | cuda
    threads = 1                     # optional; omitted = every core this process may use
    memory_budget_mb = 512          # optional
    precisions = ["fp32", "int8"]   # fp32 fp16 bf16 int8
    sparse_kernels = []             # csr-linear (torch CSR matmul on CPU), 2:4 (Ampere+ GPUs)
    emulated = true                 # measured on this host under the limits above
    arch = "arm"                    # optional: x86 | arm; omitted = this host's (or "arm" when
                                    # the name says so: edge-arm, ...)
    isa = ["neon", "asimd"]         # optional, with arch: the device's ISA extensions
    notes = ["..."]
    [[runtimes]]                    # first = primary (deploy) runtime
    name = "onnxruntime"            # onnxruntime | torch
    provider = "CPUExecutionProvider"

A target that lives on a device names it with a `[device]` table instead of `device = "cpu"`:

    [device]
    ssh = "pi@raspberrypi"          # or command = ["ssh", "-p", "2222", "pi@host", "python3"]
    python = "python3"

and every measurement then runs there, through advisor's agent (`advisor.device`;
the table's keys: `advisor.device.link`). `advisor targets probe --ssh HOST --name NAME` writes
such a profile from the device's fingerprint.

Everything the rules and the profiler need is here; a malformed file is a `TargetError` naming
the file and the field. Host capabilities live in `advisor.measure.host` (re-exported here);
a target's CPU (`arch`, `isa`, and `cpu_source`: where they came from) is the profile's when it
declares one, else this host's as `advisor.measure.host.detect_cpu` finds it.
"""
from __future__ import annotations

import math
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from advisor.errors import TargetError
from advisor.measure.host import ISA_NAMES, arch_family, detect_cpu, detect_host

__all__ = ["RuntimeSpec", "Target", "load_target", "list_targets", "target_available",
           "detect_host", "arch_from_name", "PROFILES_DIR"]

PROFILES_DIR = Path(__file__).parent / "profiles"

DEVICES = ("cpu", "cuda")
RUNTIMES = ("torch", "onnxruntime")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
SPARSE_KERNELS = ("csr-linear", "2:4")
ORT_PROVIDERS = {"cpu": ("CPUExecutionProvider",),
                 "cuda": ("CUDAExecutionProvider", "TensorrtExecutionProvider")}

_REQUIRED = ("name", "device", "runtimes", "precisions")
_OPTIONAL = ("description", "threads", "memory_budget_mb", "sparse_kernels", "emulated", "notes",
             "arch", "isa")
ARCHES = ("x86", "arm")
_ARM_WORDS = {"arm", "arm64", "aarch64", "neon", "cortex", "graviton"}


@dataclass(frozen=True)
class RuntimeSpec:
    """One inference runtime of a target; `provider` is ONNX Runtime's execution provider."""

    name: str  # "torch" | "onnxruntime"
    provider: str | None = None

    def label(self) -> str:
        return self.name if not self.provider else f"{self.name} ({self.provider})"


@dataclass(frozen=True)
class Target:
    """A deployment target. `threads=None` means every core the measuring process may use."""

    name: str
    device: str
    runtimes: tuple[RuntimeSpec, ...]
    threads: int | None = None
    memory_budget_mb: float | None = None
    precisions: tuple[str, ...] = ("fp32",)
    sparse_kernels: tuple[str, ...] = ()
    emulated: bool = False
    description: str = ""
    notes: tuple[str, ...] = ()
    source_path: Path | None = None
    arch: str | None = None  # CPU family the target deploys to: "x86" | "arm"
    isa: tuple[str, ...] = ()  # its ISA extensions (advisor.measure.host names)
    cpu_source: str = "host"  # where arch/isa come from: "host" | "profile" | "name" | "device"
    link: Any = None  # advisor.device.link.DeviceLink: measured on that device, over its agent

    @property
    def primary_runtime(self) -> RuntimeSpec:
        return self.runtimes[0]

    def runtime(self, name: str) -> RuntimeSpec:
        for r in self.runtimes:
            if r.name == name:
                return r
        raise TargetError(f"target {self.name!r} has no runtime {name!r}",
                          f"it has: {', '.join(r.name for r in self.runtimes)}")

    def limits(self) -> dict[str, Any]:
        """The limits a measurement on this target honours (for JSON and tables)."""
        return {"threads": self.threads, "memory_budget_mb": self.memory_budget_mb}

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "device": self.device,
                "runtimes": [{"name": r.name, "provider": r.provider} for r in self.runtimes],
                "threads": self.threads, "memory_budget_mb": self.memory_budget_mb,
                "precisions": list(self.precisions), "sparse_kernels": list(self.sparse_kernels),
                "emulated": self.emulated, "description": self.description,
                "notes": list(self.notes),
                "source_path": str(self.source_path) if self.source_path else None,
                "arch": self.arch, "isa": list(self.isa), "cpu_source": self.cpu_source,
                "link": self.link.to_json() if self.link is not None else None}


# ---- loading -------------------------------------------------------------------------------

def list_targets() -> list[Target]:
    """The built-in target profiles, sorted by name."""
    return [load_target(p) for p in sorted(PROFILES_DIR.glob("*.toml"))]


def load_target(name_or_path: str | Path) -> Target:
    """Load a built-in target by name (`cpu`, `edge-arm`, `gpu`) or a TOML file by path."""
    if isinstance(name_or_path, Target):
        return name_or_path
    text = str(name_or_path)
    path = Path(text)
    if text.endswith(".toml") or path.is_file() or "/" in text:
        if not path.is_file():
            raise TargetError(f"target profile {text} does not exist",
                              "give a .toml file or a built-in name (see `advisor targets`)")
        return _parse(path)
    builtin = PROFILES_DIR / f"{text}.toml"
    if not builtin.is_file():
        known = ", ".join(sorted(p.stem for p in PROFILES_DIR.glob("*.toml")))
        raise TargetError(f"unknown target {text!r}",
                          f"built-in targets: {known}; or give a path to a .toml profile")
    return _parse(builtin)


def _parse(path: Path) -> Target:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise TargetError(f"target profile {path}: invalid TOML ({e})",
                          "see advisor/profiles/cpu.toml for the format") from e
    except (OSError, UnicodeDecodeError) as e:
        raise TargetError(f"target profile {path}: cannot read it ({e})") from e
    return _validate(data, path)


def validate_profile(data: dict[str, Any], path: Path) -> Target:
    """A profile's parsed TOML checked as `load_target` checks a file at `path`."""
    return _validate(data, path)


def _validate(data: dict[str, Any], path: Path) -> Target:
    def bad(field: str, why: str) -> TargetError:
        return TargetError(f"target profile {path}: field {field!r} {why}",
                           "see advisor/profiles/cpu.toml for the format")

    unknown = sorted(set(data) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise TargetError(f"target profile {path}: unknown field {unknown[0]!r}",
                          f"known fields: {', '.join(_REQUIRED + _OPTIONAL)}")
    for f in _REQUIRED:
        if f not in data:
            raise bad(f, "is missing")

    name = _typed(data, "name", str, bad)
    if not name.strip():
        raise bad("name", "is empty")
    link = None
    if isinstance(data["device"], dict):  # a [device] table: measured on that device
        from advisor.device.link import link_from_table
        link = link_from_table(data["device"], bad)
        device = "cpu"
        if data.get("emulated"):
            raise bad("emulated", "cannot be true for a target with a [device]: it is "
                                  "measured on the device itself")
    else:
        device = _typed(data, "device", str, bad)
    if device not in DEVICES:
        raise bad("device", f"must be one of {', '.join(DEVICES)} (got {device!r})")
    threads = data.get("threads")
    if threads is not None and (type(threads) is not int or threads < 1):
        raise bad("threads", f"must be a positive integer (got {threads!r})")
    if threads is not None and link is None and threads > usable_cores():
        raise TargetError(f"target profile {path}: threads = {threads} but this process may use "
                          f"only {usable_cores()} core(s)",
                          f"set threads to at most {usable_cores()}, or omit it to use every "
                          "core this process may run on")
    budget = data.get("memory_budget_mb")
    if budget is not None and (type(budget) not in (int, float) or not math.isfinite(budget)
                               or budget <= 0):
        raise bad("memory_budget_mb", f"must be a positive, finite number of MB (got {budget!r})")
    precisions = _str_list(data, "precisions", bad, PRECISIONS)
    if not precisions:
        raise bad("precisions", "must name at least one precision")
    sparse = _str_list(data, "sparse_kernels", bad, SPARSE_KERNELS) \
        if "sparse_kernels" in data else ()
    emulated = data.get("emulated", False)
    if type(emulated) is not bool:
        raise bad("emulated", f"must be true or false (got {emulated!r})")
    description = _typed(data, "description", str, bad) if "description" in data else ""
    notes = data.get("notes", [])
    if isinstance(notes, str):
        notes = [notes]
    if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
        raise bad("notes", "must be a string or a list of strings")
    arch, isa, cpu_source = _cpu(data, name, bad, remote=link is not None)
    return Target(name=name, device=device, runtimes=_runtimes(data["runtimes"], device, bad),
                  threads=threads, memory_budget_mb=float(budget) if budget is not None else None,
                  precisions=precisions, sparse_kernels=sparse, emulated=emulated,
                  description=description, notes=tuple(notes), source_path=path.resolve(),
                  arch=arch, isa=isa, cpu_source=cpu_source, link=link)


def arch_from_name(name: str) -> str | None:
    """"arm" when a target's name says so (`edge-arm`, `graviton3`), else None. Descriptions are
    not read: "x86-64 or Arm" is common."""
    words = set(re.split(r"[^a-z0-9]+", str(name or "").lower()))
    return "arm" if words & _ARM_WORDS else None


def _cpu(data: dict, name: str, bad, remote: bool = False
         ) -> tuple[str | None, tuple[str, ...], str]:
    """(arch, isa, source): declared in the profile, else Arm by name, else this host's (not
    for a device reached over its agent: unknown until probed)."""
    if "isa" in data and "arch" not in data:
        raise bad("isa", "needs `arch` too (x86 or arm): the flags describe that CPU")
    if "arch" in data:
        arch = _typed(data, "arch", str, bad)
        if arch not in ARCHES:
            raise bad("arch", f"must be one of {', '.join(ARCHES)} (got {arch!r})")
        isa = _str_list(data, "isa", bad, ISA_NAMES) if "isa" in data else ()
        return arch, isa, "profile"
    if arch_from_name(name):
        return "arm", (), "name"
    if remote:
        return None, (), "device"
    host = detect_cpu()
    return arch_family(), tuple(host["isa"]), "host"


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), the bound of a target's `threads`."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no sched_getaffinity (macOS, Windows)
        return max(1, os.cpu_count() or 1)


def _typed(data: dict, field: str, kind: type, bad) -> Any:
    value = data[field]
    if not isinstance(value, kind):
        raise bad(field, f"must be a {kind.__name__} (got {type(value).__name__})")
    return value


def _str_list(data: dict, field: str, bad, allowed: tuple[str, ...]) -> tuple[str, ...]:
    value = data[field]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise bad(field, "must be a list of strings")
    for v in value:
        if v not in allowed:
            raise bad(field, f"has unknown value {v!r} (known: {', '.join(allowed)})")
    return tuple(dict.fromkeys(value))


def _runtimes(value: Any, device: str, bad) -> tuple[RuntimeSpec, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(r, dict) for r in value):
        raise bad("runtimes", "must be a non-empty array of tables ([[runtimes]] name = ...)")
    out: list[RuntimeSpec] = []
    for i, r in enumerate(value):
        field = f"runtimes[{i}]"
        extra = sorted(set(r) - {"name", "provider"})
        if extra:
            raise bad(field, f"has unknown key {extra[0]!r} (known: name, provider)")
        name = r.get("name")
        if name not in RUNTIMES:
            raise bad(f"{field}.name", f"names an unknown runtime {name!r} "
                                       f"(known: {', '.join(RUNTIMES)})")
        provider = r.get("provider")
        if name == "torch" and provider is not None:
            raise bad(f"{field}.provider", "is only for onnxruntime (torch runs on `device`)")
        if name == "onnxruntime":
            provider = provider or ORT_PROVIDERS[device][0]
            if not isinstance(provider, str) or provider not in ORT_PROVIDERS[device]:
                raise bad(f"{field}.provider", f"must be one of "
                                               f"{', '.join(ORT_PROVIDERS[device])} for device "
                                               f"{device!r} (got {provider!r})")
        if any(o.name == name for o in out):
            raise bad(f"{field}.name", f"repeats runtime {name!r}")
        out.append(RuntimeSpec(name, provider))
    return tuple(out)


# ---- availability --------------------------------------------------------------------------

def target_available(t: Target) -> tuple[bool, str]:
    """Can this host measure `t`? Returns (ok, reason); the reason also explains emulation."""
    if t.link is not None:  # reachability is checked when a run starts (device_facts)
        return True, f"measured on the device {t.link.label} {t.link.how()} by advisor's agent"
    if t.device == "cuda":
        gpu = detect_host().get("gpu")
        if not gpu:
            return False, ("no CUDA GPU on this host (torch "
                           f"{detect_host().get('torch') or 'not installed'}); the gpu target "
                           "needs an NVIDIA GPU and a CUDA build of torch")
        return True, f"CUDA device {gpu.get('name')}"
    host = detect_host()
    cores = host.get("cores_available") or host.get("cores_logical") or 1
    if t.emulated:
        limits = [f"{t.threads or cores} thread(s)"]
        if t.memory_budget_mb:
            limits.append(f"{t.memory_budget_mb:g} MB")
        return True, f"emulated on this {host.get('arch', '?')} host ({', '.join(limits)})"
    if t.threads and t.threads > cores:
        return True, (f"{t.threads} threads requested but only {cores} core(s) here: "
                      "threads share cores")
    return True, f"this host ({cores} core(s))"
