"""Reusing an `--out` of an earlier run: the new report never sits beside a stale plan."""
import json

from advisor.cli import main
from advisor.outdir import MANIFEST


def test_rerun_that_chooses_nothing_removes_the_earlier_plan(tmp_path):
    from advisor.examples.models import mlp
    from advisor.export import save_pt2

    model = tmp_path / "mlp.pt2"
    save_pt2(mlp().eval(), model, (1, 3, 32, 32), {"arch": "advisor.examples.models:mlp"})
    out = tmp_path / "out"
    out.mkdir()
    # an earlier run chose a plan (its manifest lists what it wrote); the user added a file
    (out / "plan.json").write_text('{"name": "from the earlier run"}')
    (out / "report.json").write_text('{"chosen": "earlier"}')
    (out / MANIFEST).write_text(json.dumps({"entries": ["plan.json", "report.json"]}))
    (out / "my-notes.md").write_text("mine")
    rc = main(["analyze", str(model), "--out", str(out), "--max-trials", "1", "--repeats", "5",
               "--max-latency", "0.0001ms"])  # nothing can meet this: no plan is chosen
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    assert report["chosen"] is None
    assert not (out / "plan.json").exists(), "apply --plan would replay a plan not in the report"
    assert (out / "plan-closest.json").is_file()
    assert (out / "my-notes.md").read_text() == "mine"
    assert not [p for p in out.iterdir() if p.name.startswith(".advisor-")
                and p.name != MANIFEST]
