"""A stand-in for the link between host and device that breaks it once, on purpose.

    python fault_proxy.py MODE STATE_DIR -- DEVICE_PYTHON [ARGS...]

runs `DEVICE_PYTHON ARGS...` (the agent, as the link would) and relays its stdin/stdout line by
line. Once per STATE_DIR, at the first candidate measurement (a `measure` request for a file
other than the first one measured, which is the baseline's), it injects MODE:
- drop:     the connection drops while the candidate is being measured (both pipes closed);
- kill:     the agent is killed (SIGKILL) while it measures;
- oom:      the measuring worker on the device is SIGKILLed, as the kernel's OOM killer does;
- truncate: a trial's first upload arrives truncated (its last chunk loses 100 bytes; session 1
            is the analysis's own, which measures the baseline);
- version:  the second session's agent answers hello with protocol 99.
The agent's cache must already hold the pushed agent (the relay is line-based).
Standard library only: it runs in the agent's environment.
"""
from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path


def main() -> int:
    mode, state = sys.argv[1], Path(sys.argv[2])
    argv = sys.argv[sys.argv.index("--") + 1:]
    state.mkdir(parents=True, exist_ok=True)
    session = _count(state / "sessions")
    child = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    out = sys.stdout.buffer

    def fired() -> bool:
        return (state / "fired").exists()

    def fire(what: str) -> None:
        (state / "fired").write_text(what)

    def down() -> None:  # agent → host
        for line in child.stdout:
            if mode == "version" and session == 2 and not fired() and line.startswith(b"{"):
                msg = json.loads(line)
                if "protocol" in msg:
                    msg["protocol"] = 99
                    line = (json.dumps(msg) + "\n").encode()
                    fire("version")
            out.write(line)
            out.flush()
        os._exit(0)

    threading.Thread(target=down, daemon=True).start()
    for line in sys.stdin.buffer:
        msg = json.loads(line)
        op = msg.get("op")
        candidate = False
        if op == "measure":
            art = msg["request"]["artifact"]
            first = state / "baseline"
            if not first.exists():
                first.write_text(art)
            candidate = first.read_text() != art
        if op == "put" and mode == "truncate" and not fired() and session >= 2:
            data = base64.b64decode(msg["data"])
            if msg.get("last"):
                msg["data"] = base64.b64encode(data[:-100]).decode()
                line = (json.dumps(msg) + "\n").encode()
                fire("truncate")
        child.stdin.write(line)
        child.stdin.flush()
        if candidate and not fired() and mode in ("drop", "kill", "oom"):
            fire(mode)
            time.sleep(0.3)
            if mode == "drop":
                child.kill()
                os._exit(255)  # what ssh does when the connection is lost
            if mode == "kill":
                child.send_signal(signal.SIGKILL)
            if mode == "oom":
                _kill_worker(child.pid)
    child.stdin.close()
    child.wait()
    return 0


def _kill_worker(agent_pid: int) -> None:
    """SIGKILL the agent's measuring worker (its child) as soon as it runs."""
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            kids = Path(f"/proc/{agent_pid}/task/{agent_pid}/children").read_text().split()
        except OSError:
            kids = []
        if kids:
            os.kill(int(kids[0]), signal.SIGKILL)
            return
        time.sleep(0.02)


def _count(path: Path) -> int:
    n = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(n))
    return n


if __name__ == "__main__":
    sys.exit(main())
