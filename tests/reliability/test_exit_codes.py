"""Exit status of the CLI: every typer.Exit code, Ctrl-C (130 + "interrupted"), SIGTERM (143)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import typer

from advisor.cli import app, main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def command():
    """Register a throw-away command on the app for one test."""
    added = []

    def register(name, fn):
        app.command(name)(fn)
        added.append(app.registered_commands[-1])

    yield register
    for c in added:
        app.registered_commands.remove(c)


@pytest.mark.parametrize("code", [0, 1, 3, 7, 42])
def test_typer_exit_code_is_returned(command, code):
    def boom() -> None:
        raise typer.Exit(code)

    command("boom-exit", boom)
    assert main(["boom-exit"]) == code


def test_keyboard_interrupt_is_130_with_message(command, capsys):
    def ctrl_c() -> None:
        raise KeyboardInterrupt

    command("boom-int", ctrl_c)
    assert main(["boom-int"]) == 130
    assert "interrupted" in capsys.readouterr().err


def test_main_restores_signal_handlers(command):
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    command("noop", lambda: None)
    assert main(["noop"]) == 0
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


_SCRIPT = textwrap.dedent("""
    import os, signal, sys, time
    import typer
    from advisor.cli import app, run

    @app.command("exit")
    def exit_(code: int) -> None:
        raise typer.Exit(code)

    @app.command("wait")
    def wait() -> None:
        print("ready", flush=True)
        time.sleep(60)

    sys.argv = ["advisor", *sys.argv[1:]]
    run()
""")


def _script(tmp_path: Path) -> list[str]:
    path = tmp_path / "cli.py"
    path.write_text(_SCRIPT)
    return [sys.executable, str(path)]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


@pytest.mark.parametrize("code", [0, 4, 130])
def test_exit_code_reaches_the_shell(tmp_path, code):
    proc = subprocess.run(_script(tmp_path) + ["exit", str(code)], capture_output=True,
                          text=True, env=_env(), timeout=60)
    assert proc.returncode == code, proc.stderr


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_exit_status(tmp_path, sig, code):
    proc = subprocess.Popen(_script(tmp_path) + ["wait"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env())
    try:
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == code, err
    assert "interrupted" in err and "Traceback" not in err
