"""The zoo: torchvision and timm architectures at 224 px with random weights, as users bring them.

Each case names the factory spec a user would pass (`--arch`) and its keyword arguments
(`--arch-kwargs`): torchvision's builders take none (1000 classes); timm's `create_model` takes
the model name, so every timm case is also a test of `--arch-kwargs`. Nothing is downloaded:
no case asks for pretrained weights.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

SHAPE = (1, 3, 224, 224)


@dataclass(frozen=True)
class ZooCase:
    id: str
    arch: str  # pkg.module:factory
    kwargs: dict = field(default_factory=dict)
    cnn: bool = True  # structured pruning, int8 static and factorization must be "ok" on CNNs
    # column → a word its refusal must contain: the refusals known and left open (issue 15)
    known_refusals: dict = field(default_factory=dict)

    def build(self) -> torch.nn.Module:
        """The architecture with seeded random weights and non-trivial BatchNorm statistics
        (fresh BN layers are identities, which would hide a loader that dropped buffers)."""
        from advisor.model_common import import_factory

        torch.manual_seed(0)
        model = import_factory(self.arch)(**self.kwargs)
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, torch.nn.BatchNorm2d) and m.affine:
                    m.running_mean.uniform_(-0.1, 0.1)
                    m.running_var.uniform_(0.5, 1.5)
                # torchvision's ViT starts its head at zero: every output would be 0, and no
                # comparison of outputs could fail
                if isinstance(m, torch.nn.Linear) and not m.weight.any():
                    m.weight.normal_(0.0, 0.02)
        return model.eval()


def _tv(name: str, cnn: bool = True, **known_refusals: str) -> ZooCase:
    return ZooCase(name, f"torchvision.models:{name}", {}, cnn, known_refusals)


def _timm(name: str, cnn: bool = True) -> ZooCase:
    return ZooCase(f"timm/{name}", "timm:create_model",
                   {"model_name": name, "pretrained": False}, cnn)


CASES: tuple[ZooCase, ...] = (
    _tv("resnet18"), _tv("resnet50"), _tv("mobilenet_v2"), _tv("mobilenet_v3_small"),
    _tv("mobilenet_v3_large"), _tv("efficientnet_b0"), _tv("regnet_y_400mf"),
    _tv("shufflenet_v2_x1_0"), _tv("squeezenet1_1"), _tv("densenet121"), _tv("mnasnet1_0"),
    _tv("convnext_tiny"), _tv("vit_b_16", cnn=False), _tv("swin_t", cnn=False),
    # timm families: ResNet-D, EfficientNet, MobileNetV3, ConvNeXt, ViT
    _timm("resnet18d"), _timm("efficientnet_b0"), _timm("mobilenetv3_small_100"),
    _timm("convnext_atto"), _timm("vit_tiny_patch16_224", cnn=False),
)
BY_ID = {c.id: c for c in CASES}
