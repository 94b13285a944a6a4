"""The depthwise explanation of a small int8 gain, from per-layer times."""
from __future__ import annotations

from torch import nn

from advisor.measure.int8_layers import depthwise_convs, depthwise_cost, plan_is_int8


def _rows(times: dict[str, float]) -> list[dict]:
    return [{"name": n, "kind": "conv" if n.startswith(("dw", "pw")) else "other", "ms": t,
             "share": t / sum(times.values())} for n, t in times.items()]


def test_depthwise_layers_are_found_by_their_groups():
    m = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3, groups=8), nn.Conv2d(8, 16, 3, groups=2),
                      nn.Conv2d(8, 8, 1))
    assert depthwise_convs(m) == {"1"}
    assert depthwise_convs(None) == set()


def test_share_and_speedups_come_from_the_paired_rows():
    before = _rows({"dw1": 3.0, "dw2": 1.0, "pw1": 4.0, "pool": 2.0})
    after = _rows({"dw1": 2.5, "dw2": 1.5, "pw1": 1.0, "pool": 2.0, "renamed": 9.0})
    note = depthwise_cost(before, after, {"dw1", "dw2"})
    assert note["depthwise_layers"] == 2
    assert note["depthwise_share"] == 0.4  # (3 + 1) of 10 ms
    assert note["depthwise_speedup"] == 1.0 and note["other_conv_speedup"] == 4.0
    assert "40%" in note["text"] and "1.00x" in note["text"] and "4.00x" in note["text"]


def test_nothing_is_said_when_depthwise_layers_do_not_explain_it():
    before = _rows({"dw1": 1.0, "pw1": 9.0})
    assert depthwise_cost(before, _rows({"dw1": 1.0, "pw1": 3.0}), {"dw1"}) is None  # 10% share
    before = _rows({"dw1": 5.0, "pw1": 5.0})
    assert depthwise_cost(before, _rows({"dw1": 1.0, "pw1": 2.5}), {"dw1"}) is None  # dw gains more
    assert depthwise_cost(before, _rows({"x": 1.0}), {"dw1"}) is None  # no layer pairs up


def test_only_int8_plans_are_explained():
    assert plan_is_int8([{"pass": "prune_structured"}, {"pass": "int8_static"}])
    assert not plan_is_int8([{"pass": "fp16"}])
