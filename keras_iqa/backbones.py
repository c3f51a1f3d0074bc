"""ResNet-18 / ResNet-50 (v1.5, keras-hub `ResNetBackbone`) as multi-scale feature extractors.

`resnet_features(depth=50)` returns a `keras.Model` mapping an image batch (already normalised, see
`keras_iqa.layers.ImageNetNormalization`) to a dict of taps:

| tap    | ResNet-50 at 224 | ResNet-18 at 224 |
|--------|------------------|------------------|
| stem   | 112x112x64 (after conv1+BN+ReLU, before max-pool) | 112x112x64 |
| stage1 | 56x56x256        | 56x56x64         |
| stage2 | 28x28x512        | 28x28x128        |
| stage3 | 14x14x1024       | 14x14x256        |
| stage4 | 7x7x2048         | 7x7x512          |

`weights="imagenet"` loads the keras-hub preset (`resnet_18_imagenet` / `resnet_50_imagenet`); a path loads a local preset
directory; `None` builds random weights offline. `width` and `blocks` shrink the network for unit tests (only with random weights).
"""

from __future__ import annotations

from typing import Optional, Sequence

import keras
import keras_hub

from keras_iqa.caller import setting
from keras_iqa.layers.fused_batch_norm import fuse_batch_norm

PRESETS = {18: "resnet_18_imagenet", 50: "resnet_50_imagenet"}
_ARCH = {
    18: dict(block_type="basic_block", blocks=(2, 2, 2, 2), expansion=1),
    50: dict(block_type="bottleneck_block", blocks=(3, 4, 6, 3), expansion=4),
}
TAPS = ("stem", "stage1", "stage2", "stage3", "stage4")


def tap_channels(depth: int, width: float = 1.0) -> dict[str, int]:
    """Channel count of every tap for a depth and width multiplier."""
    arch = _ARCH[depth]
    base = _stage_filters(width)
    out = {"stem": 64}
    out.update({f"stage{i + 1}": c * arch["expansion"] for i, c in enumerate(base)})
    return out


def _stage_filters(width: float) -> list[int]:
    # keras-hub requires 64 filters in the stem and first stage; the multiplier applies to stages 2-4.
    return [64] + [max(1, int(round(c * width))) for c in (128, 256, 512)]


def _build_backbone(depth: int, width: float, blocks: Optional[Sequence[int]]):
    if depth not in _ARCH:
        raise ValueError(f"depth must be 18 or 50, got {depth!r}")
    arch = _ARCH[depth]
    filters = _stage_filters(width)
    return keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[7],
        stackwise_num_filters=filters,
        stackwise_num_blocks=list(blocks or arch["blocks"]),
        stackwise_num_strides=[1, 2, 2, 2],
        block_type=arch["block_type"],
        use_pre_activation=False,
        image_shape=(None, None, 3),
    )


def load_preset_backbone(preset: str):
    """Loads a keras-hub ResNet preset (name or local directory) or fails with instructions for offline machines."""
    try:
        return keras_hub.models.Backbone.from_preset(preset)
    except Exception as e:  # network errors surface as ConnectionError / OSError / kagglehub errors
        raise RuntimeError(
            f"Could not load the keras-hub preset {preset!r} ({type(e).__name__}: {str(e)[:200]}).\n"
            "ImageNet weights need a one-time download. On a machine with network access run\n"
            f"    python -c \"import keras_hub; keras_hub.models.Backbone.from_preset('{preset}')\"\n"
            "then copy its cache (~/.cache/kagglehub/models/keras/resnetv1/...) to this machine (same path, or set KAGGLEHUB_CACHE),\n"
            f"or pass {setting('backbone_weights', '/path/to/preset_dir')} (a directory holding config.json and "
            f"model.weights.h5),\nor {setting('backbone_weights', None)} for random initialisation."
        ) from e


def resnet_features(
    depth: int = 50,
    weights: Optional[str] = None,
    width: float = 1.0,
    blocks: Optional[Sequence[int]] = None,
    name: Optional[str] = None,
    fused_bn: bool = True,
) -> keras.Model:
    """Multi-scale ResNet v1.5 feature extractor returning `{"stem", "stage1", ..., "stage4"}`.

    Args:
        depth: 18 or 50.
        weights: None (random), "imagenet" (keras-hub preset for this depth) or a local preset directory.
        width: channel multiplier of stages 2-4 (tiny test networks; keras-hub fixes the stem and stage 1 at 64); must be 1.0 with pretrained weights.
        blocks: blocks per stage, e.g. (1, 1, 1, 1) for tests; default the standard depth.
        name: model name.
        fused_bn: run BatchNormalization on TF's fused kernel (`keras_iqa.layers.fused_batch_norm`; same maths and weights,
            about 1.6x faster bf16 training on CPU, see README, Benchmarks). False keeps keras-hub's plain Keras layers.

    Example:
    >>> import numpy as np
    >>> feats = resnet_features(depth=18, width=0.25, blocks=(1, 1, 1, 1))
    >>> {k: tuple(v.shape) for k, v in feats(np.zeros((1, 64, 64, 3))).items()}  # doctest: +NORMALIZE_WHITESPACE
    {'stem': (1, 32, 32, 64), 'stage1': (1, 16, 16, 64), 'stage2': (1, 8, 8, 32), 'stage3': (1, 4, 4, 64),
     'stage4': (1, 2, 2, 128)}
    """
    if depth not in _ARCH:
        raise ValueError(f"depth must be 18 or 50, got {depth!r}")
    if weights is not None:
        if width != 1.0 or blocks is not None:
            raise ValueError("Pretrained weights need the standard network (width=1.0, blocks=None: a full-size card); a "
                             f"narrower or shallower one starts from random weights ({setting('backbone_weights', None)})")
        preset = PRESETS[depth] if weights == "imagenet" else weights
        backbone = load_preset_backbone(preset)
    else:
        backbone = _build_backbone(depth, width, blocks)
    outputs = {"stem": backbone.get_layer("conv1_relu").output}
    for i, key in enumerate(("P2", "P3", "P4", "P5")):
        outputs[f"stage{i + 1}"] = backbone.pyramid_outputs[key]
    model = keras.Model(backbone.inputs, outputs, name=name or f"resnet{depth}_features")
    if fused_bn:
        model = fuse_batch_norm(model)
    return model

