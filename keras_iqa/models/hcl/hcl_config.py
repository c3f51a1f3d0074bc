"""`HCLModelConfig`: every hyper-parameter of the three HCL stage models, spelled once (docs/methods/hcl.md).

`RestorationNet`, `HCLSynthetic` and `HCL` take their defaults from it, `restoration_kwargs(cfg)` / `head_kwargs(cfg)` name
which fields each part takes, and the builders (`build_restoration`, `build_synthetic`, `build_hcl`) take the config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

PAPER = ("J. Wang, Z. Chen, C. Yuan, B. Li, W. Ma, W. Hu. Hierarchical Curriculum Learning for No-Reference Image Quality "
         "Assessment. IJCV 131(11):3074-3093, 2023 (reconstruction: paper body unavailable)")
INPUT_NORMS = ("imagenet", "unit")
OUTPUTS = ("direct", "residual")


@dataclass
class HCLModelConfig:
    """Architecture of the three HCL stage models (one config, so the weights hand over between stages).

    Args:
        depth: encoder ResNet depth (50).
        backbone_weights: None (random), "imagenet" (keras-hub preset) or a local preset directory.
        width, blocks: shrink the encoder for tests (`width=0.125, blocks=(1, 1, 1, 1)`).
        decoder_filters: output channels of the 5 up-steps (1024, 512, 256, 64, 64).
        decoder_block: "conv" (two 3x3 conv + BN + ReLU, our design) or "inception" (TeacherIQA's InceptionConv).
        input_norm: "imagenet" (mean/std inside the model, the package contract) or "unit" (x / 255 like TeacherIQA's demo).
        restoration_output: "direct" (1x1 conv + sigmoid, TeacherIQA) or "residual" (clip(x / 255 + 1x1 conv, 0, 1), the
            conv initialised near 0 (std 1e-3) so training starts close to the identity; our option).
        restoration_input_skip: False (TeacherIQA: the last up-step sees no full-resolution input) or True (our option: the
            normalised input image is concatenated with the last up-step's 224x224 map and merged by a decoder block, so
            per-pixel detail such as noise reaches the output; a U-Net's full-resolution skip).
        num_datasets: K, the number of synthetic datasets (subnetworks); the stage runner sets it from the data given.
        subnet_units: (hidden, embedding) of each subnetwork (256, 64); subnet_dropout: 0.1.
        cqac: True = attention across the K embeddings; False = the "CQAC off" ablation (independent heads).
        cqac_heads, cqac_key_dim: attention size (4, 16).
        head_units: hidden width of the fused curriculum-3 head (128).
        crop_size, score_range, higher_better, test_crops, crop_policy: `IQAModel` test-time contract (25 random 224 crops).
    """

    depth: int = 50
    backbone_weights: Optional[str] = None
    width: float = 1.0
    blocks: Optional[tuple] = None
    decoder_filters: tuple = (1024, 512, 256, 64, 64)
    decoder_block: str = "conv"
    input_norm: str = "imagenet"
    restoration_output: str = "direct"
    restoration_input_skip: bool = False
    num_datasets: int = 4
    subnet_units: tuple = (256, 64)
    subnet_dropout: float = 0.1
    cqac: bool = True
    cqac_heads: int = 4
    cqac_key_dim: int = 16
    head_units: int = 128
    crop_size: int = 224
    score_range: tuple = (0.0, 100.0)
    higher_better: bool = True
    test_crops: int = 25
    crop_policy: str = "random"


#: `RestorationNet` argument -> the `HCLModelConfig` field it comes from
RESTORATION_FIELDS = {"depth": "depth", "backbone_weights": "backbone_weights", "width": "width", "blocks": "blocks",
                      "decoder_filters": "decoder_filters", "decoder_block": "decoder_block", "input_norm": "input_norm",
                      "output": "restoration_output", "input_skip": "restoration_input_skip"}
#: the subnetwork / CQAC arguments of `HCLSynthetic` and `HCL` (named as the config fields)
HEAD_FIELDS = ("num_datasets", "subnet_units", "subnet_dropout", "cqac", "cqac_heads", "cqac_key_dim")
#: the `IQAModel` (test-time contract) arguments of `HCL`
CONTRACT_FIELDS = ("score_range", "higher_better", "crop_size", "test_crops", "crop_policy")


def restoration_kwargs(cfg: HCLModelConfig) -> dict:
    """The `RestorationNet` arguments of a model config."""
    return {arg: getattr(cfg, name) for arg, name in RESTORATION_FIELDS.items()}


def head_kwargs(cfg: HCLModelConfig) -> dict:
    """The subnetwork / CQAC arguments of a model config."""
    return {name: getattr(cfg, name) for name in HEAD_FIELDS}


def take(kwargs: dict, defaults: dict) -> dict:
    """Pops the keys of `defaults` out of `kwargs` (a model's arguments), the default where one is missing."""
    return {k: kwargs.pop(k, v) for k, v in defaults.items()}
