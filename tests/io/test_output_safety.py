"""The user's files are never destroyed: locked, staged and committed output directories
(advisor.outdir) and the commands that write into them (analyze, apply, profile --json)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from advisor.cli import main
from advisor.errors import OutputError
from advisor.outdir import JOURNAL, LOCK, MANIFEST, open_output


def _commit(out, files: dict[str, str], command="analyze"):
    with open_output(out, command=command) as run:
        for name, text in files.items():
            (run.staging / name).parent.mkdir(parents=True, exist_ok=True)
            (run.staging / name).write_text(text)
        run.commit()
    return run


def _hidden(out):
    return sorted(p.name for p in out.iterdir() if p.name.startswith(".advisor")
                  and p.name != MANIFEST)


# ---- advisor.outdir ---------------------------------------------------------------------------

def test_commit_replaces_previous_outputs_and_removes_only_advisors_stale_ones(tmp_path):
    out = tmp_path / "out"
    _commit(out, {"report.json": "v1", "plan.json": "plan v1", "work/trial1/m.onnx": "x"})
    (out / "notes.txt").write_text("mine")  # the user's own file in the output directory
    _commit(out, {"report.json": "v2"})  # this run chose nothing: no plan.json
    assert (out / "report.json").read_text() == "v2"
    assert not (out / "plan.json").exists(), "a stale plan.json would be replayed by apply"
    assert not (out / "work").exists()
    assert (out / "notes.txt").read_text() == "mine"
    assert json.loads((out / MANIFEST).read_text())["entries"] == ["report.json"]
    assert _hidden(out) == []  # no lock, staging, scratch or journal left


def test_failed_run_leaves_the_previous_outputs_untouched(tmp_path):
    out = tmp_path / "out"
    _commit(out, {"report.json": "v1", "plan.json": "p1"})
    with pytest.raises(RuntimeError):
        with open_output(out, command="analyze") as run:
            (run.staging / "report.json").write_text("half")
            raise RuntimeError("the search crashed")
    assert (out / "report.json").read_text() == "v1" and (out / "plan.json").read_text() == "p1"
    assert _hidden(out) == []


def test_second_run_on_the_same_out_fails_at_once_naming_the_lock(tmp_path):
    out = tmp_path / "out"
    with open_output(out, command="analyze"):
        with pytest.raises(OutputError, match=rf"another advisor run \(pid {os.getpid()}\).*"
                                              rf"{LOCK}"):
            with open_output(out, command="analyze"):
                pass
    with open_output(out, command="analyze"):  # released on exit
        pass


def test_lock_of_a_killed_run_does_not_block(tmp_path):
    out = tmp_path / "out"
    code = ("import sys, time; from advisor.outdir import open_output\n"
            f"with open_output({str(out)!r}, command='analyze'):\n"
            "    print('locked', flush=True); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(OutputError, match=f"pid {proc.pid}"):
            with open_output(out, command="analyze"):
                pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with open_output(out, command="analyze") as run:  # the kernel released the dead holder's lock
        (run.staging / "report.json").write_text("new")
        run.commit()
    assert (out / "report.json").read_text() == "new"
    assert _hidden(out) == []  # the dead run's staging and scratch were cleaned up


def test_commit_cut_short_by_sigkill_is_rolled_forward_by_the_next_run(tmp_path, monkeypatch):
    out = tmp_path / "out"
    _commit(out, {"report.json": "v1", "plan.json": "p1", "plans/a.json": "a"})
    import advisor.outdir as outdir

    real_rename, calls = os.rename, {"n": 0}

    def dying_rename(src, dst):  # the process "dies" after three renames of the commit
        calls["n"] += 1
        if calls["n"] > 3:
            raise SystemExit("killed")
        real_rename(src, dst)

    monkeypatch.setattr(outdir.os, "rename", dying_rename)
    with pytest.raises(SystemExit):
        with open_output(out, command="analyze") as run:
            for name in ("report.json", "plan.json"):
                (run.staging / name).write_text(name.replace(".json", " v2"))
            (run.staging / "plans").mkdir()
            (run.staging / "plans" / "b.json").write_text("b")
            run.committed = True  # as after a SIGKILL: nothing cleans up
            run.commit()
    monkeypatch.setattr(outdir.os, "rename", real_rename)
    assert (out / JOURNAL).exists()
    with open_output(out, command="analyze"):
        pass  # opening the directory completes the interrupted commit first
    assert (out / "report.json").read_text() == "report v2"
    assert (out / "plan.json").read_text() == "plan v2"
    assert sorted(p.name for p in (out / "plans").iterdir()) == ["b.json"]
    assert _hidden(out) == []


def test_input_inside_an_entry_the_run_replaces_is_refused_up_front(tmp_path):
    out = tmp_path / "out"
    _commit(out, {"work/baseline/model.pt2": "the user's only copy"})
    model = out / "work" / "baseline" / "model.pt2"
    with pytest.raises(OutputError, match="inside .*work"):
        with open_output(out, command="analyze", inputs=[model]):
            pytest.fail("the run must not start")
    assert model.read_text() == "the user's only copy"


def test_out_that_is_a_file_or_unwritable_is_refused(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        with open_output(f, command="analyze"):
            pass
    with pytest.raises(OutputError, match="cannot be written"):
        with open_output(f / "sub", command="analyze"):
            pass
    with pytest.raises(OutputError, match="cannot be written"):
        with open_output("/proc/advisor-out", command="analyze"):
            pass
    assert f.read_text() == "x"


def test_manifest_cannot_make_advisor_delete_outside_names(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    (out / "keep.txt").write_text("keep")
    (out / MANIFEST).write_text(json.dumps({"entries": ["../victim.txt", "/etc", ".", ".."]}))
    _commit(out, {"report.json": "r"})
    assert victim.read_text() == "keep" and (out / "keep.txt").read_text() == "keep"


# ---- the commands -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mlp_model(tmp_path_factory):
    from advisor.examples.models import mlp
    from advisor.export import save_pt2

    d = tmp_path_factory.mktemp("mlp")
    path = d / "mlp.pt2"
    save_pt2(mlp().eval(), path, (1, 3, 32, 32), {"arch": "advisor.examples.models:mlp"})
    return path


def _fingerprint(path):
    return path.read_bytes()


def test_profile_json_onto_the_input_model_is_refused(mlp_model, capsys):
    before = _fingerprint(mlp_model)
    rc = main(["profile", str(mlp_model), "--json", str(mlp_model), "--repeats", "3"])
    assert rc == 2
    assert "input" in capsys.readouterr().err
    assert _fingerprint(mlp_model) == before


def test_analyze_of_a_model_inside_its_own_out_is_refused(mlp_model, tmp_path, capsys):
    out = tmp_path / "out"
    inner = out / "work" / "baseline" / "model.pt2"
    inner.parent.mkdir(parents=True)
    inner.write_bytes(mlp_model.read_bytes())
    start = time.perf_counter()
    rc = main(["analyze", str(inner), "--out", str(out), "--repeats", "3"])
    assert rc == 2 and "inside" in capsys.readouterr().err
    assert time.perf_counter() - start < 20  # refused before the baseline was measured
    assert inner.read_bytes() == mlp_model.read_bytes()


def _int8_plan(tmp_path):
    from advisor.decide.plan import Plan, Step

    plan = Plan(name="int8 dynamic", steps=[Step("int8_dynamic", {})], factors={},
                target="cpu", seed=0, data={})
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan.to_json()))
    return path


def test_apply_keeps_what_was_in_out_and_replaces_only_its_outputs(mlp_model, tmp_path):
    out = tmp_path / "deploy"
    (out / ".work").mkdir(parents=True)
    (out / ".work" / "model.pt2").write_bytes(mlp_model.read_bytes())  # a user's own .work/
    (out / "README.txt").write_text("mine")
    (out / "model.onnx.gz").write_text("an older sparse export")  # advisor's, listed below
    (out / MANIFEST).write_text(json.dumps({"entries": ["model.onnx", "model.onnx.gz"]}))
    rc = main(["apply", str(mlp_model), "--plan", str(_int8_plan(tmp_path)), "--out", str(out)])
    assert rc == 0
    assert (out / ".work" / "model.pt2").read_bytes() == mlp_model.read_bytes()
    assert (out / "README.txt").read_text() == "mine"
    assert (out / "model.onnx").stat().st_size > 1000
    assert not (out / "model.onnx.gz").exists(), "a stale output of an earlier apply"
    assert _hidden(out) == []


def test_apply_refuses_out_that_holds_the_input(mlp_model, tmp_path, capsys):
    out = tmp_path / "deploy"
    out.mkdir()
    model = out / "model.pt2"
    model.write_bytes(mlp_model.read_bytes())
    rc = main(["apply", str(model), "--plan", str(_int8_plan(tmp_path)), "--out", str(out)])
    assert rc == 2 and "input" in capsys.readouterr().err
    assert model.read_bytes() == mlp_model.read_bytes()
