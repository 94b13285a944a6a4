"""Structured pruning of a model torch-pruning cannot build one graph of (a channel shuffle)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from .conftest import INPUT_SHAPE, run_pass


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's regrouping, written as torchvision writes it (a plain function)."""
    b, c, h, w = x.size()
    x = x.view(b, groups, c // groups, h, w).transpose(1, 2).contiguous()
    return x.view(b, -1, h, w)


class Unit(nn.Module):
    """A ShuffleNet-V2 unit: split, a 1x1 → depthwise → 1x1 branch, concat, shuffle."""

    def __init__(self, c: int):
        super().__init__()
        h = c // 2
        self.branch = nn.Sequential(
            nn.Conv2d(h, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU(),
            nn.Conv2d(h, h, 3, padding=1, groups=h, bias=False), nn.BatchNorm2d(h),
            nn.Conv2d(h, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU())

    def forward(self, x):
        a, b = x.chunk(2, dim=1)
        return channel_shuffle(torch.cat((a, self.branch(b)), 1), 2)


class ShuffleNetLike(nn.Module):
    def __init__(self, c: int = 16, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(INPUT_SHAPE[1], c, 3, padding=1), nn.ReLU())
        self.units = nn.Sequential(Unit(c), Unit(c))
        self.fc = nn.Linear(c, classes)

    def forward(self, x):
        return self.fc(self.units(self.stem(x)).mean((2, 3)))


def _model() -> nn.Module:
    torch.manual_seed(0)
    m = ShuffleNetLike().eval()
    for bn in m.modules():
        if isinstance(bn, nn.BatchNorm2d):  # non-trivial statistics, as a trained net has
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 1.5)
    return m


def test_the_shuffle_is_detected_and_one_graph_would_fail(make_ctx, monkeypatch):
    """The premise: DepGraph builds over this model but maps the shuffled channels wrongly."""
    import advisor.passes.depgraph as depgraph
    from advisor.errors import PassError
    from advisor.passes.blockwise import regroups_channels

    assert regroups_channels(_model(), torch.zeros(INPUT_SHAPE))
    assert not regroups_channels(_model().units[0].branch, torch.zeros(1, 8, 8, 8))
    monkeypatch.setattr(depgraph, "regroups_channels", lambda *a: False)
    monkeypatch.setattr(depgraph, "find_blocks", lambda *a: [])
    with pytest.raises(PassError, match="cannot follow the channels"):
        run_pass("prune_structured", _model(), make_ctx(), ratio=0.5)


def test_inner_channels_pruned_interface_kept_and_replayed(make_ctx, tmp_path):
    from advisor.export import export_onnx, onnx_session, run_onnx
    from advisor.passes.blockwise import replay_blocks

    model = _model()
    res = run_pass("prune_structured", model, make_ctx(), ratio=0.5, scope="local")
    info, pruned = res.info, res.model
    blocks = info["blockwise"]["blocks"]
    assert [b["block"] for b in blocks] == ["units.0.branch", "units.1.branch"]
    for unit in pruned.units:
        first, dw, last = unit.branch[0], unit.branch[3], unit.branch[5]
        assert first.in_channels == 8 and last.out_channels == 8  # the interface stays whole
        assert first.out_channels == dw.out_channels == last.in_channels == 4  # inside: halved
    assert pruned.stem[0].out_channels == 16 and pruned.fc.in_features == 16
    assert info["flops"]["after"] < info["flops"]["before"]
    x = torch.randn(3, *INPUT_SHAPE[1:])
    again = replay_blocks(model, blocks)
    with torch.no_grad():
        assert torch.allclose(again(x), pruned(x), atol=1e-6)
    path = tmp_path / "p.onnx"
    export_onnx(pruned, path, INPUT_SHAPE)
    with torch.no_grad():
        expect = pruned(x[:1]).numpy()
    got = run_onnx(onnx_session(path), x[:1].numpy())
    assert abs(got - expect).max() < 1e-4


def test_zero_ratio_is_exact_and_protected_layers_stay_whole(make_ctx):
    model = _model()
    res = run_pass("prune_structured", model, make_ctx(), ratio=0.0)
    x = torch.randn(2, *INPUT_SHAPE[1:])
    with torch.no_grad():
        assert torch.equal(res.model(x), model(x))
    kept = run_pass("prune_structured", model, make_ctx(), ratio=0.5,
                    ignore_layers=("units.1.branch.5",)).model
    # the ignored layer keeps its inputs: the depthwise conv and 1x1 before it keep theirs
    assert kept.units[1].branch[5].in_channels == 4 * 2
    assert kept.units[0].branch[0].out_channels < 8


@pytest.mark.parametrize("criterion", ["l2", "bn_scale", "hrank"])
def test_other_criteria_rank_inside_blocks(criterion, make_ctx):
    res = run_pass("prune_structured", _model(), make_ctx(), ratio=0.5, criterion=criterion)
    assert res.info["params"]["after"] < res.info["params"]["before"]


def test_a_lifted_export_of_the_shuffle_model_prunes_block_by_block(make_ctx):
    """Given only as a torch.export program: lifted with its module hierarchy (advisor.lift),
    so the same blocks are found and pruned as on the eager model."""
    from advisor.lift import lift_program

    model = _model()
    x = torch.randn(2, *INPUT_SHAPE[1:])
    ep = torch.export.export(model, (x[:1],))
    lifted = lift_program(ep, x[:1]).module
    assert lifted is not None
    res = run_pass("prune_structured", lifted, make_ctx(), ratio=0.5, scope="local")
    assert [b["block"] for b in res.info["blockwise"]["blocks"]] == \
        ["units.0.branch", "units.1.branch"]
    assert res.model.get_submodule("units.0.branch.3").out_channels == 4
    same = run_pass("prune_structured", lift_program(ep, x[:1]).module, make_ctx(), ratio=0.0)
    with torch.no_grad():
        torch.testing.assert_close(same.model(x), model(x), rtol=1e-5, atol=1e-5)
