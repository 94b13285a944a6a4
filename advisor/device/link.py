"""`DeviceLink`: how a target's device is reached, from the `[device]` table of its profile.

    [device]
    ssh = "pi@raspberrypi"          # the user's own ssh: config, keys and jump hosts apply
    python = "python3"              # the device's Python (with onnxruntime and numpy)
    # or: command = ["ssh", "-p", "2222", "pi@host", "python3"]   (ends with the Python to run)
    agent = "push"                  # push: advisor copies its agent over (default);
                                    # installed: `pip install advisor` was done on the device
    cache_dir = "~/.cache/advisor-agent"   # on the device
    cache_mb = 2048
    connect_timeout_s = 30
    type = "cpu"                    # what is measured there (CPU only for now)

Nothing here connects; `advisor.device.connection` does.
"""
from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from typing import Any, Callable

from advisor.agent.protocol import DEFAULT_CACHE_MB

KEYS = ("ssh", "command", "python", "agent", "cache_dir", "cache_mb", "connect_timeout_s", "type")
AGENT_MODES = ("push", "installed")


@dataclass(frozen=True)
class DeviceLink:
    """The command that starts Python on the device (`command`), and how the agent gets there."""

    command: tuple[str, ...]
    agent: str = "push"
    cache_dir: str | None = None
    cache_mb: float = DEFAULT_CACHE_MB
    connect_timeout_s: float = 30.0
    ssh_host: str | None = None  # when given as `ssh = HOST`

    @property
    def over_ssh(self) -> bool:
        return os.path.basename(self.command[0]) in ("ssh", "ssh.exe")

    @property
    def label(self) -> str:
        """'pi@raspberrypi' for ssh, else the command line."""
        if self.ssh_host:
            return self.ssh_host
        if self.over_ssh:
            host = _ssh_destination(self.command)
            if host:
                return host
        return shlex.join(self.command)

    def how(self) -> str:
        return "over SSH" if self.over_ssh else "through a local command"

    def try_command(self) -> str:
        """A shell line the user can run to see what fails (for one-line errors)."""
        return shlex.join(self.command) + " -c " + shlex.quote(
            "import onnxruntime, numpy; print('ok')")

    def to_json(self) -> dict[str, Any]:
        return {"command": list(self.command), "agent": self.agent, "label": self.label,
                "transport": "ssh" if self.over_ssh else "command",
                "cache_dir": self.cache_dir, "cache_mb": self.cache_mb}


def link_from_table(table: dict, bad: Callable[[str, str], Exception]) -> DeviceLink:
    """Parse a profile's `[device]` table; `bad(field, why)` builds the error."""
    unknown = sorted(set(table) - set(KEYS))
    if unknown:
        raise bad(f"device.{unknown[0]}", f"is not known (known: {', '.join(KEYS)})")
    kind = table.get("type", "cpu")
    if kind != "cpu":
        raise bad("device.type", f"must be \"cpu\": the agent measures ONNX Runtime on the "
                                 f"device's CPU (got {kind!r})")
    ssh, command = table.get("ssh"), table.get("command")
    if (ssh is None) == (command is None):
        raise bad("device", "needs exactly one of `ssh = \"user@host\"` or `command = [...]`")
    python = table.get("python", "python3")
    if not isinstance(python, str) or not python.strip():
        raise bad("device.python", "must be the device's Python executable (a string)")
    if ssh is not None:
        if not isinstance(ssh, str) or not ssh.strip() or ssh.startswith("-") or \
                any(c.isspace() for c in ssh):
            raise bad("device.ssh", f"must be an SSH destination such as \"pi@raspberrypi\" "
                                    f"(got {ssh!r})")
        timeout = _positive(table, "connect_timeout_s", 30.0, bad)
        argv = ("ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={int(max(1, timeout))}",
                ssh, python)
    else:
        if not isinstance(command, list) or not command or \
                not all(isinstance(c, str) and c for c in command):
            raise bad("device.command", "must be a non-empty list of strings ending with the "
                                        "device's Python, e.g. [\"ssh\", \"-p\", \"2222\", "
                                        "\"pi@host\", \"python3\"]")
        argv = tuple(command)
    agent = table.get("agent", "push")
    if agent not in AGENT_MODES:
        raise bad("device.agent", f"must be one of {', '.join(AGENT_MODES)} (got {agent!r})")
    cache_dir = table.get("cache_dir")
    if cache_dir is not None and (not isinstance(cache_dir, str) or not cache_dir.strip()):
        raise bad("device.cache_dir", "must be a directory on the device (a string)")
    return DeviceLink(command=tuple(argv), agent=agent, cache_dir=cache_dir,
                      cache_mb=_positive(table, "cache_mb", DEFAULT_CACHE_MB, bad),
                      connect_timeout_s=_positive(table, "connect_timeout_s", 30.0, bad),
                      ssh_host=ssh)


def _positive(table: dict, key: str, default: float, bad) -> float:
    value = table.get(key, default)
    if type(value) not in (int, float) or not value > 0:
        raise bad(f"device.{key}", f"must be a positive number (got {value!r})")
    return float(value)


def _ssh_destination(argv: tuple[str, ...]) -> str | None:
    """The destination of an `ssh ... DEST python` command: the first argument that is not an
    option or an option's value."""
    takes_value = set("BbcDEeFIiJLlmOopQRSWw")
    i = 1
    while i < len(argv):
        a = argv[i]
        if a.startswith("-") and len(a) >= 2:
            if a[1] in takes_value and len(a) == 2:
                i += 2
                continue
            i += 1
            continue
        return a
    return None
