"""`advisor example` end to end, and user errors through the CLI: exit code 2, one error line
plus a hint, never a traceback."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from advisor.cli import app, main
from advisor.cli.options import ArchOpt, InputShapeOpt, TrustPickleOpt

REPO = Path(__file__).resolve().parents[2]


def _error_lines(err: str) -> list[str]:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err
    assert len(lines) == 2, lines
    assert lines[0].startswith("error: ") and lines[1].startswith("hint: ")
    return lines


def test_example_trains_writes_and_suggests_the_next_command(tmp_path, capsys):
    from advisor.data import load_data
    from advisor.model_io import load_model

    out = tmp_path / "ex"
    assert main(["example", "--out", str(out), "--epochs", "1", "--models", "resnet"]) == 0
    printed = capsys.readouterr().out
    assert f"advisor profile {out / 'resnet.pt2'} --target cpu" in printed
    assert "resnet" in printed and "test acc" in printed
    assert sorted(p.name for p in out.iterdir()) == [
        "digits-test.pt", "digits-train.pt", "digits-val.pt", "resnet.pt2"]
    loaded = load_model(str(out / "resnet.pt2"))
    assert loaded.editable and loaded.input_shape == (1, 3, 32, 32)
    assert 0.0 <= loaded.metadata["accuracy"]["test"] <= 1.0
    x, y = next(iter(load_data(str(out / "digits-val.pt"), batch_size=512,
                               input_shape=loaded.input_shape)))
    with torch.inference_mode():
        acc = (loaded.module(x).argmax(1) == y).float().mean().item()
    assert acc == pytest.approx(loaded.metadata["accuracy"]["val"], abs=1e-6)


def test_example_refuses_to_overwrite_without_force(tmp_path, capsys):
    out = tmp_path / "ex"
    out.mkdir()
    (out / "resnet.pt2").write_bytes(b"precious")
    assert main(["example", "--out", str(out), "--models", "resnet"]) == 2
    error, hint = _error_lines(capsys.readouterr().err)
    assert "resnet.pt2" in error and "--force" in hint
    assert (out / "resnet.pt2").read_bytes() == b"precious"


def test_example_force_allows_overwriting(tmp_path):
    from advisor.cli.example_cmd import _refuse_overwrite

    (tmp_path / "digits-val.pt").write_bytes(b"old")
    _refuse_overwrite(tmp_path, ("resnet",), force=True)  # no error


def test_example_unknown_model(tmp_path, capsys):
    assert main(["example", "--out", str(tmp_path), "--models", "resnet,alexnet"]) == 2
    error, hint = _error_lines(capsys.readouterr().err)
    assert "alexnet" in error and "mobilenet" in hint


def test_python_dash_m_reports_a_user_error_in_one_line(tmp_path):
    not_a_dir = tmp_path / "file.txt"
    not_a_dir.write_text("x")
    proc = subprocess.run([sys.executable, "-m", "advisor", "example", "--out", str(not_a_dir)],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2, proc.stderr
    error, _ = _error_lines(proc.stderr)
    assert "not a directory" in error


@pytest.fixture
def load_command():
    """A throwaway `io-load MODEL` command on the real app, so model_io's errors are seen
    through `advisor.cli.main` exactly as a command that loads a model shows them."""
    import typer

    from advisor.model_io import load_model

    def io_load(model: str = typer.Argument(...), arch: ArchOpt = None,
                input_shape: InputShapeOpt = None, trust_pickle: TrustPickleOpt = False):
        load_model(model, arch=arch, input_shape=input_shape, trust_pickle=trust_pickle)
        print("loaded")

    before = list(app.registered_commands)
    app.command("io-load")(io_load)
    yield
    app.registered_commands[:] = before


@pytest.mark.parametrize("case", ["missing", "empty", "truncated", "png", "pickle",
                                  "state_dict", "no_shape", "bad_shape"])
def test_model_errors_through_the_cli(load_command, artefacts, tmp_path, capsys, case):
    args = {
        "missing": [str(tmp_path / "nope.pt2")],
        "empty": [str(_write(tmp_path / "e.pt2", b""))],
        "truncated": [str(_write(tmp_path / "t.pt2", artefacts["pt2"].read_bytes()[:5000]))],
        "png": [str(_write(tmp_path / "p.pt2", b"\x89PNG\r\n\x1a\n" + bytes(40)))],
        "pickle": [str(artefacts["pickle"]), "--input-shape", "1,3,32,32"],
        "state_dict": [str(artefacts["state_dict"]), "--input-shape", "1,3,32,32"],
        "no_shape": [str(artefacts["torchscript"])],
        "bad_shape": [str(artefacts["torchscript"]), "--input-shape", "1,1,32,32"],
    }[case]
    assert main(["io-load", *args]) == 2
    error, hint = _error_lines(capsys.readouterr().err)
    assert args[0] in error


def test_cli_load_succeeds_for_a_good_model(load_command, artefacts, capsys):
    assert main(["io-load", str(artefacts["pt2"])]) == 0
    assert "loaded" in capsys.readouterr().out


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
