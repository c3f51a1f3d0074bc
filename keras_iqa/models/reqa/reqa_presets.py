"""REQA's registry cards ("reqa", "reqa-official", "reqa-tiny"), in keras-hub's `*_presets.py` place; the family's
`__init__` registers them."""

from __future__ import annotations

from keras_iqa.models.reqa.reqa_config import PAPER, REQAConfig
from keras_iqa.models.reqa.reqa_model import build_reqa
from keras_iqa.registry import InputContract, ModelCard

_INPUT = InputContract(crop_size=224, test_crops="25 random 224x224 crops averaged (official protocol)")
#: the "reqa-tiny" overrides of `REQAConfig` (64 px, 1/8-width ResNet): tests and smoke runs
TINY = {"width": 0.125, "blocks": (1, 1, 1, 1), "pool_size": 2, "hidden": (4, 4, 4), "proj_dim": 8, "dim": 16, "heads": 2,
        "mlp_dim": 16, "context_dim": 8, "head_units": (16, 8), "crop_size": 64, "test_crops": 2}

CARDS = (
    ModelCard(
        name="reqa", builder=build_reqa, config_cls=REQAConfig, paper=PAPER, input=_INPUT,
        description="REQA: ResNet-50 + ConvLSTM feedback (T=4) + quality transformer, coarse-to-fine; `keras-iqa train reqa` "
                    "(paper protocol: micro-batches of 5, 4-stage curriculum)",
    ),
    ModelCard(
        name="reqa-official", builder=build_reqa, config_cls=REQAConfig, paper=PAPER, input=_INPUT,
        description="REQA with the official-code training preset (same network; train with `keras-iqa train reqa --preset "
                    "official`: batches of 16, whole-batch RankLoss1, constant weights 0.25/0.125/0.25/0.375)",
    ),
    ModelCard(
        name="reqa-tiny", builder=build_reqa, config_cls=REQAConfig, defaults=TINY, paper=PAPER,
        input=InputContract(crop_size=64, test_crops="2 random 64x64 crops averaged"),
        description="a tiny REQA (64 px, 1/8-width ResNet) for tests and smoke runs",
    ),
)
