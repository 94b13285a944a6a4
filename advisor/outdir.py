"""Output directories that never lose the user's files: lock, stage, commit.

A run that writes into `--out` (`advisor analyze`, `advisor apply`) never writes there directly:

1. **Lock.** `OUT/.advisor.lock` is held with `flock` for the whole run; a second run on the same
   directory fails at once with a one-line error naming the lock and the holder's pid. The kernel
   releases the lock when the holder dies, even by SIGKILL, so a stale lock never blocks anyone.
2. **Guard the inputs.** Every input of the run (model, data, plan, profile) is checked against
   every path the run may replace or remove — the names it writes and the entries the previous
   run's manifest lists — and the run is refused *before any work* when one would be hit
   (`advisor analyze OUT/work/baseline/model.pt2 --out OUT` would otherwise replace its input).
3. **Stage.** All outputs are written into a fresh, uniquely named `OUT/.advisor-staging-*/`;
   scratch space (`OUT/.advisor-scratch-*/`) is removed on every exit path.
4. **Commit.** At the end the staged entries replace the previous ones by `rename`, and entries
   the previous run created but this one did not (a `plan.json` when nothing was chosen this
   time, an `optimized/` of an earlier `--apply`) are removed, so a later `apply --plan` can never
   replay a plan the report does not contain. SIGINT/SIGTERM are deferred during the commit; a
   SIGKILL in it leaves a journal (`OUT/.advisor-commit.json`) that the next run on the directory
   rolls forward before anything else. The manifest (`OUT/.advisor-manifest.json`) records what
   advisor created, so advisor deletes only that — the user's own files in `OUT` are never touched.

An interrupted run therefore leaves `OUT` exactly as the previous run left it (plus a hidden
staging directory after SIGKILL, removed by the next run there). Written by hand: no library
offers a multi-file atomic replace with an input guard; the pieces are POSIX `rename` and `flock`.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from advisor.errors import OutputError
from advisor.fileio import write_text_atomic

__all__ = ["OutputRun", "open_output", "MANIFEST", "LOCK", "JOURNAL", "reject_input_overwrite"]

MANIFEST = ".advisor-manifest.json"
LOCK = ".advisor.lock"
JOURNAL = ".advisor-commit.json"
STAGING_PREFIX = ".advisor-staging-"
SCRATCH_PREFIX = ".advisor-scratch-"
TRASH_PREFIX = ".advisor-trash-"
# names of advisor's outputs before manifests existed (recognised beside an advisor report.json)
_LEGACY_ENTRIES = ("report.md", "report.html", "report.json", "plan.json", "plan-closest.json",
                   "plans", "work", "optimized")


@dataclass
class OutputRun:
    """An open output directory: write into `staging`, use `scratch` for throw-away files, then
    `commit()`. Paths in `staging` map to their final place with `final()`."""

    out: Path
    command: str
    run_id: str
    staging: Path
    scratch: Path
    previous: list[str] = field(default_factory=list)
    committed: bool = False

    def final(self, path: str | os.PathLike) -> Path:
        """Where a staged path lives after the commit (other paths are returned unchanged)."""
        p = Path(path)
        try:
            return self.out / p.relative_to(self.staging)
        except ValueError:
            return p

    def commit(self) -> list[str]:
        """Replace the previous outputs by the staged ones; returns the committed entry names."""
        entries = sorted(p.name for p in self.staging.iterdir())
        stale = [n for n in self.previous if n not in entries]
        journal = {"run_id": self.run_id, "staging": self.staging.name,
                   "trash": f"{TRASH_PREFIX}{self.run_id}", "entries": entries, "stale": stale,
                   "manifest": {"tool": "advisor", "command": self.command,
                                "run_id": self.run_id, "entries": entries,
                                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}}
        with _signals_deferred():
            write_text_atomic(self.out / JOURNAL, json.dumps(journal, indent=2))
            _roll_forward(self.out, journal)
        self.committed = True
        return entries


@contextlib.contextmanager
def open_output(out: str | os.PathLike, *, command: str, inputs: Iterable = (),
                writes: Iterable[str] = ()) -> Iterator[OutputRun]:
    """Lock `out`, check that no input would be replaced, and yield an `OutputRun`.

    `writes`: the top-level names the run may create (checked against `inputs` up front).
    Staging is removed unless committed; scratch always; the lock is released on every exit.
    """
    out = Path(out).expanduser()
    _make_dir(out)
    lock_fd = _lock(out)
    run = None
    try:
        _recover(out)
        previous = _previous_entries(out)
        reject_input_overwrite(out, inputs, set(previous) | set(writes))
        run_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:8]
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out))
        scratch = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=out))
        run = OutputRun(out, command, run_id, staging, scratch, previous)
        yield run
    finally:
        if run is not None:
            shutil.rmtree(run.scratch, ignore_errors=True)
            if not run.committed:
                shutil.rmtree(run.staging, ignore_errors=True)
        _unlock(out, lock_fd)


def reject_input_overwrite(out: Path, inputs: Iterable, names: Iterable[str]) -> None:
    """Raise OutputError when an input file is, or lies inside, `out/<name>` for any name."""
    targets = [(n, _resolved(out / n)) for n in names]
    for item in inputs:
        if item is None or not isinstance(item, (str, os.PathLike)):
            continue
        p = Path(item).expanduser()
        if not p.exists():
            continue  # a pkg.module:function spec, or a name the run checks itself
        src = _resolved(p)
        for name, dst in targets:
            if src == dst or dst in src.parents:
                raise OutputError(
                    f"the input {item} is inside {out / name}, which this run writes or replaces",
                    "copy the input elsewhere first, or choose another --out")


# ---- the steps ------------------------------------------------------------------------------

def _make_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} is a file, not a directory", "choose a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(prefix=".advisor-probe-", dir=out)
        probe.close()
    except OSError as e:
        raise OutputError(f"--out {out} cannot be written: {e.strerror or e}",
                          "choose a writable directory") from e


def _lock(out: Path) -> int:
    import fcntl

    path = out / LOCK
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise OutputError(f"cannot lock {path}: {e.strerror}", "choose another --out")
            holder = _read_pid(path)
            raise OutputError(f"another advisor run{f' (pid {holder})' if holder else ''} is "
                              f"writing to {out} (lock {path})",
                              "wait for it to finish, or choose another --out") from None
        # the previous holder may have unlinked the file between our open and flock: retry
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)


def _unlock(out: Path, fd: int) -> None:
    with contextlib.suppress(OSError):
        os.unlink(out / LOCK)  # unlinked while held: a waiter re-checks the inode (see _lock)
    os.close(fd)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip() or 0) or None
    except (OSError, ValueError):
        return None


def _recover(out: Path) -> None:
    """Finish a commit that a SIGKILL cut short, then remove staging/scratch/trash directories
    of runs that died (we hold the lock: no other run is using them)."""
    journal_path = out / JOURNAL
    if journal_path.exists():
        try:
            journal = json.loads(journal_path.read_text())
        except (OSError, json.JSONDecodeError):
            journal = None
        if isinstance(journal, dict) and (out / journal.get("staging", "?")).is_dir():
            _roll_forward(out, journal)
        else:  # torn journal: its commit never started (the journal is written atomically)
            journal_path.unlink(missing_ok=True)
    for p in out.iterdir():
        if p.is_dir() and p.name.startswith((STAGING_PREFIX, SCRATCH_PREFIX, TRASH_PREFIX)):
            shutil.rmtree(p, ignore_errors=True)


def _roll_forward(out: Path, journal: dict) -> None:
    """Idempotent: each move checks where the entry is, so a second pass completes the first."""
    staging, trash = out / journal["staging"], out / journal["trash"]
    trash.mkdir(exist_ok=True)
    for name in journal["entries"]:
        if (staging / name).exists():
            if os.path.lexists(out / name):
                _move_to_trash(out / name, trash)
            os.rename(staging / name, out / name)
    for name in journal["stale"]:
        if os.path.lexists(out / name) and name not in journal["entries"]:
            _move_to_trash(out / name, trash)
    write_text_atomic(out / MANIFEST, json.dumps(journal["manifest"], indent=2))
    (out / JOURNAL).unlink(missing_ok=True)
    shutil.rmtree(trash, ignore_errors=True)
    shutil.rmtree(staging, ignore_errors=True)


def _move_to_trash(path: Path, trash: Path) -> None:
    dst = trash / path.name
    if os.path.lexists(dst):
        dst = trash / f"{path.name}.{uuid.uuid4().hex[:6]}"
    os.rename(path, dst)


def _previous_entries(out: Path) -> list[str]:
    """Top-level names an earlier advisor run created in `out` (its manifest; for outputs from
    before manifests, the standard names when an advisor report.json sits beside them)."""
    manifest = out / MANIFEST
    if manifest.exists():
        try:
            data = json.loads(manifest.read_text())
            names = data.get("entries", []) if isinstance(data, dict) else []
            return [n for n in names if isinstance(n, str) and _plain_name(n)]
        except (OSError, json.JSONDecodeError):
            return []
    try:
        report = json.loads((out / "report.json").read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return []
    if isinstance(report, dict) and (report.get("tool") or {}).get("name") == "advisor":
        return [n for n in _LEGACY_ENTRIES if os.path.lexists(out / n)]
    return []


def _plain_name(name: str) -> bool:
    """A manifest is a file in the user's directory: only plain names are acted upon."""
    return name not in ("", ".", "..") and "/" not in name and "\\" not in name and \
        not name.startswith(".advisor")


def _resolved(p: Path) -> Path:
    try:
        return p.resolve()
    except OSError:
        return p.absolute()


@contextlib.contextmanager
def _signals_deferred():
    """Hold SIGINT/SIGTERM until the block is done, then deliver them (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in old:
        signal.signal(s, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        for s in pending[:1]:
            os.kill(os.getpid(), s)
