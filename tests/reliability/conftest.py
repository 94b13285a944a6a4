"""Fault injection: run `advisor` as a subprocess with its own TMPDIR, watch its process tree,
signal it at a chosen stage, and count what is left (processes, temporary directories, files).

The model is a small seeded MLP saved as .pt2 (a few seconds to analyse per stage), measured
with `--repeats 5`; one complete run into `--out` gives the "previous outputs" every interrupted
run is compared with.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

psutil = pytest.importorskip("psutil")

ROOT = Path(__file__).resolve().parents[2]
ANALYZE_FAST = ["--target", "cpu", "--max-drop", "5%", "--max-trials", "1", "--repeats", "5",
                "--budget", "2m"]
WORKER_MARK = "advisor.measure._worker"
SPAWN_MARK = "multiprocessing"


@pytest.fixture(scope="session")
def small_model(tmp_path_factory) -> Path:
    import torch

    from advisor.examples.models import mlp
    from advisor.export import save_pt2

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "mlp.pt2"
    save_pt2(mlp(hidden=(256,)).eval(), path, (1, 3, 32, 32),
             {"arch": "advisor.examples.models:mlp", "arch_kwargs": {"hidden": [256]}, "num_classes": 10})
    return path


def advisor_env(tmpdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADVISOR_")}
    # each run its own trial cache, beside TMPDIR (whose leftovers are counted): a run that
    # found its trials cached would never reach the stage a test interrupts
    env["ADVISOR_CACHE_DIR"] = str(tmpdir.parent / f"{tmpdir.name}-trial-cache")
    env.update(TMPDIR=str(tmpdir), PYTHONPATH=os.pathsep.join(
        p for p in (str(ROOT), env.get("PYTHONPATH")) if p), COLUMNS="140",
        PYTHONUNBUFFERED="1")
    return env


class Run:
    """`python -m advisor ARGS` in a new session, its output collected, its process tree
    (every pid ever seen under it) tracked by a polling thread."""

    def __init__(self, args: list[str], tmpdir: Path, cwd: Path):
        tmpdir.mkdir(parents=True, exist_ok=True)
        self.tmpdir = tmpdir
        self.proc = subprocess.Popen([sys.executable, "-m", "advisor", *args], cwd=cwd,
                                     env=advisor_env(tmpdir), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.pids: dict[int, tuple[float, str]] = {}  # pid -> (create_time, cmdline)
        self.tree: list[tuple[int, int, str]] = []  # latest (pid, ppid, cmdline) under the root
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._stop = False
        self.sent_at: float | None = None
        self.exit_seconds: float | None = None
        self._threads = [threading.Thread(target=self._read, args=(self.proc.stdout, self.stdout),
                                          daemon=True),
                         threading.Thread(target=self._read, args=(self.proc.stderr, self.stderr),
                                          daemon=True),
                         threading.Thread(target=self._poll, daemon=True)]
        for t in self._threads:
            t.start()

    @staticmethod
    def _read(stream, sink: list[str]) -> None:
        for line in stream:
            sink.append(line)

    def _poll(self) -> None:
        try:
            root = psutil.Process(self.proc.pid)
        except psutil.NoSuchProcess:
            return
        while not self._stop and self.proc.poll() is None:
            tree = []
            try:
                kids = root.children(recursive=True)
            except psutil.Error:
                break
            for p in kids:
                try:
                    info = (p.pid, p.ppid(), " ".join(p.cmdline()))
                    self.pids.setdefault(p.pid, (p.create_time(), info[2]))
                    tree.append(info)
                except psutil.Error:
                    continue
            self.tree = tree
            time.sleep(0.02)

    def wait_for(self, predicate, timeout: float, what: str) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate(self):
                return
            if self.proc.poll() is not None:
                pytest.fail(f"advisor exited ({self.proc.returncode}) before {what}:\n"
                            + self.output())
            time.sleep(0.02)
        self.kill()
        pytest.fail(f"timed out waiting for {what}:\n" + self.output())

    def send(self, sig: int, group: bool = False) -> None:
        """Signal advisor, or its whole process group (what Ctrl-C in a terminal does)."""
        self.sent_at = time.monotonic()
        if group:
            os.killpg(self.proc.pid, sig)  # start_new_session: the group is advisor's pid
        else:
            self.proc.send_signal(sig)

    def finish(self, timeout: float = 90) -> int:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail("advisor did not exit after the signal:\n" + self.output())
        self.exit_seconds = time.monotonic() - self.sent_at if self.sent_at else None
        self._stop = True
        for t in self._threads:
            t.join(5)
        return rc

    def kill(self) -> None:
        for pid in [self.proc.pid, *self.pids]:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    def output(self) -> str:
        return "".join(self.stdout)[-3000:] + "\n--- stderr ---\n" + "".join(self.stderr)[-5000:]

    def survivors(self, grace: float = 3.0) -> list[str]:
        """Processes of the run still alive `grace` seconds from now (pid reuse excluded)."""
        end = time.monotonic() + grace
        while True:
            alive = []
            for pid, (created, cmd) in self.pids.items():
                try:
                    p = psutil.Process(pid)
                    if abs(p.create_time() - created) < 0.5 and \
                            p.status() != psutil.STATUS_ZOMBIE:
                        alive.append(f"{pid}: {cmd[:160]}")
                except psutil.Error:
                    continue
            if not alive or time.monotonic() > end:
                return alive
            time.sleep(0.2)


# ---- stage predicates (from the process tree and the progress output) ----------------------

def in_baseline(run: Run) -> bool:
    """The baseline is being timed: a latency worker whose parent is advisor itself."""
    return any(WORKER_MARK in cmd and ppid == run.proc.pid for _, ppid, cmd in run.tree)


def in_trial(run: Run) -> bool:
    """A trial is measuring: a latency worker under the spawned trial worker."""
    spawned = {pid for pid, ppid, cmd in run.tree if ppid == run.proc.pid and SPAWN_MARK in cmd}
    return any(WORKER_MARK in cmd and ppid in spawned for _, ppid, cmd in run.tree)


_REPORT = re.compile(r"\]\s+(report|confirming on the held-out split)\b")


def in_report(run: Run) -> bool:
    """The search is over and the report is being made (the stage line on stderr)."""
    return any(_REPORT.search(line) for line in run.stderr)


STAGES = {"baseline": in_baseline, "trial": in_trial, "report": in_report}


# ---- outputs ---------------------------------------------------------------------------------

def snapshot(out: Path) -> dict[str, str]:
    """sha256 of every visible file under `out` (hidden advisor bookkeeping excluded)."""
    files = {}
    for p in sorted(out.rglob("*")):
        rel = p.relative_to(out)
        if p.is_file() and not any(part.startswith(".") for part in rel.parts):
            files[str(rel)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return files


@pytest.fixture(scope="session")
def previous_out(small_model, tmp_path_factory):
    """A complete `analyze --out` (the outputs an interrupted run must leave intact)."""
    base = tmp_path_factory.mktemp("previous")
    out = base / "out"
    run = Run(["analyze", str(small_model), *ANALYZE_FAST, "--out", str(out)], base / "tmp",
              base)
    rc = run.finish(timeout=240)
    assert rc == 0, run.output()
    assert (out / "report.json").is_file()
    return out


def copy_out(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


@pytest.fixture(scope="session")
def harness():
    """The helpers above, for the test modules (--import-mode=importlib: no `import conftest`)."""
    from types import SimpleNamespace

    return SimpleNamespace(Run=Run, STAGES=STAGES, snapshot=snapshot, copy_out=copy_out,
                           ANALYZE_FAST=ANALYZE_FAST, in_baseline=in_baseline)
