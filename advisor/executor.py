"""Where candidate trials run: a small interface so a distributed engine can replace it later.

`ProcessExecutor` (default) runs each trial in a fresh spawned worker process, one at a time —
on a 2-core machine parallel trials would skew each other's latency — so a crash, a leak or a
thread setting in one candidate cannot affect the next. `InlineExecutor` runs in this process
(tests, debugging, objects that cannot be pickled).
"""
from __future__ import annotations

import multiprocessing as mp
import traceback
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Protocol


class Executor(Protocol):
    def run(self, fn: Callable[[Any], dict], payload: Any) -> dict:
        """Run `fn(payload)`; return its dict, or {"status": "failed", "error": ...}."""


def _safe_call(fn: Callable[[Any], dict], payload: Any) -> dict:
    from advisor.errors import AdvisorError

    try:
        return fn(payload)
    except AdvisorError as e:
        return {"status": "failed", "error": str(e)}
    except Exception as e:
        first = str(e).splitlines()[0] if str(e) else ""
        return {"status": "failed", "error": f"{type(e).__name__}: {first}"[:500],
                "traceback": traceback.format_exc(limit=8)}


class InlineExecutor:
    def run(self, fn: Callable[[Any], dict], payload: Any) -> dict:
        return _safe_call(fn, payload)


class ProcessExecutor:
    def __init__(self, timeout_s: float | None = None):
        self.timeout_s = timeout_s

    def run(self, fn: Callable[[Any], dict], payload: Any) -> dict:
        ctx = mp.get_context("spawn")
        try:
            with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
                fut = pool.submit(_safe_call, fn, payload)
                return fut.result(timeout=self.timeout_s)
        except BrokenProcessPool:
            return {"status": "failed", "error": "the worker process died (crash or out of memory)"}
        except TimeoutError:
            return {"status": "failed", "error": f"timed out after {self.timeout_s:.0f} s"}
        except Exception as e:  # payload not picklable etc.
            return {"status": "failed", "error": f"{type(e).__name__}: {e}"[:500]}


def make_executor(kind: str = "process", timeout_s: float | None = None) -> Executor:
    if kind == "inline":
        return InlineExecutor()
    if kind == "process":
        return ProcessExecutor(timeout_s)
    raise ValueError(f"unknown executor {kind!r}")
