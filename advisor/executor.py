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
    def run(self, fn: Callable[[Any], dict], payload: Any, timeout_s: float | None = None,
            on_stage: Callable[[str], None] | None = None) -> dict:
        """Run `fn(payload)`; return its dict, or {"status": "failed", "error": ...}. A run
        past `timeout_s` is stopped where the executor can stop it; `on_stage` receives the
        trial's stage lines (`advisor.progress.stage`)."""


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


def _worker_call(fn: Callable[[Any], dict], payload: Any) -> dict:
    """`_safe_call` in the trial worker. An interruption (SIGTERM from the parent, Ctrl-C of the
    process group) unwinds the trial — its `finally` blocks kill its latency worker and remove
    its temporary directories — and then ends this worker at once, instead of the pool keeping
    it waiting for a next task that will not come."""
    try:
        return _safe_call(fn, payload)
    except KeyboardInterrupt as e:
        import os
        import sys
        from multiprocessing import util

        try:
            util._run_finalizers()  # multiprocessing's own clean-up (its temporary directory)
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(128 + int(getattr(e, "signum", 2)))


class InlineExecutor:
    def run(self, fn: Callable[[Any], dict], payload: Any, timeout_s: float | None = None,
            on_stage: Callable[[str], None] | None = None) -> dict:
        from advisor import progress

        with progress.sink(on_stage):  # in this process: a trial cannot be stopped
            return _safe_call(fn, payload)


class ProcessExecutor:
    """One spawned worker per trial. The worker dies with this process (`procs.die_with_parent`:
    PDEATHSIG, or a watchdog thread when `run` is called off the main thread); when `run` is
    interrupted (KeyboardInterrupt, SIGTERM via `procs.install_signal_handlers`) or times out,
    the worker gets SIGTERM — which it takes as KeyboardInterrupt, so its latency worker and
    temporary directories are cleaned up — and SIGKILL after `TERMINATE_GRACE_S`."""

    TERMINATE_GRACE_S = 10.0

    def __init__(self, timeout_s: float | None = None):
        self.timeout_s = timeout_s

    def run(self, fn: Callable[[Any], dict], payload: Any, timeout_s: float | None = None,
            on_stage: Callable[[str], None] | None = None) -> dict:
        import os

        from advisor import progress
        import threading

        from advisor.procs import own_multiprocessing_tempdir, pool_worker_init

        own_multiprocessing_tempdir()  # named pymp-PID-*, not pymp-*: see advisor.procs
        limits = [t for t in (self.timeout_s, timeout_s) if t is not None]
        timeout = min(limits) if limits else None
        ctx = mp.get_context("spawn")
        on_main = threading.current_thread() is threading.main_thread()
        # stage lines come back on a queue the worker inherits at spawn (advisor.progress)
        stages = ctx.Queue() if on_stage is not None else None
        pool = ProcessPoolExecutor(max_workers=1, mp_context=ctx, initializer=pool_worker_init,
                                   initargs=(os.getpid(), on_main, stages))
        try:
            # forwarding ends after the worker exited: its queue is flushed by then
            with progress.forward(stages, on_stage):
                try:
                    fut = pool.submit(_worker_call, fn, payload)
                    return fut.result(timeout=timeout)
                except BaseException:
                    _terminate_workers(pool, self.TERMINATE_GRACE_S)
                    raise
                finally:
                    pool.shutdown(wait=True, cancel_futures=True)
        except BrokenProcessPool:
            return {"status": "failed", "error": "the worker process died (crash or out of memory)"}
        except TimeoutError:
            return {"status": "failed", "error": f"stopped after {timeout:.0f} s: it would have "
                    "run past the time budget" if timeout_s is not None else
                    f"timed out after {timeout:.0f} s"}
        except Exception as e:  # payload not picklable etc.
            return {"status": "failed", "error": f"{type(e).__name__}: {e}"[:500]}


def _terminate_workers(pool: ProcessPoolExecutor, grace_s: float) -> None:
    """SIGTERM the pool's worker processes, wait up to `grace_s`, then SIGKILL."""
    import time

    procs = [p for p in (getattr(pool, "_processes", None) or {}).values() if p.is_alive()]
    for p in procs:
        try:
            p.terminate()
        except (OSError, ValueError):
            pass
    end = time.monotonic() + grace_s
    for p in procs:
        p.join(max(0.0, end - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join(5.0)


def make_executor(kind: str = "process", timeout_s: float | None = None) -> Executor:
    """The local executors; `advisor.executor_ray.RayExecutor` is made by `ray_executor`."""
    if kind == "inline":
        return InlineExecutor()
    if kind == "process":
        return ProcessExecutor(timeout_s)
    from advisor.errors import AdvisorError
    raise AdvisorError(f"unknown executor {kind!r}", "use process, ray or inline")
