"""The distillation losses: values, temperature scaling, invariances, adapters."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from advisor.passes import kd_losses as L


def _logits(seed: int, n: int = 8, k: int = 10) -> torch.Tensor:
    return torch.randn(n, k, generator=torch.Generator().manual_seed(seed)) * 3


def test_soft_kl_is_zero_for_identical_logits_and_positive_otherwise():
    s = _logits(0)
    assert L.soft_kl(s, s.clone(), 4.0).item() == pytest.approx(0.0, abs=1e-6)
    assert L.soft_kl(s, _logits(1), 4.0).item() > 0.1


def test_soft_kl_is_t_squared_times_the_softened_kl():
    s, t, temp = _logits(0), _logits(1), 3.0
    p_t = torch.softmax(t / temp, 1)
    manual = (p_t * (p_t.log() - torch.log_softmax(s / temp, 1))).sum(1).mean()
    assert L.soft_kl(s, t, temp).item() == pytest.approx(temp ** 2 * manual.item(), rel=1e-5)


def test_high_temperature_limit_matches_logit_matching():
    # Hinton et al. eq. (3): for T >> logits, T²·KL → Σ(z - v)² / (2K) on zero-mean logits;
    # the T² factor is what keeps the soft term's scale independent of T.
    s, t = _logits(0), _logits(1)
    s, t = s - s.mean(1, keepdim=True), t - t.mean(1, keepdim=True)
    limit = ((s - t) ** 2).sum(1).mean() / (2 * s.shape[1])
    for temp in (50.0, 200.0):
        assert L.soft_kl(s, t, temp).item() == pytest.approx(limit.item(), rel=0.03)


def test_hinton_loss_mixes_soft_and_hard_terms():
    s, t = _logits(0), _logits(1)
    y = torch.randint(0, 10, (8,), generator=torch.Generator().manual_seed(2))
    got = L.hinton_loss(s, t, y, temperature=2.0, alpha=0.7, hard_label_weight=0.3)
    want = 0.7 * L.soft_kl(s, t, 2.0) + 0.3 * F.cross_entropy(s, y)
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    # no labels, or only dummy -1 labels: the teacher alone supervises
    soft = 0.7 * L.soft_kl(s, t, 2.0)
    for labels in (None, torch.full((8,), -1)):
        assert L.hinton_loss(s, t, labels, temperature=2.0, alpha=0.7,
                             hard_label_weight=0.3).item() == pytest.approx(soft.item())


def test_hard_label_ce_ignores_unlabelled_rows():
    s = _logits(0)
    y = torch.tensor([3, -1, 5, -1, 0, 1, -1, 9])
    mask = y >= 0
    assert L.hard_label_ce(s, y).item() == pytest.approx(F.cross_entropy(s[mask], y[mask]).item())


def _emb(seed: int, n: int = 12, d: int = 16) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("loss", [L.rkd_distance_loss, L.rkd_angle_loss])
def test_rkd_losses_zero_for_identical_positive_otherwise_and_scale_invariant(loss):
    e, other = _emb(0), _emb(1)
    assert loss(e, e.clone()).item() == pytest.approx(0.0, abs=1e-6)
    base = loss(other, e).item()
    assert base > 1e-3
    assert loss(7.5 * other, e).item() == pytest.approx(base, rel=1e-4)
    assert loss(other, 0.2 * e).item() == pytest.approx(base, rel=1e-4)
    # scaled copies carry the same relations
    assert loss(3.0 * e, e).item() == pytest.approx(0.0, abs=1e-6)


def test_rkd_works_across_widths_and_has_finite_gradients_with_duplicates():
    t = _emb(0, d=32)
    s = _emb(1, d=8).requires_grad_(True)
    s_dup = torch.cat([s, s[:2]])  # identical rows: zero distances
    loss = L.rkd_distance_loss(s_dup, torch.cat([t, t[:2]])) + \
        L.rkd_angle_loss(s_dup, torch.cat([t, t[:2]]))
    loss.backward()
    assert torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0


def test_hint_loss_and_adapters():
    t = torch.randn(4, 24, 8, 8)
    assert L.hint_loss(t, t.clone()).item() == 0.0
    adapter = L.make_adapter(12, 24, dims=4)
    assert isinstance(adapter, torch.nn.Conv2d) and adapter.kernel_size == (1, 1)
    assert adapter.weight.shape == (24, 12, 1, 1)
    s = torch.randn(4, 12, 8, 8)
    assert L.hint_loss(s, t, adapter).item() > 0
    # explicitly paired maps of different sizes are pooled to the smaller one
    assert L.hint_loss(torch.randn(4, 24, 16, 16), t).item() > 0
    assert isinstance(L.make_adapter(64, 128, dims=2), torch.nn.Linear)
