"""Structured pruning of transformers: only the MLP hidden widths are pruned (the token width and
the attention heads stay whole), and window attention is refused up front with its reason."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from advisor.errors import PassError


class TinyViT(nn.Module):
    """Patch embedding, two encoder layers (nn.MultiheadAttention + MLP), a head; like
    torchvision's ViT it reshapes with a Python attribute (`hidden_dim`)."""

    def __init__(self, dim: int = 32, mlp: int = 96, classes: int = 10):
        super().__init__()
        self.hidden_dim = dim
        self.patch = nn.Conv2d(3, dim, 8, stride=8)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(dim, 4, mlp, dropout=0.0, batch_first=True)
            for _ in range(2))
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        x = self.patch(x).reshape(x.shape[0], self.hidden_dim, -1).transpose(1, 2)
        for layer in self.layers:
            x = layer(x)
        return self.head(x.mean(1))


def test_transformer_prunes_only_the_mlp_hidden_width(make_ctx):
    from advisor.passes.base import get_pass, load_builtin_passes
    from advisor.passes.depgraph import attention_protected

    load_builtin_passes()
    torch.manual_seed(0)
    model = TinyViT().eval()
    protected = attention_protected(model)
    assert "patch" in protected and "layers.0.linear2" in protected
    assert "layers.0.linear1" not in protected  # the MLP's hidden width stays prunable
    spec = get_pass("prune_structured")
    res = spec.apply(model, spec.config_cls(ratio=0.3, slimming_epochs=0,
                                             calibration_samples=2), make_ctx())
    pruned = res.model
    assert pruned.layers[0].linear1.out_features < 96
    assert pruned.layers[0].linear2.out_features == 32 and pruned.patch.out_channels == 32
    with torch.inference_mode():
        assert pruned(torch.randn(2, 3, 32, 32)).shape == (2, 10)


class ShiftedWindowAttention(nn.Module):  # named like torchvision's Swin block
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(8, 24)

    def forward(self, x):
        return self.qkv(x)[..., :8]


def test_window_attention_is_refused_before_any_work(make_ctx):
    from advisor.passes.base import get_pass, load_builtin_passes

    load_builtin_passes()
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 8), ShiftedWindowAttention(),
                          nn.Linear(8, 10))
    spec = get_pass("prune_structured")
    with pytest.raises(PassError, match=r"shifted-window attention 2 \(ShiftedWindowAttention\)"):
        spec.apply(model, spec.config_cls(ratio=0.3, slimming_epochs=0), make_ctx())
