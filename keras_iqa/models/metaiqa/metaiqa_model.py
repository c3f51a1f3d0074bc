"""The MetaIQA model (Zhu et al., CVPR 2020): a ResNet-18 quality regressor meta-trained on distortion-specific tasks.

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

import dataclasses

import keras
from keras import ops

from keras_iqa.backbones import resnet_features
from keras_iqa.layers.preprocessing import ImageNetNormalization
from keras_iqa.models.base import IQAModel, config_json, split_config
from keras_iqa.models.metaiqa.metaiqa_config import MetaIQAConfig


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

    def __init__(self, **kwargs):
        cfg, kwargs = split_config(MetaIQAConfig, kwargs)
        kwargs.setdefault("name", "metaiqa")
        super().__init__(**kwargs)
        self.use_model_config(cfg)

        self.normalize = ImageNetNormalization(name="imagenet_norm")
        self.backbone = resnet_features(depth=self.depth, weights=self.backbone_weights, width=self.width, blocks=self.blocks,
                                        name="backbone")
        self.pool = keras.layers.GlobalAveragePooling2D(name="gap")
        if cfg.head == "paper":
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

    @classmethod
    def from_model_config(cls, cfg: MetaIQAConfig, **kwargs) -> "MetaIQA":
        """A MetaIQA model of the config `cfg` (kwargs: `IQAModel` / Keras arguments such as `name`)."""
        return cls(**dataclasses.asdict(cfg), **kwargs)

    def get_config(self):
        return {**super().get_config(), **config_json(self.model_config)}


def build_metaiqa(cfg: MetaIQAConfig) -> MetaIQA:
    """Builds (and builds the variables of) a MetaIQA model from its config."""
    model = MetaIQA.from_model_config(cfg)
    model(keras.ops.zeros((1, cfg.crop_size, cfg.crop_size, 3)))
    return model
