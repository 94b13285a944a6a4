"""Fixtures for the device agent: its torch-free environment, a local-command link, and a real
OpenSSH server on 127.0.0.1 with a per-run host key and client key.

`.venv-agent` (onnxruntime, numpy, psutil; no torch, no advisor) is made by
`scripts/install.sh dev`; Debian's `openssh-server` is installed by `.ci/run`. Without either
the tests that need it skip and say why.
"""
from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
AGENT_PYTHON = ROOT / ".venv-agent" / "bin" / "python"
SSHD = Path("/usr/sbin/sshd")


@pytest.fixture(scope="session")
def agent_python() -> Path:
    if not AGENT_PYTHON.is_file():
        pytest.skip(f"{AGENT_PYTHON} is missing: `scripts/install.sh dev` creates it")
    return AGENT_PYTHON


def link_table(argv: list[str], cache: Path, **extra) -> dict:
    return {"command": [str(a) for a in argv], "cache_dir": str(cache), **extra}


def target_toml(path: Path, name: str, table: dict, threads: int | None = 1,
                runtimes=("onnxruntime",), precisions=("fp32", "int8")) -> Path:
    import json
    lines = [f"name = {json.dumps(name)}", f"precisions = {json.dumps(list(precisions))}",
             "sparse_kernels = []"]
    if threads:
        lines.append(f"threads = {threads}")
    lines.append("[device]")
    lines += [f"{k} = {json.dumps(v)}" for k, v in table.items()]
    for rt in runtimes:
        lines += ["[[runtimes]]", f"name = {json.dumps(rt)}"]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def local_link(agent_python, tmp_path):
    """A DeviceLink whose "device" is the agent environment on this host (no ssh)."""
    from advisor.device.link import link_from_table

    return link_from_table(link_table([agent_python], tmp_path / "agent-cache"),
                           lambda f, why: ValueError(f"{f} {why}"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """A running sshd on 127.0.0.1: yields the ssh argv prefix (ending with the destination)."""
    if not SSHD.is_file() or not shutil.which("ssh") or not shutil.which("ssh-keygen"):
        pytest.skip("Debian's openssh-server (sshd, ssh, ssh-keygen) is not installed; "
                    ".ci/run installs it")
    d = tmp_path_factory.mktemp("sshd")
    os.chmod(d, 0o700)
    for key in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)],
                       check=True)
    shutil.copy(d / "client_key.pub", d / "authorized_keys")
    os.chmod(d / "authorized_keys", 0o600)
    port, user = _free_port(), getpass.getuser()
    (d / "sshd_config").write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {d / 'host_key'}",
        f"PidFile {d / 'sshd.pid'}", f"AuthorizedKeysFile {d / 'authorized_keys'}",
        "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no",
        "StrictModes no", "PermitRootLogin prohibit-password", f"AllowUsers {user}",
        "LogLevel ERROR", "MaxStartups 50:30:100", "MaxSessions 50"]) + "\n")
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory
    proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(d / "sshd_config")],
                            stderr=subprocess.PIPE, text=True)
    host_pub = (d / "host_key.pub").read_text().split()
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    argv = ["ssh", "-F", "/dev/null", "-i", str(d / "client_key"), "-p", str(port),
            "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-o", f"UserKnownHostsFile={d / 'known_hosts'}", "-o", "StrictHostKeyChecking=yes",
            "-o", "ConnectTimeout=10", f"{user}@127.0.0.1"]
    deadline = time.time() + 15
    while True:
        if proc.poll() is not None:
            pytest.skip(f"sshd could not start: {proc.stderr.read().strip()[:300]}")
        ok = subprocess.run(argv + ["true"], capture_output=True, text=True, timeout=30)
        if ok.returncode == 0:
            break
        if time.time() > deadline:
            proc.kill()
            pytest.skip(f"sshd started but ssh into it fails: {ok.stderr.strip()[:300]}")
        time.sleep(0.3)
    yield argv
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory) -> Path:
    """A small conv net as single-file ONNX with a dynamic batch (input 1x3x16x16)."""
    import torch
    from torch import nn

    from advisor.export import export_onnx

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                          nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)).eval()
    path = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    export_onnx(model, path, (1, 3, 16, 16))
    return path


@pytest.fixture
def write_target():
    """`write_target(path, name, device_table, threads=1, ...)` → a device target's TOML."""
    return target_toml
