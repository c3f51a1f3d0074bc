"""HCL curriculum 1 (reconstruction): `RestorationNet`, a ResNet-50 v1.5 encoder + U-Net decoder (docs/methods/hcl.md).

Encoder taps e0 = stem 112x112x64 (before max-pool), e1..e3 = stages 1-3, bottom = stage 4 7x7x2048; decoder: 5 up-steps
Conv2DTranspose(k2, s2) 2048->1024->512->256->64->64, the first 4 concatenated with the matching tap and followed by a conv
block (`keras_iqa.layers.decoder_blocks`), then Conv 1x1 -> 3 + sigmoid = restored RGB in [0, 1]. Its quality-knowledge
vector q(x) = concat[GAP(bottom), GAP(dec 14x14), GAP(dec 28x28), GAP(dec 56x56)] is 2048 + 1024 + 512 + 256 = 3840-d.
"""

from __future__ import annotations

import keras
from keras import ops

from keras_iqa.backbones import resnet_features, tap_channels
from keras_iqa.layers.decoder_blocks import DECODER_BLOCKS, ConvBlock, InceptionConv
from keras_iqa.layers.preprocessing import ImageNetNormalization
from keras_iqa.models.base import without_layer_keys
from keras_iqa.models.hcl.hcl_config import INPUT_NORMS, OUTPUTS, HCLModelConfig, restoration_kwargs, take


def plain(arguments) -> dict:
    """Model arguments with tuples as lists (what a `.keras` round trip gives back)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dict(arguments or {}).items()}


@keras.saving.register_keras_serializable(package="keras_iqa")
class RestorationNet(keras.Model):
    """Curriculum 1: ResNet encoder + U-Net decoder restoring a distorted image (see the module docstring).

    `call(images [B, H, W, 3] in [0, 255])` -> restored [B, H, W, 3] in [0, 1] (H, W multiples of 32).
    `quality_features(images)` -> q(x) [B, feature_dim] (3840 at full size). `decode(images, full=False)` gives the taps.

    Args:
        depth, backbone_weights, width, blocks, decoder_filters, decoder_block, input_norm, output, input_skip: the
            `HCLModelConfig` fields named in `RESTORATION_FIELDS` (output = restoration_output, input_skip =
            restoration_input_skip), with its defaults.

    Example:
    >>> import numpy as np
    >>> net = RestorationNet(width=0.125, blocks=(1, 1, 1, 1), decoder_filters=(32, 16, 16, 8, 8))
    >>> tuple(net(np.zeros((1, 64, 64, 3))).shape)
    (1, 64, 64, 3)
    """

    def __init__(self, **kwargs):
        args = take(kwargs, restoration_kwargs(HCLModelConfig()))
        kwargs.setdefault("name", "restoration")
        if args["output"] not in OUTPUTS:
            raise ValueError(f"restoration output must be one of {OUTPUTS}, got {args['output']!r}")
        self.output_mode = args["output"]
        super().__init__(**kwargs)
        if args["decoder_block"] not in DECODER_BLOCKS:
            raise ValueError(f"decoder_block must be one of {DECODER_BLOCKS}, got {args['decoder_block']!r}")
        if args["input_norm"] not in INPUT_NORMS:
            raise ValueError(f"input_norm must be one of {INPUT_NORMS}, got {args['input_norm']!r}")
        if len(args["decoder_filters"]) != 5:
            raise ValueError(f"decoder_filters needs 5 values (one per up-step), got {args['decoder_filters']!r}")
        args.update(depth=int(args["depth"]), width=float(args["width"]), input_skip=bool(args["input_skip"]),
                    blocks=tuple(int(b) for b in args["blocks"]) if args["blocks"] is not None else None,
                    decoder_filters=tuple(int(f) for f in args["decoder_filters"]))
        self.arguments = plain(args)  # what get_config saves
        for name, value in args.items():  # depth, width, ... as attributes (output: `output_mode`)
            if name != "output":
                setattr(self, name, value)
        self.normalize = (ImageNetNormalization(name="imagenet_norm") if self.input_norm == "imagenet"
                          else keras.layers.Rescaling(1.0 / 255.0, name="unit_norm"))
        self.encoder = resnet_features(depth=self.depth, weights=self.backbone_weights, width=self.width, blocks=self.blocks,
                                       name="encoder")
        self.ups = [keras.layers.Conv2DTranspose(f, 2, strides=2, name=f"up{i + 1}") for i, f in enumerate(self.decoder_filters)]
        block = ConvBlock if self.decoder_block == "conv" else InceptionConv
        self.merges = [block(f, name=f"merge{i + 1}") for i, f in enumerate(self.decoder_filters[:4])]
        if self.input_skip:  # our option: full-resolution skip of the (normalised) input image
            self.merges.append(block(self.decoder_filters[4], name="merge5"))
        if self.output_mode == "direct":
            self.out_conv = keras.layers.Conv2D(3, 1, activation="sigmoid", name="restored", dtype="float32")  # fp32 in bf16
        else:
            init = keras.initializers.RandomNormal(stddev=1e-3)  # ~identity at start, yet gradients reach the decoder
            self.out_conv = keras.layers.Conv2D(3, 1, kernel_initializer=init, name="residual", dtype="float32")
        self.gap = keras.layers.GlobalAveragePooling2D(name="gap")

    @property
    def feature_dim(self) -> int:
        """Size of q(x): bottom channels + the first three decoder widths (3840 at full size)."""
        return tap_channels(self.depth, self.width)["stage4"] + sum(self.decoder_filters[:3])

    def decode(self, images, training=None, full=True):
        """{"bottom", "decoder": [14x14, 28x28, 56x56, 112x112 maps], "restored" (when `full`)}."""
        x0 = self.normalize(images)
        taps = self.encoder(x0, training=training)
        skips = (taps["stage3"], taps["stage2"], taps["stage1"], taps["stem"])
        x, dec = taps["stage4"], []
        n_merge = 4 if full else 3
        for up, merge, skip in zip(self.ups[:n_merge], self.merges[:n_merge], skips[:n_merge]):
            x = merge(ops.concatenate([skip, up(x)], axis=-1), training=training)
            dec.append(x)
        out = {"bottom": taps["stage4"], "decoder": dec}
        if full:
            x = self.ups[4](x)
            if self.input_skip:
                x = self.merges[4](ops.concatenate([ops.cast(x0, x.dtype), x], axis=-1), training=training)
            y = self.out_conv(x)
            if self.output_mode == "residual":
                y = ops.clip(ops.cast(images, "float32") / 255.0 + y, 0.0, 1.0)
            out["restored"] = y
        return out

    def build(self, input_shape=None):
        """Builds every sublayer (including the decoder tail that `quality_features` does not use) on a 32x32 dummy."""
        if not self.built:
            self.decode(ops.zeros((1, 32, 32, 3)), training=False, full=True)
            self.built = True

    def quality_features(self, images, training=None):
        """q(x) = concat[GAP(bottom), GAP(dec 14x14), GAP(dec 28x28), GAP(dec 56x56)] (docs/methods/hcl.md, Design (ours))."""
        d = self.decode(images, training=training, full=False)
        return ops.concatenate([self.gap(d["bottom"])] + [self.gap(m) for m in d["decoder"]], axis=-1)

    def call(self, images, training=None):
        return self.decode(images, training=training, full=True)["restored"]

    def get_config(self):
        return {**super().get_config(), **self.arguments, "backbone_weights": None}

    @classmethod
    def from_config(cls, config):
        return cls(**without_layer_keys(config))
