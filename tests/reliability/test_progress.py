"""Stage lines from inside a trial reach the parent (worker process or in-process), and the
terminal says what runs when output is piped."""
from __future__ import annotations

import io

from rich.console import Console

from advisor import progress


def _stages(n: int) -> dict:
    for i in range(n):
        progress.stage(f"stage {i + 1}/{n}")
    return {"status": "ok"}


def test_a_worker_process_sends_its_stages_to_the_parent():
    from advisor.executor import ProcessExecutor

    seen = []
    assert ProcessExecutor().run(_stages, 3, on_stage=seen.append) == {"status": "ok"}
    assert seen == ["stage 1/3", "stage 2/3", "stage 3/3"]


def test_in_process_stages_and_a_budget_stop_message():
    from advisor.executor import InlineExecutor, ProcessExecutor

    seen = []
    InlineExecutor().run(_stages, 2, on_stage=seen.append)
    assert seen == ["stage 1/2", "stage 2/2"]
    progress.stage("nobody listens")  # without a sink: nothing, no error
    import time

    res = ProcessExecutor().run(time.sleep, 30, timeout_s=2)
    assert res["status"] == "failed" and "past the time budget" in res["error"]


def test_training_reports_each_epoch():
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from advisor.train import TrainConfig, train

    data = DataLoader(TensorDataset(torch.randn(16, 4), torch.randint(0, 2, (16,))), batch_size=8)
    seen = []
    with progress.sink(seen.append):
        train(torch.nn.Linear(4, 2), data, TrainConfig(epochs=2), progress=False,
              description="fine-tuning")
    assert seen == ["fine-tuning epoch 1/2", "fine-tuning epoch 2/2"]


def test_piped_output_gets_one_plain_line_per_stage_without_source_locations():
    from advisor.cli.render import Reporter

    out = io.StringIO()
    console = Console(file=out, width=200, color_system=None, force_terminal=False)
    with Reporter(console) as rep:
        rep.event("stage", {"name": "baseline"})
        rep.event("trial", {"name": "int8 static [calibration=minmax]", "i": 0, "n": 4,
                            "estimate_s": 42.0, "search_ends_by": 0.0})
        rep.event("trial_stage", {"stage": "calibrate int8 (minmax, 256 samples)"})
    lines = out.getvalue().splitlines()
    assert any("measuring the baseline" in line for line in lines)
    assert any("trial 1/4: int8 static [calibration=minmax] (estimated 42 s" in line
               for line in lines)
    assert any("calibrate int8 (minmax, 256 samples)" in line and "left in this trial" in line
               for line in lines)
    assert not any("render.py" in line for line in lines)
