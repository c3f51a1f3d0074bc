"""HCL's registry cards ("hcl", "hcl-tiny"), in keras-hub's `*_presets.py` place; the family's `__init__` registers them."""

from __future__ import annotations

from keras_iqa.models.hcl.hcl_config import PAPER, HCLModelConfig
from keras_iqa.models.hcl.hcl_model import build_hcl
from keras_iqa.registry import InputContract, ModelCard

#: the "hcl-tiny" overrides of `HCLModelConfig` (width 0.125, one block per stage, 64 px, K=2): tests and smoke runs
TINY = {"width": 0.125, "blocks": (1, 1, 1, 1), "decoder_filters": (32, 16, 16, 8, 8), "subnet_units": (32, 16),
        "cqac_heads": 2, "cqac_key_dim": 8, "head_units": 16, "crop_size": 64, "num_datasets": 2}

CARDS = (
    ModelCard(
        name="hcl", builder=build_hcl, config_cls=HCLModelConfig, score_range=(0.0, 100.0), higher_better=True, paper=PAPER,
        input=InputContract(crop_size=224, test_crops="25 random 224 crops averaged"),
        trained_on="random init; train with `keras-iqa train hcl --stages all` (three curricula)",
        description="HCL (reconstruction): ResNet-50 U-Net restoration features + K subnetworks + CQAC + fused head",
    ),
    ModelCard(
        name="hcl-tiny", builder=build_hcl, config_cls=HCLModelConfig, defaults=TINY, score_range=(0.0, 100.0),
        higher_better=True, paper=PAPER, input=InputContract(crop_size=64, test_crops="25 random 64 crops averaged"),
        description="tiny HCL (reconstruction) (width 0.125, one block per stage, 64 px, K=2) for tests and smoke runs",
    ),
)
