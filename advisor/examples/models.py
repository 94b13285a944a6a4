"""Small vision models built in code, covering the couplings compression must respect.

- `resnet`: residual adds (BasicBlock with 1x1 projection shortcuts).
- `mobilenet`: depthwise convolutions and inverted residuals (MobileNetV2-style).
- `vgg`: plain conv-BN-ReLU stacks (the network-slimming setting).
- `concatnet`: channel concatenation (Inception/DenseNet-style coupling).
- `mlp`: Linear-dominated (where dynamic int8 and CSR sparsity pay off).

All are fully convolutional up to a global average pool, so the same weights run at the trained
32x32 digits resolution and at 224x224 for latency work: `advisor.examples.models:resnet` etc. are
valid `pkg.module:factory` specs. Every ReLU is its own instance (PT2E quantization rejects a
shared one).
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["resnet", "mobilenet", "vgg", "concatnet", "mlp", "FACTORIES"]


def _conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))
        self.relu2 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 16,
                 blocks: tuple[int, ...] = (1, 1, 1)):
        super().__init__()
        self.stem = _conv_bn(in_channels, width)
        layers, cin = [], width
        for i, n in enumerate(blocks):
            cout = width * 2 ** i
            for j in range(n):
                layers.append(BasicBlock(cin, cout, stride=2 if (i > 0 and j == 0) else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(x))
        return self.fc(torch.flatten(self.pool(x), 1))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        self.use_residual = stride == 1 and cin == cout
        self.expand = _conv_bn(cin, hidden, k=1)
        self.depthwise = _conv_bn(hidden, hidden, k=3, stride=stride, groups=hidden)
        self.project = nn.Sequential(nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        return x + out if self.use_residual else out


class MobileNet(nn.Module):
    # (expand, channels, repeats, stride)
    SETTINGS = ((1, 16, 1, 1), (4, 24, 2, 2), (4, 32, 2, 2), (4, 64, 2, 2))

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 16,
                 last_channels: int = 128):
        super().__init__()
        scale = width / 16
        self.stem = _conv_bn(in_channels, width)
        blocks, cin = [], width
        for expand, c, n, s in self.SETTINGS:
            cout = max(8, int(round(c * scale)))
            for i in range(n):
                blocks.append(InvertedResidual(cin, cout, s if i == 0 else 1, expand))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = _conv_bn(cin, last_channels, k=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(last_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


class VGG(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 3,
                 cfg: tuple = (32, 32, "M", 64, 64, "M", 128, 128, "M")):
        super().__init__()
        layers, cin = [], in_channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1, bias=False), nn.BatchNorm2d(v),
                           nn.ReLU(inplace=True)]
                cin = v
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class ConcatBlock(nn.Module):
    def __init__(self, cin: int, branch: int):
        super().__init__()
        self.b1 = _conv_bn(cin, branch, k=1)
        self.b3 = _conv_bn(cin, branch, k=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1(x), self.b3(x)], dim=1)


class ConcatNet(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 16):
        super().__init__()
        self.stem = _conv_bn(in_channels, width)
        self.block1 = ConcatBlock(width, width)
        self.down = nn.MaxPool2d(2)
        self.block2 = ConcatBlock(2 * width, 2 * width)
        self.mix = _conv_bn(4 * width, 4 * width, k=3, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.down(self.block1(self.stem(x)))
        x = self.mix(self.block2(x))
        return self.fc(torch.flatten(self.pool(x), 1))


class MLP(nn.Module):
    def __init__(self, num_classes: int = 10, in_features: int = 3 * 32 * 32,
                 hidden: tuple[int, ...] = (512, 256)):
        super().__init__()
        layers, cin = [nn.Flatten()], in_features
        for h in hidden:
            layers += [nn.Linear(cin, h), nn.ReLU(inplace=True)]
            cin = h
        layers.append(nn.Linear(cin, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def resnet(num_classes: int = 10, in_channels: int = 3, width: int = 16,
           blocks: tuple[int, ...] = (1, 1, 1)) -> ResNet:
    """Residual CNN (adds couple the channels of a block's output and its shortcut)."""
    return ResNet(num_classes, in_channels, width, tuple(blocks))


def mobilenet(num_classes: int = 10, in_channels: int = 3, width: int = 16,
              last_channels: int = 128) -> MobileNet:
    """MobileNetV2-style: depthwise convs and inverted residuals."""
    return MobileNet(num_classes, in_channels, width, last_channels)


def vgg(num_classes: int = 10, in_channels: int = 3,
        cfg: tuple = (32, 32, "M", 64, 64, "M", 128, 128, "M")) -> VGG:
    """VGG-style conv-BN-ReLU stacks."""
    return VGG(num_classes, in_channels, tuple(cfg))


def concatnet(num_classes: int = 10, in_channels: int = 3, width: int = 16) -> ConcatNet:
    """Branches joined by channel concatenation."""
    return ConcatNet(num_classes, in_channels, width)


def mlp(num_classes: int = 10, in_features: int = 3 * 32 * 32,
        hidden: tuple[int, ...] = (512, 256)) -> MLP:
    """Linear-dominated network."""
    return MLP(num_classes, in_features, tuple(hidden))


FACTORIES = {"resnet": resnet, "mobilenet": mobilenet, "vgg": vgg, "concatnet": concatnet,
             "mlp": mlp}
