"""Processes and signals: children that die with their parent, SIGTERM handled like Ctrl-C,
scratch directories that do not outlive the run.

- `install_signal_handlers()` (the CLI calls it): SIGINT and SIGTERM raise `Interrupted` (a
  `KeyboardInterrupt`), so `finally` blocks and context managers run; `received_signal()` tells
  which signal it was (the CLI exits 128 + signal number: 130 for SIGINT, 143 for SIGTERM).
  (`advisor.outdir` holds both signals while it commits an output directory.)
- `die_with_parent(ppid)` (first thing in every worker process): Linux `prctl(PR_SET_PDEATHSIG,
  SIGKILL)`, plus a watchdog thread polling the parent's pid where prctl is unavailable or
  the parent asked for the watchdog only. PDEATHSIG fires when the *thread* that started the
  child exits, so a parent starting a child from a thread other than its main thread asks for
  the watchdog only (`child_env()` says which).
- `start_child(argv, ...)` / `run_child(argv, timeout=...)`: `subprocess.Popen` / `.run` that
  hold SIGINT and SIGTERM while the child starts. A Ctrl-C that lands after the child has
  exec'd but before `Popen()` returns would otherwise leave a running child that nobody holds
  a handle to (subprocess.run's kill-on-interrupt needs that handle); held, it kills the child
  and is then delivered as usual.
- `scratch_dir(kind)`: a temporary directory named `advisor-[KIND-]PID-XXXX` (PID: the process
  that owns it); `remove_stale_scratch()` (the CLI calls it at start) deletes such directories
  whose owner is dead — what a `kill -9` leaves behind.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

__all__ = ["Interrupted", "install_signal_handlers", "restore_signal_handlers", "received_signal", "exit_code_for",
           "die_with_parent", "child_env", "pool_worker_init", "own_multiprocessing_tempdir", "scratch_dir",
           "remove_stale_scratch", "PARENT_ENV", "start_child", "run_child"]

PARENT_ENV = "ADVISOR_PARENT_PID"  # pid the child must die with
DEATHSIG_ENV = "ADVISOR_PDEATHSIG"  # "0": the parent started us from a non-main thread
PR_SET_PDEATHSIG = 1
WATCHDOG_INTERVAL_S = 0.5


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; `signum` says which."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(int(signum))  # args stay (signum,): the exception pickles

    @property
    def signum(self) -> int:
        return int(self.args[0])

    def __str__(self) -> str:
        return signal.Signals(self.signum).name


# ---- signals in the main process ------------------------------------------------------------

_state: dict[str, Any] = {"signal": None}


def received_signal() -> int | None:
    """The first SIGINT/SIGTERM received since `install_signal_handlers()`, else None."""
    return _state["signal"]


def exit_code_for(signum: int) -> int:
    return 128 + int(signum)


def install_signal_handlers() -> dict:
    """SIGINT and SIGTERM raise `Interrupted` in the main thread (no-op off the main thread);
    returns the previous handlers, for `restore_signal_handlers`."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    _state["signal"] = None
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, _handler)
    return previous


def restore_signal_handlers(previous: dict) -> None:
    for sig, handler in previous.items():
        if handler is not None:
            signal.signal(sig, handler)


def _handler(signum, frame) -> None:
    if _state["signal"] is None:
        _state["signal"] = signum
    raise Interrupted(signum)


# ---- children --------------------------------------------------------------------------------

def child_env() -> dict[str, str]:
    """Environment variables for a worker started now by this thread (see `die_with_parent`)."""
    main = threading.current_thread() is threading.main_thread()
    return {PARENT_ENV: str(os.getpid()), DEATHSIG_ENV: "1" if main else "0"}


def _prctl_deathsig(sig: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def die_with_parent(ppid: int | None = None, *, use_prctl: bool | None = None,
                    on_orphan: Callable[[], None] | None = None) -> str:
    """Make this process die when `ppid` (default: $ADVISOR_PARENT_PID, else the current
    parent) dies. Returns "prctl", "watchdog" or "none" (no parent to watch)."""
    if ppid is None:
        ppid = int(os.environ.get(PARENT_ENV) or 0) or os.getppid()
    if use_prctl is None:
        use_prctl = os.environ.get(DEATHSIG_ENV, "1") != "0"
    how = "watchdog"
    if use_prctl and _prctl_deathsig(signal.SIGKILL):
        how = "prctl"
    if os.getppid() != ppid:  # the parent died before prctl took effect
        _die(on_orphan)
    if how == "watchdog":
        t = threading.Thread(target=_watch, args=(ppid, on_orphan), name="advisor-watchdog",
                             daemon=True)
        t.start()
    return how


def _watch(ppid: int, on_orphan) -> None:
    while True:
        time.sleep(WATCHDOG_INTERVAL_S)
        if os.getppid() != ppid:  # re-parented: the parent is gone
            _die(on_orphan)


def _die(on_orphan) -> None:
    if on_orphan is not None:
        with contextlib.suppress(BaseException):
            on_orphan()
    os._exit(1)


def pool_worker_init(ppid: int, use_prctl: bool = True, stages=None) -> None:
    """`ProcessPoolExecutor(initializer=...)` of the trial worker: die with the parent, and
    take SIGTERM (sent by the parent on an interruption) as KeyboardInterrupt, so the trial's
    own cleanup (its latency worker, its temporary directories) runs; stage lines go to
    `stages` (advisor.progress)."""
    from advisor import progress

    progress.install_queue(stages)
    die_with_parent(ppid, use_prctl=use_prctl)
    signal.signal(signal.SIGTERM, _child_term)
    own_multiprocessing_tempdir()


def own_multiprocessing_tempdir() -> Path:
    """Give multiprocessing's per-process temporary directory (where torch's tensor sharing
    puts its listener sockets) an owner: `pymp-PID-*` instead of an anonymous `pymp-*`, so
    that `remove_stale_scratch` can delete it after a `kill -9`. Removed at exit as before.
    (Short on purpose: a socket path in it must stay under 108 bytes.)"""
    from multiprocessing import process, util

    config = process.current_process()._config
    if config.get("tempdir") is None:
        path = Path(tempfile.mkdtemp(prefix=f"pymp-{os.getpid()}-"))
        util.Finalize(None, shutil.rmtree, args=(str(path), True), exitpriority=-100)
        config["tempdir"] = str(path)
    return Path(config["tempdir"])


def _child_term(signum, frame) -> None:
    raise Interrupted(signum)


# ---- starting children -----------------------------------------------------------------------

_HELD = (signal.SIGINT, signal.SIGTERM)


def start_child(argv, **popen_kw):
    """`subprocess.Popen(argv, **popen_kw)`, with SIGINT/SIGTERM held while it starts (in the
    main thread; elsewhere signals are not delivered to this code anyway). A signal that
    arrives meanwhile kills the new child, then goes to the previous handler as usual."""
    import subprocess

    if threading.current_thread() is not threading.main_thread() or \
            any(signal.getsignal(sig) is None for sig in _HELD):  # a handler Python cannot restore
        return subprocess.Popen(argv, **popen_kw)
    held: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: held.append(signum)) for sig in _HELD}
    try:
        proc = subprocess.Popen(argv, **popen_kw)
    except BaseException:
        restore_signal_handlers(previous)
        _redeliver(held)
        raise
    restore_signal_handlers(previous)
    if held:
        with contextlib.suppress(OSError):
            proc.kill()
        proc.wait()
        for f in (proc.stdin, proc.stdout, proc.stderr):
            if f is not None:
                f.close()
        _redeliver(held)
    return proc


def _redeliver(held: list[int]) -> None:
    for signum in dict.fromkeys(held):
        signal.raise_signal(signum)  # runs the restored handler: KeyboardInterrupt, Interrupted


def run_child(argv, *, timeout: float | None = None, **popen_kw):
    """`subprocess.run(argv, capture_output=True, text=True, timeout=...)` through
    `start_child`: the child is killed and reaped on a timeout (re-raised as
    `subprocess.TimeoutExpired`) and on any exception, KeyboardInterrupt included."""
    import subprocess

    proc = start_child(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       **popen_kw)
    with proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except BaseException:
            with contextlib.suppress(OSError):
                proc.kill()
            with contextlib.suppress(BaseException):
                proc.communicate(timeout=10)  # reaps it; a second Ctrl-C does not stop the kill
            raise
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


# ---- scratch directories ---------------------------------------------------------------------

_SCRATCH = re.compile(r"^(?:advisor-(?:[a-z]+-)?|pymp-)(\d+)-[^/]+$")


def scratch_dir(kind: str = "") -> Path:
    """A new temporary directory `advisor-[KIND-]PID-XXXX`; the caller removes it (in a
    `finally`), `remove_stale_scratch` does once this process is dead."""
    return Path(tempfile.mkdtemp(prefix=f"advisor-{kind + '-' if kind else ''}{os.getpid()}-"))


def _alive(pid: int, since: float) -> bool:
    """Is `pid` a live process that may have created something at time `since`?"""
    try:
        import psutil
    except ImportError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:
        p = psutil.Process(pid)
        # a recycled pid: that process started after the directory was last touched
        return p.status() != psutil.STATUS_ZOMBIE and p.create_time() <= since + 1.0
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:  # AccessDenied and the like: leave it alone
        return True


def remove_stale_scratch(tmpdir: str | os.PathLike | None = None) -> list[Path]:
    """Delete `advisor-[KIND-]PID-*` (and our `pymp-PID-*`) directories in the temporary
    directory whose owner process is dead (left by `kill -9` or a crash); only this user's.
    Returns what was removed."""
    root = Path(tmpdir or tempfile.gettempdir())
    removed: list[Path] = []
    try:
        entries = list(os.scandir(root))
    except OSError:
        return removed
    uid = os.getuid() if hasattr(os, "getuid") else None
    for e in entries:
        m = _SCRATCH.match(e.name)
        if not m:
            continue
        try:
            st = e.stat(follow_symlinks=False)
            if not e.is_dir(follow_symlinks=False) or (uid is not None and st.st_uid != uid):
                continue
        except OSError:
            continue
        pid = int(m.group(1))
        if pid == os.getpid() or _alive(pid, st.st_mtime):
            continue
        shutil.rmtree(e.path, ignore_errors=True)
        removed.append(Path(e.path))
    return removed
