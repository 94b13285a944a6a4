"""What this host is: CPU model, ISA extensions that matter for int8/fp16 kernels, cores, memory,
GPU, and runtime versions. Recorded in every measurement so numbers can be compared honestly.

The ISA flags come from /proc/cpuinfo (Linux): on x86 `avx2`, `avx512f`, `avx512_vnni` /
`avx_vnni` (int8 dot products), `avx512_bf16`, `amx_tile` / `amx_int8` / `amx_bf16`; on Arm
`asimd` (NEON, reported as `neon` too), `asimddp` (int8 dot product, reported as `dotprod` too),
`sve`, `i8mm`, `bf16`. The rule engine reads them to judge whether int8 will pay off.
"""
from __future__ import annotations

import copy
import functools
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["detect_host", "detect_machine", "detect_cpu", "parse_cpuinfo", "arch_family", "has_vnni", "ISA_FLAGS",
           "ISA_NAMES", "VNNI_FLAGS"]

# cpuinfo flag -> the names we report (x86 and Arm spell things differently)
ISA_FLAGS: dict[str, tuple[str, ...]] = {
    "sse4_2": ("sse4_2",), "avx": ("avx",), "avx2": ("avx2",), "fma": ("fma",), "f16c": ("f16c",),
    "avx512f": ("avx512f",), "avx512bw": ("avx512bw",), "avx512_vnni": ("avx512_vnni",),
    "avx_vnni": ("avx_vnni",), "avx512_bf16": ("avx512_bf16",), "avx512_fp16": ("avx512_fp16",),
    "amx_tile": ("amx_tile",), "amx_int8": ("amx_int8",), "amx_bf16": ("amx_bf16",),
    # Arm (aarch64 /proc/cpuinfo "Features")
    "neon": ("neon",), "asimd": ("asimd", "neon"), "asimddp": ("asimddp", "dotprod"),
    "asimdhp": ("asimdhp", "fp16"), "sve": ("sve",), "sve2": ("sve2",), "i8mm": ("i8mm",),
    "bf16": ("bf16",),
}
ISA_NAMES = tuple(dict.fromkeys(n for names in ISA_FLAGS.values() for n in names))
# x86 int8 dot-product instructions (u8 x s8 accumulated without VPMADDUBSW's saturation)
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def parse_cpuinfo(text: str) -> dict[str, Any]:
    """CPU model and the ISA flags we care about from the text of /proc/cpuinfo."""
    model, flags = None, set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if key in ("model name", "hardware", "cpu model") and not model and value:
            model = value
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    if model is None:  # aarch64 often has no model name: use the implementer/part ids
        parts = {}
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("CPU implementer", "CPU part") and key.strip() not in parts:
                parts[key.strip()] = value.strip()
        if parts:
            model = "Arm CPU " + " ".join(f"{k.split()[-1]}={v}" for k, v in parts.items())
    isa: list[str] = []
    for flag, names in ISA_FLAGS.items():
        if flag in flags:
            isa.extend(n for n in names if n not in isa)
    return {"cpu_model": model, "isa": isa}


def arch_family(machine: str | None = None) -> str:
    """"x86" or "arm" for a `platform.machine()` name (this host's by default), else the name."""
    machine = (platform.machine() if machine is None else machine).lower()
    if machine.startswith(("arm", "aarch64")):
        return "arm"
    return "x86" if machine in ("x86_64", "amd64", "i386", "i686", "x86") else machine


def has_vnni(isa) -> bool:
    """Whether ISA names (as `parse_cpuinfo` reports them) include an x86 int8 dot product."""
    return any(f in VNNI_FLAGS for f in isa)


@functools.lru_cache(maxsize=1)
def _detect_cpu() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo")
    info = parse_cpuinfo(cpuinfo.read_text(errors="replace")) if cpuinfo.exists() else \
        {"cpu_model": platform.processor() or None, "isa": []}
    return {"arch": platform.machine(), "arch_family": arch_family(), **info}


def detect_cpu() -> dict[str, Any]:
    """This host's CPU alone (cached, cheap: no runtime is imported): `arch` as
    `platform.machine()` spells it, `arch_family` ("x86"/"arm"), `cpu_model`, `isa`."""
    return copy.deepcopy(_detect_cpu())


def detect_machine() -> dict[str, Any]:
    """This machine without torch: CPU, cores, memory, OS, Python and ONNX Runtime. The device
    agent (`advisor.agent`) fingerprints a device with it, so it must never import torch."""
    info = _detect_cpu()
    return {
        "arch": info["arch"],
        "cpu_model": info["cpu_model"],
        "isa": list(info["isa"]),
        "cores_logical": os.cpu_count(),
        "cores_physical": _physical_cores(),
        "cores_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "cpu_quota": _cgroup_cpu_quota(),
        **_memory(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": _version("onnxruntime"),
        "onnxruntime_providers": _ort_providers(),
    }


@functools.lru_cache(maxsize=1)
def _detect() -> dict[str, Any]:
    host = detect_machine()
    host["torch"] = _version("torch")
    host["gpu"] = _gpu()
    return host


def detect_host() -> dict[str, Any]:
    """A description of this host (cached; a fresh copy each call)."""
    host = copy.deepcopy(_detect())
    host["load_average"] = _load_average()  # changes: read now, not cached
    return host


def _physical_cores() -> int | None:
    try:
        import psutil
        return psutil.cpu_count(logical=False)
    except Exception:
        return None


def _cgroup_cpu_quota() -> float | None:
    """CPUs granted by a cgroup v2 quota (containers), None when unlimited or unknown."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else round(int(quota) / int(period), 2)
    except (OSError, ValueError):
        return None


def _memory() -> dict[str, Any]:
    try:
        import psutil
        vm = psutil.virtual_memory()
        return {"memory_mb": round(vm.total / 2 ** 20), "memory_available_mb":
                round(vm.available / 2 ** 20)}
    except Exception:
        pass
    try:  # without psutil (a device with only onnxruntime and numpy): the kernel's own figures
        fields = dict(line.split(":", 1) for line in
                      Path("/proc/meminfo").read_text().splitlines() if ":" in line)
        kb = lambda key: int(fields[key].split()[0])  # noqa: E731
        return {"memory_mb": round(kb("MemTotal") / 1024),
                "memory_available_mb": round(kb("MemAvailable") / 1024)}
    except (OSError, KeyError, ValueError, IndexError):
        return {"memory_mb": None, "memory_available_mb": None}


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _ort_providers() -> list[str]:
    try:
        import onnxruntime
        return list(onnxruntime.get_available_providers())
    except Exception:
        return []


def _gpu() -> dict[str, Any] | None:
    """The first CUDA device via torch.cuda (None without a GPU or a CUDA build of torch)."""
    try:
        import torch
        if not torch.cuda.is_available():
            return None
        props = torch.cuda.get_device_properties(0)
        return {"name": props.name, "count": torch.cuda.device_count(),
                "memory_mb": round(props.total_memory / 2 ** 20),
                "capability": f"{props.major}.{props.minor}", "cuda": torch.version.cuda}
    except Exception:
        return None
