"""Trials on a Ray cluster: a real `ray start --head` on 127.0.0.1 (not only `ray.init` in this
process), advertising `target:cpu`; the ResNet example's search chooses as with the process
executor; measurements of the target never overlap; a trial whose worker dies fails alone."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from advisor.cli import main

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'advisor[ray]')")
FAST = ["--target", "cpu", "--max-drop", "1%", "--retrain", "none", "--max-trials", "3",
        "--repeats", "30"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    exe = Path(sys.executable).with_name("ray")
    if not exe.is_file():
        pytest.skip(f"no `ray` command beside {sys.executable}")
    temp = Path(f"/tmp/advisor-ray-{os.getpid()}")  # Ray's sockets need a short path
    port = _port()
    # a loopback test cluster without token auth: Ray 2.60 turns it on for `ray start` when a
    # ~/.ray/auth_token exists (any earlier local `ray.init()` writes one), and this test's
    # client would then be refused
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    start = subprocess.run([str(exe), "start", "--head", "--node-ip-address", "127.0.0.1",
                            "--port", str(port), "--num-cpus", "2",
                            "--resources", json.dumps({"target:cpu": 1}),
                            "--include-dashboard", "false", "--temp-dir", str(temp),
                            "--disable-usage-stats"], capture_output=True, text=True, env=env,
                           timeout=180)
    if start.returncode != 0:
        pytest.skip(f"ray start failed: {start.stderr.strip()[-300:]}")
    mode = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"  # the client as the cluster
    yield f"127.0.0.1:{port}"
    if mode is None:
        os.environ.pop("RAY_AUTH_MODE", None)
    else:
        os.environ["RAY_AUTH_MODE"] = mode
    if ray.is_initialized():
        ray.shutdown()
    subprocess.run([str(exe), "stop", "--force"], capture_output=True, timeout=120, env=env)
    shutil.rmtree(temp, ignore_errors=True)


def _analyze(example_dir, out, *extra) -> dict:
    rc = main(["analyze", str(example_dir / "resnet.pt2"), *FAST,
               "--data", str(example_dir / "digits-val.pt"),
               "--test-data", str(example_dir / "digits-test.pt"), "--no-cache",
               "--out", str(out), *extra])
    assert rc == 0
    return json.loads((out / "report.json").read_text())


def test_the_search_on_ray_chooses_as_the_process_executor(cluster, example_dir, tmp_path):
    on_ray = _analyze(example_dir, tmp_path / "ray", "--executor", "ray", "--ray-address",
                      cluster)
    local = _analyze(example_dir, tmp_path / "local")
    assert on_ray["chosen"]["name"] == local["chosen"]["name"]
    ok = [c for c in on_ray["candidates"] if c["status"] == "ok"]
    assert ok and all(c["ran_on"]["prepare"]["ip"] and c["ran_on"]["measure"]["ip"] for c in ok)
    spans = sorted((c["ran_on"]["measure"]["start"], c["ran_on"]["measure"]["end"]) for c in ok)
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:]))
    # trials in flight side by side (2 CPUs: two prepare tasks at once, int8 and Tucker in
    # their own lanes) ...
    prepares = [(c["ran_on"]["prepare"]["start"], c["ran_on"]["prepare"]["end"]) for c in ok]
    assert any(a[0] < b[1] and b[0] < a[1] for i, a in enumerate(prepares)
               for b in prepares[i + 1:]), prepares
    # ... but a measurement holds the whole node: nothing else runs beside it
    assert not any(m[0] < p[1] and p[0] < m[1] for m in spans for p in prepares)
    assert all(c["stage_seconds"]["prepare"] > 0 and c["stage_seconds"]["measure"] > 0
               for c in ok)


def _die(payload):
    os._exit(3)


def _fine(payload):
    return {"status": "ok", "value": payload}


def test_a_trial_whose_worker_dies_fails_and_the_next_runs(cluster):
    from advisor.executor_ray import RayExecutor

    # this module is not importable on the workers: send its functions by value
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ex = RayExecutor("cpu", cluster)
    dead = ex.run(_die, 1)
    assert dead["status"] == "failed" and "Ray worker died" in dead["error"]
    assert ex.run(_fine, 2)["value"] == 2


def test_a_cluster_without_the_target_is_one_line(cluster):
    from advisor.executor_ray import RayExecutor, RayUnavailable

    with pytest.raises(RayUnavailable, match="target:edge-arm"):
        RayExecutor("edge-arm", cluster)


def test_an_unreachable_cluster_fails_at_once_before_the_baseline(example_dir, capsys):
    """Ray's client retries an absent cluster for minutes: advisor checks the address first,
    before any measurement."""
    import time

    port = _port()  # free: nothing listens there
    t0 = time.perf_counter()
    rc = main(["analyze", str(example_dir / "resnet.pt2"), "--target", "cpu", "--executor",
               "ray", "--ray-address", f"127.0.0.1:{port}", "--no-cache"])
    err = capsys.readouterr().err
    assert rc == 2 and f"cannot reach the Ray cluster at 127.0.0.1:{port}" in err, err
    assert "Traceback" not in err and "baseline" not in err
    assert time.perf_counter() - t0 < 20
