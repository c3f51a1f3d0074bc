"""PyTorch re-implementation of the released MetaIQA network (Zhu et al., CVPR 2020, official code's `Net`), for the
checkpoint converter's numerical test (`keras_iqa.converters.metaiqa`).

`Net` = `resnet_layer` (torchvision ResNet-18 including its ImageNet classifier `fc` 512 -> 1000) followed by `net`
(`BaselineModel1`: fc1 1000 -> 1024, bn1, relu1 = PReLU with one shared slope, drop1 (0.5), fc2 1024 -> 512, bn2, relu2, drop2,
fc3 512 -> 1, sigmoid). The module names are the released code's, so `state_dict()` has the released checkpoint's keys
(`resnet_layer.layer2.0.downsample.0.weight`, `net.bn1.running_mean`, `net.relu1.weight`, ...). Input: ImageNet-normalised
NCHW; output [B, 1] in (0, 1). `width` / `blocks` shrink the ResNet for fast tests (the released network: 1.0, None).

Example:
>>> import torch
>>> from bench.peers.metaiqa_torch import Net
>>> net = Net(width=0.125, blocks=(1, 1, 1, 1)).eval()
>>> with torch.no_grad():
...     tuple(net(torch.zeros(2, 3, 64, 64)).shape)
(2, 1)
>>> sorted(k for k in net.state_dict() if k.startswith("net.relu"))
['net.relu1.weight', 'net.relu2.weight']
"""

from __future__ import annotations

from torch import nn

from bench.peers.resnet_torch import resnet


class BaselineModel1(nn.Module):
    """The released regression head on the 1000 ImageNet logits."""

    def __init__(self, num_inputs: int = 1000, keep_probability: float = 0.5):
        super().__init__()
        drop = 1.0 - keep_probability
        self.fc1, self.bn1, self.relu1, self.drop1 = nn.Linear(num_inputs, 1024), nn.BatchNorm1d(1024), nn.PReLU(), nn.Dropout(drop)
        self.fc2, self.bn2, self.relu2, self.drop2 = nn.Linear(1024, 512), nn.BatchNorm1d(512), nn.PReLU(), nn.Dropout(drop)
        self.fc3, self.sig = nn.Linear(512, 1), nn.Sigmoid()

    def forward(self, x):
        x = self.drop1(self.relu1(self.bn1(self.fc1(x))))
        x = self.drop2(self.relu2(self.bn2(self.fc2(x))))
        return self.sig(self.fc3(x))


class Net(nn.Module):
    """ResNet-18 with its ImageNet FC (`resnet_layer`) + `BaselineModel1` (`net`)."""

    def __init__(self, width: float = 1.0, blocks=None):
        super().__init__()
        self.resnet_layer = resnet(18, num_outputs=1000, width=width, blocks=blocks)
        self.net = BaselineModel1(1000)

    def forward(self, x):
        return self.net(self.resnet_layer(x))
