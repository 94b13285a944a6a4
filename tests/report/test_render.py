"""Markdown and HTML rendering: content, self-containment, escaping, plots, files."""
from __future__ import annotations

import json
import re

import pytest

from advisor.report import render_html, render_markdown, write_reports
from advisor.report import schema as schema_mod
from advisor.report import before_after, facts, plot_data

EVIL = "models/<script>alert('x')</script>&co.pt2"


def _ok_ids(report):
    return [c["id"] for c in report["candidates"] if c["status"] == "ok"]


# ---- markdown --------------------------------------------------------------------------------

def test_markdown_has_the_tables_and_the_chosen_plan(report):
    md = render_markdown(report)
    assert md.startswith("# Optimization report")
    for heading in ("## Recommendation", "## Candidates", "## Latency vs accuracy",
                    "## Per-layer hot spots before/after", "## Reasons", "## Warnings",
                    "## Measurement settings"):
        assert heading in md
    assert "| id | plan | steps | status | runtime | p50 ms | own p50 ms | speed-up |" in md
    rec = md.split("## Recommendation")[1].split("## Candidates")[0]
    assert "**prune 0.3 + int8 static** (c5)" in rec
    assert "`structured_prune(ratio=0.3, importance=l1)`" in rec
    assert "| speed-up | 2.80× |" in rec and "97.3%" in rec and "0.78 pts" in rec
    for cand in report["candidates"]:
        assert f"| {cand['id']} |" in md
    assert "PassError: rank selection failed" in md  # the failed candidate's error
    assert "edge-arm (emulated)" in md
    assert "The plot is in report.html" in md


def test_markdown_tables_are_rectangular(report):
    for block in render_markdown(report).split("\n\n"):
        lines = [ln for ln in block.splitlines() if ln.startswith("|")]
        if lines:
            widths = {len(re.findall(r"(?<!\\)\|", ln)) for ln in lines}
            assert len(widths) == 1, block


def test_markdown_unverified_says_so_and_shows_agreement(unverified_report):
    md = render_markdown(unverified_report)
    assert "**accuracy unverified**" in md
    assert "| accuracy | unverified |" in md
    assert "| agreement with original | 98.2% |" in md
    assert "top-1 agreement (accuracy unverified)" in md


def test_markdown_when_nothing_met_the_constraints(nothing_report):
    md = render_markdown(nothing_report)
    assert "**Nothing met the constraints.**" in md
    rec = md.split("## Recommendation")[1].split("## Candidates")[0]
    assert "| c5 | prune 0.3 + int8 static |" in rec
    assert "--max-latency 0.16ms" in rec and "--max-drop 0.78" in rec
    assert "--retrain finetune" in rec


def test_markdown_escapes_user_strings(report):
    report["model"]["path"] = EVIL
    report["candidates"][0]["name"] = "a | b"
    md = render_markdown(report)
    assert "<script>" not in md
    assert "\\<script\\>" in md
    assert "a \\| b" in md


# ---- html ------------------------------------------------------------------------------------

def test_html_is_self_contained(report):
    html = render_html(report)
    assert html.startswith("<!DOCTYPE html>")
    for bad in ("http://", "https://", "<script", "<link", "@import", "url("):
        assert bad not in html, bad
    assert "Content-Security-Policy" in html and "default-src 'none'" in html


def test_html_has_all_sections(report):
    html = render_html(report)
    for section in ("recommendation", "tradeoff", "hotspots", "candidates", "reasons",
                    "warnings", "settings"):
        assert f'id="{section}"' in html
    assert "Latency vs accuracy" in html and "Per-layer hot spots before/after" in html
    assert "edge-arm (emulated)" in html and 'class="badge emulated"' in html
    assert "Intel(R) Xeon(R) CPU @ 2.20GHz" in html  # measurement settings: host
    assert "Lecture 3, pruning (Li et al., arXiv:1608.08710)" in html  # a citation


def test_html_tradeoff_plot_has_a_point_per_candidate_and_the_pareto_path(report):
    svg = view_svg(render_html(report), "tradeoff")
    ids = re.findall(r'class="pt (\w+)" data-id="(\w+)"', svg)
    assert sorted(i for _, i in ids) == sorted(_ok_ids(report) + ["base"])
    roles = dict((i, role) for role, i in ids)
    assert roles["base"] == "baseline" and roles["c5"] == "chosen"
    assert roles["c3"] == "violates" and roles["c1"] == "ok"
    path = re.search(r'<path class="pareto" data-front="([^"]+)" d="([^"]+)"', svg)
    assert path, "no Pareto path"
    assert path.group(1).split() == ["c5", "c1", "c2", "base"]
    assert path.group(2).startswith("M") and " V" in path.group(2)  # a step line
    assert "max latency 0.25 ms" in svg and "allowed drop (1.00 pts)" in svg
    assert "accuracy on the validation split (%)" in svg


def test_html_unverified_plots_agreement_and_says_so(unverified_report):
    html = render_html(unverified_report)
    svg = view_svg(html, "tradeoff")
    assert "top-1 agreement with the original (%) — accuracy unverified" in svg
    assert len(re.findall(r'class="pt \w+" data-id=', svg)) == len(_ok_ids(unverified_report)) + 1
    table = html.split('id="candidates"')[1].split("</table>")[0]
    assert table.count(">unverified<") == len(_ok_ids(unverified_report)) + 1
    assert 'class="badge unverified"' in html


def test_html_hotspots_before_after(report):
    section = view_svg(render_html(report), "hotspots")
    assert section.count("<svg") == 3  # before, after (names differ), by kind
    assert 'data-series="before: original model"' in section
    assert 'data-series="after: chosen plan"' in section
    assert "layers.0.conv1" in section and "relu_1_nchwc" in section


def test_hotspots_pair_by_name_when_names_match(report):
    report["chosen"]["hotspots"] = [dict(h, share=h["share"] * 0.8)
                                    for h in report["baseline"]["hotspots"][1:]]
    hv = before_after.hotspot_view(report)
    assert hv.matched
    assert hv.paired[0] == ("(outside layers)", 0.19, None)  # gone after → no bar
    section = view_svg(render_html(report), "hotspots")
    assert section.count("<svg") == 2  # paired chart + by kind
    assert "not present" in section


def test_html_escapes_user_strings(report):
    report["model"]["path"] = EVIL
    report["candidates"][3]["error"] = "failed on <b>layer</b> & more"
    report["baseline"]["hotspots"][1]["name"] = "<img src=x onerror=alert(1)>"
    report["warnings"].append("<iframe>")
    html = render_html(report)
    assert "<script>" not in html and "<img" not in html and "<iframe>" not in html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;&amp;co.pt2" in html
    assert "failed on &lt;b&gt;layer&lt;/b&gt; &amp; more" in html


def test_html_when_nothing_met_the_constraints(nothing_report):
    html = render_html(nothing_report)
    assert 'class="rec none"' in html and "Nothing met the constraints" in html
    assert "would qualify with: --max-drop 0.78 (now 0.2 pts); --max-latency 0.16ms" in html
    svg = view_svg(html, "tradeoff")
    assert 'class="pt chosen"' not in svg


def test_html_with_every_candidate_failed(report):
    for c in report["candidates"]:
        c.update(status="failed", measured=None, error="boom")
    report["chosen"], report["closest"] = None, []
    html = render_html(report)
    assert "No candidate could be measured" in html
    assert len(re.findall(r'data-id="', view_svg(html, "tradeoff"))) == 1  # the baseline only


def view_svg(html: str, section: str) -> str:
    """The HTML of one <section id=...>."""
    return html.split(f'<section id="{section}">')[1].split("</section>")[0]


# ---- derived values ---------------------------------------------------------------------------

def test_pareto_front_keeps_only_non_dominated_points():
    P = plot_data.Point
    pts = [P("a", "a", 1.0, 90, "ok", ""), P("b", "b", 2.0, 95, "ok", ""),
           P("c", "c", 2.5, 93, "ok", ""),  # slower and worse than b
           P("d", "d", 3.0, 95, "ok", ""),  # as good as b but slower
           P("e", "e", 4.0, 97, "ok", ""), P("f", "f", 1.0, 85, "ok", "")]
    assert [p.id for p in plot_data.pareto_front(pts)] == ["a", "b", "e"]


def test_nice_ticks_are_round_and_cover_the_range():
    from advisor.report.svg import nice_ticks

    assert nice_ticks(0.0, 1.0) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    t = nice_ticks(95.3, 98.4)
    assert t[0] <= 95.3 and t[-1] >= 98.4 and 3 <= len(t) <= 8


def test_relative_max_drop_is_shown_in_points(report):
    from advisor.decide.factors import make_factors

    factors = make_factors(hardware="cpu", goal="latency", max_drop="2%rel", max_latency=None,
                           max_size=None, retrain="none", budget=None, has_train_data=False)
    report["factors"].update(max_drop=0.0, max_drop_relative=0.02,  # as analyze writes them
                             allowed_drop_points=factors.allowed_drop_points(0.9811))
    assert facts.allowed_drop(report) == pytest.approx(1.9622)
    assert facts.max_drop_text(report) == "2% of the baseline (1.96 pts)"


def test_svg_standalone_has_the_namespace():
    from advisor.report import svg_bars, svg_scatter

    p = [plot_data.Point("a", "a", 1.0, 90.0, "ok", "a")]
    assert 'xmlns="http://www.w3.org/2000/svg"' in svg_scatter(
        p, title="t", x_label="x", y_label="y", standalone=True)
    assert "xmlns" not in svg_bars([("l", [1.0])], ["s"], title="t", x_label="x")


# ---- files -------------------------------------------------------------------------------------

def test_write_reports_writes_three_files(report, tmp_path):
    files = write_reports(report, tmp_path / "out")
    assert set(files) == {"report_md", "report_html", "report_json"}
    assert [p.name for p in files.values()] == ["report.md", "report.html", "report.json"]
    assert json.loads(files["report_json"].read_text()) == json.loads(json.dumps(report))
    assert "<svg" in files["report_html"].read_text()
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temps


def test_write_reports_refuses_an_invalid_report_and_writes_nothing(report, tmp_path):
    pytest.importorskip("jsonschema")
    del report["candidates"][0]["id"]
    with pytest.raises(ValueError, match="id"):
        write_reports(report, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_write_reports_skips_validation_without_jsonschema(report, tmp_path, monkeypatch):
    monkeypatch.setattr("advisor.report.have_jsonschema", lambda: False)
    report["created"] = 12  # wrong type, but nothing checks it without jsonschema
    files = write_reports(report, tmp_path)
    assert files["report_json"].exists()


def test_validate_report_without_jsonschema_says_how_to_get_it(report, monkeypatch):
    monkeypatch.setattr(schema_mod, "have_jsonschema", lambda: False)
    with pytest.raises(ModuleNotFoundError, match="advisor\\[dev\\]"):
        schema_mod.validate_report(report)


def test_the_int8_layer_cost_finding_is_printed_everywhere(report, tmp_path):
    from advisor.measure.int8_layers import depthwise_cost

    rows = [{"name": "dw", "kind": "conv", "ms": 4.0, "share": 0.4},
            {"name": "pw", "kind": "conv", "ms": 6.0, "share": 0.6}]
    after = [{"name": "dw", "kind": "conv", "ms": 3.2, "share": 0.6},
             {"name": "pw", "kind": "conv", "ms": 2.0, "share": 0.4}]
    note = depthwise_cost(rows, after, {"dw"})
    report["chosen"]["int8_layer_cost"] = note
    schema_mod.validate_report(report)
    assert note["text"] in render_markdown(report)
    assert note["text"] in render_html(report)
    del report["chosen"]["int8_layer_cost"]
    assert "int8 pays less" not in render_markdown(report) + render_html(report)


def test_a_lifted_model_says_where_its_layers_came_from(report):
    from advisor.report.build import _layers_text

    text = _layers_text({"lifted": 1, "notes": [
        "lifted from the exported graph: 9 convolutions became layers"]})
    report["model"]["layers"] = text
    assert "lifted from the exported graph: 9 convolutions" in render_markdown(report)
    assert "9 convolutions" in render_html(report)
    assert "could not be lifted into layers (control flow)" in \
        _layers_text({"lift_refused": "control flow"})
    assert _layers_text({}) is None
