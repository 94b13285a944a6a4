"""`advisor analyze` and `advisor apply` end to end on a trained example (slow-ish: ~1-2 min)."""
import json
import os

import pytest

from advisor.cli import main

FAST = ["--repeats", "30"]


@pytest.fixture(scope="module")
def analysis(example_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    model = example_dir / "resnet.pt2"
    before = model.stat().st_mtime_ns, model.stat().st_size
    # a 10-point budget: int8 static (0-0.3 pts in benchmarks/results/quantization.md) always
    # qualifies, so the tests below always have a chosen plan to check
    rc = main(["analyze", str(model), "--target", "cpu", "--max-drop", "10%",
               "--data", str(example_dir / "digits-val.pt"),
               "--test-data", str(example_dir / "digits-test.pt"),
               "--retrain", "none", "--max-trials", "4", "--out", str(out)] + FAST)
    assert rc == 0
    assert (model.stat().st_mtime_ns, model.stat().st_size) == before  # input untouched
    return out, json.loads((out / "report.json").read_text())


def test_report_files_and_keys(analysis):
    out, r = analysis
    for f in ("report.md", "report.html", "report.json"):
        assert (out / f).is_file() and (out / f).stat().st_size > 500
    for key in ("baseline", "chosen", "candidates", "factors", "reasons"):
        assert key in r
    assert r["baseline"]["latency_ms"]["p50"] > 0 and r["baseline"]["accuracy"] > 0.8
    assert r["data"]["verified"] is True
    assert all(c["status"] in ("ok", "failed", "skipped") for c in r["candidates"])
    for c in (c for c in r["candidates"] if c["status"] == "ok"):
        paired = c["measured"]["paired"]  # timed against the kept baseline file in one process
        same_runtime = c["measured"]["runtime"] == r["baseline"]["runtime"]
        if same_runtime:  # the speed-up is the paired ratio against the baseline file
            assert c["measured"]["speedup"] == paired["speedup"] > 0
        assert paired["reference_p50"] > 0 and paired["runs"] >= 3


def test_retrain_none_never_trains(analysis):
    _, r = analysis
    for c in r["candidates"]:
        for s in c["plan"]["steps"]:
            assert s["pass"] not in ("finetune", "distill", "distill_student", "prune_at_init")


def test_chosen_plan_meets_constraints_and_is_confirmed(analysis):
    out, r = analysis
    c = r["chosen"]
    assert c is not None, f"no plan chosen; closest: {r['closest']}"
    assert c["meets_constraints"] and c["measured"]["speedup"] > 1.0
    assert c["accuracy_test"] is not None
    assert (out / "plan.json").is_file()


def test_apply_replays_plan(analysis, example_dir, tmp_path):
    out, r = analysis
    assert r["chosen"] is not None
    dest = tmp_path / "optimized"
    rc = main(["apply", str(example_dir / "resnet.pt2"), "--plan", str(out / "plan.json"),
               "--out", str(dest), "--data", str(example_dir / "digits-val.pt")])
    assert rc == 0
    assert (dest / "model.onnx").is_file()
    # the ONNX model loads in a plain onnxruntime session and classifies digits
    import numpy as np
    import onnxruntime as ort
    import torch
    d = torch.load(example_dir / "digits-test.pt")
    sess = ort.InferenceSession(str(dest / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = sess.run(None, {sess.get_inputs()[0].name: d["inputs"][:64].numpy()})[0]
    acc = float((logits.argmax(1) == d["labels"][:64].numpy()).mean())
    assert acc > 0.8


def test_without_data_accuracy_is_unverified(example_dir, tmp_path):
    out = tmp_path / "nodata"
    rc = main(["analyze", str(example_dir / "resnet.pt2"), "--target", "cpu",
               "--max-trials", "1", "--out", str(out)] + FAST)
    assert rc == 0
    r = json.loads((out / "report.json").read_text())
    assert r["data"]["verified"] is False and r["baseline"]["accuracy"] is None
    ok = [c for c in r["candidates"] if c["status"] == "ok"]
    assert ok and all(c["measured"]["agreement"] is not None for c in ok)
    assert any(x["rule"] == "accuracy_unverified" for x in r["reasons"])


def test_bad_factor_is_one_line_error(example_dir, capsys):
    rc = main(["analyze", str(example_dir / "resnet.pt2"), "--retrain", "finetune"])
    err = capsys.readouterr().err
    assert rc == 2 and "--train-data" in err and "Traceback" not in err


def test_plan_file_cannot_import_code_unless_allowed(example_dir, tmp_path, capsys):
    """A plan naming `pkg.module:name` (student architecture, data hook) would run code on apply."""
    marker = tmp_path / "ran"
    hook = tmp_path / "evil_hook.py"
    hook.write_text(f"open({str(marker)!r}, 'w').write('x')\ndef student(**kw):\n    return None\n")
    plan = {"schema_version": 1, "kind": "advisor-plan", "name": "evil", "target": "cpu",
            "seed": 0, "factors": {"retrain": "full"}, "data": {},
            "steps": [{"pass": "distill_student", "config": {"student_arch": "evil_hook:student"}}]}
    from advisor.decide.plan import PLAN_KIND, PLAN_SCHEMA_VERSION
    plan.update(schema_version=PLAN_SCHEMA_VERSION, kind=PLAN_KIND)
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    cwd = os.getcwd()
    os.chdir(tmp_path)  # the hook module would be importable from here
    try:
        rc = main(["apply", str(example_dir / "resnet.pt2"), "--plan", str(path),
                   "--out", str(tmp_path / "o"), "--train-data",
                   str(example_dir / "digits-train.pt")])
    finally:
        os.chdir(cwd)
    err = capsys.readouterr().err
    assert rc == 2 and "evil_hook:student" in err and "--allow-import" in err
    assert not marker.exists()  # the module was never imported
