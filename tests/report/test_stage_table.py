"""The "where and how long" section: nodes, training devices and seconds per stage, as recorded."""
from __future__ import annotations

import re

import pytest

from advisor.report import render_html, render_markdown, stage_table, validate_report

PREPARE = {"node_id": "1a2b3c4d5e6f", "ip": "10.0.0.5", "pid": 101, "start": 1.0, "end": 9.0}
MEASURE = {"node_id": "9f8e7d6c5b4a", "ip": "10.0.0.6", "pid": 202, "start": 12.0, "end": 15.0}
SECONDS = {"transform": 0.41, "train": 6.25, "export": 1.33, "measure": 2.07, "evaluate": 0.58,
           "prepare": 7.99}


def _on_ray(report):
    """c1 prepared and measured on two nodes, after training on a GPU; c2 both on one node."""
    c1, c2 = report["candidates"][:2]
    c1["ran_on"] = {"prepare": PREPARE, "measure": MEASURE, "waited_for_device_s": 2.5,
                    "train": {"device": "cuda:0", "workers": 2}}
    c1["stage_seconds"] = {**SECONDS, "waiting_for_device": 2.5}
    c1["seconds"] = 10.64
    c2["ran_on"] = {"prepare": PREPARE, "measure": {**PREPARE, "start": 9.5, "end": 11.0},
                    "waited_for_device_s": 0.0}
    c2["stage_seconds"] = {"transform": 0.2, "train": 0.0, "export": 0.9, "measure": 1.4,
                           "evaluate": 0.3, "prepare": 1.1, "waiting_for_device": 0.0}
    return report


def _section(md_text):
    return md_text.split("## Where and how long")[1].split("\n## ")[0]


def test_markdown_shows_nodes_devices_and_seconds_per_stage(report):
    validate_report(_on_ray(report))
    sec = _section(render_markdown(report))
    assert ("| id | ran on | train devices | transform s | train s | export s | measure s | "
            "evaluate s | waiting for device s | total s |") in sec
    assert ("| c1 | prepare 10.0.0.5 (1a2b3c4d) · measure 10.0.0.6 (9f8e7d6c) | cuda:0, 2 workers "
            "| 0.41 | 6.25 | 1.33 | 2.07 | 0.58 | 2.50 | 10.6 |") in sec
    assert "| c2 | 10.0.0.5 (1a2b3c4d) | — | 0.20 | 0.00 |" in sec  # one node, no training
    assert "| c3 |" not in sec  # nothing recorded: no row
    widths = {len(re.findall(r"(?<!\\)\|", ln)) for ln in sec.splitlines() if ln.startswith("|")}
    assert len(widths) == 1


def test_html_shows_nodes_devices_and_seconds_per_stage(report):
    html = render_html(_on_ray(report))
    sec = html.split('<section id="stages">')[1].split("</section>")[0]
    assert "<th>ran on</th><th>train devices</th>" in sec
    assert "prepare 10.0.0.5 (1a2b3c4d) · measure 10.0.0.6 (9f8e7d6c)" in sec
    assert "<td>cuda:0, 2 workers</td>" in sec
    assert '<td class="num">6.25</td>' in sec and '<td class="num">2.50</td>' in sec
    # after the candidates table
    assert html.index('id="candidates"') < html.index('id="stages"') < html.index('id="reasons"')


def test_a_local_run_shows_stage_times_only(report):
    c = report["candidates"][0]
    c["stage_seconds"] = {k: v for k, v in SECONDS.items()}
    validate_report(report)
    assert stage_table.columns(report) == ["id", "transform s", "train s", "export s",
                                           "measure s", "evaluate s", "total s"]
    sec = _section(render_markdown(report))
    assert "| c1 | 0.41 | 6.25 | 1.33 | 2.07 | 0.58 | 12.5 |" in sec
    assert "ran on" not in sec and "waiting" not in sec.split("\n\n")[1]


def test_a_local_training_run_says_this_host_only_beside_ray_runs(report):
    c1, c2 = _on_ray(report)["candidates"][:2]
    c2["ran_on"] = {"train": {"device": "cpu", "workers": 1}}
    sec = _section(render_markdown(report))
    assert "| c2 | this host | cpu, 1 worker |" in sec


def test_without_records_there_is_no_section(report):
    assert "Where and how long" not in render_markdown(report)
    assert 'id="stages"' not in render_html(report)


@pytest.mark.parametrize("field, value, where", [
    ("stage_seconds", {"train": -1.0}, "stage_seconds"),
    ("stage_seconds", {"train": "6 s"}, "stage_seconds"),
    ("ran_on", {"train": {"device": "cpu", "workers": 0}}, "ran_on"),
    ("ran_on", {"prepare": {"ip": 10}}, "ran_on"),
])
def test_schema_rejects_wrong_records(report, field, value, where):
    pytest.importorskip("jsonschema")
    report["candidates"][0][field] = value
    with pytest.raises(ValueError, match="does not match its schema") as info:
        validate_report(report)
    assert where in str(info.value)


def test_workers_out_of_step_are_named_in_the_train_column():
    from advisor.report.stage_table import train_text

    assert train_text({"device": "cpu", "workers": 2, "weights_agree": True}) == "cpu, 2 workers"
    assert train_text({"device": "cpu", "workers": 2, "weights_agree": False}) == \
        "cpu, 2 workers (out of step: rank 0 kept)"
