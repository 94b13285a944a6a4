"""The agent as one file: a `.pyz` zip archive of the torch-free modules it runs, pushed to the
device through the same command that starts Python there (as Ansible pushes its modules), so
the user installs nothing on the device but onnxruntime and numpy.

`launch_argv(link)` is what runs on the device: a short bootstrap (`python3 -c ...`) that looks
for `agent-<sha256>.pyz` in the agent's cache directory, asks for it on stdout when missing
("NEED"), reads exactly its bytes from stdin, checks their sha256, stores it atomically, and
then runs the agent from it on the same stdin/stdout. A cached archive answers "HAVE" and costs
nothing more. With `agent = "installed"` the device's own `python -m advisor.agent` is run.
"""
from __future__ import annotations

import base64
import functools
import hashlib
import io
import shlex
import zipfile
from pathlib import Path

from advisor.device.link import DeviceLink

_ROOT = Path(__file__).resolve().parents[1]
# everything the agent imports; `tests/device` proves none of it imports torch
AGENT_FILES = ("__init__.py", "procs.py", "agent/__init__.py", "agent/__main__.py",
               "agent/protocol.py", "agent/store.py", "agent/onnx_check.py", "agent/server.py",
               "measure/__init__.py", "measure/_worker.py", "measure/memory.py",
               "measure/host.py", "measure/ort_profile.py")
_MAIN = b"import sys\nfrom advisor.agent.server import main\nsys.exit(main(sys.argv[1:]))\n"

_BOOTSTRAP = """\
import hashlib, os, sys
h, n, d = {sha!r}, {size}, os.path.expanduser({cache!r})
p = os.path.join(d, "agent-" + h + ".pyz")
out = sys.stdout.buffer
if not os.path.isfile(p):
    out.write(b"NEED\\n"); out.flush()
    b = sys.stdin.buffer.read(n)
    if len(b) != n or hashlib.sha256(b).hexdigest() != h:
        out.write(b"BAD\\n"); out.flush(); sys.exit(3)
    os.makedirs(d, mode=0o700, exist_ok=True)
    t = p + ".%d" % os.getpid()
    with open(t, "wb") as f:
        f.write(b)
    os.replace(t, p)
else:
    out.write(b"HAVE\\n"); out.flush()
sys.path.insert(0, p)
sys.argv = [p, "--stdio", "--cache", d, "--cache-mb", {cache_mb!r}]
import runpy
runpy.run_module("advisor.agent", run_name="__main__", alter_sys=True)
"""


@functools.lru_cache(maxsize=1)
def agent_archive() -> bytes:
    """The .pyz bytes; deterministic (fixed timestamps), so its hash names the code it holds."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(zipfile.ZipInfo("__main__.py", (2020, 1, 1, 0, 0, 0)), _MAIN)
        for rel in AGENT_FILES:
            info = zipfile.ZipInfo("advisor/" + rel, (2020, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, (_ROOT / rel).read_bytes())
    return buf.getvalue()


def agent_sha() -> str:
    return hashlib.sha256(agent_archive()).hexdigest()


def launch_argv(link: DeviceLink) -> list[str]:
    """The argv that starts the agent on the device. Over ssh the arguments after the
    destination are one remote shell line, so they are quoted for that shell; a plain command
    gets them as they are."""
    cache = link.cache_dir or "~/.cache/advisor-agent"
    if link.agent == "installed":
        args = ["-m", "advisor.agent", "--stdio", "--cache-mb", str(link.cache_mb)]
        if link.cache_dir:
            args += ["--cache", cache]
    else:
        code = _BOOTSTRAP.format(sha=agent_sha(), size=len(agent_archive()), cache=cache,
                                 cache_mb=str(link.cache_mb))
        # base64 keeps it one token with no quotes or newlines for any shell on the way
        payload = base64.b64encode(code.encode()).decode()
        args = ["-c", f"import base64;exec(base64.b64decode('{payload}'))"]
    if link.over_ssh:
        args = [shlex.quote(a) for a in args]
    return list(link.command) + args
