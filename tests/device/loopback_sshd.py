"""An OpenSSH server on 127.0.0.1 for one run: per-run host key and client key, key login only,
nothing but this user. Used by the device tests (conftest.py) and `benchmarks/device.py`.
Standard library only."""
from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

SSHD = Path("/usr/sbin/sshd")


class SshdUnavailable(Exception):
    """sshd is not installed or cannot start here; the message says why."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_sshd(d: Path) -> tuple[list[str], subprocess.Popen]:
    """Start sshd with its files in `d`; returns (the ssh argv prefix ending with the
    destination, the sshd process). Raises SshdUnavailable."""
    if not SSHD.is_file() or not shutil.which("ssh") or not shutil.which("ssh-keygen"):
        raise SshdUnavailable("Debian's openssh-server (sshd, ssh, ssh-keygen) is not "
                              "installed; .ci/run installs it")
    d.mkdir(parents=True, exist_ok=True)
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
            raise SshdUnavailable(f"sshd could not start: {proc.stderr.read().strip()[:300]}")
        ok = subprocess.run(argv + ["true"], capture_output=True, text=True, timeout=30)
        if ok.returncode == 0:
            return argv, proc
        if time.time() > deadline:
            proc.kill()
            raise SshdUnavailable(f"sshd started but ssh into it fails: {ok.stderr.strip()[:300]}")
        time.sleep(0.3)


def stop_sshd(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
