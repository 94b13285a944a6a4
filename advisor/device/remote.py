"""Measurements on the device through its agent, with the same contracts as the local ones:

- `run_worker_remote(link, request, timeout)` ≙ `advisor.measure.latency._run_worker`: one
  (single or paired) latency measurement; the artefacts are uploaded once, the agent runs the
  same worker as the host does, and a failure of any kind comes back as `{"ok": False, ...}`
  for the caller to report (the trial fails with the reason; the next call starts a fresh agent).
- `remote_predictor(link, artifact, threads)` ≙ `advisor.measure.accuracy.artifact_predictor`:
  inputs → the device runtime's outputs (inputs uploaded as `.npy`, content-addressed: the same
  validation batches cost one upload per device, whatever the number of candidates).
- `remote_profile_events(...)` ≙ `advisor.measure.ort_profile.profile_events`.
- `device_facts(link)`: reach the device at the start of a run (a one-line error with the
  command to try when it cannot be reached) and return its fingerprint.

The host trusts nothing the agent returns: every number is checked for type, finiteness and
range here (`_checked_result`), and only known fields are kept.
"""
from __future__ import annotations

import base64
import io
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from advisor.device.connection import DeviceError, connection, forget
from advisor.device.link import DeviceLink
from advisor.errors import TargetError
from advisor.measure.memory import ALLOCATOR_ENV

if TYPE_CHECKING:
    import numpy as np

_MAX_SAMPLES = 10 ** 6
_MAX_MS = 1e7  # a call longer than ~3 hours is not a measurement
_NUMBERS = {"load_seconds": 1e6, "baseline_rss_mb": 1e7, "peak_rss_mb": 1e7,
            "model_peak_mb": 1e7, "cpu_share": 1e4, "preemptions_per_s": 1e9,
            "address_cap_mb": 1e9}
_COUNTS = {"warmup_runs": 10 ** 7, "runtime_threads": 4096, "threads": 4096, "block": 10 ** 4,
           "pid": 2 ** 31}
_STRINGS = ("provider", "timer", "device", "kind", "error")


def run_worker_remote(link: DeviceLink, request: dict[str, Any], timeout: float) -> dict:
    """`request` as `latency` builds it (local paths); the result as the local worker's."""
    try:
        conn = connection(link)
        req = {k: v for k, v in request.items()
               if k in ("runtime", "provider", "input_shape", "batch_size", "threads",
                        "warmup", "repeats", "max_seconds", "block", "seed")}
        req["artifact"] = conn.ensure_file(request["artifact"])
        if request.get("reference"):
            req["reference"] = conn.ensure_file(request["reference"])
        req["allocator_env"] = dict(ALLOCATOR_ENV)
        answer = conn.call("measure", timeout=timeout + 30, request=req, timeout_s=timeout)
        result = _checked_result(answer.get("result"), paired="reference" in req)
        result["device_host"] = conn.fingerprint()
        return result
    except DeviceError as e:
        _forget_if_broken(link, e)
        return {"ok": False, "kind": "memory" if e.kind == "memory" else "device",
                "error": e.message}


def remote_predictor(link: DeviceLink, artifact: str | Path, threads: int | None
                     ) -> Callable[[Any], "np.ndarray"]:
    import numpy as np

    def predict(x) -> np.ndarray:
        arr = np.ascontiguousarray(np.asarray(x.detach().cpu() if hasattr(x, "detach") else x,
                                              dtype=np.float32))
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=False)
        try:
            conn = connection(link)
            model = conn.ensure_file(artifact)
            inputs = conn.ensure_bytes(buf.getvalue())
            answer = conn.call("run", timeout=600, model=model, inputs=inputs, threads=threads)
        except DeviceError as e:
            _forget_if_broken(link, e)
            raise
        return _checked_outputs(answer, len(arr))

    return predict


def _forget_if_broken(link: DeviceLink, e: DeviceError) -> None:
    """A failure of the session itself (not of one request): the next call starts afresh."""
    if e.kind in ("connection", "protocol", "timeout", "connect"):
        forget(link)


def remote_profile_events(link: DeviceLink, path, input_shape, threads, runs: int,
                          warmup: int, provider: str) -> list[dict]:
    conn = connection(link)
    answer = conn.call("profile", timeout=600, model=conn.ensure_file(path),
                       input_shape=[int(d) for d in input_shape], threads=threads,
                       runs=int(runs), warmup=int(warmup), provider=provider)
    events = answer.get("events")
    if not isinstance(events, list) or len(events) > 10 ** 6:
        raise DeviceError("the device returned no profiler events", kind="protocol")
    out = []
    for e in events:
        if not isinstance(e, dict) or not all(_finite(e.get(k), 0, 1e15) for k in ("ts", "dur")):
            raise DeviceError("the device returned a malformed profiler event", kind="protocol")
        out.append({"cat": str(e.get("cat"))[:40], "name": str(e.get("name"))[:400],
                    "ts": float(e["ts"]), "dur": float(e["dur"]),
                    "op_name": str(e.get("op_name") or "")[:80]})
    return out


_facts: dict[DeviceLink, dict[str, Any]] = {}


def device_facts(link: DeviceLink) -> dict[str, Any]:
    """Reach the device (once per process) and return its fingerprint and how it was reached:
    what reports show as "measured on the device ... over SSH"."""
    if link in _facts:
        return _facts[link]
    try:
        conn = connection(link)
        fp = dict(conn.fingerprint())
    except DeviceError as e:
        forget(link)
        raise TargetError(f"cannot reach the device {link.label}: {e.message}",
                          f"try: {link.try_command()}") from e
    _facts[link] = {"label": link.label, "how": link.how(), "fingerprint": fp,
                    "link": link.to_json(), "agent_version": conn.hello.get("agent_version"),
                    "connect_seconds": round(conn.connect_seconds, 3)}
    return _facts[link]


def measured_on(target) -> dict[str, Any] | None:
    """`device_facts` of a target with a device link, else None."""
    link = getattr(target, "link", None)
    return device_facts(link) if link is not None else None


# ---- validation of what the agent returns ---------------------------------------------------

def _finite(x, lo: float, hi: float) -> bool:
    return type(x) in (int, float) and math.isfinite(x) and lo <= x <= hi


def _samples(value, what: str) -> list[float]:
    if not isinstance(value, list) or not 1 <= len(value) <= _MAX_SAMPLES or \
            not all(_finite(x, 0.0, _MAX_MS) for x in value):
        raise DeviceError(f"the device returned invalid {what}", kind="protocol")
    return [float(x) for x in value]


def _checked_result(result: Any, paired: bool) -> dict[str, Any]:
    if not isinstance(result, dict) or not isinstance(result.get("ok"), bool):
        raise DeviceError("the device returned a malformed measurement", kind="protocol")
    out: dict[str, Any] = {"ok": result["ok"]}
    for key in _STRINGS:
        if isinstance(result.get(key), str):
            out[key] = result[key][:500]
    if not result["ok"]:
        out.setdefault("kind", "error")
        out["error"] = "on the device: " + out.get("error", "the measurement failed")
        return out
    out["samples_ms"] = _samples(result.get("samples_ms"), "latency samples")
    if paired:
        out["reference_samples_ms"] = _samples(result.get("reference_samples_ms"),
                                               "reference latency samples")
    for key, hi in _NUMBERS.items():
        if result.get(key) is not None:
            if not _finite(result[key], 0.0, hi):
                raise DeviceError(f"the device returned an invalid {key}", kind="protocol")
            out[key] = float(result[key])
    for key, hi in _COUNTS.items():
        if result.get(key) is not None:
            if type(result[key]) is not int or not 0 <= result[key] <= hi:
                raise DeviceError(f"the device returned an invalid {key}", kind="protocol")
            out[key] = result[key]
    for key in ("affinity", "cores"):
        v = result.get(key)
        if isinstance(v, list) and len(v) <= 4096 and all(type(c) is int and 0 <= c < 2 ** 16
                                                          for c in v):
            out[key] = v
    la = result.get("load_average")
    if isinstance(la, list) and len(la) == 3 and all(_finite(x, 0, 1e6) for x in la):
        out["load_average"] = [float(x) for x in la]
    env = result.get("env")
    if isinstance(env, dict):
        out["env"] = {str(k)[:40]: str(v)[:40] for k, v in list(env.items())[:16]}
    versions = result.get("versions")
    if isinstance(versions, dict):
        out["versions"] = {str(k)[:40]: str(v)[:40] for k, v in list(versions.items())[:8]}
    out["torch_imported"] = bool(result.get("torch_imported"))
    return out


def _checked_outputs(answer: dict, batch: int):
    import numpy as np

    shape, data = answer.get("shape"), answer.get("data")
    if answer.get("dtype") != "float32" or not isinstance(shape, list) or not shape or \
            not all(type(d) is int and d >= 0 for d in shape) or shape[0] != batch or \
            not isinstance(data, str):
        raise DeviceError("the device returned malformed outputs", kind="protocol")
    raw = base64.b64decode(data)
    if len(raw) != 4 * math.prod(shape):
        raise DeviceError("the device returned outputs of the wrong size", kind="protocol")
    return np.frombuffer(raw, dtype=np.float32).reshape(shape).copy()
