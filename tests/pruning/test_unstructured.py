"""Unstructured sparsity: exact sparsity levels, protected layers, honest storage and speed."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from advisor.errors import PassError, PlanError
from advisor.sparse import CSRLinear, layer_sparsity, overall_sparsity

from .conftest import ARCHS, INPUT_SHAPE, build, run_pass


@pytest.mark.parametrize("arch", ARCHS)
def test_zero_sparsity_leaves_outputs_equal(arch, make_ctx):
    model = build(arch)
    res = run_pass("prune_unstructured", model, make_ctx(), sparsity=0.0)
    x = torch.randn(3, *INPUT_SHAPE[1:], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (res.model(x) - model(x)).abs().max().item() < 1e-5


def test_global_sparsity_is_exact_and_uneven_across_layers(make_ctx):
    model = build("resnet")
    res = run_pass("prune_unstructured", model, make_ctx(), sparsity=0.8, scope="global")
    names = list(res.info["layer_sparsity"])
    assert overall_sparsity(res.model, names) == pytest.approx(0.8, abs=1e-4)
    levels = list(res.info["layer_sparsity"].values())
    assert max(levels) - min(levels) > 0.1  # one ranking: layers end up differently sparse
    assert overall_sparsity(model) == 0.0  # the input model is untouched


def test_local_sparsity_is_the_same_in_every_layer(make_ctx):
    res = run_pass("prune_unstructured", build("vgg"), make_ctx(), sparsity=0.6, scope="local")
    for name, level in res.info["layer_sparsity"].items():
        assert level == pytest.approx(0.6, abs=0.01), name


def test_output_layer_and_listed_layers_stay_dense(make_ctx):
    model = build("vgg")
    first = next(n for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
    res = run_pass("prune_unstructured", model, make_ctx(), sparsity=0.9,
                   ignore_layers=(first,))
    per_layer = layer_sparsity(res.model)
    out = [n for n, m in res.model.named_modules() if isinstance(m, nn.Linear)][-1]
    assert per_layer[out] == 0.0 and per_layer[first] == 0.0
    assert out not in res.info["layer_sparsity"]
    with_out = run_pass("prune_unstructured", model, make_ctx(), sparsity=0.9,
                        prune_output_layer=True)
    assert layer_sparsity(with_out.model)[out] > 0.0


def test_masks_are_permanent_weights_not_reparametrisations(make_ctx):
    res = run_pass("prune_unstructured", build("resnet"), make_ctx(), sparsity=0.5)
    names = [n for n, _ in res.model.named_parameters()]
    assert not any(n.endswith("_orig") for n in names)
    assert not any(n.endswith("_mask") for n, _ in res.model.named_buffers())


def test_storage_shrinks_and_speed_is_not_promised(make_ctx):
    info = run_pass("prune_unstructured", build("vgg"), make_ctx(), sparsity=0.8).info
    assert info["compressed_bytes"] < 0.5 * info["dense_bytes"]
    assert info["zlib_bytes"] < info["dense_bytes"]
    assert info["latency_effect"].startswith("none")
    assert info["csr_layers"] == {}


def test_csr_linear_is_used_only_where_measured_faster_and_computes_the_same(make_ctx):
    from advisor.examples.models import mlp

    torch.manual_seed(0)
    model = mlp(in_features=64, hidden=(2048, 2048)).eval()
    ctx = make_ctx(shape=(1, 64))
    res = run_pass("prune_unstructured", model, ctx, sparsity=0.95, csr_linear=True,
                   csr_min_sparsity=0.9)
    csr = res.info["csr_layers"]
    for name, rec in csr.items():
        assert rec["csr_ms"] < rec["dense_ms"] and rec["sparsity"] >= 0.9
        assert isinstance(res.model.get_submodule(name), CSRLinear)
    # the 2048x2048 layer at 95% is many times cheaper as CSR at batch 1
    big = [n for n, m in model.named_modules()
           if isinstance(m, nn.Linear) and m.in_features == m.out_features == 2048]
    assert big and big[0] in csr
    dense_equiv = run_pass("prune_unstructured", model, ctx, sparsity=0.95).model
    for b in (1, 5):
        x = torch.randn(b, 64)
        with torch.no_grad():
            assert torch.allclose(res.model(x), dense_equiv(x), atol=1e-5)
    assert "torch only" in res.info["deploy"]


def test_csr_model_copies_saves_and_reloads(tmp_path, make_ctx):
    from advisor.examples.models import mlp
    from advisor.export import save_torch_artifact
    from advisor.model_io import load_model
    from advisor.sparse import to_csr

    torch.manual_seed(0)
    model = mlp(in_features=64, hidden=(256,)).eval()
    sparse = run_pass("prune_unstructured", model, make_ctx(shape=(1, 64)), sparsity=0.9).model
    name = [n for n, m in sparse.named_modules() if isinstance(m, nn.Linear)][0]
    to_csr(sparse, [name])
    twin = copy.deepcopy(sparse)
    assert isinstance(twin.get_submodule(name), CSRLinear)
    path = save_torch_artifact(sparse, tmp_path / "sparse.pt2", (1, 64))
    assert path.suffix == ".ts"  # torch.export cannot hold sparse CSR tensors
    loaded = load_model(str(path))
    assert loaded.input_shape == (1, 64)
    for b in (1, 7):
        x = torch.randn(b, 64)
        with torch.no_grad():
            assert torch.allclose(loaded.module(x), sparse(x), atol=1e-5)
            assert torch.allclose(twin(x), sparse(x), atol=1e-6)


def test_finetuning_keeps_the_sparsity(mlp_copy, make_ctx):
    sparse = run_pass("prune_unstructured", mlp_copy, make_ctx(shape=(1, 3, 32, 32)),
                      sparsity=0.8).model
    masks = {n: (m.weight == 0).clone() for n, m in sparse.named_modules()
             if isinstance(m, nn.Linear)}
    tuned = run_pass("finetune", sparse, make_ctx("finetune"), epochs=1).model
    for n, m in tuned.named_modules():
        if n in masks:
            assert bool((m.weight[masks[n]] == 0).all()), n


def test_bad_sparsity_is_refused(make_ctx):
    with pytest.raises(PlanError, match="sparsity"):  # refused when the config is built
        run_pass("prune_unstructured", build("vgg"), make_ctx(), sparsity=1.0)


# ---- iterative magnitude pruning -----------------------------------------------------------

def test_iterative_rounds_follow_the_geometric_schedule(mlp_copy, make_ctx):
    res = run_pass("prune_unstructured_iterative", mlp_copy, make_ctx("finetune"),
                   sparsity=0.9, rounds=3, epochs_per_round=1, rewind="lr")
    levels = [r["sparsity"] for r in res.info["rounds"]]
    expected = [1 - 0.1 ** (k / 3) for k in (1, 2, 3)]
    assert levels == pytest.approx(expected, abs=1e-3)
    assert res.info["sparsity"] == pytest.approx(0.9, abs=1e-3)
    assert all(r["val_accuracy"] is not None for r in res.info["rounds"])
    assert res.info["rounds"][-1]["val_accuracy"] > 0.8  # retraining between rounds works


def test_iterative_needs_a_budget_and_data(mlp_copy, make_ctx):
    with pytest.raises(PassError, match="retraining budget"):
        run_pass("prune_unstructured_iterative", mlp_copy, make_ctx("none"))
    with pytest.raises(PassError, match="training data"):
        run_pass("prune_unstructured_iterative", mlp_copy, make_ctx("finetune", train=False))


def _starts_of_rounds(monkeypatch):
    """Record the weights each retraining round starts from."""
    import advisor.passes.unstructured as mod

    starts = []
    real = mod.train

    def spy(model, *a, **kw):
        starts.append(copy.deepcopy(model.state_dict()))
        return real(model, *a, **kw)
    monkeypatch.setattr(mod, "train", spy)
    return starts


@pytest.mark.parametrize("rewind", ["weight", "lr"])
def test_rewinding_restarts_round_two_from_the_right_weights(rewind, mlp_copy, make_ctx,
                                                            monkeypatch):
    starts = _starts_of_rounds(monkeypatch)
    original = copy.deepcopy(mlp_copy.state_dict())
    res = run_pass("prune_unstructured_iterative", mlp_copy, make_ctx("finetune"),
                   sparsity=0.75, rounds=2, epochs_per_round=1, rewind=rewind, rewind_epoch=0)
    assert len(starts) == 2
    key = next(k for k in original if k.endswith("weight") and original[k].dim() == 2)
    second = starts[1][key]
    live = second != 0
    assert 0.05 < live.float().mean() < 0.9
    if rewind == "weight":  # survivors are back at their epoch-0 (given) values
        assert torch.equal(second[live], original[key][live])
    else:  # learning-rate rewinding keeps the trained weights
        assert not torch.equal(second[live], original[key][live])
    assert res.info["rewind"] == rewind


def test_weight_rewinding_keeps_the_weights_after_k_epochs():
    from advisor.passes.unstructured import _EpochCapture

    layer = nn.Linear(2, 2)
    capture = _EpochCapture(epoch=2, steps_per_epoch=3)
    for step in range(1, 10):
        with torch.no_grad():
            layer.weight.fill_(float(step))
        capture(layer)
    assert capture.state is not None
    assert bool((capture.state["weight"] == 6.0).all())  # after 2 epochs x 3 steps


def test_csr_timing_leaves_the_forward_intact_for_consecutive_linears():
    from advisor.examples.models import mlp
    from advisor.passes.unstructured import convert_faster_linears

    torch.manual_seed(0)
    model = mlp(in_features=48, hidden=(96, 64)).eval()
    x = torch.randn(1, 48)
    ref = model(x).detach()
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    convert_faster_linears(model, x, names, min_sparsity=0.0, repeats=3)
    assert torch.allclose(model(x), ref, atol=1e-5)
