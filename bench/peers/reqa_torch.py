"""PyTorch re-implementation of the official REQA network (`REQANet`), for the checkpoint converter's numerical test
(`keras_iqa.converters.reqa`).

Module names are the official code's, so `state_dict()` has an official checkpoint's keys:

- `res`: torchvision ResNet-50 v1.5 without GAP/FC (`res.layer3.5.conv2.weight`). The official network holds this one module
  three times (`res`, `local_distortion_perception_module.res`, `global_context_understanding_module.res`), so its state dict
  repeats every backbone tensor under the three prefixes; this re-implementation does the same.
- `local_distortion_perception_module.lda{1,2,3}_feedback`: one ConvLSTM per scale (taps layer1..layer3). The cell sits in
  `cells.0` and again in `stack.0` of a one-cell stack (keys `...lda1_feedback.cells.0.cells.0.i_x.conv_1_x.weight` and
  `...cells.0.stack.0...`); gates i, f, c (candidate), o, each an x-path and an h-path of 1x1 conv (no bias) + BatchNorm
  (`i_x.conv_1_x`, `i_x.bn_1_x`, `i_h.conv_1_h`, `i_h.bn_1_h`, ...). Each step's h_t is average-pooled (`pool`), flattened
  channel-major and projected by `fc` to v_{d,t}.
- `global_context_understanding_module`: `patch_embeddings` (1x1 conv on layer4), `cls_token`, `position_embeddings`,
  `encoder.layer.{k}` pre-LN blocks (`attention_norm`, `attn.{query,key,value,out}`, `ffn_norm`, `ffn.fc1`, `ffn.fc2`, exact
  GELU), `encoder.encoder_norm` (defined, never applied), `fc` on the class token: v_m.
- `fc`: MLP-III, `Sequential(Linear, ReLU, ..., Linear(., 1), ReLU)` (keys `fc.0`, `fc.2`, ..., `fc.8`), times 10.

`forward(x)` returns every step's prediction stacked, [B, T] (the official code returns step 1 and the list of steps 2..T).
The official sizes are the defaults; smaller ones make fast tests (the converter reads them from the Keras model's config).
Input: ImageNet-normalised NCHW crops of `crop_size`.

Example:
>>> import torch
>>> from bench.peers.reqa_torch import REQANet
>>> net = REQANet(width=0.125, blocks=(1, 1, 1, 1), hidden=(4, 4, 4), pool_size=2, proj_dim=8, dim=16, heads=2, mlp_dim=16,
...               context_dim=8, head_units=(16, 8), crop_size=64).eval()
>>> with torch.no_grad():
...     tuple(net(torch.zeros(2, 3, 64, 64)).shape)
(2, 4)
>>> len([k for k in net.state_dict() if k.endswith("layer1.0.conv1.weight")])  # the shared backbone, three times
3
"""

from __future__ import annotations

import math

import torch
from torch import nn

from bench.peers.resnet_torch import resnet


def _conv_bn(cin: int, cout: int, path: str) -> nn.Sequential:
    seq = nn.Sequential()
    seq.add_module(f"conv_1_{path}", nn.Conv2d(cin, cout, 1, bias=False))
    seq.add_module(f"bn_1_{path}", nn.BatchNorm2d(cout))
    return seq


class ConvLSTMCell(nn.Module):
    """i = σ(x_i + h_i), f = σ(x_f + h_f), g = tanh(x_c + h_c), o = σ(x_o + h_o); c' = f c + i g; h' = o tanh(c')."""

    def __init__(self, cin: int, hidden: int):
        super().__init__()
        self.hidden = hidden
        for gate in "ifco":
            setattr(self, f"{gate}_x", _conv_bn(cin, hidden, "x"))
            setattr(self, f"{gate}_h", _conv_bn(hidden, hidden, "h"))

    def forward(self, x, h, c):
        i = torch.sigmoid(self.i_x(x) + self.i_h(h))
        f = torch.sigmoid(self.f_x(x) + self.f_h(h))
        g = torch.tanh(self.c_x(x) + self.c_h(h))
        o = torch.sigmoid(self.o_x(x) + self.o_h(h))
        c = f * c + i * g
        return o * torch.tanh(c), c


class ConvLSTMStack(nn.Module):
    """One cell, registered twice (`cells.0` and `stack.0`) as in the official code."""

    def __init__(self, cin: int, hidden: int):
        super().__init__()
        cell = ConvLSTMCell(cin, hidden)
        self.cells = nn.ModuleList([cell])
        self.stack = nn.Sequential(cell)


class FeedbackModule(nn.Module):
    """T steps of the ConvLSTM on the same map (state starts at zero); each h_t -> AvgPool -> flatten (NCHW) -> Linear."""

    def __init__(self, cin: int, hidden: int, steps: int, pool_size: int, pooled_pixels: int, out_dim: int):
        super().__init__()
        self.cells = nn.ModuleList([ConvLSTMStack(cin, hidden)])
        self.t = steps
        self.pool = nn.AvgPool2d(pool_size, stride=pool_size)
        self.fc = nn.Linear(hidden * pooled_pixels, out_dim)

    def forward(self, x):
        cell = self.cells[0].cells[0]
        h = x.new_zeros((x.shape[0], cell.hidden, x.shape[2], x.shape[3]))
        c = h
        out = []
        for _ in range(self.t):
            h, c = cell(x, h, c)
            out.append(self.fc(self.pool(h).reshape(x.shape[0], -1)))
        return out


class FeedbackNet(nn.Module):
    def __init__(self, res, channels, hidden, steps, pool_size, pooled, out_dim):
        super().__init__()
        self.res = res
        for d in range(3):
            setattr(self, f"lda{d + 1}_feedback",
                    FeedbackModule(channels[d], hidden[d], steps, pool_size, pooled[d], out_dim))

    def forward(self, feats):
        return [getattr(self, f"lda{d + 1}_feedback")(feats[f"feature{d + 1}"]) for d in range(3)]


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.query, self.key, self.value, self.out = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x):
        b, n, d = x.shape

        def split(t):
            return t.view(b, n, self.heads, self.head_dim).permute(0, 2, 1, 3)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.head_dim), dim=-1)
        return self.out((a @ v).permute(0, 2, 1, 3).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, dim: int, mlp_dim: int, dropout: float):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, mlp_dim), nn.Linear(mlp_dim, dim)
        self.act_fn, self.dropout = nn.GELU(), nn.Dropout(dropout)

    def forward(self, x):
        return self.dropout(self.fc2(self.dropout(self.act_fn(self.fc1(x)))))


class Block(nn.Module):
    """Pre-LN: x += Attn(LN(x)); x += MLP(LN(x)); LayerNorm eps 1e-6."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, dropout: float):
        super().__init__()
        self.attention_norm = nn.LayerNorm(dim, eps=1e-6)
        self.ffn_norm = nn.LayerNorm(dim, eps=1e-6)
        self.ffn = Mlp(dim, mlp_dim, dropout)
        self.attn = Attention(dim, heads)

    def forward(self, x):
        x = x + self.attn(self.attention_norm(x))
        return x + self.ffn(self.ffn_norm(x))


class Encoder(nn.Module):
    def __init__(self, dim, heads, mlp_dim, depth, dropout):
        super().__init__()
        self.layer = nn.ModuleList([Block(dim, heads, mlp_dim, dropout) for _ in range(depth)])
        self.encoder_norm = nn.LayerNorm(dim, eps=1e-6)  # defined but not applied, as in the official code

    def forward(self, x):
        for block in self.layer:
            x = block(x)
        return x


class GLResViT(nn.Module):
    def __init__(self, res, cin, tokens, dim, heads, mlp_dim, depth, out_dim, dropout):
        super().__init__()
        self.res = res
        self.patch_embeddings = nn.Conv2d(cin, dim, 1)
        self.position_embeddings = nn.Parameter(torch.zeros(1, tokens + 1, dim))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.dropout = nn.Dropout(dropout)
        self.encoder = Encoder(dim, heads, mlp_dim, depth, dropout)
        self.fc = nn.Linear(dim, out_dim)

    def forward(self, fm4):
        x = self.patch_embeddings(fm4).flatten(2).transpose(-1, -2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.dropout(x + self.position_embeddings)
        return self.fc(self.encoder(x))[:, 0]


class REQANet(nn.Module):
    """The official REQA network with configurable sizes (defaults: the official ones)."""

    def __init__(self, width=1.0, blocks=None, steps=4, hidden=(16, 32, 64), pool_size=7, proj_dim=32, dim=224, heads=14,
                 depth_te=1, mlp_dim=176, context_dim=128, dropout=0.1, head_units=(112, 56, 28, 14), score_scale=10.0,
                 crop_size=224):
        super().__init__()
        self.res = resnet(50, num_outputs=None, width=width, blocks=blocks)
        stage_channels = [256] + [4 * max(1, int(round(c * width))) for c in (128, 256, 512)]
        sizes = [crop_size // s for s in (4, 8, 16, 32)]
        pooled = [(s // pool_size) ** 2 for s in sizes[:3]]
        self.global_context_understanding_module = GLResViT(self.res, stage_channels[3], sizes[3] ** 2, dim, heads, mlp_dim,
                                                            depth_te, context_dim, dropout)
        self.local_distortion_perception_module = FeedbackNet(self.res, stage_channels[:3], hidden, steps, pool_size, pooled,
                                                              proj_dim)
        layers, cin = [], 3 * proj_dim + context_dim
        for u in (*head_units, 1):
            layers += [nn.Linear(cin, u), nn.ReLU()]
            cin = u
        self.fc = nn.Sequential(*layers)
        self.score_scale = score_scale

    def forward(self, x):
        feats = self.res.features(x)  # the official code runs the shared backbone once per branch: same result in eval mode
        v = self.local_distortion_perception_module(feats)
        vm = self.global_context_understanding_module(feats["feature4"])
        preds = [self.fc(torch.cat([v[0][t], v[1][t], v[2][t], vm], 1)).view(-1) * self.score_scale
                 for t in range(len(v[0]))]
        return torch.stack(preds, 1)
