"""Pruning at initialization: masks from SynFlow/SNIP on fresh weights, sparse training."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from advisor.errors import PassError
from advisor.passes.at_init import snip_masks, synflow_masks
from advisor.passes.torch_common import reinitialise
from advisor.sparse import prunable_layers

from .conftest import INPUT_SHAPE, build, run_pass


def _names(model):
    return [n for n in prunable_layers(model)][:-1]  # all but the classifier


def test_synflow_reaches_the_sparsity_without_layer_collapse():
    model = build("vgg")
    names = _names(model)
    masks = synflow_masks(model, names, INPUT_SHAPE[1:], sparsity=0.95, iterations=20)
    kept = sum(int(m.sum()) for m in masks.values())
    total = sum(m.numel() for m in masks.values())
    assert 1 - kept / total == pytest.approx(0.95, abs=1e-3)
    assert all(int(m.sum()) > 0 for m in masks.values())  # every layer keeps a path


def test_synflow_is_data_free_and_differs_from_magnitude():
    from advisor.sparse import magnitude_masks

    model = build("vgg")
    names = _names(model)
    layers = prunable_layers(model)
    syn = synflow_masks(model, names, INPUT_SHAPE[1:], sparsity=0.8, iterations=10)
    mag = magnitude_masks({n: layers[n] for n in names}, 0.8, "global")
    assert any(not torch.equal(syn[n], mag[n]) for n in names)


def test_snip_scores_use_gradients_of_real_batches(digits_loaders):
    model = build("resnet")
    names = _names(model)
    masks = snip_masks(model, names, digits_loaders["train"], sparsity=0.7, batches=2)
    kept = sum(int(m.sum()) for m in masks.values())
    total = sum(m.numel() for m in masks.values())
    assert 1 - kept / total == pytest.approx(0.7, abs=1e-3)
    with pytest.raises(PassError, match="labelled"):
        snip_masks(model, names, None, 0.7, 1)


def test_reinitialise_throws_the_trained_weights_away():
    model = build("resnet")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert reinitialise(model, seed=3) > 0
    conv = next(k for k, v in before.items() if v.dim() == 4)
    assert not torch.equal(model.state_dict()[conv], before[conv])
    bn_var = next(k for k in before if k.endswith("running_var"))
    assert bool((model.state_dict()[bn_var] == 1).all())


def test_prune_at_init_needs_a_full_retraining_budget(make_ctx):
    with pytest.raises(PassError, match="full"):
        run_pass("prune_at_init", build("vgg"), make_ctx("finetune"))


@pytest.mark.parametrize("method", ["synflow", "snip"])
def test_sparse_network_trained_from_scratch_keeps_its_mask(method, make_ctx, digits_loaders):
    from advisor.examples.models import mlp
    from advisor.train import evaluate

    torch.manual_seed(0)
    model = mlp(hidden=(256, 128)).eval()
    res = run_pass("prune_at_init", model, make_ctx("full"), method=method, sparsity=0.8,
                   epochs=3, iterations=10)
    info = res.info
    assert info["sparsity"] == pytest.approx(0.8, abs=1e-3)  # still sparse after training
    assert info["training"]["epochs_run"] == 3
    assert evaluate(res.model, digits_loaders["val"]) > 0.8  # it learnt from scratch
    assert info["latency_effect"].startswith("none")
    assert info["compressed_bytes"] < info["dense_bytes"]
    out = [m for m in res.model.modules() if isinstance(m, nn.Linear)][-1]
    assert bool((out.weight != 0).all())  # the classifier stays dense
