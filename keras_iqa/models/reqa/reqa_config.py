"""`REQAConfig`: every hyper-parameter of the REQA model, spelled once (docs/methods/reqa.md, Model).

`REQA(**fields)` takes these fields as its arguments, `REQA.get_config()` saves them and `build_reqa(cfg)` builds from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

PAPER = ("C. Li, J. Huo (and co-authors). Coarse-to-fine Assessment of Image Quality to Alleviate the Range Effect "
         "(REQA), IEEE TMM / arXiv")
COARSE_MODES = ("paper", "official")


@dataclass
class REQAConfig:
    """Model config of REQA (defaults = paper / official architecture, docs/methods/reqa.md, Model).

    Args:
        depth, backbone_weights, width, blocks: ResNet backbone (`keras_iqa.backbones.resnet_features`); width/blocks shrink it
            for tests. backbone_weights: None (random), "imagenet" or a preset directory.
        steps: T, recurrent steps of the feedback blocks (4).
        hidden: ConvLSTM hidden channels per scale (16, 32, 64).
        pool_size: average pool on h_t (7 at 224 px; use crop_size // 32 for other sizes).
        proj_dim: v_{d,t} size (32).
        feedback, transformer: Table V ablations (False = without FN / without TE).
        dim, heads, depth_te, mlp_dim, context_dim, dropout, norm_first: the quality transformer (224, 14, 1, 176, 128, 0.1, pre-LN).
        head_units: MLP-III hidden widths (112, 56, 28, 14); final ReLU and `score_scale` (10) as in the code.
        crop_size, score_range, test_crops, crop_policy: test-time contract (224, 0-100, 25 random crops).
    """

    depth: int = 50
    backbone_weights: Optional[str] = None
    width: float = 1.0
    blocks: Optional[tuple] = None
    steps: int = 4
    hidden: tuple = (16, 32, 64)
    pool_size: int = 7
    proj_dim: int = 32
    feedback: bool = True
    transformer: bool = True
    dim: int = 224
    heads: int = 14
    depth_te: int = 1
    mlp_dim: int = 176
    context_dim: int = 128
    dropout: float = 0.1
    norm_first: bool = True
    head_units: tuple = (112, 56, 28, 14)
    final_relu: bool = True
    score_scale: float = 10.0
    crop_size: int = 224
    score_range: tuple = (0.0, 100.0)
    test_crops: int = 25
    crop_policy: str = "random"

    def __post_init__(self):
        if int(self.steps) < 1:
            raise ValueError(f"REQA steps (T) must be >= 1, got {self.steps!r}")
        if len(tuple(self.hidden)) != 3:
            raise ValueError(f"REQA hidden must hold 3 sizes (scales 1-3), got {self.hidden!r}")
        self.blocks = tuple(int(b) for b in self.blocks) if self.blocks is not None else None
        self.hidden, self.head_units = tuple(int(h) for h in self.hidden), tuple(int(u) for u in self.head_units)
        self.score_range = tuple(float(v) for v in self.score_range)
