"""Decoder blocks of HCL's restoration U-Net (`keras_iqa.models.hcl.RestorationNet`, docs/methods/hcl.md, Curriculum 1).

- `ConvBlock`: two 3x3 conv + BN + ReLU (our design, `model.decoder_block=conv`);
- `InceptionConv`: TeacherIQA's Inception block + BN + ReLU (Wang et al., ACCV 2022; `model.decoder_block=inception`).

Both map [B, H, W, C] to [B, H, W, filters] and are registered for `.keras` saving ("keras_iqa>ConvBlock",
"keras_iqa>InceptionConv").

Example:
>>> import numpy as np
>>> tuple(ConvBlock(16)(np.zeros((1, 8, 8, 4), "float32")).shape)
(1, 8, 8, 16)
>>> tuple(InceptionConv(16)(np.zeros((1, 8, 8, 4), "float32")).shape)
(1, 8, 8, 16)
"""

from __future__ import annotations

import keras
from keras import ops

__all__ = ["DECODER_BLOCKS", "ConvBlock", "InceptionConv"]

DECODER_BLOCKS = ("conv", "inception")


@keras.saving.register_keras_serializable(package="keras_iqa")
class ConvBlock(keras.layers.Layer):
    """Two 3x3 conv + BN + ReLU (the decoder block of our design)."""

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.convs = [keras.layers.Conv2D(self.filters, 3, padding="same", use_bias=False, name=f"conv{i}") for i in (1, 2)]
        self.bns = [keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=f"bn{i}") for i in (1, 2)]

    def build(self, input_shape):
        """Builds the sublayers from the input shape (so a block saved on its own reloads built)."""
        s = tuple(input_shape)
        for conv, bn in zip(self.convs, self.bns):
            conv.build(s)
            s = s[:-1] + (self.filters,)
            bn.build(s)

    def call(self, x, training=None):
        for conv, bn in zip(self.convs, self.bns):
            x = ops.relu(bn(conv(x), training=training))
        return x

    def compute_output_shape(self, s):
        return tuple(s[:-1]) + (self.filters,)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters}


@keras.saving.register_keras_serializable(package="keras_iqa")
class InceptionConv(keras.layers.Layer):
    """TeacherIQA's InceptionConv (docs/methods/hcl.md, Curriculum 1): Inception(in -> out) + BN + ReLU.

    Branches of out/4 channels each, h = out/8: 1x1; 1x1(h)+BN+ReLU+grouped 5x5 (groups h); 1x1(h)+BN+ReLU+depthwise 3x3+BN+ReLU
    +1x1; 3x3 max-pool (stride 1) + 1x1; concatenated.
    """

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        q, h = max(1, self.filters // 4), max(1, self.filters // 8)
        if q % h:
            raise ValueError(f"InceptionConv needs filters divisible by 8, got {filters}")
        bn = dict(momentum=0.9, epsilon=1e-5)
        L = keras.layers
        self.b1 = L.Conv2D(q, 1, name="b1")
        self.b2 = [L.Conv2D(h, 1, name="b2_1"), L.BatchNormalization(name="b2_bn", **bn),
                   L.Conv2D(q, 5, padding="same", groups=h, name="b2_2")]
        self.b3 = [L.Conv2D(h, 1, name="b3_1"), L.BatchNormalization(name="b3_bn1", **bn),
                   L.DepthwiseConv2D(3, padding="same", name="b3_dw"), L.BatchNormalization(name="b3_bn2", **bn),
                   L.Conv2D(q, 1, name="b3_2")]
        self.pool = L.MaxPooling2D(3, strides=1, padding="same")
        self.b4 = L.Conv2D(q, 1, name="b4")
        self.bn = L.BatchNormalization(name="bn", **bn)

    def build(self, input_shape):
        """Builds every branch from the input shape (so a block saved on its own reloads built)."""
        s = tuple(input_shape)
        q, h = max(1, self.filters // 4), max(1, self.filters // 8)
        with_c = lambda c: s[:-1] + (c,)  # noqa: E731
        self.b1.build(s)
        c, b, g = self.b2
        c.build(s), b.build(with_c(h)), g.build(with_c(h))
        c1, b1, dw, b2, c2 = self.b3
        c1.build(s), b1.build(with_c(h)), dw.build(with_c(h)), b2.build(with_c(h)), c2.build(with_c(h))
        self.pool.build(s)
        self.b4.build(s)
        self.bn.build(with_c(4 * q))

    def call(self, x, training=None):
        y1 = self.b1(x)
        c, b, g = self.b2
        y2 = g(ops.relu(b(c(x), training=training)))
        c1, b1, dw, b2, c2 = self.b3
        y3 = c2(ops.relu(b2(dw(ops.relu(b1(c1(x), training=training))), training=training)))
        y4 = self.b4(self.pool(x))
        return ops.relu(self.bn(ops.concatenate([y1, y2, y3, y4], axis=-1), training=training))

    def compute_output_shape(self, s):
        return tuple(s[:-1]) + (4 * max(1, self.filters // 4),)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters}
