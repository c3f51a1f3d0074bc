"""PyTorch ResNet-18 / ResNet-50 v1.5, the torchvision architecture written out by hand (torchvision does not install here).

Same network as `keras_iqa.backbones.resnet_features` + global average pooling + a linear head: 7x7/2 stem conv, BN, ReLU,
3x3/2 max-pool, four stages of basic (ResNet-18: 2, 2, 2, 2) or bottleneck (ResNet-50: 3, 4, 6, 3) blocks; v1.5 puts the
stride of a bottleneck block on its 3x3 convolution (He et al. 2016 put it on the first 1x1). Random weights (Kaiming normal
for convolutions, BN gamma 1 / beta 0), as on our side: the benchmark measures speed, not accuracy.

Example:
>>> import torch
>>> from bench.peers.resnet_torch import resnet
>>> net = resnet(50, num_outputs=1).eval()
>>> with torch.no_grad():
...     net(torch.zeros(2, 3, 64, 64)).shape
torch.Size([2, 1])
"""

from __future__ import annotations

import torch
from torch import nn

ARCH = {18: ("basic", (2, 2, 2, 2)), 50: ("bottleneck", (3, 4, 6, 3))}


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1) -> list:
    return [nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False), nn.BatchNorm2d(cout)]


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(cin, planes, 3, stride)
        self.conv2, self.bn2 = _conv_bn(planes, planes, 3)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = None
        if stride != 1 or cin != planes:
            self.shortcut = nn.Sequential(*_conv_bn(cin, planes, 1, stride))

    def forward(self, x):
        identity = x if self.shortcut is None else self.shortcut(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(cin, planes, 1)
        self.conv2, self.bn2 = _conv_bn(planes, planes, 3, stride)  # v1.5: stride on the 3x3
        self.conv3, self.bn3 = _conv_bn(planes, planes * 4, 1)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = None
        if stride != 1 or cin != planes * 4:
            self.shortcut = nn.Sequential(*_conv_bn(cin, planes * 4, 1, stride))

    def forward(self, x):
        identity = x if self.shortcut is None else self.shortcut(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """ResNet v1.5 with a `num_outputs` linear head on globally average-pooled stage-4 features."""

    def __init__(self, depth: int = 50, num_outputs: int = 1, width: float = 1.0, blocks=None):
        super().__init__()
        if depth not in ARCH:
            raise ValueError(f"depth must be 18 or 50, got {depth!r}")
        kind, default_blocks = ARCH[depth]
        block = BasicBlock if kind == "basic" else Bottleneck
        planes = [64] + [max(1, int(round(c * width))) for c in (128, 256, 512)]  # same rule as keras_iqa.backbones
        self.stem = nn.Sequential(*_conv_bn(3, 64, 7, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        layers, cin = [], 64
        for i, (p, n) in enumerate(zip(planes, blocks or default_blocks)):
            for j in range(n):
                layers.append(block(cin, p, stride=(1 if i == 0 else 2) if j == 0 else 1))
                cin = p * block.expansion
        self.stages = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_outputs)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.stages(self.stem(x))
        return self.fc(torch.flatten(self.pool(x), 1))


def resnet(depth: int = 50, num_outputs: int = 1, width: float = 1.0, blocks=None) -> ResNet:
    """ResNet-18 or ResNet-50 v1.5 (torchvision layout) with a linear head of `num_outputs`."""
    return ResNet(depth, num_outputs, width, blocks)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
