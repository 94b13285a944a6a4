"""One outcome, computed once: the figures agree everywhere, and what ships is what was measured."""
import json

import pytest

from advisor.cli import main
from advisor.outcome import sha256_file

FAST = ["--repeats", "10", "--max-trials", "2"]


@pytest.fixture(scope="module")
def applied(example_dir, tmp_path_factory):
    """analyze --apply with a drop budget any int8 plan meets, so a plan is always chosen;
    calibration runs on the training data (given), as apply must repeat it."""
    out = tmp_path_factory.mktemp("one-outcome")
    rc = main(["analyze", str(example_dir / "resnet.pt2"), "--target", "cpu", "--max-drop", "50%",
               "--data", str(example_dir / "digits-val.pt"),
               "--train-data", str(example_dir / "digits-train.pt"),
               "--out", str(out), "--apply"] + FAST)
    assert rc == 0
    return out, json.loads((out / "report.json").read_text())


def test_latency_times_speedup_is_the_baseline_latency_for_every_candidate(applied):
    _, r = applied
    base = r["baseline"]["latency_ms"]["p50"]
    measured = [c["measured"] for c in r["candidates"] if c["status"] == "ok"]
    assert measured
    for m in measured:
        assert m["latency_ms"]["p50"] * m["speedup"] == pytest.approx(base, rel=1e-9)
        assert m["baseline_latency_ms"] == base
        assert m["latency_ms"]["own_p50"] > 0  # the separate measurement, shown as such
    assert "alternating in one process" in r["measurement"]["latency"]


def test_chosen_plan_is_on_the_pareto_front_of_the_plot(applied):
    from advisor.report import plot_data

    _, r = applied
    assert r["chosen"] is not None, "a 50-point budget is met by any int8 plan"
    front = {p.id for p in plot_data.pareto_front(plot_data.plot_points(r))}
    assert r["chosen"]["id"] in front


def test_apply_ships_the_measured_artefact_byte_for_byte(applied):
    out, r = applied
    shipped = out / "optimized" / "model.onnx"
    assert shipped.is_file()
    assert r["applied"]["sha256"] == sha256_file(shipped) == r["chosen"]["measured"]["artifact_sha256"]
    trial_files = [p for p in (out / "work").rglob("*.onnx")
                   if sha256_file(p) == r["applied"]["sha256"]]
    assert trial_files, "the shipped model is the chosen trial's artefact"


def test_advisor_apply_reproduces_the_measured_model(applied, example_dir, tmp_path, capsys):
    out, r = applied
    plan = json.loads((out / "plan.json").read_text())
    assert plan["expected"]["artifact_sha256"] == r["applied"]["sha256"]
    capsys.readouterr()
    rc = main(["apply", str(example_dir / "resnet.pt2"), "--plan", str(out / "plan.json"),
               "--out", str(tmp_path / "replay")])
    text = capsys.readouterr().out
    assert rc == 0
    assert "reproduction: reproduced the model analyze measured" in text, text


def test_apply_says_when_it_did_not_reproduce(applied, example_dir, tmp_path, capsys):
    """Calibrating on other data gives another int8 model: apply must say so."""
    out, _ = applied
    plan = json.loads((out / "plan.json").read_text())
    if not any(s["pass"] == "int8_static" for s in plan["steps"]):
        pytest.skip("the chosen plan does not calibrate")
    capsys.readouterr()
    rc = main(["apply", str(example_dir / "resnet.pt2"), "--plan", str(out / "plan.json"),
               "--out", str(tmp_path / "other"),
               "--train-data", str(example_dir / "digits-test.pt")])
    text = capsys.readouterr().out
    assert rc == 0
    assert "NOT the model analyze measured" in text, text


def test_before_and_after_hot_spots_name_the_same_layers(applied):
    """The baseline is measured like a candidate: both tables list layers by module name."""
    _, r = applied
    before = {h["name"] for h in r["baseline"]["hotspots"] if h["kind"] == "conv"}
    after = {h["name"] for h in r["chosen"]["hotspots"]}
    assert before and len(before & after) >= 0.8 * len(before), (before, after)
    assert not [n for n in before | after if n.startswith("node_")]
