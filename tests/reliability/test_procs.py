"""Children die with their parent; interrupted or timed-out workers are terminated; scratch
directories are removed (stale ones of dead owners by a later run)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from advisor import procs

psutil = pytest.importorskip("psutil")
ROOT = Path(__file__).resolve().parents[2]


def _gone(pid: int, timeout: float = 8.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


_PARENT = textwrap.dedent("""
    import subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", sys.argv[1]])
    print(child.pid, flush=True)
    time.sleep(120)
""")

_CHILD = textwrap.dedent("""
    import time
    from advisor.procs import die_with_parent
    how = die_with_parent(use_prctl={use_prctl})
    assert how == {expect!r}, how
    time.sleep(120)
""")


@pytest.mark.parametrize("use_prctl,expect", [
    pytest.param(True, "prctl", marks=pytest.mark.skipif(not sys.platform.startswith("linux"),
                                                         reason="prctl is Linux-only")),
    (False, "watchdog")])
def test_child_dies_with_killed_parent(use_prctl, expect):
    parent = subprocess.Popen([sys.executable, "-c", _PARENT,
                               _CHILD.format(use_prctl=use_prctl, expect=expect)],
                              stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    child = int(parent.stdout.readline())
    try:
        time.sleep(1.5)  # the child has imported advisor.procs and armed itself
        assert psutil.Process(child).is_running()
        parent.kill()
        parent.wait()
        assert _gone(child), "the child outlived its parent"
    finally:
        for pid in (child,):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_scratch_of_dead_owner_is_removed(tmp_path):
    dead = _dead_pid()
    stale = [tmp_path / f"advisor-{dead}-abc", tmp_path / f"advisor-latency-{dead}-x1",
             tmp_path / f"advisor-profile-{dead}-y2", tmp_path / f"pymp-{dead}-w4"]
    live = [tmp_path / f"advisor-latency-{os.getppid()}-z3", tmp_path / f"advisor-{os.getpid()}-q"]
    other = [tmp_path / "advisor-notapid", tmp_path / f"unrelated-{dead}-x", tmp_path / "pymp-abc"]
    for d in stale + live + other:
        d.mkdir()
        (d / "f.txt").write_text("x")
    removed = procs.remove_stale_scratch(tmp_path)
    assert sorted(removed) == sorted(stale)
    assert all(d.exists() for d in live + other) and not any(d.exists() for d in stale)


def test_scratch_dir_names_its_owner(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    d = procs.scratch_dir("latency")
    assert d.parent == tmp_path and d.name.startswith(f"advisor-latency-{os.getpid()}-")


# ---- the trial executor ----------------------------------------------------------------------

def _pool_pids(parent: int) -> list[int]:
    return [p.pid for p in psutil.Process(parent).children(recursive=True)]


def _wait_children(pred, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        kids = psutil.Process().children(recursive=True)
        if pred(kids):
            return kids
        time.sleep(0.05)
    raise AssertionError("children did not appear")


def _cmd(p) -> str:
    try:
        return " ".join(p.cmdline())
    except psutil.Error:
        return ""


def test_interrupted_trial_worker_and_its_child_are_terminated():
    """Ctrl-C (KeyboardInterrupt in the main thread) during a trial: the spawned worker and the
    process it started are gone when `run` re-raises, not left running."""
    from advisor.executor import ProcessExecutor

    seen = {}

    def interrupt_when_running():
        kids = _wait_children(lambda ks: any("sleep 123" in _cmd(k) for k in ks))
        seen["pids"] = [k.pid for k in kids if "sleep 123" in _cmd(k) or "spawn_main" in _cmd(k)]
        os.kill(os.getpid(), signal.SIGINT)  # a real signal: it wakes a blocked wait

    t = threading.Thread(target=interrupt_when_running, daemon=True)
    t.start()
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        ProcessExecutor().run(subprocess.call, ["sleep", "123"])
    assert time.monotonic() - start < 60
    t.join(5)
    assert seen.get("pids")
    assert all(_gone(pid, 5) for pid in seen["pids"]), "a trial process was left running"


def test_timed_out_trial_is_killed_not_awaited():
    from advisor.executor import ProcessExecutor

    start = time.monotonic()
    res = ProcessExecutor(timeout_s=3).run(time.sleep, 60)
    took = time.monotonic() - start
    assert res["status"] == "failed" and "timed out" in res["error"]
    assert took < 30, f"run() waited {took:.0f} s for the timed-out worker"
    assert not [p for p in psutil.Process().children(recursive=True)
                if "spawn_main" in _cmd(p) and p.status() != psutil.STATUS_ZOMBIE]


# ---- the latency worker ----------------------------------------------------------------------

def test_interrupted_latency_measurement_kills_worker_and_removes_its_dir(tmp_path, monkeypatch):
    """KeyboardInterrupt while a latency worker runs: the worker is killed and the
    advisor-latency-PID-* request directory is removed."""
    import tempfile

    from advisor.measure import latency

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")  # never loaded: the worker is interrupted first
    real_popen = subprocess.Popen
    seen = {}

    def slow_popen(cmd, **kw):  # the real worker command, made to wait long
        seen["request"] = json.loads(Path(cmd[-1]).read_text())
        seen["env"] = kw["env"]
        code = "import time; time.sleep(120)"
        return real_popen([sys.executable, "-c", code], **kw)

    def interrupt():
        kids = _wait_children(lambda ks: any("time.sleep(120)" in _cmd(k) for k in ks))
        seen["pids"] = [k.pid for k in kids if "time.sleep(120)" in _cmd(k)]
        os.kill(os.getpid(), signal.SIGINT)  # a real signal: it wakes a blocked wait

    monkeypatch.setattr(subprocess, "Popen", slow_popen)  # launched by _worker.run_worker_process
    t = threading.Thread(target=interrupt, daemon=True)
    t.start()
    with pytest.raises(KeyboardInterrupt):
        latency._run_worker({"artifact": str(model)}, {}, timeout=300)
    t.join(5)
    assert all(_gone(pid, 5) for pid in seen["pids"])
    assert seen["env"][procs.PARENT_ENV] == str(os.getpid())
    assert not list(tmp_path.glob("advisor-latency-*")), "request directory left behind"


def test_an_interrupt_while_a_child_starts_kills_the_child(monkeypatch):
    """Ctrl-C after the child has exec'd but before Popen() returns (the CI failure of the
    latency-worker test above): the child is killed and the interrupt still arrives. A plain
    subprocess.run leaves that child running, with no handle to it."""
    real_execute = subprocess.Popen._execute_child
    started = []

    def execute_then_interrupt(self, *args, **kw):
        real_execute(self, *args, **kw)
        started.append(self.pid)
        os.kill(os.getpid(), signal.SIGINT)  # handled at the next bytecode, still in __init__

    monkeypatch.setattr(subprocess.Popen, "_execute_child", execute_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        procs.run_child([sys.executable, "-c", "import time; time.sleep(120)"], timeout=300)
    assert started and _gone(started[0], 5), "the child outlived the interrupt"


def test_run_child_returns_output_and_times_out():
    done = procs.run_child([sys.executable, "-c", "import sys; print('out'); "
                            "print('err', file=sys.stderr); sys.exit(3)"], timeout=60)
    assert (done.returncode, done.stdout.strip(), done.stderr.strip()) == (3, "out", "err")
    start = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        procs.run_child([sys.executable, "-c", "import time; time.sleep(120)"], timeout=1)
    assert time.monotonic() - start < 30
    assert not [p for p in psutil.Process().children(recursive=True)
                if "sleep(120)" in _cmd(p) and p.status() != psutil.STATUS_ZOMBIE]
