"""Low-rank factorization (pass "factorize"): what it does to models, checked by its effects.

- full rank (energy 1.0, every eligible layer replaced) computes the same function;
- Tucker-2 turns a kxk conv into 1x1 → kxk → 1x1 keeping stride/padding/dilation/bias, SVD
  splits Linear and 1x1 convs in two (the best rank-r approximation), depthwise/grouped convs stay;
- rank selection: energy orders ranks, FLOPs and error; VBMF truncates; FLOPs and latency
  targets are reached; layers are replaced only where cheaper (FLOPs, measured latency);
- rank_multiple rounds ranks up; the optional fine-tune needs a budget and uses the shared loop;
- the factorized model exports to ONNX and matches torch.
"""
from __future__ import annotations

import sys

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


def ctx(budget: str = "none", loaders=None, shape=SHAPE, epochs: int | None = None):
    from advisor.passes.base import PassContext

    return PassContext.for_shape(shape, budget=budget, epochs=epochs, progress=False,
                                 train_loader=(loaders or {}).get("train"),
                                 val_loader=(loaders or {}).get("val"))


def factorize(model, context=None, **config):
    from advisor.passes.base import get_pass
    from advisor.passes.config import config_from_dict

    spec = get_pass("factorize")
    return spec.apply(model, config_from_dict(spec.config_cls, config), context or ctx())


def fz_module():
    from advisor.passes.base import get_pass

    get_pass("factorize")
    return sys.modules["advisor.passes.factorize"]


def replaced(info) -> list[dict]:
    return [r for r in info["layers"] if r.get("replaced")]


def same_output(a: nn.Module, b: nn.Module, shape=SHAPE) -> float:
    x = torch.randn(3, *shape[1:], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return (a(x) - b(x)).abs().max().item()


EXACT = dict(method="energy", energy=1.0, require_cheaper=False, check_latency=False)
NO_GATE = dict(require_cheaper=False, check_latency=False)


@pytest.fixture(scope="module")
def trained_vgg(trained_example):
    return trained_example("vgg")[0]


# ---- full rank is exact ------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ARCHS)
def test_full_rank_equals_the_original(arch):
    model = build_arch(arch)
    res = factorize(model, **EXACT)
    info = res.info
    eligible = [r for r in info["layers"] if r["kind"] != "skipped"]
    assert info["replaced"] == len(eligible) > 0  # every eligible layer was replaced
    for r in replaced(info):
        assert r["ranks"] == r["max_ranks"] and r["rel_error"] < 1e-6
    assert not res.model.training
    assert same_output(res.model, model) < 1e-4


def test_full_rank_on_a_trained_model_is_exact(trained_vgg):
    res = factorize(trained_vgg, **EXACT)
    assert {r["kind"] for r in replaced(res.info)} == {"tucker2", "svd"}
    assert same_output(res.model, trained_vgg) < 1e-4


# ---- structure ---------------------------------------------------------------------------------

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(16, 32, 3, stride=2, padding=2, dilation=2, bias=True)
        self.refl = nn.Conv2d(32, 32, 3, padding=1, padding_mode="reflect", bias=False)
        self.dw = nn.Conv2d(32, 32, 3, padding=1, groups=32)
        self.grouped = nn.Conv2d(32, 32, 3, padding=1, groups=4)
        self.point = nn.Conv2d(32, 48, 1, stride=2, bias=True)
        self.fc = nn.Linear(48, 10)

    def forward(self, x):
        x = self.grouped(self.dw(torch.relu(self.refl(torch.relu(self.conv(x))))))
        return self.fc(self.point(x).mean((2, 3)))


NET_SHAPE = (1, 16, 16, 16)


def test_tucker2_and_svd_structure_keeps_the_layer_geometry_and_skips_grouped_convs():
    torch.manual_seed(0)
    model = Net().eval()
    res = factorize(model, ctx(shape=NET_SHAPE), rank=4, **NO_GATE)
    m, records = res.model, {r["name"]: r for r in res.info["layers"]}
    conv = m.conv
    assert isinstance(conv, nn.Sequential)
    assert [n for n, _ in conv.named_children()] == ["reduce", "core", "restore"]
    assert conv.reduce.kernel_size == (1, 1) and conv.restore.kernel_size == (1, 1)
    assert (conv.reduce.in_channels, conv.reduce.out_channels) == (16, 4)
    assert (conv.core.in_channels, conv.core.out_channels) == (4, 4)
    assert (conv.restore.in_channels, conv.restore.out_channels) == (4, 32)
    assert conv.core.kernel_size == (3, 3) and conv.core.stride == (2, 2)
    assert conv.core.padding == (2, 2) and conv.core.dilation == (2, 2)
    assert conv.reduce.stride == conv.restore.stride == (1, 1)
    assert conv.restore.bias is not None and conv.reduce.bias is None and conv.core.bias is None
    assert torch.equal(conv.restore.bias, model.conv.bias)
    assert m.refl.core.padding_mode == "reflect" and m.refl.restore.bias is None
    # depthwise and grouped convolutions stay as they are, with the reason recorded
    assert m.dw is model.dw or (isinstance(m.dw, nn.Conv2d) and m.dw.groups == 32)
    assert isinstance(m.grouped, nn.Conv2d) and m.grouped.groups == 4
    assert "depthwise" in records["dw"]["reason"] and not records["dw"]["replaced"]
    assert "grouped" in records["grouped"]["reason"] and not records["grouped"]["replaced"]
    # 1x1 conv and Linear: two layers by SVD, stride and bias kept
    point = m.point
    assert isinstance(point, nn.Sequential) and len(point) == 2
    assert point[0].kernel_size == point[1].kernel_size == (1, 1)
    assert point[0].stride == (2, 2) and (point[0].out_channels, point[1].in_channels) == (4, 4)
    assert torch.equal(point[1].bias, model.point.bias) and point[0].bias is None
    assert isinstance(m.fc, nn.Sequential) and [type(x) for x in m.fc] == [nn.Linear, nn.Linear]
    assert (m.fc[0].out_features, m.fc[1].in_features) == (4, 4)
    assert torch.equal(m.fc[1].bias, model.fc.bias)
    assert records["conv"]["kind"] == "tucker2" and records["fc"]["kind"] == "svd"
    assert m(torch.zeros(2, *NET_SHAPE[1:])).shape == (2, 10)


def test_full_rank_tucker2_keeps_stride_padding_dilation_reflect_padding_and_bias():
    torch.manual_seed(0)
    model = Net().eval()
    res = factorize(model, ctx(shape=NET_SHAPE), **EXACT)
    assert {r["name"] for r in replaced(res.info)} == {"conv", "refl", "point", "fc"}
    assert same_output(res.model, model, NET_SHAPE) < 1e-4


def test_svd_split_is_the_best_rank_r_approximation():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 40), nn.ReLU(), nn.Linear(40, 10)).eval()
    res = factorize(model, ctx(shape=(1, 64)), rank=6, ignore_layers=("2",), **NO_GATE)
    first, second = res.model[0]
    assert (first.in_features, first.out_features, second.out_features) == (64, 6, 40)
    w = model[0].weight.detach().double()
    approx = (second.weight.detach() @ first.weight.detach()).double()
    s = torch.linalg.svdvals(w)
    best = torch.sqrt((s[6:] ** 2).sum()) / torch.linalg.norm(w)  # Eckart–Young
    err = torch.linalg.norm(w - approx) / torch.linalg.norm(w)
    assert abs(err.item() - best.item()) < 1e-5
    rec = next(r for r in res.info["layers"] if r["name"] == "0")
    assert abs(rec["rel_error"] - best.item()) < 1e-5
    assert torch.equal(second.bias, model[0].bias)
    ignored = next(r for r in res.info["layers"] if r["name"] == "2")
    assert not ignored["replaced"] and "ignore_layers" in ignored["reason"]


# ---- rank selection ----------------------------------------------------------------------------

ENERGIES = (0.7, 0.9, 0.99)


def test_energy_orders_ranks_flops_and_error(trained_vgg):
    infos = {e: factorize(trained_vgg, method="energy", energy=e, **NO_GATE).info
             for e in ENERGIES}
    flops = [infos[e]["flops_after"] for e in ENERGIES]
    assert flops[0] < flops[1] < flops[2]  # lower energy, fewer FLOPs
    recs = {e: {r["name"]: r for r in replaced(infos[e])} for e in ENERGIES}
    assert set(recs[0.7]) == set(recs[0.99])
    for name in recs[0.7]:
        ranks = [recs[e][name]["ranks"] for e in ENERGIES]
        errors = [recs[e][name]["rel_error"] for e in ENERGIES]
        assert all(a <= b for lo, hi in zip(ranks, ranks[1:]) for a, b in zip(lo, hi))
        assert errors[0] >= errors[1] >= errors[2]  # error falls as energy rises
        for e in ENERGIES:
            r = recs[e][name]
            assert {"ranks", "flops_before", "flops_after", "rel_error", "kind"} <= set(r)
            assert r["flops_after"] == r["flops_factorized"]
            # HOSVD bound: lost share <= sum over modes of (1 - energy kept per mode)
            assert r["rel_error"] ** 2 <= len(r["ranks"]) * (1 - e) + 1e-6
    assert np.mean([r["rel_error"] for r in recs[0.7].values()]) > \
        np.mean([r["rel_error"] for r in recs[0.99].values()])
    # the model totals agree with the per-layer numbers
    info = infos[0.9]
    saved = sum(r["flops_before"] - r["flops_after"] for r in info["layers"] if "flops_before" in r)
    assert info["flops_before"] - info["flops_after"] == pytest.approx(saved, rel=0.02)
    assert info["params_after"] < info["params_before"]


def test_vbmf_recovers_the_rank_of_a_noisy_low_rank_matrix():
    from advisor.passes.lowrank.vbmf import evbmf_rank

    g = torch.Generator().manual_seed(0)
    low = torch.randn(64, 6, generator=g) @ torch.randn(6, 96, generator=g)
    noisy = low + 0.05 * torch.randn(64, 96, generator=g)
    assert evbmf_rank(noisy.numpy()) == 6


def test_vbmf_picks_ranks_below_full_on_a_trained_model(trained_vgg):
    info = factorize(trained_vgg, method="vbmf", **NO_GATE).info
    records = replaced(info)
    assert records
    for r in records:
        assert all(a <= m for a, m in zip(r["ranks"], r["max_ranks"]))
        assert any(a < m for a, m in zip(r["ranks"], r["max_ranks"]))  # truncated
        assert r["rel_error"] > 0
    assert info["flops_after"] < 0.5 * info["flops_before"]


@pytest.mark.parametrize("reduction", [0.3, 0.6])
def test_flops_target_is_reached(trained_vgg, reduction):
    info = factorize(trained_vgg, method="flops_target", flops_reduction=reduction,
                     check_latency=False).info
    assert info["allocation"]["unit"] == "flops" and info["allocation"]["reached"]
    goal = (1 - reduction) * info["flops_before"]
    assert info["flops_after"] <= goal * 1.01
    assert info["flops_after"] >= goal * 0.85  # spends the error budget, not far past the target
    for r in replaced(info):
        assert r["flops_after"] < r["flops_before"]


def test_more_flops_reduction_means_more_error(trained_vgg):
    errs = []
    for reduction in (0.3, 0.6):
        info = factorize(trained_vgg, method="flops_target", flops_reduction=reduction,
                         check_latency=False).info
        errs.append(sum(r["rel_error"] ** 2 for r in replaced(info)))
    assert errs[0] < errs[1]


class Wide(nn.Module):
    """Two heavy 3x3 convs: latency is dominated by layers the pass can factorize.

    128 channels, so that the convolutions dominate the per-op overhead on any CPU: at 64, the
    fixed cost of three ops per Tucker-2 layer left a 50% saving out of reach on a fast host."""

    def __init__(self, width: int = 128):
        super().__init__()
        self.a = nn.Conv2d(8, width, 3, padding=1)
        self.b = nn.Conv2d(width, width, 3, padding=1)
        self.c = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x):
        return self.c(torch.relu(self.b(torch.relu(self.a(x))))).mean((2, 3))


def _quick_timer(monkeypatch):
    fz = fz_module()

    class QuickTimer(fz.LayerTimer):
        def __init__(self, target):
            super().__init__(target, budget_s=0.15, rounds=3)

    monkeypatch.setattr(fz, "LayerTimer", QuickTimer)


def _min_ms(model: nn.Module, shape, rounds: int = 5) -> float:
    from advisor.measure.timer import time_inprocess

    x = torch.randn(shape)
    return min(time_inprocess(lambda: model(x), warmup=2, repeats=10, max_seconds=0.3).min
               for _ in range(rounds))


def test_latency_target_is_reached_on_measured_layer_costs(monkeypatch):
    _quick_timer(monkeypatch)
    torch.manual_seed(0)
    model, shape = Wide().eval(), (1, 8, 32, 32)
    res = factorize(model, ctx(shape=shape), method="latency_target", latency_reduction=0.5)
    alloc = res.info["allocation"]
    assert alloc["unit"] == "ms" and alloc["reached"] and alloc["model_ms_inprocess"] > 0
    assert res.info["replaced"] >= 1
    for r in replaced(res.info):
        assert "latency_model" in r  # a fitted ms ≈ a + b·FLOPs line per layer
        assert r["latency_ms_after"] * 1.05 <= r["latency_ms_before"]
    # measured on the whole model, interleaved: clearly faster (goal: half the time)
    dense, fact = [], []
    for _ in range(3):
        dense.append(_min_ms(model, shape, 2))
        fact.append(_min_ms(res.model, shape, 2))
    assert min(fact) < 0.8 * min(dense)


# ---- replaced only where cheaper ---------------------------------------------------------------

def test_full_rank_is_never_cheaper_so_nothing_is_replaced(trained_vgg):
    info = factorize(trained_vgg, method="energy", energy=1.0, check_latency=False).info
    assert info["replaced"] == 0 and info["flops_after"] == info["flops_before"]
    reasons = [r.get("reason", "") for r in info["layers"]]
    assert all("more FLOPs" in r for r in reasons)


def test_a_layer_is_replaced_only_where_it_needs_fewer_flops(trained_vgg):
    info = factorize(trained_vgg, method="energy", energy=0.95, check_latency=False).info
    kept = [r for r in info["layers"] if not r["replaced"] and "flops_factorized" in r]
    assert replaced(info) and kept  # this energy gives both outcomes on the trained VGG
    for r in replaced(info):
        assert r["flops_after"] < r["flops_before"]
    for r in kept:
        assert r["flops_factorized"] >= r["flops_before"] and "more FLOPs" in r["reason"]
        assert r["flops_after"] == r["flops_before"]
    # the unconditional form replaces those too
    forced = factorize(trained_vgg, method="energy", energy=0.95, **NO_GATE).info
    assert forced["replaced"] == info["replaced"] + len(kept)


def test_a_layer_is_replaced_only_where_measured_faster(monkeypatch):
    _quick_timer(monkeypatch)
    torch.manual_seed(0)
    model, c = Wide().eval(), ctx(shape=(1, 8, 32, 32))
    checked = factorize(model, c, rank=8, check_latency=True).info
    assert checked["replaced"] >= 1
    for r in replaced(checked):
        assert r["latency_ms_after"] * 1.05 <= r["latency_ms_before"]
    # an unreachable speed-up requirement: cheaper in FLOPs, but never "measured faster"
    strict = factorize(model, c, rank=8, check_latency=True, min_layer_speedup=1000.0).info
    assert strict["replaced"] == 0
    for r in strict["layers"]:
        if "flops_factorized" in r:
            assert r["flops_factorized"] < r["flops_before"] and "not faster" in r["reason"]


# ---- rank_multiple -----------------------------------------------------------------------------

@pytest.mark.parametrize("method,multiple", [("energy", 8), ("energy", 16), ("vbmf", 16)])
def test_rank_multiple_rounds_ranks_up(trained_vgg, method, multiple):
    info = factorize(trained_vgg, method=method, energy=0.9, rank_multiple=multiple,
                     **NO_GATE).info
    records = replaced(info)
    assert records
    for r in records:
        for rank, chosen, limit in zip(r["ranks"], r["ranks_selected"], r["max_ranks"]):
            assert rank % multiple == 0 or rank == limit  # a multiple, capped at the width
            assert chosen <= rank < max(chosen, 1) + multiple  # rounded up, not further
    plain = factorize(trained_vgg, method=method, energy=0.9, **NO_GATE).info
    assert info["flops_after"] >= plain["flops_after"]


# ---- fine-tune ---------------------------------------------------------------------------------

FT = dict(method="energy", energy=0.8, finetune_epochs=1, **NO_GATE)


def test_finetune_is_refused_without_a_budget_or_data(digits_loaders, monkeypatch):
    fz = fz_module()

    def never(*a, **k):
        raise AssertionError("refused only after factorizing")

    monkeypatch.setattr(fz, "discover", never)  # the refusal comes before any work
    model = build_arch("vgg")
    with pytest.raises(PassError, match="retraining budget") as err:
        factorize(model, ctx("none", digits_loaders), **FT)
    assert "--retrain" in (err.value.hint or str(err.value))
    with pytest.raises(PassError, match="labelled training data"):
        factorize(model, ctx("finetune", None), **FT)


def test_without_finetune_epochs_no_budget_is_needed():
    info = factorize(build_arch("vgg"), ctx("none"), method="energy", energy=0.8, **NO_GATE).info
    assert "skipped" in info["finetune"] and info["replaced"] > 0


def test_finetune_runs_through_the_shared_loop_within_the_budget(trained_vgg, digits_loaders,
                                                                 monkeypatch):
    import advisor.train

    calls = []
    real = advisor.train.train

    def spy(model, loader, config, **kw):
        calls.append(config)
        return real(model, loader, config, **kw)

    monkeypatch.setattr(advisor.train, "train", spy)
    from advisor.measure.accuracy import accuracy

    kw = {**FT, "energy": 0.6}  # truncation costs the trained VGG much of its accuracy
    plain = factorize(trained_vgg, ctx("finetune", digits_loaders), **{**kw, "finetune_epochs": 0})
    tuned = factorize(trained_vgg, ctx("finetune", digits_loaders, epochs=1),
                      **{**kw, "finetune_epochs": 3})
    assert len(calls) == 1 and calls[0].epochs == 1  # the budget caps the 3 epochs asked
    ft = tuned.info["finetune"]
    assert ft["epochs_run"] == 1
    # how much truncation costs differs between machines (the VGG is trained on each): the
    # premise is checked, then one epoch must win back at least half of what was lost
    lost = accuracy(trained_vgg, digits_loaders["val"]) - ft["val_accuracy_before"]
    assert lost > 0.1
    assert ft["val_accuracy_after"] - ft["val_accuracy_before"] > 0.5 * lost
    assert same_output(plain.model, tuned.model) > 1e-3  # the weights did change
    assert not tuned.model.training and "skipped" in plain.info["finetune"]
    # the factorized structure survives training
    assert [type(m) for m in tuned.model.modules()] == [type(m) for m in plain.model.modules()]


# ---- replay, export, input checks --------------------------------------------------------------

def test_replay_with_layer_ranks_reproduces_the_model():
    model = build_arch("resnet")
    first = factorize(model, method="energy", energy=0.9, **NO_GATE)
    again = factorize(model, **{**first.info["replay_config"], "check_latency": False})
    assert again.info["layer_ranks"] == first.info["layer_ranks"]
    assert same_output(first.model, again.model) < 1e-6


@pytest.mark.parametrize("arch", ["resnet", "mobilenet", "vgg"])
def test_factorized_model_exports_to_onnx_and_matches(tmp_path, arch):
    import onnx

    from advisor.export import export_onnx, onnx_session, run_onnx

    res = factorize(build_arch(arch), method="energy", energy=0.9, **NO_GATE)
    assert res.info["replaced"] > 0
    path = tmp_path / f"{arch}.onnx"
    export_onnx(res.model, path, SHAPE)
    x = torch.randn(2, *SHAPE[1:], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = res.model(x).numpy()
    assert np.abs(run_onnx(onnx_session(path), x) - ref).max() < 1e-4
    # the factorized layers are really in the graph: one Conv node per Conv2d, one Gemm/MatMul
    # per Linear of the factorized model
    nodes = [n.op_type for n in onnx.load(str(path)).graph.node]
    mods = list(res.model.modules())
    assert nodes.count("Conv") == sum(isinstance(m, nn.Conv2d) for m in mods)
    assert nodes.count("Gemm") + nodes.count("MatMul") == sum(isinstance(m, nn.Linear)
                                                              for m in mods)


def test_onnx_input_is_refused():
    from advisor.passes.base import OnnxArtifact

    with pytest.raises(PassError, match="PyTorch model"):
        factorize(OnnxArtifact("m.onnx", SHAPE))


def test_bad_settings_are_refused():
    from advisor.errors import PlanError

    for bad in ({"energy": 0.0}, {"energy": 1.5}, {"rank_multiple": 0}, {"flops_reduction": 1.0},
                {"rank": 0}, {"min_layer_speedup": 0}):
        with pytest.raises(PlanError):
            factorize(build_arch("vgg"), **bad)
    with pytest.raises(PassError, match="matches no module"):
        factorize(build_arch("vgg"), ignore_layers=("nope",), **NO_GATE)
