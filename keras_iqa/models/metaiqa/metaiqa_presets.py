"""MetaIQA's registry cards ("metaiqa", "metaiqa-official", "metaiqa-tiny"), in keras-hub's `*_presets.py` place; the
family's `__init__` registers them."""

from __future__ import annotations

from keras_iqa.models.metaiqa.metaiqa_config import PAPER, MetaIQAConfig
from keras_iqa.models.metaiqa.metaiqa_model import build_metaiqa
from keras_iqa.registry import InputContract, ModelCard

_INPUT = InputContract(crop_size=224, test_crops="25 random 224x224 crops at native resolution, averaged (training scale)")
_INPUT_OFFICIAL = InputContract(crop_size=224, test_crops="whole image resized to 224x224 (1 pass; the released code)")
#: the "metaiqa-tiny" overrides of `MetaIQAConfig` (width 0.125, one block per stage, 64 px): tests and smoke runs
TINY = {"width": 0.125, "blocks": (1, 1, 1, 1), "head_units": 16, "crop_size": 64, "test_crops": 4}

CARDS = (
    ModelCard(
        name="metaiqa", builder=build_metaiqa, config_cls=MetaIQAConfig, score_range=(0.0, 1.0), higher_better=True,
        paper=PAPER, input=_INPUT,
        description="MetaIQA, ResNet-18 + GAP + FC + FC (paper head); meta-train with `keras-iqa train metaiqa`",
    ),
    ModelCard(
        name="metaiqa-official", builder=build_metaiqa, config_cls=MetaIQAConfig,
        defaults={"head": "official", "test_crops": 1, "crop_policy": "resize"},
        score_range=(0.0, 1.0), higher_better=True, paper=PAPER, input=_INPUT_OFFICIAL,
        trained_on="random init; convert released PyTorch weights with `keras-iqa convert metaiqa CKPT.pt --out PRESET_DIR`",
        description="MetaIQA with the released code's head (FC-1000 -> 1024 -> 512 -> 1, BN, PReLU, dropout 0.5, sigmoid)",
    ),
    ModelCard(
        name="metaiqa-tiny", builder=build_metaiqa, config_cls=MetaIQAConfig,
        defaults=TINY,
        score_range=(0.0, 1.0), higher_better=True, paper=PAPER,
        input=InputContract(crop_size=64, test_crops="4 random 64x64 crops averaged"),
        description="tiny MetaIQA (width 0.125, one block per stage, 64 px) for tests and smoke runs",
    ),
)
