"""The agent's wire protocol: one JSON object per line, each way, one request at a time.

Host → agent: `{"v": PROTOCOL, "id": N, "op": NAME, ...fields}`.
Agent → host: `{"id": N, "ok": true, ...}` or `{"id": N, "ok": false, "kind": K, "error": TEXT}`.

Files go up in `put` requests of at most `CHUNK_BYTES` (base64), content-addressed by sha256; a
line longer than `MAX_LINE_BYTES` is refused and ends the session (the stream cannot be re-synced).
Why JSON lines over stdin/stdout: it runs over the user's own `ssh` (config, keys, jump hosts)
and needs no port, no server, and nothing but the standard library on the device.
"""
from __future__ import annotations

import json
import re
from typing import Any

PROTOCOL = 1
MAX_LINE_BYTES = 8 * 2 ** 20  # a request or response line, base64 included
CHUNK_BYTES = 2 ** 20  # raw bytes per put (1.33 MiB once base64-encoded)
MAX_BLOB_BYTES = 4 * 2 ** 30  # one uploaded file
DEFAULT_CACHE_MB = 2048  # what the agent keeps on the device (oldest used files go first)
SHA256 = re.compile(r"^[0-9a-f]{64}$")
OPS = ("hello", "fingerprint", "has", "put", "measure", "run", "profile", "bye")


class ProtocolError(Exception):
    """A message that breaks the protocol (too long, not JSON, not an object)."""


def encode(message: dict[str, Any]) -> bytes:
    line = json.dumps(message, separators=(",", ":"), allow_nan=False).encode() + b"\n"
    if len(line) > MAX_LINE_BYTES:
        raise ProtocolError(f"message of {len(line)} bytes exceeds the {MAX_LINE_BYTES}-byte cap")
    return line


def decode(line: bytes) -> dict[str, Any]:
    if len(line) > MAX_LINE_BYTES:
        raise ProtocolError(f"message exceeds the {MAX_LINE_BYTES}-byte cap")
    try:
        message = json.loads(line)
    except (ValueError, UnicodeDecodeError) as e:
        raise ProtocolError(f"not a JSON message ({type(e).__name__})") from e
    if not isinstance(message, dict):
        raise ProtocolError("a message must be a JSON object")
    return message
