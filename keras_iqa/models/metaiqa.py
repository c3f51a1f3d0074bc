"""MetaIQA (Zhu et al., CVPR 2020): a ResNet-18 quality regressor meta-trained on distortion-specific tasks.

The network is ResNet-18 (keras-hub, torchvision v1.5 layout) + global average pooling + a regression head:

- head "paper" (default, Sec. 3.1 / 4.2): GAP -> FC -> FC -> one score ("FC + another FC"; the paper gives no width, we use
  `head_units=512` with ReLU and a linear output; scores are trained on targets normalised to [0, 1]).
- head "official" (the released code, docs/methods/metaiqa.md): GAP -> ImageNet FC 512->1000 -> FC 1000->1024 -> BatchNorm -> PReLU
  (one shared slope, init 0.25) -> Dropout 0.5 -> FC 1024->512 -> BatchNorm -> PReLU -> Dropout 0.5 -> FC 512->1 -> sigmoid.

Input: float32 RGB in [0, 255], any square size; ImageNet normalisation is inside the model. Test time (docs/methods/
metaiqa.md): the paper trains on random 224x224 crops and says nothing of testing, so the paper cards test at the training
scale, 25 random native-resolution 224 crops averaged (`crop_policy="random"`, `test_crops=25`); "metaiqa-official" tests
as the released code does, the whole image resized to 224x224 (`crop_policy="resize"`, `test_crops=1`), after training on
images resized to 256x256.

Registry cards: "metaiqa" (paper head), "metaiqa-official" (official head; `keras-iqa convert metaiqa` converts released
PyTorch checkpoints into it, `keras_iqa.converters.metaiqa`), "metaiqa-tiny" (a tiny network for tests and smoke runs).

Example:
>>> import numpy as np
>>> import keras_iqa
>>> model = keras_iqa.create_model("metaiqa-tiny")
>>> tuple(model.score(np.zeros((2, 64, 64, 3), "float32")).shape)
(2,)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import keras
from keras import ops

from keras_iqa.backbones import resnet_features
from keras_iqa.layers.preprocessing import ImageNetNormalization
from keras_iqa.models.base import IQAModel
from keras_iqa.registry import InputContract, ModelCard, register

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


@keras.saving.register_keras_serializable(package="keras_iqa")
class MetaIQA(IQAModel):
    """ResNet + GAP + regression head (see the module docstring); `call` returns scores of shape [B, 1] in [0, 1] scale.

    Args:
        depth, backbone_weights, width, blocks, head, head_units, dropout: see `MetaIQAConfig`.
        **kwargs: `IQAModel` arguments (score_range, crop_size, test_crops, crop_policy, name).

    Example:
    >>> import numpy as np
    >>> m = MetaIQA(width=0.125, blocks=(1, 1, 1, 1), crop_size=64)
    >>> tuple(m(np.zeros((1, 64, 64, 3))).shape)
    (1, 1)
    """

    def __init__(self, depth=18, backbone_weights=None, width=1.0, blocks=None, head="paper", head_units=512, dropout=0.5,
                 score_range=(0.0, 1.0), crop_size=224, test_crops=25, crop_policy="random", **kwargs):
        kwargs.setdefault("name", "metaiqa")
        super().__init__(score_range=score_range, crop_size=crop_size, test_crops=test_crops, crop_policy=crop_policy,
                         higher_better=kwargs.pop("higher_better", True), **kwargs)
        if head not in HEADS:
            raise ValueError(f"MetaIQA head must be one of {HEADS}, got {head!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.depth, self.backbone_weights, self.width = int(depth), backbone_weights, float(width)
        self.blocks = tuple(int(b) for b in blocks) if blocks is not None else None
        self.head, self.head_units, self.dropout = head, int(head_units), float(dropout)

        self.normalize = ImageNetNormalization(name="imagenet_norm")
        self.backbone = resnet_features(depth=self.depth, weights=backbone_weights, width=self.width, blocks=self.blocks,
                                        name="backbone")
        self.pool = keras.layers.GlobalAveragePooling2D(name="gap")
        if head == "paper":
            # fc2 (ours, docs/heads.md): float32 under mixed precision; bias at the score-range midpoint and a small kernel, so
            # a fresh model predicts ~mid-range (the paper is silent; Keras' default bias 0 starts at the bottom of the scale)
            lo, hi = self.score_range
            self.head_layers = [
                keras.layers.Dense(self.head_units, activation="relu", name="fc1"),
                keras.layers.Dense(1, name="fc2", dtype="float32", kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
                                   bias_initializer=keras.initializers.Constant((lo + hi) / 2.0)),
            ]
        else:
            drop = self.dropout
            prelu = dict(shared_axes=[1], alpha_initializer=keras.initializers.Constant(0.25))
            bn = dict(momentum=0.9, epsilon=1e-5)  # torch BatchNorm1d defaults (momentum 0.1 there)
            self.head_layers = [
                keras.layers.Dense(1000, name="imagenet_fc"),  # torchvision resnet18.fc, kept as in the code
                keras.layers.Dense(1024, name="fc1"),
                keras.layers.BatchNormalization(name="bn1", **bn),
                keras.layers.PReLU(name="prelu1", **prelu),
                keras.layers.Dropout(drop, name="drop1"),
                keras.layers.Dense(512, name="fc2"),
                keras.layers.BatchNormalization(name="bn2", **bn),
                keras.layers.PReLU(name="prelu2", **prelu),
                keras.layers.Dropout(drop, name="drop2"),
                keras.layers.Dense(1, activation="sigmoid", name="fc3", dtype="float32"),  # sigmoid(0) = 0.5: mid already
            ]

    def features(self, images, training=None):
        """Global-average-pooled stage-4 features [B, C]."""
        x = self.normalize(images)
        return self.pool(self.backbone(x, training=training)["stage4"])

    def call(self, images, training=None):
        x = self.features(images, training=training)
        for layer in self.head_layers[:-1]:
            x = layer(x, training=training)
        return self.head_layers[-1](ops.cast(x, "float32"))  # the score layer in float32 (also under mixed precision)

    def get_config(self):
        cfg = super().get_config()
        cfg.update(depth=self.depth, backbone_weights=None, width=self.width,
                   blocks=list(self.blocks) if self.blocks else None, head=self.head, head_units=self.head_units,
                   dropout=self.dropout)
        return cfg  # weights come from the saved file, so the backbone is rebuilt without downloading a preset


def build_metaiqa(cfg: MetaIQAConfig) -> MetaIQA:
    """Builds (and builds the variables of) a MetaIQA model from its config."""
    model = MetaIQA(depth=cfg.depth, backbone_weights=cfg.backbone_weights, width=cfg.width, blocks=cfg.blocks, head=cfg.head,
                    head_units=cfg.head_units, dropout=cfg.dropout, score_range=cfg.score_range, crop_size=cfg.crop_size,
                    test_crops=cfg.test_crops, crop_policy=cfg.crop_policy)
    model(keras.ops.zeros((1, cfg.crop_size, cfg.crop_size, 3)))
    return model


_INPUT = InputContract(crop_size=224, test_crops="25 random 224x224 crops at native resolution, averaged (training scale)")
_INPUT_OFFICIAL = InputContract(crop_size=224, test_crops="whole image resized to 224x224 (1 pass; the released code)")
register(ModelCard(
    name="metaiqa", builder=build_metaiqa, config_cls=MetaIQAConfig, score_range=(0.0, 1.0), higher_better=True,
    paper=PAPER, input=_INPUT,
    description="MetaIQA, ResNet-18 + GAP + FC + FC (paper head); meta-train with `keras-iqa train metaiqa`",
))
register(ModelCard(
    name="metaiqa-official", builder=build_metaiqa, config_cls=MetaIQAConfig,
    defaults={"head": "official", "test_crops": 1, "crop_policy": "resize"},
    score_range=(0.0, 1.0), higher_better=True, paper=PAPER, input=_INPUT_OFFICIAL,
    trained_on="random init; convert released PyTorch weights with `keras-iqa convert metaiqa CKPT.pt --out PRESET_DIR`",
    description="MetaIQA with the released code's head (FC-1000 -> 1024 -> 512 -> 1, BN, PReLU, dropout 0.5, sigmoid)",
))
register(ModelCard(
    name="metaiqa-tiny", builder=build_metaiqa, config_cls=MetaIQAConfig,
    defaults={"width": 0.125, "blocks": (1, 1, 1, 1), "head_units": 16, "crop_size": 64, "test_crops": 4},
    score_range=(0.0, 1.0), higher_better=True, paper=PAPER,
    input=InputContract(crop_size=64, test_crops="4 random 64x64 crops averaged"),
    description="tiny MetaIQA (width 0.125, one block per stage, 64 px) for tests and smoke runs",
))

