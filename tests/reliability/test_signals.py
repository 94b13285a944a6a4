"""Fault injection on `advisor analyze` / `advisor profile`: SIGINT, SIGTERM and SIGKILL at the
baseline measurement, during a trial and during the report; then count what is left.

Contract (docs/CONTRACTS.md, "Signals, processes, exit status"):
- SIGINT exits 130 and SIGTERM 143, "interrupted" on stderr; SIGKILL is -9 as seen by the shell;
- no process of the run survives it (workers die with their parent, even after SIGKILL);
- no temporary directory is left in TMPDIR; after SIGKILL the dead run's `advisor-*-PID-*`
  directories are removed by the next advisor command;
- `--out` holds the complete previous outputs or the complete new ones (no partial file).
"""
from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import pytest

# (signal, stage, to the whole process group as a terminal's Ctrl-C does, or to advisor only)
CASES = [(signal.SIGINT, "baseline", False), (signal.SIGINT, "trial", False),
         (signal.SIGINT, "trial", True), (signal.SIGINT, "report", False),
         (signal.SIGTERM, "baseline", False), (signal.SIGTERM, "trial", False),
         (signal.SIGTERM, "report", False),
         (signal.SIGKILL, "baseline", False), (signal.SIGKILL, "trial", False)]
EXPECTED = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGKILL: -9}


# files other libraries keep in TMPDIR on purpose (ONNX Runtime's telemetry session id)
_FOREIGN = {".ses"}


def _leftovers(tmpdir: Path) -> list[str]:
    return sorted(p.name for p in tmpdir.iterdir() if p.name not in _FOREIGN)


def _check_out(out: Path, previous: dict[str, str], snapshot) -> str:
    """`out` holds the previous outputs or a complete new set; returns which."""
    now = snapshot(out)
    partial = [str(p.relative_to(out)) for p in out.rglob("*") if ".tmp-" in p.name]
    assert not partial, f"partial files in --out: {partial}"
    if now == previous:
        return "previous"
    same = [k for k in ("report.md", "report.html", "report.json") if now.get(k) == previous.get(k)]
    assert not same, f"--out mixes outputs of two runs: {same} are the previous ones"
    report = json.loads((out / "report.json").read_text())
    plan_file = out / "plan.json" if (out / "plan.json").exists() else out / "plan-closest.json"
    plan = json.loads(plan_file.read_text())
    if report.get("chosen"):
        assert report["chosen"]["plan"] == plan, "plan.json is not the report's chosen plan"
    else:
        assert plan in [c["plan"] for c in report["candidates"]]
    for name in ("report.md", "report.html"):
        assert (out / name).stat().st_size > 200
    return "new"


@pytest.mark.parametrize("sig,stage,group", CASES,
                         ids=[f"{signal.Signals(s).name}-{st}{'-group' if g else ''}"
                              for s, st, g in CASES])
def test_analyze_interrupted(sig, stage, group, small_model, previous_out, harness, tmp_path):
    out = harness.copy_out(previous_out, tmp_path / "out")
    before = harness.snapshot(out)
    tmpdir = tmp_path / "tmp"
    run = harness.Run(["analyze", str(small_model), *harness.ANALYZE_FAST, "--out", str(out)],
                      tmpdir, tmp_path)
    run.wait_for(harness.STAGES[stage], 180, f"the {stage} stage")
    children = list(run.pids)
    run.send(sig, group=group)
    rc = run.finish()
    assert rc == EXPECTED[sig], run.output()
    print(f"exit {rc} {run.exit_seconds:.1f} s after the signal")
    assert run.exit_seconds < 9, "the interrupted run took too long to clean up"
    if sig != signal.SIGKILL:
        assert "interrupted" in "".join(run.stderr)
        assert "Traceback" not in "".join(run.stderr), run.output()
    if stage != "report":
        assert children, "no child process was seen"
    survivors = run.survivors()
    assert not survivors, f"processes of the run left alive: {survivors}"
    if sig == signal.SIGKILL:
        # the dead parent's own scratch directories may stay; the next run removes them
        ours = {run.proc.pid, *run.pids}
        for name in _leftovers(tmpdir):
            m = re.match(r"^(?:advisor-(?:[a-z]+-)?|pymp-)(\d+)-", name)
            assert m and int(m.group(1)) in ours, f"{name} has no owner of this run"
        harness.Run(["--help"], tmpdir, tmp_path).finish(60)
        hidden_ok = (".advisor-staging-", ".advisor-scratch-", ".advisor.lock")
        extra = [p.name for p in out.iterdir() if p.name.startswith(".")
                 and not p.name.startswith(hidden_ok) and p.name != ".advisor-manifest.json"]
        assert not extra, extra
    assert _leftovers(tmpdir) == [], "temporary directories left behind"
    state = _check_out(out, before, harness.snapshot)
    if stage != "report":
        assert state == "previous"
    if sig != signal.SIGKILL:
        leftover = [p.name for p in out.iterdir()
                    if p.name.startswith((".advisor-staging-", ".advisor-scratch-",
                                          ".advisor-trash-"))]
        assert not leftover, leftover


def test_analyze_without_out_leaves_no_scratch(small_model, harness, tmp_path):
    """A complete run without --out used to leave advisor-XXXX/ (1.5-3.8 MB) in TMPDIR."""
    tmpdir = tmp_path / "tmp"
    run = harness.Run(["analyze", str(small_model), *harness.ANALYZE_FAST], tmpdir, tmp_path)
    assert run.finish(240) == 0, run.output()
    assert not run.survivors(grace=3)
    assert _leftovers(tmpdir) == []


def test_analyze_without_out_interrupted_leaves_no_scratch(small_model, harness, tmp_path):
    tmpdir = tmp_path / "tmp"
    run = harness.Run(["analyze", str(small_model), *harness.ANALYZE_FAST], tmpdir, tmp_path)
    run.wait_for(harness.in_baseline, 180, "the baseline stage")
    run.send(signal.SIGINT)
    assert run.finish() == 130, run.output()
    assert not run.survivors()
    assert _leftovers(tmpdir) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL],
                         ids=lambda s: signal.Signals(s).name)
def test_profile_interrupted(sig, small_model, harness, tmp_path):
    tmpdir = tmp_path / "tmp"
    # a long measurement: a worker that outlived advisor would still be measuring when checked
    run = harness.Run(["profile", str(small_model), "--repeats", "100000", "--processes", "1",
                       "--max-seconds", "30"], tmpdir, tmp_path)
    run.wait_for(harness.in_baseline, 120, "a latency measurement")
    run.send(sig)
    rc = run.finish()
    assert rc == EXPECTED[sig], run.output()
    if sig != signal.SIGKILL:
        assert "interrupted" in "".join(run.stderr)
    assert not run.survivors(), "the latency worker outlived advisor profile"
    if sig == signal.SIGKILL:
        harness.Run(["--help"], tmpdir, tmp_path).finish(60)
    assert _leftovers(tmpdir) == [], "advisor-profile-*/advisor-latency-* left behind"
