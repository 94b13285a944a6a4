"""One agent session per device link and process, over the link's command (usually `ssh`).

`connection(link)` returns the live session or starts one: launch the agent (`bundle.launch_argv`:
pushed on first use), say hello, refuse a different protocol version. `call(op, ...)` sends one
request and waits for its answer with a timeout. A failure of the session itself (the connection
dropped, the agent was killed, an answer out of protocol, a timeout) kills the local process,
marks the session dead and raises `DeviceError`; the next `connection(link)` starts a fresh
agent, so one failed trial does not take the rest of the analysis with it. An error the agent
reports for one request (a refused model, a truncated upload) leaves the session alive.

Files are uploaded once per device: content-addressed by sha256, `has` first, then `put` in
chunks; the agent keeps them in its cache across sessions.
"""
from __future__ import annotations

import atexit
import base64
import hashlib
import os
import queue
import subprocess
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from advisor import procs
from advisor.agent.protocol import (CHUNK_BYTES, MAX_LINE_BYTES, PROTOCOL, ProtocolError,
                                    decode, encode)
from advisor.device.bundle import agent_archive, launch_argv
from advisor.device.link import DeviceLink
from advisor.errors import AdvisorError

PUT_TIMEOUT_S = 120.0


class DeviceError(AdvisorError):
    """The device could not answer: `kind` is "connect", "connection", "protocol", "timeout",
    or the kind the agent reported ("refused", "upload", "memory", "unsupported", ...)."""

    def __init__(self, message: str, hint: str | None = None, kind: str = "connection"):
        super().__init__(message, hint)
        self.kind = kind


class AgentConnection:
    def __init__(self, link: DeviceLink):
        self.link = link
        self.dead: str | None = None
        self._next_id = 0
        self._uploaded: set[str] = set()
        self._fingerprint: dict | None = None
        self._stderr: deque[str] = deque(maxlen=20)
        self._lines: queue.Queue = queue.Queue()
        self.round_trips = 0
        t0 = time.perf_counter()
        try:
            self.proc = procs.start_child(launch_argv(link), stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except OSError as e:
            raise DeviceError(f"cannot start {link.command[0]!r} to reach the device "
                              f"{link.label}: {e}", kind="connect") from e
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        try:
            self._handshake()
            self.hello = self.call("hello", timeout=link.connect_timeout_s)
        except DeviceError as e:
            self.close()
            if e.kind in ("connection", "timeout"):
                e.kind = "connect"
            raise
        if self.hello.get("protocol") != PROTOCOL:
            self.close()
            raise DeviceError(f"the agent on {link.label} speaks protocol "
                              f"{self.hello.get('protocol')!r}, this advisor speaks {PROTOCOL}",
                              "install the same advisor version on the device, or use "
                              "agent = \"push\" in the target's [device] table", kind="protocol")
        self.connect_seconds = time.perf_counter() - t0

    # ---- the session -----------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return self.dead is None and self.proc.poll() is None

    def call(self, op: str, timeout: float = 60.0, **fields: Any) -> dict:
        """Send one request, return the agent's answer (raises DeviceError on failure)."""
        if self.dead:
            raise DeviceError(self.dead)
        self._next_id += 1
        rid = self._next_id
        try:
            self.proc.stdin.write(encode({"v": PROTOCOL, "id": rid, "op": op, **fields}))
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            self._fail("connection", "the connection to the device closed")
        line = self._next_line(timeout, op)
        try:
            answer = decode(line)
        except ProtocolError as e:
            self._fail("protocol", f"the device answered out of protocol ({e})")
        if answer.get("id") != rid:
            self._fail("protocol", f"the device answered request {answer.get('id')!r}, "
                                   f"expected {rid}")
        self.round_trips += 1
        if not answer.get("ok"):
            kind = str(answer.get("kind") or "error")
            if kind == "protocol":
                self._fail("protocol", f"the agent refused the request: {answer.get('error')}")
            raise DeviceError(f"the device: {answer.get('error')}", kind=kind)
        return answer

    def fingerprint(self) -> dict:
        if self._fingerprint is None:
            self._fingerprint = self.call("fingerprint", timeout=60)["fingerprint"]
        return self._fingerprint

    def ensure_file(self, path: str | os.PathLike) -> str:
        """Upload `path` unless the device has it; returns its sha256."""
        return self._ensure(_file_sha(Path(path)), lambda: Path(path).read_bytes())

    def ensure_bytes(self, data: bytes) -> str:
        return self._ensure(hashlib.sha256(data).hexdigest(), lambda: data)

    def _ensure(self, sha: str, read) -> str:
        if sha in self._uploaded:
            return sha
        if sha not in self.call("has", blobs=[sha])["have"]:
            data = read()
            if not data:
                self.call("put", timeout=PUT_TIMEOUT_S, sha256=sha, size=0, offset=0, data="",
                          last=True)
            for offset in range(0, len(data), CHUNK_BYTES):
                chunk = data[offset:offset + CHUNK_BYTES]
                self.call("put", timeout=PUT_TIMEOUT_S, sha256=sha, size=len(data),
                          offset=offset, data=base64.b64encode(chunk).decode(),
                          last=offset + len(chunk) >= len(data))
        self._uploaded.add(sha)
        return sha

    def close(self) -> None:
        if self.proc.poll() is None:
            if self.dead is None:
                try:
                    self.proc.stdin.write(encode({"v": PROTOCOL, "id": 0, "op": "bye"}))
                    self.proc.stdin.flush()
                    self.proc.stdin.close()
                    self.proc.wait(timeout=5)
                except (OSError, ValueError, subprocess.TimeoutExpired):
                    pass
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self.dead = self.dead or "the session with the device was closed"

    # ---- internals -------------------------------------------------------------------------

    def _handshake(self) -> None:
        if self.link.agent != "push":
            return
        line = self._next_line(self.link.connect_timeout_s, "connect")
        word = line.strip()
        if word == b"NEED":
            try:
                self.proc.stdin.write(agent_archive())
                self.proc.stdin.flush()
            except (BrokenPipeError, OSError):
                self._fail("connect", "the connection closed while the agent was pushed")
        elif word != b"HAVE":
            self._fail("connect", f"unexpected output from the device: {word[:80]!r}")

    def _next_line(self, timeout: float, what: str) -> bytes:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            self._fail("timeout", f"the device did not answer {what!r} within {timeout:.0f} s")
        if line is None:
            self._fail("connection", "the connection to the device closed")
        if line.strip() == b"BAD":
            self._fail("connect", "the agent's archive arrived corrupt on the device")
        return line

    def _fail(self, kind: str, message: str):
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        time.sleep(0.05)  # let the stderr reader catch the last lines
        detail = "; ".join(s for s in self._stderr if s.strip())[-300:]
        text = f"{message} ({self.link.label}"
        text += f", {self.link.command[0]} exited with {code}" if code not in (None, -9) else ""
        text += f": {detail})" if detail else ")"
        self.dead = text
        raise DeviceError(text, kind=kind)

    def _read_stdout(self) -> None:
        out = self.proc.stdout
        while True:
            line = out.readline(MAX_LINE_BYTES + 1)
            if not line:
                self._lines.put(None)
                return
            self._lines.put(line)

    def _read_stderr(self) -> None:
        for raw in self.proc.stderr:
            self._stderr.append(raw.decode(errors="replace").rstrip())


_sha_cache: dict[tuple[str, int, int], str] = {}


def _file_sha(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _sha_cache:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(2 ** 20), b""):
                h.update(block)
        _sha_cache[key] = h.hexdigest()
    return _sha_cache[key]


_live: dict[DeviceLink, AgentConnection] = {}
_lock = threading.Lock()


def connection(link: DeviceLink) -> AgentConnection:
    """The live session with `link`'s device in this process, started if there is none."""
    with _lock:
        conn = _live.get(link)
        if conn is None or not conn.alive:
            conn = _live[link] = AgentConnection(link)
        return conn


def forget(link: DeviceLink) -> None:
    """Close the session with `link` (the next `connection` starts a fresh agent)."""
    with _lock:
        conn = _live.pop(link, None)
    if conn is not None:
        conn.close()


@atexit.register
def close_all() -> None:
    for link in list(_live):
        forget(link)


def closes_sessions(fn):
    """Decorate an entry point (`analyze`, `profile`, `apply_plan`): the device sessions it
    opened in this process end with it (a notebook or a test runs many in one process)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        finally:
            close_all()
    return wrapper
