"""`MetaIQAConfig`: every hyper-parameter of the MetaIQA model, spelled once (docs/methods/metaiqa.md).

`MetaIQA(**fields)` takes these fields as its arguments, `MetaIQA.get_config()` saves them and `build_metaiqa(cfg)` builds
from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

HEADS = ("paper", "official")
PAPER = ("H. Zhu, L. Li, J. Wu, W. Dong, G. Shi. MetaIQA: Deep Meta-learning for No-Reference Image Quality Assessment. "
         "CVPR 2020")


@dataclass
class MetaIQAConfig:
    """Model config of MetaIQA.

    Args:
        depth: ResNet depth (18 in the paper).
        backbone_weights: None (random), "imagenet" (keras-hub preset) or a local preset directory.
        width, blocks: shrink the backbone for tests (`width=0.125, blocks=(1, 1, 1, 1)`).
        head: "paper" (GAP -> FC -> FC) or "official" (ImageNet FC-1000 -> 1024 -> 512 -> 1, BN, PReLU, dropout, sigmoid).
        head_units: hidden width of the paper head (the official head's widths are fixed: 1000, 1024, 512).
        dropout: drop rate of the official head (1 - keep_probability = 0.5).
        crop_size, score_range, test_crops, crop_policy: the test-time contract (`IQAModel`); 25 random crops at the
            training scale (the official card: whole image resized to 224).
    """

    depth: int = 18
    backbone_weights: Optional[str] = None
    width: float = 1.0
    blocks: Optional[tuple] = None
    head: str = "paper"
    head_units: int = 512
    dropout: float = 0.5
    crop_size: int = 224
    score_range: tuple = (0.0, 1.0)
    test_crops: int = 25
    crop_policy: str = "random"

    def __post_init__(self):
        if self.head not in HEADS:
            raise ValueError(f"MetaIQA head must be one of {HEADS}, got {self.head!r}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        self.blocks = tuple(int(b) for b in self.blocks) if self.blocks is not None else None
        self.score_range = tuple(float(v) for v in self.score_range)
