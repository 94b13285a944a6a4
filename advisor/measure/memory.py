"""Process memory — resident set (now and peak) and the address-space cap that emulates a device's
memory budget — and the CPU accounting that tells whether a timing was disturbed. Used inside the
latency worker, so it imports neither torch nor onnxruntime.

Peak RSS is the kernel's high-water mark (VmHWM; `getrusage(...).ru_maxrss` elsewhere) — exact,
unlike sampling. An emulated budget is charged to the model only: peak RSS above what the process
held once the runtime was imported (torch ≈ 220 MB resident here, ONNX Runtime ≈ 45 MB) must fit
the budget, and RLIMIT_AS then caps further growth (`cap_address_space`).
"""
from __future__ import annotations

import resource
import sys

__all__ = ["rss_mb", "peak_rss_mb", "address_space_mb", "cap_address_space",
           "is_out_of_memory", "cpu_seconds", "preemptions"]

_MB = 2 ** 20
# glibc's allocator thresholds for every measurement (here and on a device): large enough that
# activation buffers stay in the heap instead of being mmap'ed and trimmed on every call
ALLOCATOR_ENV = {"MALLOC_MMAP_THRESHOLD_": str(2 ** 30), "MALLOC_TRIM_THRESHOLD_": str(2 ** 30)}


def rss_mb() -> float:
    """Current resident set size of this process in MB."""
    try:
        import psutil
        return psutil.Process().memory_info().rss / _MB
    except Exception:
        return _status_kb("VmRSS") / 1024


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (kernel high-water mark), MB.

    VmHWM belongs to the process's own address space; `ru_maxrss` is the fallback only, because
    Linux carries it over fork+exec, so a worker would report its parent's peak.
    """
    hwm = _status_kb("VmHWM")
    if hwm:
        return hwm / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / _MB if sys.platform == "darwin" else peak / 1024  # macOS: bytes, Linux: KiB


def address_space_mb() -> float:
    """Virtual address space this process holds now (VmSize), MB."""
    return _status_kb("VmSize") / 1024


def cap_address_space(extra_mb: float) -> float:
    """Allow at most `extra_mb` more address space than now (RLIMIT_AS). Returns the cap in MB."""
    cap = int((address_space_mb() + extra_mb) * _MB)
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    return cap / _MB


def is_out_of_memory(e: BaseException) -> bool:
    """Did an allocation fail (MemoryError, torch's allocator, ONNX Runtime's bad_alloc)?"""
    if isinstance(e, MemoryError):
        return True
    text = str(e)
    return any(s in text for s in ("can't allocate memory", "DefaultCPUAllocator", "bad_alloc",
                                   "Failed to allocate memory", "out of memory",
                                   "Cannot allocate memory"))


def cpu_seconds() -> float:
    """User + system CPU time this process has used (all threads), seconds."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def preemptions() -> int:
    """Involuntary context switches of this process so far (all threads): the scheduler took a
    core away from it, i.e. another runnable process wanted that core."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw


def _status_kb(key: str) -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return float(line.split()[1])
    except OSError:
        pass
    return 0.0
