"""Judging a profile's runtime entries: which runtime is primary (the profile fails when none
ran), peak memory against the target's budget, and warnings for disturbed or noisy timings.
"""
from __future__ import annotations

from typing import Any

from advisor.measure.latency import LatencyError

# A timing was disturbed by other load when its worker was preempted more often than this per
# second and thread, or (one thread: a tight loop that should own its core) got less than this
# share of its core. Heuristics from benchmarks/profile_stability.py on a shared 2-core host:
# undisturbed runs showed 0-70 preemptions/s and a CPU share of 0.98-1.0.
_BUSY_PREEMPTIONS = 50.0
_BUSY_CPU_SHARE = 0.8
_NOISY_CV = 0.25


def pick_primary(names: list[str], entries: dict, target, warnings: list[str]) -> str:
    """The first runtime (in the target's order) that ran; a LatencyError when none did."""
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


def memory_summary(entries: dict, primary: str, target, warnings: list[str]) -> dict[str, Any]:
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


def noise_warnings(entries: dict, warnings: list[str]) -> None:
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
