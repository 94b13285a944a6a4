"""The agent's cache of uploaded files: content-addressed (sha256), size-capped, owned by the agent.

Layout under the cache directory (default `~/.cache/advisor-agent`, 0700):
`blobs/<sha256>` (complete, verified files) and `tmp/` (uploads in progress, named by the
agent's pid). A file enters `blobs/` only once its size and sha256 match what the host
announced, so a truncated or altered upload is never used. When the cap is exceeded, the files
used least recently go first (never one the current request needs). Paths are built from the
hash alone: a request cannot name a path outside the cache.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from advisor.agent.protocol import MAX_BLOB_BYTES, SHA256


class StoreError(Exception):
    """A request about a stored file that cannot be served (`kind` says how it failed)."""

    def __init__(self, message: str, kind: str = "upload"):
        super().__init__(message)
        self.kind = kind


class Store:
    def __init__(self, root: str | os.PathLike, cap_mb: float):
        self.root = Path(root)
        self.blobs = self.root / "blobs"
        self.tmp = self.root / "tmp"
        for d in (self.root, self.blobs, self.tmp):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.cap_bytes = int(cap_mb * 2 ** 20)
        self._uploads: dict[str, tuple[object, "hashlib._Hash", int, int]] = {}
        self._remove_stale_partials()

    # ---- reading ---------------------------------------------------------------------------

    def has(self, sha: str) -> bool:
        return (self.blobs / _checked(sha)).is_file()

    def path(self, sha: str) -> Path:
        """The stored file of `sha` (its use time refreshed), or StoreError."""
        p = self.blobs / _checked(sha)
        if not p.is_file():
            raise StoreError(f"no uploaded file {sha[:12]}… in the agent's cache", kind="missing")
        os.utime(p)
        return p

    def usage_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.blobs.iterdir() if p.is_file())

    # ---- uploading -------------------------------------------------------------------------

    def put(self, sha: str, size: int, offset: int, data: bytes, last: bool) -> bool:
        """Append one chunk of the upload of `sha`; on the last chunk verify and store it.
        Returns True once the file is stored."""
        sha = _checked(sha)
        if type(size) is not int or not 0 <= size <= MAX_BLOB_BYTES:
            raise StoreError(f"upload size {size!r} is outside 0..{MAX_BLOB_BYTES}")
        if size > self.cap_bytes:
            raise StoreError(f"the file ({size / 2 ** 20:.0f} MB) is larger than the agent's "
                             f"cache cap ({self.cap_bytes / 2 ** 20:.0f} MB)")
        if self.has(sha):
            self._drop_upload(sha)
            return True
        if offset == 0:
            self._drop_upload(sha)
            tmp = self.tmp / f"{sha}.{os.getpid()}.part"
            self._uploads[sha] = (open(tmp, "wb"), hashlib.sha256(), 0, size)
        if sha not in self._uploads:
            raise StoreError(f"upload of {sha[:12]}… continues at byte {offset} but never started")
        f, hasher, written, expected = self._uploads[sha]
        if offset != written or expected != size:
            self._drop_upload(sha)
            raise StoreError(f"upload of {sha[:12]}… is out of order (chunk at byte {offset}, "
                             f"{written} received)")
        if written + len(data) > size:
            self._drop_upload(sha)
            raise StoreError(f"upload of {sha[:12]}… is longer than the announced {size} bytes")
        f.write(data)
        hasher.update(data)
        written += len(data)
        self._uploads[sha] = (f, hasher, written, size)
        if not last:
            return False
        self._drop_upload(sha, keep=True)
        tmp = self.tmp / f"{sha}.{os.getpid()}.part"
        if written != size or hasher.hexdigest() != sha:
            tmp.unlink(missing_ok=True)
            raise StoreError(f"upload of {sha[:12]}… is truncated or corrupt ({written} of {size} "
                             f"bytes, sha256 {hasher.hexdigest()[:12]}…): not stored")
        os.replace(tmp, self.blobs / sha)
        self._evict(keep={sha})
        return True

    def _drop_upload(self, sha: str, keep: bool = False) -> None:
        entry = self._uploads.pop(sha, None)
        if entry is not None:
            entry[0].close()
            if not keep:
                (self.tmp / f"{sha}.{os.getpid()}.part").unlink(missing_ok=True)

    def _evict(self, keep: set[str]) -> None:
        files = sorted((p for p in self.blobs.iterdir() if p.is_file()),
                       key=lambda p: p.stat().st_mtime)
        total = sum(p.stat().st_size for p in files)
        for p in files:
            if total <= self.cap_bytes:
                break
            if p.name not in keep:
                total -= p.stat().st_size
                p.unlink(missing_ok=True)

    def _remove_stale_partials(self) -> None:
        """Uploads left by agents that are gone (a dropped connection, a kill)."""
        for p in self.tmp.iterdir():
            parts = p.name.split(".")
            pid = int(parts[1]) if len(parts) >= 3 and parts[1].isdigit() else 0
            if pid and pid != os.getpid() and _alive(pid):
                continue
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


def _checked(sha: str) -> str:
    if not isinstance(sha, str) or not SHA256.match(sha):
        raise StoreError("a file is named by its sha256 (64 lower-case hex digits)",
                         kind="request")
    return sha


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
