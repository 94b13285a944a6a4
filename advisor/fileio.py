"""Atomic output writing and guards that keep the user's input files untouched."""
from __future__ import annotations

import contextlib
import gzip
import json
import shutil
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, protect: tuple[Path, ...] = ()) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it into place (atomic on POSIX).

    `protect`: input files that must never be overwritten (raises if `path` is one of them).
    """
    path = Path(path)
    for p in protect:
        if p is not None and Path(p).exists() and path.exists() and \
                os.path.samefile(p, path):
            from advisor.errors import AdvisorError
            raise AdvisorError(f"refusing to overwrite the input file {p}",
                               "choose another output path")
    path.parent.mkdir(parents=True, exist_ok=True)
    # keep the real suffix last: some writers (torch.export.save) insist on it
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.tmp-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():  # mkstemp creates 0600: give the file the usual umask mode
            os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any):
    import dataclasses

    if dataclasses.is_dataclass(o):
        return dataclasses.asdict(o)
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, read in 1 MiB chunks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def gzip_copy(src: str | os.PathLike, dst: str | os.PathLike | None = None) -> Path:
    """Write `src` gzip-compressed (level 9) to `dst` (default `src` + ".gz"), atomically.

    How sparse models ship: dense runtimes load dense weights, so the zeros shrink only in the
    stored/downloaded file; `gunzip` (or Python's gzip) restores the loadable model."""
    src = Path(src)
    dst = Path(dst) if dst is not None else src.with_name(src.name + ".gz")
    with atomic_path(dst, protect=(src,)) as tmp:
        with open(src, "rb") as fin, gzip.GzipFile(tmp, "wb", compresslevel=9, mtime=0) as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
    return dst


# ---- up-front writability checks (before any expensive work) --------------------------------

def check_writable_dir(path: str | os.PathLike, what: str = "--out") -> Path:
    """Refuse, before any work, an output directory that cannot be created or written.

    `path` may not exist yet: then its nearest existing ancestor must be a writable directory.
    The check creates (and removes) a temporary file, so a read-only mount, /proc or an
    ancestor that is a regular file fail here even for root. Raises OutputError."""
    from advisor.errors import OutputError

    path = Path(path).expanduser()
    hint = "choose a directory you can write to"
    if path.exists() and not path.is_dir():
        raise OutputError(f"{what} {path} exists and is not a directory", hint)
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise OutputError(f"{what} {path} cannot be created: {probe} is a file, not a "
                           "directory", hint)
    _probe_write(probe, path, what, hint)
    return path


def check_writable_file(path: str | os.PathLike, what: str = "--json") -> Path:
    """Refuse, before any work, an output file that cannot be written (atomically, beside it):
    a directory, or a file in a directory that cannot be created or written."""
    from advisor.errors import OutputError

    path = Path(path).expanduser()
    if path.is_dir():
        raise OutputError(f"{what} {path} is a directory", "give a file path, e.g. out.json")
    check_writable_dir(path.parent if str(path.parent) else Path("."), what=f"{what} {path}: "
                       "the directory")
    return path


def _probe_write(existing_dir: Path, target: Path, what: str, hint: str) -> None:
    from advisor.errors import OutputError

    try:
        fd, tmp = tempfile.mkstemp(prefix=".advisor-write-check-", dir=existing_dir)
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise OutputError(f"{what} {target} is not writable: cannot create a file in "
                        f"{existing_dir} ({reason})", hint) from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(tmp)
