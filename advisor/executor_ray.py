"""Trials on a Ray cluster (`--executor ray [--ray-address ADDR]`, `pip install advisor[ray]`).

Why Ray and not a scheduler of our own: placement by resources, worker failure detection,
cancellation and a cluster launcher are what Ray does; advisor only says what each stage needs.
A trial runs as two Ray tasks:
- prepare (`advisor.trial.prepare_trial`: transform, train, export) on any worker, asking for a
  GPU when the target's device is a GPU and the cluster has one;
- measure (`advisor.trial.finish_trial`: latency, paired speed-up, evaluation) on a node that
  advertises the custom resource `target:<name>`, one unit per task, so that only one
  measurement runs per device at a time (two on one box skew each other's latency), while
  several nodes that each own a device of the target measure in parallel.
A node advertises the targets it can measure when it joins:
`ray start --address HEAD:6379 --resources '{"target:cpu": 1}'`. Without `--ray-address` a
local Ray instance is started with `target:<name>` = 1.

Artefacts move through a shared directory, not the object store: the trial's work directory
(under `--out`, or a temporary directory) must be visible at the same path on every node (one
machine, or NFS): ONNX files and checkpoints can be hundreds of MB, and the measuring node reads
them by path like the local worker does. A trial whose Ray worker dies (a crash, the OOM killer)
is recorded as failed with the reason and the search goes on; Ctrl-C cancels the outstanding
tasks. Each result says where its stages ran (`ran_on`: node, seconds, waiting for a device).
"""
from __future__ import annotations

import contextlib
import os
import threading
import time
from typing import Any, Callable

from advisor.errors import AdvisorError


class RayUnavailable(AdvisorError):
    """Ray is not installed, or the cluster cannot run advisor's trials."""


def _node() -> dict[str, Any]:
    import ray

    ctx = ray.get_runtime_context()
    return {"node_id": ctx.get_node_id(), "ip": ray.util.get_node_ip_address(),
            "pid": os.getpid()}


def _prepare_task(payload) -> dict:
    from advisor.executor import _safe_call
    from advisor.trial import prepare_trial

    t0 = time.time()
    prep = _safe_call(lambda p: {"status": "ok", "prep": prepare_trial(p)}, payload)
    prep["ran_on"] = {**_node(), "start": t0, "end": time.time()}
    return prep


def _prepare_cpus(payload) -> int:
    """The CPUs a trial's prepare task asks for: none when its plan trains with several
    data-parallel workers, since it then mostly waits for its Ray Train workers
    (`advisor.train_workers_ray`), which hold one CPU each; holding one itself would leave them
    pending forever on a cluster with just as many CPUs as workers."""
    workers = ((getattr(payload, "plan", None) or {}).get("training") or {}).get("workers", 1)
    return 0 if workers > 1 else 1


def _measure_task(payload, prep: dict) -> dict:
    from advisor.executor import _safe_call
    from advisor.trial import finish_trial

    t0 = time.time()
    out = _safe_call(lambda p: finish_trial(p, prep), payload)
    out["ran_on"] = {**_node(), "start": t0, "end": time.time()}
    return out


def _whole_task(fn, payload) -> dict:
    from advisor.executor import _safe_call

    t0 = time.time()
    out = _safe_call(fn, payload)
    if isinstance(out, dict):
        out["ran_on"] = {**_node(), "start": t0, "end": time.time()}
    return out


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """A `HOST:PORT` that refuses or does not answer a TCP connection is a one-line error now:
    Ray's own client retries an absent GCS for minutes."""
    import socket

    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "://" in address:
        return  # "auto", ray://...: Ray's to resolve
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise RayUnavailable(f"cannot reach the Ray cluster at {address}: "
                             f"{e.strerror or type(e).__name__}",
                             "start it with `ray start --head --port PORT` there, or check "
                             "--ray-address") from e


def ray_executor(target, address: str | None = None) -> "RayExecutor":
    """The Ray executor for `target` (its `target:<name>` resource; a GPU for a cuda target)."""
    return RayExecutor(getattr(target, "name", "cpu"), address,
                       gpu=getattr(target, "device", "cpu") == "cuda")


class RayExecutor:
    """`Executor` on Ray (see the module docstring)."""

    def __init__(self, target_name: str, address: str | None = None, gpu: bool = False):
        try:
            import ray
        except ImportError as e:
            raise RayUnavailable("--executor ray needs Ray", "pip install 'advisor[ray]'") from e
        self.ray = ray
        self.resource = f"target:{target_name}"
        if address:  # also when this process is connected already (a notebook)
            _check_reachable(address)
        if not ray.is_initialized():
            if address:
                try:
                    ray.init(address=address, logging_level="ERROR", log_to_driver=False)
                except (ConnectionError, RuntimeError, ray.exceptions.RayError) as e:
                    raise RayUnavailable(
                        f"cannot connect to the Ray cluster at {address}: "
                        f"{str(e).splitlines()[0][:200]}",
                        "is `ray start --head` running there? A cluster started where "
                        "~/.ray/auth_token exists uses token authentication (Ray 2.60): "
                        "connect with RAY_AUTH_MODE=token") from e
            else:
                ray.init(resources={self.resource: 1}, include_dashboard=False,
                         logging_level="ERROR", log_to_driver=False)
        have = ray.cluster_resources()
        if have.get(self.resource, 0) < 1:
            raise RayUnavailable(
                f"no node of the Ray cluster{' at ' + address if address else ''} advertises "
                f"the resource {self.resource!r}, so no trial could be measured",
                f"start the node that owns the device with ray start --resources "
                f"'{{\"{self.resource}\": 1}}'")
        self.gpu = gpu and have.get("GPU", 0) >= 1
        # a measurement holds as many CPUs as the smallest node that measures has, so that no
        # other trial's training shares a box with it (on one machine: it runs alone); a node
        # started with --num-cpus 0 only measures
        measuring = [n.get("Resources", {}) for n in ray.nodes()
                     if n.get("Alive") and n.get("Resources", {}).get(self.resource, 0) >= 1]
        self.measure_cpus = min((r.get("CPU", 0.0) for r in measuring), default=0.0)
        # trials in flight at once (`advisor.search.run_search`): one transform/train task per
        # CPU of the cluster, measurements queued one per device
        self.parallelism = max(1, int(have.get("CPU", 1)))
        self._live: set = set()  # the tasks of every trial in flight (`cancel_all`)
        self._live_lock = threading.Lock()

    def cancel_all(self) -> None:
        """Cancel every task still running for any trial (Ctrl-C while trials run side by side:
        the trials' threads are not the one the interruption reached)."""
        with self._live_lock:
            refs = list(self._live)
        self._cancel(refs)

    def _cancel(self, refs) -> None:
        for ref in refs:
            with contextlib.suppress(Exception):  # already finished or gone
                self.ray.cancel(ref, force=True)

    def run(self, fn: Callable[[Any], dict], payload: Any, timeout_s: float | None = None,
            on_stage: Callable[[str], None] | None = None) -> dict:
        from advisor.trial import run_trial

        ray = self.ray
        deadline = None if timeout_s is None else time.time() + timeout_s
        refs: list = []
        try:
            if fn is not run_trial:  # anything else: one task anywhere
                refs.append(self._track(
                    ray.remote(_whole_task).options(max_retries=0).remote(fn, payload)))
                return self._get(refs[-1], deadline)
            cpus = _prepare_cpus(payload)
            prepare = ray.remote(_prepare_task).options(
                max_retries=0, num_cpus=cpus,
                # with Ray Train workers, they hold the GPUs (as the CPUs: `_prepare_cpus`)
                num_gpus=1 if self.gpu and cpus else 0)
            refs.append(self._track(prepare.remote(payload)))
            if on_stage:
                on_stage("transform, train and export (Ray task)")
            prep = self._get(refs[-1], deadline)
            if prep.get("status") != "ok":
                return prep
            queued = time.time()
            measure = ray.remote(_measure_task).options(
                max_retries=0, num_cpus=self.measure_cpus, resources={self.resource: 1})
            refs.append(self._track(measure.remote(payload, prep["prep"])))
            if on_stage:
                on_stage(f"measure on a node with {self.resource} (Ray task)")
            out = self._get(refs[-1], deadline)
            ran = out.get("ran_on") or {}
            waited = round(max(0.0, ran.get("start", queued) - queued), 3)
            out["ran_on"] = {"prepare": prep.get("ran_on"), "measure": ran,
                             "waited_for_device_s": waited}
            if prep["prep"].get("train_devices"):
                out["ran_on"]["train"] = prep["prep"]["train_devices"]
            if isinstance(out.get("stage_seconds"), dict):
                out["stage_seconds"]["waiting_for_device"] = waited
            return out
        except BaseException:
            self._cancel(refs)  # Ctrl-C, SIGTERM: nothing keeps running on the cluster
            raise
        finally:
            with self._live_lock:
                self._live.difference_update(refs)

    def _track(self, ref):
        with self._live_lock:
            self._live.add(ref)
        return ref

    def _get(self, ref, deadline: float | None) -> dict:
        ray = self.ray
        try:
            return ray.get(ref, timeout=None if deadline is None else
                           max(1.0, deadline - time.time()))
        except ray.exceptions.GetTimeoutError:
            ray.cancel(ref, force=True)
            return {"status": "failed", "error": "stopped: it would have run past the time "
                                                 "budget"}
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                ray.exceptions.OutOfMemoryError) as e:
            first = next((ln for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
            return {"status": "failed", "error": f"the Ray worker died ({type(e).__name__}: "
                                                 f"{first[:300]})"}
        except ray.exceptions.RayTaskError as e:
            first = next((ln for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
            return {"status": "failed", "error": f"the Ray task failed: {first[:300]}"}
