"""The agent's request loop and operations (protocol: `advisor.agent.protocol`).

Operations:
- `hello` → protocol version, advisor version, pid: the host refuses a different protocol.
- `fingerprint` → CPU model and ISA flags, cores, memory, OS, onnxruntime version and
  providers, CPU frequency governor (`advisor.measure.host.detect_machine`, torch-free).
- `has` / `put` → which files are cached; upload one in chunks (`advisor.agent.store`).
- `measure` → one latency measurement (single or paired against a reference) in a fresh worker
  process: the same `advisor.measure._worker` the host runs locally, so warm-up, repeats,
  threads, affinity and allocator settings follow one set of rules.
- `run` → a model's outputs on uploaded inputs (an `.npy` file, never a pickle).
- `profile` → ONNX Runtime's profiler events for per-layer times.

Only ONNX models from the cache are accepted (`advisor.agent.onnx_check`), only requests of this
protocol, only fields it knows with values in range; never a pickle, a path or a command.
The protocol owns the real stdout: fd 1 is pointed at stderr so that nothing a library prints
can corrupt the stream.
"""
from __future__ import annotations

import argparse
import base64
import importlib.util
import os
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any, BinaryIO, Callable

from advisor.agent.onnx_check import ModelRefused, check_onnx
from advisor.agent.protocol import (CHUNK_BYTES, DEFAULT_CACHE_MB, MAX_LINE_BYTES, PROTOCOL,
                                    ProtocolError, decode, encode)
from advisor.agent.store import Store, StoreError

from advisor.measure.memory import ALLOCATOR_ENV

ALLOCATOR_KEYS = tuple(ALLOCATOR_ENV)
MAX_MEASURE_SECONDS = 600.0
MAX_ELEMENTS = 2 ** 28  # input tensor elements (1 GiB of float32)


class AgentError(Exception):
    def __init__(self, message: str, kind: str = "error"):
        super().__init__(message)
        self.kind = kind


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "advisor-agent"


class Agent:
    def __init__(self, cache_dir: Path, cache_mb: float):
        self.store = Store(cache_dir, cache_mb)
        self.checked: set[str] = set()  # models that passed onnx_check
        self.session: tuple[tuple, Any] | None = None  # the last `run` session, reused
        self.ops: dict[str, Callable[[dict], dict]] = {
            "hello": self.hello, "fingerprint": self.fingerprint, "has": self.has,
            "put": self.put, "measure": self.measure, "run": self.run, "profile": self.profile}

    # ---- operations ------------------------------------------------------------------------

    def hello(self, msg: dict) -> dict:
        import advisor

        return {"protocol": PROTOCOL, "agent_version": advisor.__version__, "pid": os.getpid(),
                "python": sys.version.split()[0], "cache_dir": str(self.store.root)}

    def fingerprint(self, msg: dict) -> dict:
        from advisor.measure.host import detect_machine

        info = detect_machine()
        info["governor"] = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
        info["affinity"] = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
            else None
        info["psutil"] = importlib.util.find_spec("psutil") is not None
        try:
            info["load_average"] = [round(x, 2) for x in os.getloadavg()]
        except OSError:
            info["load_average"] = None
        info["cache_mb"] = round(self.store.cap_bytes / 2 ** 20)
        info["cache_used_mb"] = round(self.store.usage_bytes() / 2 ** 20, 1)
        return {"fingerprint": info}

    def has(self, msg: dict) -> dict:
        shas = msg.get("blobs")
        if not isinstance(shas, list) or len(shas) > 1000:
            raise AgentError("`has` takes a list of at most 1000 hashes", kind="request")
        return {"have": [s for s in shas if self.store.has(s)]}

    def put(self, msg: dict) -> dict:
        data = msg.get("data")
        if not isinstance(data, str):
            raise AgentError("`put` needs base64 `data`", kind="request")
        try:
            raw = base64.b64decode(data, validate=True)
        except ValueError as e:
            raise AgentError("`put` data is not base64", kind="upload") from e
        if len(raw) > CHUNK_BYTES:
            raise AgentError(f"a chunk holds at most {CHUNK_BYTES} bytes", kind="request")
        stored = self.store.put(msg.get("sha256"), msg.get("size"), _int(msg, "offset", 0, None, 0),
                                raw, bool(msg.get("last")))
        return {"stored": stored}

    def measure(self, msg: dict) -> dict:
        req = msg.get("request")
        if not isinstance(req, dict):
            raise AgentError("`measure` needs a `request` object", kind="request")
        clean = _measure_request(req)
        clean["artifact"] = str(self._model(req.get("artifact")))
        if req.get("reference") is not None:
            clean["reference"] = str(self._model(req.get("reference")))
        timeout = float(min(MAX_MEASURE_SECONDS * 2, _num(msg, "timeout_s", 1, 1200, 300)))
        return {"result": self._run_worker(clean, timeout)}

    def run(self, msg: dict) -> dict:
        import numpy as np

        sess = self._session(msg)
        x = np.load(self.store.path(msg.get("inputs")), allow_pickle=False)
        inp = sess.get_inputs()[0]
        if x.dtype not in (np.float32, np.float16) or x.ndim < 1 or x.size > MAX_ELEMENTS:
            raise AgentError(f"inputs must be a float array of at most {MAX_ELEMENTS} elements "
                             f"(got {x.dtype}, shape {list(x.shape)})", kind="request")
        want = np.float16 if inp.type == "tensor(float16)" else np.float32
        out = np.asarray(sess.run(None, {inp.name: x.astype(want, copy=False)})[0],
                         dtype=np.float32)
        raw = np.ascontiguousarray(out).tobytes()
        if len(raw) * 4 // 3 > MAX_LINE_BYTES - 4096:
            raise AgentError(f"the outputs ({len(raw)} bytes) exceed one message; send fewer "
                             "inputs per call", kind="request")
        return {"shape": list(out.shape), "dtype": "float32",
                "data": base64.b64encode(raw).decode()}

    def profile(self, msg: dict) -> dict:
        from advisor.measure.ort_profile import profile_events

        path = self._model(msg.get("model"))
        shape = _shape(msg.get("input_shape"))
        events = profile_events(path, shape, _int(msg, "threads", 1, 4096, None),
                                _int(msg, "runs", 1, 1000, 7), _int(msg, "warmup", 0, 1000, 2),
                                _provider(msg.get("provider")))
        return {"events": events}

    # ---- helpers ---------------------------------------------------------------------------

    def _model(self, sha: Any) -> Path:
        path = self.store.path(sha)
        if sha not in self.checked:
            check_onnx(path)
            self.checked.add(sha)
        return path

    def _session(self, msg: dict):
        import onnxruntime as ort

        threads = _int(msg, "threads", 1, 4096, None)
        key = (msg.get("model"), threads)
        if self.session is None or self.session[0] != key:
            self.session = None  # free the previous model first: a device may be small
            path = self._model(msg.get("model"))
            so = ort.SessionOptions()
            so.log_severity_level = 3
            if threads:
                so.intra_op_num_threads = threads
                so.inter_op_num_threads = 1
            self.session = (key, ort.InferenceSession(str(path), so,
                                                      providers=["CPUExecutionProvider"]))
        return self.session[1]

    def _run_worker(self, req: dict, timeout: float) -> dict:
        """One measurement in a fresh worker process pinned to this device's cores."""
        allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
            list(range(os.cpu_count() or 1))
        n = int(req.get("threads") or len(allowed))
        req["threads"] = n
        req["cores"] = allowed[:n] if n <= len(allowed) else allowed
        env = {**os.environ, "OMP_NUM_THREADS": str(n), "MKL_NUM_THREADS": str(n),
               "OPENBLAS_NUM_THREADS": str(n), "ADVISOR_PARENT_PID": str(os.getpid()),
               "PYTHONPATH": _package_root()}
        env.update(req.pop("allocator_env", {}))
        from advisor.measure._worker import run_worker_process

        work = self.store.tmp / f"measure.{os.getpid()}.{time.monotonic_ns()}"
        work.mkdir(mode=0o700)
        try:
            result = run_worker_process(req, env, work, timeout, who="the worker on the device")
        finally:
            shutil.rmtree(work, ignore_errors=True)
        if result.get("ok"):
            result.update(threads=n, cores=req["cores"])
        return result


# ---- request validation: only known fields, in range ---------------------------------------

def _measure_request(req: dict) -> dict:
    if req.get("runtime") != "onnxruntime":
        raise AgentError("the agent measures ONNX models on onnxruntime only (runtime "
                         f"{req.get('runtime')!r} is not available on this device)",
                         kind="unsupported")
    clean = {"runtime": "onnxruntime", "provider": _provider(req.get("provider")),
             "device": "cpu", "input_shape": list(_shape(req.get("input_shape"))),
             "batch_size": _int(req, "batch_size", 1, 65536, None),
             "threads": _int(req, "threads", 1, 4096, None),
             "warmup": _int(req, "warmup", 0, 100000, 10),
             "repeats": _int(req, "repeats", 1, 1000000, 100),
             "max_seconds": _num(req, "max_seconds", 0.001, MAX_MEASURE_SECONDS, 10.0),
             "seed": _int(req, "seed", 0, 2 ** 31, 0), "memory_budget_mb": None}
    if clean["batch_size"] is None:
        clean["batch_size"] = clean["input_shape"][0]
    if req.get("reference") is not None:
        clean["block"] = _int(req, "block", 1, 10000, 5)
    env = req.get("allocator_env") or {}
    if not isinstance(env, dict) or any(k not in ALLOCATOR_KEYS or not str(v).isdigit()
                                        for k, v in env.items()):
        raise AgentError(f"allocator_env may set only {', '.join(ALLOCATOR_KEYS)} to integers",
                         kind="request")
    clean["allocator_env"] = {k: str(v) for k, v in env.items()}
    return clean


def _provider(value: Any) -> str:
    import onnxruntime as ort

    provider = value or "CPUExecutionProvider"
    if provider not in ort.get_available_providers():
        raise AgentError(f"onnxruntime on the device has no {provider!r} (available: "
                         f"{', '.join(ort.get_available_providers())})", kind="unsupported")
    return provider


def _shape(value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or not 1 <= len(value) <= 8 or \
            any(type(d) is not int or not 1 <= d <= 65536 for d in value):
        raise AgentError("input_shape must be 1 to 8 positive integers", kind="request")
    n = 1
    for d in value:
        n *= d
    if n > MAX_ELEMENTS:
        raise AgentError(f"input_shape has more than {MAX_ELEMENTS} elements", kind="request")
    return tuple(value)


def _int(msg: dict, key: str, lo: int, hi: int | None, default):
    value = msg.get(key, default)
    if value is None:
        return None
    if type(value) is not int or value < lo or (hi is not None and value > hi):
        raise AgentError(f"{key} must be an integer in {lo}..{hi if hi is not None else ''} "
                         f"(got {value!r})", kind="request")
    return value


def _num(msg: dict, key: str, lo: float, hi: float, default: float) -> float:
    value = msg.get(key, default)
    if type(value) not in (int, float) or not lo <= value <= hi:
        raise AgentError(f"{key} must be a number in {lo}..{hi} (got {value!r})", kind="request")
    return float(value)


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip() or None
    except OSError:
        return None


def _package_root() -> str:
    """Where `advisor` is imported from: the pushed .pyz file, or an installed package's parent."""
    import advisor

    return str(Path(advisor.__file__).resolve().parents[1])


# ---- the loop --------------------------------------------------------------------------------

def serve(agent: Agent, stdin: BinaryIO, stdout: BinaryIO) -> int:
    while True:
        line = stdin.readline(MAX_LINE_BYTES + 1)
        if not line:
            return 0
        rid = None
        try:
            if len(line) > MAX_LINE_BYTES or not line.endswith(b"\n"):
                raise ProtocolError(f"a request exceeds the {MAX_LINE_BYTES}-byte cap")
            msg = decode(line)
            rid = msg.get("id")
            if msg.get("v") != PROTOCOL:
                raise AgentError(f"the agent speaks protocol {PROTOCOL}, the request "
                                 f"{msg.get('v')!r}", kind="protocol")
            op = msg.get("op")
            if op == "bye":
                _write(stdout, {"id": rid, "ok": True})
                return 0
            handler = agent.ops.get(op) if isinstance(op, str) else None
            if handler is None:
                raise AgentError(f"unknown operation {op!r}", kind="request")
            response = {"id": rid, "ok": True, **handler(msg)}
        except ProtocolError as e:
            _write(stdout, {"id": rid, "ok": False, "kind": "protocol", "error": str(e)})
            return 1  # the stream cannot be re-synced
        except (AgentError, StoreError) as e:
            response = {"id": rid, "ok": False, "kind": e.kind, "error": str(e)}
        except ModelRefused as e:
            response = {"id": rid, "ok": False, "kind": "refused", "error": str(e)}
        except MemoryError:
            response = {"id": rid, "ok": False, "kind": "memory",
                        "error": "the device ran out of memory"}
        except Exception as e:  # noqa: BLE001 - reported to the host, the agent goes on
            first = next((ln for ln in str(e).splitlines() if ln.strip()), "")
            response = {"id": rid, "ok": False, "kind": "error",
                        "error": f"{type(e).__name__}: {first}"[:500],
                        "traceback": traceback.format_exc(limit=6)[-2000:]}
        _write(stdout, response)


def _write(stdout: BinaryIO, message: dict) -> None:
    stdout.write(encode(message))
    stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m advisor.agent",
                                     description="advisor's device agent (JSON lines on stdio)")
    parser.add_argument("--stdio", action="store_true", required=True,
                        help="speak the protocol on stdin/stdout")
    parser.add_argument("--cache", default=None, help="cache directory (default "
                        "~/.cache/advisor-agent)")
    parser.add_argument("--cache-mb", type=float, default=DEFAULT_CACHE_MB)
    args = parser.parse_args(argv)
    # the protocol owns the real stdout; anything printed later goes to stderr
    proto_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    agent = Agent(Path(os.path.expanduser(args.cache)) if args.cache else default_cache_dir(),
                  args.cache_mb)
    try:
        return serve(agent, sys.stdin.buffer, proto_out)
    except (BrokenPipeError, KeyboardInterrupt):
        return 0
