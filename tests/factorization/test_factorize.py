"""Low-rank factorization: exact at full rank, Tucker-2/SVD structure, rank selection, cheaper-only."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from advisor.errors import PassError

SHAPE = (1, 3, 32, 32)
ARCHS = ("resnet", "mobilenet", "vgg", "concatnet")


def build_arch(name: str) -> nn.Module:
    from advisor.examples.models import FACTORIES

    torch.manual_seed(0)
    return FACTORIES[name]().eval()


def ctx(budget: str = "none", loaders=None, shape=SHAPE):
    from advisor.passes.base import PassContext, RetrainBudget

    return PassContext(example_inputs=(torch.zeros(shape),), input_shape=shape,
                       train_loader=(loaders or {}).get("train"),
                       val_loader=(loaders or {}).get("val"), budget=RetrainBudget(budget),
                       progress=False)


def factorize(model, context=None, **config):
    from advisor.passes.base import config_from_dict, get_pass

    spec = get_pass("factorize")
    return spec.apply(model, config_from_dict(spec.config_cls, config), context or ctx())


@pytest.mark.parametrize("arch", ARCHS)
def test_full_rank_equals_the_original(arch):
    model = build_arch(arch)
    res = factorize(model, method="energy", energy=1.0, require_cheaper=False,
                    check_latency=False)
    assert res.info["replaced"] > 0
    x = torch.randn(3, *SHAPE[1:], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (res.model(x) - model(x)).abs().max().item() < 1e-4


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(16, 32, 3, stride=2, padding=2, dilation=2, bias=True)
        self.dw = nn.Conv2d(32, 32, 3, padding=1, groups=32)
        self.point = nn.Conv2d(32, 48, 1)
        self.fc = nn.Linear(48, 10)

    def forward(self, x):
        x = self.point(self.dw(torch.relu(self.conv(x))))
        return self.fc(x.mean((2, 3)))


def test_tucker2_structure_keeps_stride_padding_dilation_bias_and_skips_depthwise():
    torch.manual_seed(0)
    model = Net().eval()
    res = factorize(model, ctx(shape=(1, 16, 16, 16)), rank=4, require_cheaper=False,
                    check_latency=False)
    m = res.model
    conv = m.conv
    assert isinstance(conv, nn.Sequential) and [n for n, _ in conv.named_children()] == \
        ["reduce", "core", "restore"]
    assert conv.reduce.kernel_size == (1, 1) and conv.restore.kernel_size == (1, 1)
    assert conv.core.kernel_size == (3, 3) and conv.core.stride == (2, 2)
    assert conv.core.padding == (2, 2) and conv.core.dilation == (2, 2)
    assert (conv.reduce.out_channels, conv.core.out_channels) == (4, 4)
    assert conv.restore.bias is not None and conv.reduce.bias is None
    assert torch.equal(conv.restore.bias, model.conv.bias)
    assert isinstance(m.dw, nn.Conv2d) and m.dw.groups == 32  # depthwise: skipped
    assert isinstance(m.point, nn.Sequential) and len(m.point) == 2  # 1x1 conv: SVD in two
    assert isinstance(m.fc, nn.Sequential) and [type(x) for x in m.fc] == [nn.Linear, nn.Linear]
    assert m.fc[0].out_features == 4
    m(torch.zeros(2, 16, 16, 16))


def test_lower_energy_means_lower_ranks_fewer_flops_and_larger_error():
    model = build_arch("vgg")
    infos = {e: factorize(model, method="energy", energy=e, require_cheaper=False,
                          check_latency=False).info for e in (0.99, 0.9, 0.7)}
    flops = [infos[e]["flops_after"] for e in (0.99, 0.9, 0.7)]
    assert flops[0] > flops[1] > flops[2]
    for name in infos[0.9]["layer_ranks"]:
        r99, r70 = infos[0.99]["layer_ranks"][name], infos[0.7]["layer_ranks"][name]
        assert all(a >= b for a, b in zip(r99, r70))
    err = {e: [r["rel_error"] for r in infos[e]["layers"] if r.get("replaced")]
           for e in (0.99, 0.7)}
    assert np.mean(err[0.99]) < np.mean(err[0.7])
    for r in infos[0.9]["layers"]:
        if r.get("replaced"):
            assert {"ranks", "flops_after", "rel_error", "flops_before"} <= set(r)


def test_vbmf_recovers_the_rank_of_a_noisy_low_rank_matrix():
    from advisor.passes.lowrank.vbmf import evbmf_rank

    g = torch.Generator().manual_seed(0)
    low = torch.randn(64, 6, generator=g) @ torch.randn(6, 96, generator=g)
    noisy = low + 0.05 * torch.randn(64, 96, generator=g)
    assert evbmf_rank(noisy.numpy()) == 6


def test_vbmf_picks_ranks_below_full_on_a_trained_model(trained_example):
    model, _ = trained_example("vgg")
    info = factorize(model, method="vbmf", require_cheaper=False, check_latency=False).info
    records = [r for r in info["layers"] if r.get("replaced")]
    assert records
    for r in records:
        assert r["rel_error"] > 0  # truncated, not full rank
    assert info["flops_after"] < info["flops_before"]


def test_flops_target_is_reached_globally():
    model = build_arch("vgg")
    info = factorize(model, method="flops_target", flops_reduction=0.5,
                     check_latency=False).info
    assert info["flops_after"] <= 0.5 * info["flops_before"] * 1.02
    assert info["flops_after"] >= 0.3 * info["flops_before"]  # not far past the target


def test_rank_multiple_rounds_ranks_up():
    info = factorize(build_arch("vgg"), method="energy", energy=0.9, rank_multiple=8,
                     require_cheaper=False, check_latency=False).info
    assert info["layer_ranks"]
    all_ranks = [r for ranks in info["layer_ranks"].values() for r in ranks]
    assert sum(r % 8 == 0 for r in all_ranks) >= 0.8 * len(all_ranks)  # caps at layer width


def test_a_layer_is_replaced_only_where_cheaper():
    model = build_arch("vgg")
    info = factorize(model, method="energy", energy=1.0, check_latency=False).info
    assert info["replaced"] == 0  # full rank costs more FLOPs than the dense layer
    reasons = [r.get("reason", "") for r in info["layers"]]
    assert any("more FLOPs" in r for r in reasons)
    checked = factorize(model, method="energy", energy=0.7, check_latency=True).info
    for r in checked["layers"]:
        if r.get("replaced"):
            assert r["latency_ms_after"] * 1.05 <= r["latency_ms_before"]
        elif "latency_ms_after" in r:
            assert "not faster" in r["reason"]


def test_replay_with_layer_ranks_reproduces_the_model():
    model = build_arch("resnet")
    first = factorize(model, method="energy", energy=0.9, require_cheaper=False,
                      check_latency=False)
    again = factorize(model, **{**first.info["replay_config"], "check_latency": False})
    x = torch.randn(2, *SHAPE[1:])
    with torch.no_grad():
        assert torch.allclose(first.model(x), again.model(x), atol=1e-6)


def test_finetune_runs_only_with_a_budget(digits_loaders):
    model = build_arch("vgg")
    kw = dict(method="energy", energy=0.8, require_cheaper=False, check_latency=False,
              finetune_epochs=1)
    no_budget = factorize(model, ctx("none", digits_loaders), **kw).info["finetune"]
    assert no_budget == {"skipped": "no retraining budget"}
    tuned = factorize(model, ctx("finetune", digits_loaders), **kw).info["finetune"]
    assert tuned["epochs_run"] == 1 and tuned["val_accuracy_after"] is not None


def test_factorized_model_exports_to_onnx_and_matches(tmp_path):
    from advisor.export import export_onnx, onnx_session, run_onnx

    res = factorize(build_arch("resnet"), method="energy", energy=0.9, require_cheaper=False,
                    check_latency=False)
    path = tmp_path / "f.onnx"
    export_onnx(res.model, path, SHAPE)
    x = torch.randn(2, *SHAPE[1:])
    with torch.no_grad():
        ref = res.model(x).numpy()
    assert np.abs(run_onnx(onnx_session(path), x) - ref).max() < 1e-4


def test_onnx_input_is_refused():
    from advisor.passes.base import OnnxArtifact

    with pytest.raises(PassError, match="PyTorch model"):
        factorize(OnnxArtifact("m.onnx", SHAPE))
