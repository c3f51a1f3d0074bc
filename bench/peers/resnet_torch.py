"""PyTorch ResNet-18 / ResNet-50 v1.5, the torchvision architecture written out by hand (torchvision does not install here).

Same network as `keras_iqa.backbones.resnet_features` + global average pooling + a linear head: 7x7/2 stem conv, BN, ReLU,
3x3/2 max-pool, four stages of basic (ResNet-18: 2, 2, 2, 2) or bottleneck (ResNet-50: 3, 4, 6, 3) blocks; v1.5 puts the
stride of a bottleneck block on its 3x3 convolution (He et al. 2016 put it on the first 1x1). Module names follow torchvision
(`conv1`, `bn1`, `layer1.0.conv1`, `layer2.0.downsample.0`, `fc`), so a state dict has torchvision's keys: the checkpoint
converters' tests (`keras_iqa.converters`) build the official MetaIQA / REQA networks on it. Random weights (Kaiming normal for
convolutions, BN gamma 1 / beta 0), as on our side: the benchmark measures speed, not accuracy.

Example:
>>> import torch
>>> from bench.peers.resnet_torch import resnet
>>> net = resnet(50, num_outputs=1).eval()
>>> with torch.no_grad():
...     net(torch.zeros(2, 3, 64, 64)).shape
torch.Size([2, 1])
>>> [k for k in net.state_dict() if k.startswith("layer2.0.downsample")][:2]
['layer2.0.downsample.0.weight', 'layer2.0.downsample.1.weight']
"""

from __future__ import annotations

from typing import Optional

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
        self.downsample = None
        if stride != 1 or cin != planes:
            self.downsample = nn.Sequential(*_conv_bn(cin, planes, 1, stride))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
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
        self.downsample = None
        if stride != 1 or cin != planes * 4:
            self.downsample = nn.Sequential(*_conv_bn(cin, planes * 4, 1, stride))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """ResNet v1.5 in torchvision's layout with a `num_outputs` linear head `fc` on globally average-pooled stage-4
    features; `num_outputs=None` leaves the head out (a feature extractor, `features(x)`)."""

    def __init__(self, depth: int = 50, num_outputs: Optional[int] = 1, width: float = 1.0, blocks=None):
        super().__init__()
        if depth not in ARCH:
            raise ValueError(f"depth must be 18 or 50, got {depth!r}")
        kind, default_blocks = ARCH[depth]
        block = BasicBlock if kind == "basic" else Bottleneck
        planes = [64] + [max(1, int(round(c * width))) for c in (128, 256, 512)]  # same rule as keras_iqa.backbones
        self.conv1, self.bn1 = _conv_bn(3, 64, 7, 2)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = 64
        for i, (p, n) in enumerate(zip(planes, blocks or default_blocks)):
            layers = []
            for j in range(n):
                layers.append(block(cin, p, stride=(1 if i == 0 else 2) if j == 0 else 1))
                cin = p * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*layers))
        self.out_channels = cin
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_outputs) if num_outputs else None
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def features(self, x) -> dict:
        """The four stage outputs {"feature1": layer1, ..., "feature4": layer4} (NCHW)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        out = {}
        for i in range(4):
            x = getattr(self, f"layer{i + 1}")(x)
            out[f"feature{i + 1}"] = x
        return out

    def forward(self, x):
        x = self.features(x)["feature4"]
        x = torch.flatten(self.avgpool(x), 1)
        return x if self.fc is None else self.fc(x)


def resnet(depth: int = 50, num_outputs: Optional[int] = 1, width: float = 1.0, blocks=None) -> ResNet:
    """ResNet-18 or ResNet-50 v1.5 (torchvision layout) with a linear head of `num_outputs` (None: no head)."""
    return ResNet(depth, num_outputs, width, blocks)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def randomize_(net: nn.Module, seed: int = 0) -> nn.Module:
    """Gives every BatchNorm non-trivial statistics and affine parameters (running mean in +-0.2, variance in 0.5..1.5,
    gamma in 0.5..1.5, beta in +-0.2) and every PReLU a slope of 0.1, so that a transposed or swapped tensor in a weight
    conversion changes the output. In place; returns `net`."""
    g = torch.Generator().manual_seed(seed)

    def uniform(t, lo, hi):
        t.copy_(torch.rand(t.shape, generator=g) * (hi - lo) + lo)

    for m in net.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            uniform(m.running_mean, -0.2, 0.2)
            uniform(m.running_var, 0.5, 1.5)
            uniform(m.weight, 0.5, 1.5)
            uniform(m.bias, -0.2, 0.2)
        elif isinstance(m, nn.PReLU):
            m.weight.fill_(0.1)
    return net


@torch.no_grad()
def calibrate_(net: nn.Module, *batches) -> nn.Module:
    """Sets every BatchNorm's running statistics to those of `batches` (train-mode passes, cumulative average), then puts
    `net` in eval mode: random deep networks then keep activations at a sane scale, so their outputs differ from input to
    input (a conversion test on saturated outputs would prove little). In place; returns `net`."""
    bns = [m for m in net.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    net.train()
    for x in batches:
        net(x)
    for m in bns:
        m.momentum = 0.1
    return net.eval()


def imagenet_input(images) -> torch.Tensor:
    """keras-iqa's model input (float RGB [B, H, W, 3] in 0..255) -> the official PyTorch input: ImageNet mean/std
    normalised NCHW float32 (what keras-iqa's `ImageNetNormalization` does inside the model)."""
    import numpy as np

    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    x = (np.asarray(images, dtype=np.float64) / 255.0 - mean) / std
    return torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float32))
